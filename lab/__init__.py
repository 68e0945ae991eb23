"""VLM Lab: from a folder of images to a fine-tuned vision-language model.

The core modules in this package never import gradio (a test checks it); the UI in
``lab.ui`` and the CLI in ``lab.cli`` are thin shells over them.
"""

__version__ = "0.1.0"

from lab.library_messages import silence as _silence

_silence()  # library warnings that do not apply to the lab, each with its reason there
