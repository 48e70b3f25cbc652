"""Checkpoint and resume: every finished item committed to an embedded SQLite file.

One row per item key: status, input, output, error, attempts (each earlier one
as an :class:`Attempt` record), cost, a fingerprint of the input and the run
that wrote it (see ``_checkpoint_layout.py``), written in batched transactions
(WAL journal) so throughput stays high. A transaction commits when ``chunk_size``
rows are buffered or the oldest has waited ``flush_interval`` seconds, so a run
that crashes loses at most the items in flight plus about one interval of
finished work; running again with the same checkpoint skips every committed item
and returns each item exactly once.

A run holds an OS lock on ``<file>.lock`` while it writes, so two runs never mix
their results in one file; other processes may read the committed rows meanwhile
(``Checkpoint(path).counts()``, or any SQLite reader). A row SQLite refuses costs
that row only: the transaction is rolled back and the chunk written row by row.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from langchain_core.runnables import Runnable

from langchain_batchkit._checkpoint_export import to_frame, write_jsonl
from langchain_batchkit._checkpoint_layout import (
    COLUMNS,
    INSERT,
    ROW_ERRORS,
    SCHEMA_VERSION,
    Row,
    columns_of,
    db_key,
    explain,
    from_db_key,
    item_row,
    layout_of,
    load,
    prepare,
    row_to_result,
    write_each,
)
from langchain_batchkit._checkpoint_lock import FileLock
from langchain_batchkit._errors import CheckpointError, ConfigurationError
from langchain_batchkit._results import ItemResult
from langchain_batchkit._sqlite import open_wal, transaction
from langchain_batchkit._validate import check_int, is_number

__all__ = ["Checkpoint", "CheckpointError", "StoredRow", "fingerprint_of"]

logger = logging.getLogger(__name__)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")


def fingerprint_of(runnable: Runnable[Any, Any]) -> str:
    """A stable hash of a chain's structure and settings (prompts, models, parameters).

    Memory addresses in reprs are ignored, so the same chain built again in a new
    process has the same fingerprint; a changed prompt or model has another.
    """
    text = _ADDRESS.sub("", repr(runnable))
    return sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One stored item as a new run sees it; the result is decoded only when used.

    Attributes:
        key: the item's key.
        index: its input index in the run that last wrote (or resumed) it.
        ok: whether it succeeded.
        input_fingerprint: :func:`fingerprint_value` of its input (``None`` in rows
            a layout-1 release wrote).
        input_text: its stored input, as JSON text.
        this_run: written or resumed by the run that has the file open now.
    """

    key: str
    index: int
    ok: bool
    input_fingerprint: str | None
    input_text: str | None
    this_run: bool
    row: Row = field(repr=False)

    def result(self) -> ItemResult[Any, Any] | None:
        """The stored result, or ``None`` when it cannot be read back (run it again)."""
        try:
            return row_to_result(self.row)
        except Exception as exc:  # unreadable now (class moved?): run it again
            logger.warning("checkpoint row %r cannot be read back (%s); re-running it",
                           self.key, exc)  # fmt: skip
            return None

    def stored_input(self) -> Any:
        """The stored input, decoded as far as possible (for messages)."""
        return load(self.input_text, lenient=True)


class Checkpoint:
    """An embedded SQLite file holding every finished item of a batch, by key.

    Args:
        path: the file (created if missing); ``<path>.lock`` is created beside it.
        chunk_size: commit once this many finished items are buffered: larger is
            faster, smaller loses less work to a crash.
        flush_interval: commit once the oldest buffered item has waited this many
            seconds, whichever comes first (``math.inf``: on ``chunk_size`` only).
        fingerprint: identifies the job; by default derived from the chain. A file
            written for another fingerprint is refused: pass the same string on
            purpose to resume with a chain you changed compatibly.
        clock: monotonic seconds, for ``flush_interval`` (injectable for tests).

    Example:
        >>> kit = batchkit(chain, checkpoint="run.sqlite")      # doctest: +SKIP
        >>> kit.run(huge_generator())                            # doctest: +SKIP
        >>> Checkpoint("run.sqlite").to_jsonl("results.jsonl")   # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = 500,
        flush_interval: float = 1.0,
        fingerprint: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_int("chunk_size", chunk_size)
        if not (is_number(flush_interval, finite=False) and flush_interval > 0):
            raise ConfigurationError(
                f"flush_interval must be seconds > 0 (math.inf: commit on chunk_size only), "
                f"got {flush_interval!r}"
            )
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ConfigurationError(f"fingerprint must be a string, got {fingerprint!r}")
        if not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning seconds, got {clock!r}")
        self.path = Path(path)
        self.chunk_size = chunk_size
        self.flush_interval = float(flush_interval)
        self.fingerprint = fingerprint
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._lock: FileLock | None = None
        self._run = 0
        self._pending: list[Row] = []
        self._oldest = 0.0  # when the first buffered row was recorded
        # Keys staged in this run and not recorded yet (bounded by the window and
        # the read-ahead): with the rows this run wrote, they reveal duplicate keys.
        self._staged: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"Checkpoint({str(self.path)!r}, chunk_size={self.chunk_size}, "
            f"flush_interval={self.flush_interval})"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self, fingerprint: str | None = None) -> None:
        """Open (creating if needed), check it belongs to this job, and lock it for writing."""
        if self._db is not None:
            raise CheckpointError(f"checkpoint {self.path} is already open by a running batch")
        expected = self.fingerprint or fingerprint
        lock = FileLock.acquire(self.path)
        try:
            try:
                db = open_wal(os.fspath(self.path), timeout=0.5)
            except sqlite3.DatabaseError as exc:
                raise explain(self.path, exc) from exc
            except sqlite3.Error as exc:
                raise CheckpointError(f"cannot open checkpoint {self.path}: {exc}") from exc
            try:
                with transaction(db, "BEGIN IMMEDIATE"):
                    run = prepare(db, self.path, expected)
            except BaseException as exc:
                db.close()
                if isinstance(exc, sqlite3.DatabaseError):
                    raise explain(self.path, exc) from exc
                raise
        except BaseException:
            lock.release()
            raise
        self._db, self._lock, self._run = db, lock, run
        self._pending, self._staged = [], {}

    def close(self) -> None:
        """Commit what is buffered and release the file."""
        if self._db is None:
            return
        try:
            self.flush()
        finally:
            if self._pending:
                logger.error("checkpoint %s: %d finished item(s) could not be committed",
                             self.path, len(self._pending))  # fmt: skip
            self._db.close()
            self._db = None
            self._pending, self._staged = [], {}
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    # -- reading and writing during a run -------------------------------------------------------

    def lookup(self, keys: Sequence[str]) -> dict[str, StoredRow]:
        """The stored rows for those of ``keys`` that have one (committed rows only)."""
        db = self._require()
        found: dict[str, StoredRow] = {}
        for start in range(0, len(keys), 500):
            chunk = [db_key(k) for k in keys[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(f"SELECT {COLUMNS} FROM items WHERE key IN ({marks})", chunk)
            for row in rows:
                key = from_db_key(row[0])
                found[key] = StoredRow(
                    key, row[1], bool(row[2]), row[11], row[3], row[12] == self._run, row
                )
        return found

    def finished(
        self, keys: Sequence[str], *, include_failed: bool
    ) -> dict[str, ItemResult[Any, Any]]:
        """Stored results for those of ``keys`` already finished (ok, or failed too)."""
        found: dict[str, ItemResult[Any, Any]] = {}
        for key, stored in self.lookup(keys).items():
            if stored.ok or include_failed:
                result = stored.result()
                if result is not None:
                    found[key] = result
        return found

    def stage(self, key: str, index: int) -> int | None:
        """Note that input ``index`` with ``key`` starts in this run; the index of an
        earlier input of this run with the same key, if one is still unrecorded."""
        earlier = self._staged.setdefault(key, index)
        return None if earlier == index else earlier

    def unstage(self, key: str) -> None:
        """Forget a staged key that will not be recorded (its stored row is reused)."""
        self._staged.pop(key, None)

    def claim(self, resumed: Sequence[tuple[str, int]]) -> None:
        """Mark stored rows reused by this run as this run's, under their new indices,
        so a key given twice in one run is caught even when its row was resumed."""
        if not resumed:
            return
        db = self._require()
        try:
            with transaction(db):
                db.executemany(
                    "UPDATE items SET run = ?, idx = ? WHERE key = ?",
                    [(self._run, index, db_key(key)) for key, index in resumed],
                )
        except sqlite3.DatabaseError as exc:
            raise explain(self.path, exc) from exc

    def record(self, key: str, result: ItemResult[Any, Any]) -> None:
        """Buffer one finished item; commits every ``chunk_size`` items or ``flush_interval``."""
        now = self._clock()
        pending = self._pending
        if not pending:
            self._oldest = now
        pending.append(item_row(key, result, self._run))
        if self._staged:
            self._staged.pop(key, None)
        if len(pending) >= self.chunk_size or now - self._oldest >= self.flush_interval:
            self.flush()

    def flush_if_due(self) -> float | None:
        """Commit the buffer if its oldest row has waited ``flush_interval``.

        For a driver about to wait: returns the seconds until the buffer must be
        committed (wait at most that long, then call again), or ``None`` when
        nothing buffered is due on time.
        """
        if not self._pending or math.isinf(self.flush_interval):
            return None
        wait = self._oldest + self.flush_interval - self._clock()
        if wait > 0:
            return wait
        self.flush()
        return None

    def flush(self) -> None:
        """Commit the buffered items in one transaction.

        A row SQLite refuses does not cost its chunk: the transaction is rolled back
        and the rows written one at a time; the refused row is stored as that item's
        failure instead (or, if even that fails, skipped with its key logged, and the
        item runs again on resume).
        """
        if not self._pending:
            return
        db = self._require()
        rows, self._pending = self._pending, []
        try:
            try:
                with transaction(db):
                    db.executemany(INSERT, rows)
            except ROW_ERRORS as exc:
                logger.warning(
                    "checkpoint %s: committing %d rows failed (%s: %s); writing them one by one",
                    self.path, len(rows), type(exc).__name__, exc,
                )  # fmt: skip
                write_each(db, rows, self.path)
        except sqlite3.DatabaseError as exc:  # the file's fault, not a row's: keep the rows
            self._pending = rows + self._pending
            raise explain(self.path, exc) from exc

    # -- reading afterwards ---------------------------------------------------------------------

    def iter_results(self) -> Iterator[ItemResult[Any, Any]]:
        """Every stored item in index order, read in chunks (never all at once)."""
        db, owned = self._reader()
        try:
            layout = SCHEMA_VERSION if not owned else layout_of(db, self.path)
            cursor = db.execute(f"SELECT {columns_of(layout)} FROM items ORDER BY idx")
            while rows := cursor.fetchmany(1000):
                for row in rows:
                    yield row_to_result(row, lenient=True, layout=layout)
        finally:
            if owned:
                db.close()

    def counts(self) -> tuple[int, int]:
        """``(ok, failed)`` items stored."""
        row = self._one("SELECT COALESCE(SUM(ok), 0), COUNT(*) FROM items")
        return int(row[0]), int(row[1]) - int(row[0])

    def total_cost(self) -> float:
        """Dollars the stored items cost (items without a known cost add nothing)."""
        try:
            return float(self._one("SELECT COALESCE(SUM(cost), 0.0) FROM items")[0])
        except sqlite3.OperationalError:  # a layout-1/2 file read as it is: no cost column
            return 0.0

    def to_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write one JSON object per stored item (streaming); return how many."""
        return write_jsonl(self.iter_results(), path)

    def to_pandas(self, chunk_rows: int = 50_000) -> Any:
        """A DataFrame of every stored item, built chunk by chunk (needs the pandas extra)."""
        return to_frame(self.iter_results(), chunk_rows)

    # -- internals -----------------------------------------------------------------------------

    def _one(self, sql: str) -> tuple[Any, ...]:
        db, owned = self._reader()
        try:
            row: tuple[Any, ...] = db.execute(sql).fetchone()
            return row
        finally:
            if owned:
                db.close()

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise CheckpointError(f"checkpoint {self.path} is not open")
        return self._db

    def _reader(self) -> tuple[sqlite3.Connection, bool]:
        if self._db is not None:
            self.flush()
            return self._db, False
        if not self.path.exists():
            raise CheckpointError(f"no checkpoint at {self.path}")
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=0.5)
            db.execute("SELECT 1 FROM items LIMIT 1")
        except sqlite3.DatabaseError as exc:
            raise explain(self.path, exc) from exc
        return db, True
