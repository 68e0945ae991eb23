"""ZeroGPU on Hugging Face Spaces: a GPU is attached only while a decorated function runs.

On a ZeroGPU Space (``SPACES_ZERO_GPU`` is set there) the chat and evaluation handlers are
wrapped in ``spaces.GPU``; anywhere else they run as they are, and the ``spaces`` package
is not needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def on_zero_gpu() -> bool:
    return "SPACES_ZERO_GPU" in os.environ


def gpu(fn: Callable, duration: int = 120) -> Callable:
    """``fn`` wrapped in ``spaces.GPU(duration=...)`` on ZeroGPU, else ``fn`` itself."""
    if not on_zero_gpu():
        return fn
    try:
        import spaces
    except ImportError:  # a ZeroGPU Space always has it; elsewhere the setting is a mistake, not a crash
        return fn
    return spaces.GPU(duration=duration)(fn)
