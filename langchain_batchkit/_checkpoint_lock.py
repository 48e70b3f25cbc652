"""One writer per checkpoint file: an OS lock on ``<checkpoint>.lock`` while a run writes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from langchain_batchkit._errors import CheckpointError

__all__ = ["FileLock"]


class FileLock:
    """An OS lock on ``<checkpoint>.lock`` while a run writes: one run per file.

    Not SQLite's exclusive locking mode, which would lock readers out too. The OS
    drops the lock when the process dies, so a killed run never leaves a stale one.
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, path: Path) -> FileLock:
        try:
            fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CheckpointError(f"cannot open checkpoint {path}: {exc}") from exc
        try:
            _lock_fd(fd)
        except OSError as exc:
            os.close(fd)
            raise CheckpointError(
                f"checkpoint {path} is locked: another run is writing it (one run per file)"
            ) from exc
        return cls(fd)

    def release(self) -> None:
        os.close(self._fd)  # closing the descriptor releases the lock


if sys.platform == "win32":
    import msvcrt

    def _lock_fd(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

else:
    import fcntl

    def _lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
