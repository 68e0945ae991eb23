"""Messages of the libraries that do not apply to how the lab uses them, silenced once, each with its reason.

A person who sees a warning on every run worries about it; these ones are either about a
call a library makes to another library (nothing to change on our side) or about a case the
lab already handles. Everything else still shows.
"""

from __future__ import annotations

import logging
import warnings

# PEFT asks the model whether gradient checkpointing is on through the name transformers 5
# deprecated (peft/peft_model.py); our own code asks under the new name.
_DEPRECATED_NAME = r"`is_gradient_checkpointing` is deprecated"
# Training the language model in full next to an adapter (the cpu_demo preset) trains the tied
# lm_head apart from the embeddings on purpose; the export keeps the two untied (lab/export.py).
_TIED_EMBEDDINGS = r"Model has `tie_word_embeddings=True` and a tied layer is part of the adapter"


# Gradio sums up its event statistics with pandas options that pandas 3 deprecated (gradio/queueing.py).
_GRADIO_STATISTICS = r"gradio\.queueing"


class _DropOptionalKernel(logging.Filter):
    """bitsandbytes on a CPU tries an optional faster 4-bit kernel from the ``kernels`` package and
    says so when it is missing; it then uses its own code, which is what the lab tests."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "gemm_4bit_forward from kernels-community" not in record.getMessage()


def silence() -> None:
    """Install the filters (idempotent)."""
    warnings.filterwarnings("ignore", message=_DEPRECATED_NAME, category=FutureWarning)
    warnings.filterwarnings("ignore", message=_TIED_EMBEDDINGS, category=UserWarning)
    warnings.filterwarnings("ignore", module=_GRADIO_STATISTICS)
    kernel_log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(isinstance(f, _DropOptionalKernel) for f in kernel_log.filters):
        kernel_log.addFilter(_DropOptionalKernel())
