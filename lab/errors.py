"""Errors a person can cause.

Every one carries a single sentence meant for the person, shown as is by the UI and the
CLI (never a traceback). Code that catches a library exception and knows what it means
for the user re-raises it as one of these.
"""


class LabError(Exception):
    """A problem the user can fix; ``str(err)`` is one clear sentence."""


class ConfigError(LabError):
    """A configuration that contradicts itself or names something that does not exist."""


class ModelLoadError(LabError):
    """A model that cannot be loaded (unreachable offline, not a model folder, ...)."""


class DatasetError(LabError):
    """A dataset folder or file that cannot be read."""


class BadImageError(LabError):
    """An image that cannot be used; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class BusyError(LabError):
    """The shared model is busy with another job (training, generation)."""
