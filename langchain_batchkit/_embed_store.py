"""Embeddings by key in SQLite: float32 bytes, resumable, exported in streaming batches.

A store of its own (not the chat checkpoint's tables): one row per key, the
vector as little-endian float32 bytes (6 KB for 1,536 dimensions, against some
30 KB as a JSON list), its tokens and cost, and whether ``into=`` has added it
to a vector store. Texts that failed keep their error in a second table until
a later run embeds them. The layout is versioned in ``embed_meta``; a file of
another version, or of another model, is refused rather than mixed.

Layout 1::

    embed_meta    (name TEXT PRIMARY KEY, value TEXT)   -- layout, model, dimensions
    embed_vectors (seq INTEGER PRIMARY KEY, key TEXT UNIQUE, vector BLOB,
                   tokens INTEGER, cost REAL, added INTEGER)
    embed_errors  (key TEXT PRIMARY KEY, kind TEXT, message TEXT)

Exports read ``batch_size`` rows at a time in ``seq`` order (the order texts
finished), so memory stays flat whatever the store holds. numpy and pyarrow are
imported by the exports that need them.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_batchkit._errors import CheckpointError
from langchain_batchkit._sqlite import open_wal, transaction

if TYPE_CHECKING:
    import numpy

__all__ = ["LAYOUT", "EmbeddingStore", "StoredFailure"]

LAYOUT = 1
_LOOKUP_CHUNK = 500  # keys per IN (...) query, under SQLite's variable limit

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS embed_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS embed_vectors (seq INTEGER PRIMARY KEY, key TEXT NOT NULL "
    "UNIQUE, vector BLOB NOT NULL, tokens INTEGER NOT NULL, cost REAL, "
    "added INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS embed_errors (key TEXT PRIMARY KEY, kind TEXT NOT NULL, "
    "message TEXT NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class StoredFailure:
    """A text that failed in the last run that tried it: its key, error type and message."""

    key: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Embedded:
    """One finished text, as a run writes it."""

    key: str
    vector: Sequence[float]
    tokens: int
    cost: float | None


class EmbeddingStore:
    """Vectors by key in one SQLite file (or in memory), stored as float32 bytes.

    :func:`~langchain_batchkit.embed_texts` writes it (``checkpoint=`` names the
    file) and a report hands it back; open a finished file with
    ``EmbeddingStore(path)`` to read or export it. One connection, used from the
    thread that opened it.

    Args:
        path: a file (created if missing), or ``":memory:"``.

    Example:
        >>> store = EmbeddingStore(":memory:")
        >>> store.bind("m")
        >>> store.commit([Embedded("a", [0.5, 0.25], 3, None)], [])
        >>> len(store), store.get("a"), store.dimensions
        (1, [0.5, 0.25], 2)
    """

    __slots__ = ("_db", "_dimensions", "path")

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = os.fspath(path)
        try:
            self._db = open_wal(self.path)
            with transaction(self._db, "BEGIN IMMEDIATE"):
                for statement in _SCHEMA:
                    self._db.execute(statement)
                layout = self._meta("layout")
                if layout is None:
                    self._set_meta("layout", str(LAYOUT))
                elif layout != str(LAYOUT):
                    raise CheckpointError(
                        f"{self.path} is an embeddings store of layout {layout}; this version "
                        f"reads layout {LAYOUT}"
                    )
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"cannot use {self.path} as an embeddings store: {exc}") from exc
        dims = self._meta("dimensions")
        self._dimensions = int(dims) if dims is not None else None

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.path!r}, vectors={len(self)}, dimensions={self.dimensions})"

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM embed_vectors").fetchone()[0])

    def __contains__(self, key: object) -> bool:
        row = self._db.execute("SELECT 1 FROM embed_vectors WHERE key = ?", (key,)).fetchone()
        return row is not None

    @property
    def dimensions(self) -> int | None:
        """The vectors' length (``None`` until the first one is stored)."""
        return self._dimensions

    @property
    def model(self) -> str | None:
        """The model the vectors came from (as the run that wrote them named it)."""
        return self._meta("model")

    def close(self) -> None:
        """Close the connection (the file stays)."""
        self._db.close()

    # -- the run's side -----------------------------------------------------------------------

    def bind(self, model: str | None) -> None:
        """Record the model the vectors come from; a store of another model is refused.

        Raises:
            CheckpointError: the store holds vectors of another model.
        """
        name = model or ""
        with transaction(self._db, "BEGIN IMMEDIATE"):
            stored = self._meta("model")
            if stored is None:
                self._set_meta("model", name)
            elif stored != name:
                raise CheckpointError(
                    f"{self.path} holds vectors of {stored!r}, not {name!r}: vectors of two "
                    "models must not be mixed (use another checkpoint file)"
                )

    def lookup(self, keys: Sequence[str]) -> dict[str, bool]:
        """Which of ``keys`` are embedded already, each with whether it was added ``into=``."""
        found: dict[str, bool] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, added FROM embed_vectors WHERE key IN ({marks})", chunk
            )
            found.update((key, bool(added)) for key, added in rows)
        return found

    def vectors_of(self, keys: Sequence[str]) -> dict[str, list[float]]:
        """The stored vectors of ``keys`` (those it has)."""
        found: dict[str, list[float]] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, vector FROM embed_vectors WHERE key IN ({marks})", chunk
            )
            found.update((key, _decode(blob)) for key, blob in rows)
        return found

    def commit(self, done: Iterable[Embedded], failed: Iterable[StoredFailure]) -> None:
        """Write finished texts and failures in one transaction.

        Raises:
            CheckpointError: a vector's length differs from the store's.
        """
        with transaction(self._db):
            for item in done:
                if self._dimensions is None:
                    self._dimensions = len(item.vector)
                    self._set_meta("dimensions", str(self._dimensions))
                elif len(item.vector) != self._dimensions:
                    self._dimensions = int(self._meta("dimensions") or 0) or None
                    raise CheckpointError(
                        f"a vector of {len(item.vector)} dimensions for key {item.key!r} in a "
                        f"store of {self._dimensions}"
                    )
                self._db.execute(
                    "INSERT INTO embed_vectors (key, vector, tokens, cost) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET vector = excluded.vector, "
                    "tokens = excluded.tokens, cost = excluded.cost",
                    (item.key, _encode(item.vector), item.tokens, item.cost),
                )
                self._db.execute("DELETE FROM embed_errors WHERE key = ?", (item.key,))
            for failure in failed:
                self._db.execute(
                    "INSERT OR REPLACE INTO embed_errors (key, kind, message) VALUES (?, ?, ?)",
                    (failure.key, failure.kind, failure.message),
                )

    def mark_added(self, keys: Sequence[str]) -> None:
        """Record that ``keys`` are in the vector store (a resumed run adds them no more)."""
        with transaction(self._db):
            self._db.executemany(
                "UPDATE embed_vectors SET added = 1 WHERE key = ?", ((k,) for k in keys)
            )

    # -- reading and exports ------------------------------------------------------------------

    def get(self, key: str) -> list[float] | None:
        """The vector stored for ``key``, or ``None``."""
        row = self._db.execute("SELECT vector FROM embed_vectors WHERE key = ?", (key,)).fetchone()
        return None if row is None else _decode(row[0])

    def keys(self) -> Iterator[str]:
        """Every key, in the order of :meth:`batches` (streamed)."""
        for keys, _ in self._rows(10_000, vectors=False):
            yield from keys

    def failures(self) -> Iterator[StoredFailure]:
        """The texts whose last attempt failed (streamed)."""
        for key, kind, message in self._db.execute(
            "SELECT key, kind, message FROM embed_errors ORDER BY key"
        ):
            yield StoredFailure(key, kind, message)

    def batches(self, batch_size: int = 10_000) -> Iterator[tuple[list[str], numpy.ndarray]]:
        """``(keys, vectors)`` chunks: a float32 array of shape ``(len(keys), dimensions)``.

        Needs numpy. Only one chunk is in memory at a time.
        """
        np = _numpy()
        for keys, blobs in self._rows(batch_size, vectors=True):
            flat = np.frombuffer(b"".join(blobs), dtype="<f4")
            yield keys, flat.reshape(len(keys), -1)

    def to_numpy(self, path: str | os.PathLike[str] | None = None) -> numpy.ndarray:
        """Every vector as one ``(n, dimensions)`` float32 array, in :meth:`keys` order.

        With ``path``, the array is written to that ``.npy`` file batch by batch and
        returned memory-mapped, so it need not fit in memory; without, it is built
        in memory.
        """
        np = _numpy()
        shape = (len(self), self._dimensions or 0)
        if path is None:
            out = np.empty(shape, dtype="<f4")
        else:
            out = np.lib.format.open_memmap(os.fspath(path), mode="w+", dtype="<f4", shape=shape)
        row = 0
        for keys, vectors in self.batches():
            out[row : row + len(keys)] = vectors
            row += len(keys)
        if path is not None:
            out.flush()
        result: numpy.ndarray = out
        return result

    def to_arrow(self, batch_size: int = 10_000) -> Any:
        """A streaming ``pyarrow.RecordBatchReader`` of ``key: string, vector:
        fixed_size_list<float32>`` batches. Needs pyarrow."""
        pa = _pyarrow()
        dims = self._dimensions or 0
        schema = pa.schema([("key", pa.string()), ("vector", pa.list_(pa.float32(), dims))])

        def record_batches() -> Iterator[Any]:
            for keys, vectors in self.batches(batch_size):
                column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dims)
                yield pa.RecordBatch.from_arrays(
                    [pa.array(keys, pa.string()), column], schema=schema
                )

        return pa.RecordBatchReader.from_batches(schema, record_batches())

    def to_parquet(self, path: str | os.PathLike[str], batch_size: int = 10_000) -> int:
        """Write every ``(key, vector)`` to a Parquet file, one row group per batch.

        Returns the rows written. Needs pyarrow.
        """
        _pyarrow()
        pq = importlib.import_module("pyarrow.parquet")
        reader = self.to_arrow(batch_size)
        rows = 0
        with pq.ParquetWriter(os.fspath(path), reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
        return rows

    # -- internals ----------------------------------------------------------------------------

    def _rows(self, size: int, *, vectors: bool) -> Iterator[tuple[list[str], list[bytes]]]:
        column = ", vector" if vectors else ""
        last = 0
        while True:
            rows = self._db.execute(
                f"SELECT seq, key{column} FROM embed_vectors WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, size),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [r[1] for r in rows], [r[2] for r in rows] if vectors else []

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM embed_meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO embed_meta (name, value) VALUES (?, ?)", (name, value)
        )


def _encode(vector: Sequence[float]) -> bytes:
    values = array("f", vector)
    if sys.byteorder == "big":  # pragma: no cover - every supported platform is little-endian
        values.byteswap()
    return values.tobytes()


def _decode(blob: bytes) -> list[float]:
    values = array("f")
    values.frombytes(blob)
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return values.tolist()


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:
        raise ImportError("this export needs numpy: pip install numpy") from exc
    return numpy


def _pyarrow() -> Any:
    try:
        pyarrow = importlib.import_module("pyarrow")
    except ImportError as exc:
        raise ImportError("this export needs pyarrow: pip install pyarrow") from exc
    return pyarrow
