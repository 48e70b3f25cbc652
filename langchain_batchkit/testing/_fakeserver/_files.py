"""In-memory file storage for the Files API, and the wall clock its timestamps use."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from langchain_batchkit.testing._fakeserver._exchange import ApiError

__all__ = ["FileStore", "StoredFile", "WallClock"]


class WallClock:
    """Unix timestamps that move with the config's (possibly fake) monotonic clock.

    Anchored once: ``unix(clock())`` is the real time at construction, and advancing
    a :class:`FakeClock` by an hour moves every later ``created_at`` by an hour.
    """

    __slots__ = ("_clock", "_offset")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._offset = time.time() - clock()

    def now(self) -> float:
        """The monotonic reading that timelines are computed on."""
        return self._clock()

    def unix(self, monotonic: float) -> int:
        """The Unix timestamp (whole seconds) of a monotonic reading."""
        return int(monotonic + self._offset)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One stored file; ``to_json`` is OpenAI's ``file`` object."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


class FileStore:
    """Thread-safe storage of uploaded files and batch result files, by id."""

    __slots__ = ("_files", "_ids", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._ids = itertools.count(1)

    def add(self, *, filename: str, purpose: str, data: bytes, created_at: int) -> StoredFile:
        with self._lock:
            stored = StoredFile(
                f"file-fake{next(self._ids):012d}", filename, purpose, data, created_at
            )
            self._files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile:
        """The file, or an ``ApiError`` 404 as OpenAI answers for an unknown id."""
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise _no_such_file(file_id)
        return stored

    def delete(self, file_id: str) -> None:
        with self._lock:
            if self._files.pop(file_id, None) is None:
                raise _no_such_file(file_id)

    def listing(self, purpose: str | None, *, newest_first: bool) -> list[StoredFile]:
        """Stored files in creation order (or newest first), optionally of one purpose."""
        with self._lock:
            files = [f for f in self._files.values() if purpose is None or f.purpose == purpose]
        return files[::-1] if newest_first else files


def _no_such_file(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", param="id")
