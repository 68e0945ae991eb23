"""Dependencies point one way: app.py -> lab.ui -> lab core. The core never imports gradio."""

import argparse
import pkgutil
import subprocess
import sys
from pathlib import Path

import lab

CORE_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(lab.__path__, "lab.")
    if not m.name.startswith(("lab.ui", "lab.cli")) and m.name != "lab.__main__"
)


def test_core_modules_are_found():
    assert "lab.images" in CORE_MODULES and "lab.handle" in CORE_MODULES


def test_core_never_imports_gradio():
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in CORE_MODULES)
    code += "bad = sorted(n for n in sys.modules if n == 'gradio' or n.startswith(('gradio.', 'lab.ui')))\n"
    code += "print(','.join(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported {out.stdout.strip()}"


def test_cli_help_is_instant_and_lists_commands():
    code = (
        "import sys\nfrom lab.cli import build_parser\nbuild_parser()\n"
        "print(sorted(n for n in ('torch','transformers','gradio') if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", "building the CLI parser imported heavy libraries"


def test_every_command_has_help():
    from lab.cli import build_parser

    parser = build_parser()
    assert {"app", "tiny-model", "data", "label", "train", "eval", "chat", "export"} <= set(_commands(parser))
    for name, command_parser in _commands(parser).items():
        assert (command_parser.description or "").strip(), f"{name} has no description"
        for action in command_parser._actions:
            if action.dest == "help" or isinstance(action, argparse._SubParsersAction):
                continue
            assert (action.help or "").strip() and action.help != argparse.SUPPRESS, f"{name} {action.dest} has no help"


def _commands(parser, prefix="") -> dict:
    """Every command and sub-command (``data check``, ...) with its parser, listed with help in its parent."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                assert (listed.get(name) or "").strip(), f"{prefix}{name} is not listed with a help line"
                found[f"{prefix}{name}"] = child
                found.update(_commands(child, f"{prefix}{name} "))
    return found


def test_app_py_help_lists_the_app_options():
    root = Path(lab.__file__).parent.parent
    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=root, capture_output=True, text=True, check=True)
    for flag in ("--model", "--host", "--port", "--share", "--lang", "--workspace"):
        assert flag in out.stdout


def test_server_messages_follow_the_same_language_rule_as_the_page():
    """The person's switch beats --lang, which beats the browser's language."""
    from types import SimpleNamespace

    from lab.ui.i18n import request_lang

    def request(cookie=None, accept="en-US"):
        return SimpleNamespace(cookies={"vlm-lab-lang": cookie} if cookie else {}, headers={"accept-language": accept})

    app = lambda lang: SimpleNamespace(settings=SimpleNamespace(lang=lang))  # noqa: E731
    assert request_lang(app("zh"), request(cookie="en")) == "en"
    assert request_lang(app("zh"), request()) == "zh"
    assert request_lang(app(None), request(accept="zh-CN,zh;q=0.9")) == "zh"
    assert request_lang(app(None), None) == "en"
