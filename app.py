"""Start VLM Lab: ``python app.py [--model M] [--host H] [--port P] [--share] [--lang zh|en] [--workspace DIR]``.

This is also the entry point of a Hugging Face Space.
"""

import argparse

from lab.cli.app import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python app.py", description="Start the VLM Lab web app.")
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
