"""An exclusive lock on a file: one writer at a time, across processes.

The operating system releases the lock when its process dies, so a crash never leaves
a folder locked. Two handles on the same lock file exclude each other, in one process
too (``flock`` locks belong to the open file, not to the process). Labeling locks its
dataset folder with it, training its run folder.
"""

from __future__ import annotations

from pathlib import Path


class FileLock:
    """A lock on ``path`` (the file is created when first taken); :meth:`acquire` never waits."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.handle = None

    def acquire(self) -> bool:
        """Take the lock at once; False when another holder has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            _lock_file(handle)
        except OSError:
            handle.close()
            return False
        self.handle = handle
        return True

    def release(self) -> None:
        if self.handle is not None:
            _unlock_file(self.handle)
            self.handle.close()
            self.handle = None


def locked_elsewhere(path: str | Path) -> bool:
    """Whether someone holds the lock on ``path`` now; creates nothing (no file: nobody holds it)."""
    try:
        handle = open(path, "rb")
    except OSError:  # no lock file (nobody holds it), or one that cannot be read: taking it will say why
        return False
    with handle:
        try:
            _lock_file(handle)
        except OSError:
            return True
        _unlock_file(handle)
    return False


def _lock_file(handle) -> None:
    try:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)


def _unlock_file(handle) -> None:
    try:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except ImportError:
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
