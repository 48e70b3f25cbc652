"""Checkpoint and resume: every finished item committed to an embedded SQLite file.

One row per item key: status, input, output, error, attempts, a fingerprint of
the input and the run that wrote it, written in batched transactions (WAL
journal) so throughput stays high. A transaction commits when ``chunk_size``
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

import json
import logging
import math
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from langchain_core.runnables import Runnable

from langchain_batchkit._errors import CheckpointError, ConfigurationError
from langchain_batchkit._results import ItemError, ItemResult, TokenUsage
from langchain_batchkit._serialize import (
    dumps_value,
    fingerprint_value,
    json_text,
    loads_value,
    to_jsonable,
)
from langchain_batchkit._sqlite import open_wal, transaction
from langchain_batchkit._validate import check_int, is_number

__all__ = ["Checkpoint", "CheckpointError", "StoredRow", "fingerprint_of"]

logger = logging.getLogger(__name__)

#: Bumped when the table layout changes. Layout 1 files are migrated in place (two
#: columns added); any other version is refused.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    input TEXT,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    latency REAL NOT NULL,
    usage TEXT,
    history TEXT,
    written_at REAL NOT NULL,
    input_fp TEXT,
    run INTEGER
);
CREATE INDEX IF NOT EXISTS items_idx ON items (idx);
"""
_COLUMNS = (
    "key, idx, ok, input, output, error, attempts, latency, usage, history, written_at, "
    "input_fp, run"
)
_INSERT = f"INSERT OR REPLACE INTO items ({_COLUMNS}) VALUES ({', '.join('?' * 13)})"

#: What a single row's values (not the file) can make SQLite refuse: text it cannot
#: encode, a constraint, a value too big or of an unsupported type.
_ROW_ERRORS = (
    ValueError,
    TypeError,
    OverflowError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
)

Row = tuple[Any, ...]


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
            return _row_to_result(self.row)
        except Exception as exc:  # unreadable now (class moved?): run it again
            logger.warning("checkpoint row %r cannot be read back (%s); re-running it",
                           self.key, exc)  # fmt: skip
            return None

    def stored_input(self) -> Any:
        """The stored input, decoded as far as possible (for messages)."""
        return _load(self.input_text, lenient=True)


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
        self._lock: _FileLock | None = None
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
        lock = _FileLock.acquire(self.path)
        try:
            try:
                db = open_wal(os.fspath(self.path), timeout=0.5)
            except sqlite3.DatabaseError as exc:
                raise _explain(self.path, exc) from exc
            except sqlite3.Error as exc:
                raise CheckpointError(f"cannot open checkpoint {self.path}: {exc}") from exc
            try:
                with transaction(db, "BEGIN IMMEDIATE"):
                    run = _prepare(db, self.path, expected)
            except BaseException as exc:
                db.close()
                if isinstance(exc, sqlite3.DatabaseError):
                    raise _explain(self.path, exc) from exc
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
            chunk = [_db_key(k) for k in keys[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(f"SELECT {_COLUMNS} FROM items WHERE key IN ({marks})", chunk)
            for row in rows:
                key = _from_db_key(row[0])
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
                    [(self._run, index, _db_key(key)) for key, index in resumed],
                )
        except sqlite3.DatabaseError as exc:
            raise _explain(self.path, exc) from exc

    def record(self, key: str, result: ItemResult[Any, Any]) -> None:
        """Buffer one finished item; commits every ``chunk_size`` items or ``flush_interval``."""
        now = self._clock()
        pending = self._pending
        if not pending:
            self._oldest = now
        pending.append(self._row(key, result))
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
                    db.executemany(_INSERT, rows)
            except _ROW_ERRORS as exc:
                logger.warning(
                    "checkpoint %s: committing %d rows failed (%s: %s); writing them one by one",
                    self.path, len(rows), type(exc).__name__, exc,
                )  # fmt: skip
                self._write_each(db, rows)
        except sqlite3.DatabaseError as exc:  # the file's fault, not a row's: keep the rows
            self._pending = rows + self._pending
            raise _explain(self.path, exc) from exc

    # -- reading afterwards ---------------------------------------------------------------------

    def iter_results(self) -> Iterator[ItemResult[Any, Any]]:
        """Every stored item in index order, read in chunks (never all at once)."""
        db, owned = self._reader()
        try:
            cursor = db.execute(f"SELECT {_COLUMNS} FROM items ORDER BY idx")
            while rows := cursor.fetchmany(1000):
                for row in rows:
                    yield _row_to_result(row, lenient=True)
        finally:
            if owned:
                db.close()

    def counts(self) -> tuple[int, int]:
        """``(ok, failed)`` items stored."""
        db, owned = self._reader()
        try:
            row = db.execute("SELECT COALESCE(SUM(ok), 0), COUNT(*) FROM items").fetchone()
        finally:
            if owned:
                db.close()
        return int(row[0]), int(row[1]) - int(row[0])

    def to_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write one JSON object per stored item (streaming); return how many."""
        n = 0
        with open(path, "w", encoding="utf-8") as out:
            for result in self.iter_results():
                record = result.to_record()
                record["input"] = to_jsonable(record["input"])
                record["output"] = to_jsonable(record["output"])
                out.write(json_text(record) + "\n")
                n += 1
        return n

    def to_pandas(self, chunk_rows: int = 50_000) -> Any:
        """A DataFrame of every stored item, built chunk by chunk (needs the pandas extra)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "to_pandas() needs pandas: pip install 'langchain-batchkit[pandas]'"
            ) from exc
        frames, rows = [], []
        for result in self.iter_results():
            rows.append(result.to_record())
            if len(rows) >= chunk_rows:
                frames.append(pd.DataFrame.from_records(rows))
                rows = []
        frames.append(pd.DataFrame.from_records(rows))
        return pd.concat(frames, ignore_index=True)

    # -- internals -----------------------------------------------------------------------------

    def _row(self, key: str, result: ItemResult[Any, Any]) -> Row:
        usage = result.usage
        return (
            _db_key(key),
            result.index,
            int(result.ok),
            dumps_value(result.input),
            dumps_value(result.output) if result.ok else None,
            _dump_error(result.error) if result.error else None,
            result.attempts,
            result.latency,
            json.dumps([usage.input_tokens, usage.output_tokens, usage.total_tokens])
            if usage
            else None,
            json.dumps([ItemError.to_dict(e) for e in result.history]) if result.history else None,
            time.time(),
            fingerprint_value(result.input),
            self._run,
        )

    def _write_each(self, db: sqlite3.Connection, rows: list[Row]) -> None:
        with transaction(db):
            for row in rows:
                try:
                    with _savepoint(db):
                        db.execute(_INSERT, row)
                    continue
                except _ROW_ERRORS as exc:
                    cause = f"{type(exc).__name__}: {exc}"
                key = _from_db_key(row[0])
                try:
                    with _savepoint(db):
                        db.execute(_INSERT, _error_row(row, cause))
                except _ROW_ERRORS as again:
                    logger.error(
                        "checkpoint %s: the row for key %r cannot be written (%s), nor an "
                        "error row (%s: %s); skipped: the item runs again on resume",
                        self.path, key, cause, type(again).__name__, again,
                    )  # fmt: skip
                else:
                    logger.error(
                        "checkpoint %s: the row for key %r cannot be written (%s); stored as "
                        "a failed item instead (retry_failed=True runs it again)",
                        self.path, key, cause,
                    )  # fmt: skip

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
            raise _explain(self.path, exc) from exc
        return db, True


class _FileLock:
    """An OS lock on ``<checkpoint>.lock`` while a run writes: one run per file.

    Not SQLite's exclusive locking mode, which would lock readers out too. The OS
    drops the lock when the process dies, so a killed run never leaves a stale one.
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, path: Path) -> _FileLock:
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


@contextmanager
def _savepoint(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("SAVEPOINT one_row")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK TO one_row")
        db.execute("RELEASE one_row")
        raise
    db.execute("RELEASE one_row")


def _prepare(db: sqlite3.Connection, path: Path, expected: str | None) -> int:
    """Create, migrate or check the layout and the job; count this run. Returns its id."""
    for statement in _SCHEMA.strip().split(";"):
        if statement.strip():
            db.execute(statement)
    meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    if not meta:
        meta = {
            "schema_version": str(SCHEMA_VERSION),
            "fingerprint": expected or "",
            "created_at": str(time.time()),
        }
        db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
    version = meta.get("schema_version")
    if version == "1":  # layout 1 lacks the input fingerprint and the run: add them
        db.execute("ALTER TABLE items ADD COLUMN input_fp TEXT")
        db.execute("ALTER TABLE items ADD COLUMN run INTEGER")
        db.execute(
            "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),)
        )
        logger.info("checkpoint %s: migrated from layout 1 to %d", path, SCHEMA_VERSION)
    elif version != str(SCHEMA_VERSION):
        raise CheckpointError(
            f"checkpoint {path} has layout version {version}, this langchain-batchkit "
            f"writes version {SCHEMA_VERSION}; use a new file or the matching release"
        )
    stored = meta.get("fingerprint") or None
    if expected and stored and stored != expected:
        raise CheckpointError(
            f"checkpoint {path} was written by a different chain (fingerprint "
            f"{stored}, this one is {expected}); use a new file, or pass "
            f"Checkpoint(..., fingerprint={stored!r}) to resume on purpose"
        )
    run = int(meta.get("runs", "0")) + 1
    db.execute("INSERT OR REPLACE INTO meta VALUES ('runs', ?)", (str(run),))
    return run


def _db_key(key: str) -> str | bytes:
    """The key as SQLite stores it: text, or (when UTF-8 cannot encode it: lone
    surrogates) a BLOB of its ``surrogatepass`` bytes, which never equals a text key."""
    if key.isascii():
        return key
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogatepass")
    return key


def _from_db_key(stored: str | bytes) -> str:
    return stored if isinstance(stored, str) else stored.decode("utf-8", "surrogatepass")


def _explain(path: Path, exc: sqlite3.DatabaseError) -> CheckpointError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return CheckpointError(
            f"checkpoint {path} is locked: another run is writing it (one run per file)"
        )
    if "not a database" in text or "malformed" in text or "file is encrypted" in text:
        return CheckpointError(
            f"checkpoint {path} is not a readable SQLite file (corrupt?): {text}"
        )
    return CheckpointError(f"checkpoint {path}: {text}")


def _dump_error(error: ItemError) -> str:
    return json.dumps(error.to_dict())


def _error_row(row: Row, cause: str) -> Row:
    """The failure row stored for an item whose own row SQLite refused."""
    error = {
        "type": "CheckpointWriteError",
        "message": f"the item finished but its row could not be stored: {cause}",
        "module": __name__,
    }
    key, idx, _, _, _, _, attempts, latency, _, _, *rest = row  # rest: written_at, ...
    return (key, idx, 0, None, None, json.dumps(error), attempts, latency, None, None, *rest)


def _load_error(data: dict[str, str]) -> ItemError:
    return ItemError.from_dict(data)


def _load(text: str | None, *, lenient: bool) -> Any:
    if text is None:
        return None
    try:
        return loads_value(text)
    except Exception:
        if not lenient:
            raise
        logger.warning("a stored value cannot be loaded back; returning its stored JSON text")
        return text


def _row_to_result(row: Row, *, lenient: bool = False) -> ItemResult[Any, Any]:
    key, idx, ok, inp, out, err, attempts, latency, usage, history = row[:10]
    return ItemResult(
        index=idx,
        input=_load(inp, lenient=lenient),
        output=_load(out, lenient=lenient) if ok else None,
        error=None if ok else _load_error(json.loads(err)),
        attempts=attempts,
        latency=latency,
        usage=TokenUsage(*json.loads(usage)) if usage else None,
        history=tuple(_load_error(h) for h in json.loads(history)) if history else (),
        key=_from_db_key(key),
    )
