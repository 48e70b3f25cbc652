"""The checkpoint file's layout: its tables, one item's row, and older layouts.

The ``items`` table has one row per item key; :func:`item_row` writes a result as
such a row and :func:`row_to_result` reads it back. :func:`prepare` creates the
tables in a new file, migrates an older layout in place, and refuses a file of a
layout this release does not know or written for another chain.

Layouts:

* **3** (this release): ``history`` holds :class:`Attempt` records
  (:func:`dump_history`), and a ``cost`` column the item's dollars.
* **2**: ``history`` was a list of :class:`ItemError` dicts; no ``cost``.
* **1**: no ``input_fp`` (the input's fingerprint) nor ``run`` columns either.

A run migrates a layout 1 or 2 file in place, in the transaction that opens it (old
errors become attempts with nothing else known); :func:`layout_of` lets a reader
read an older file without writing to it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_batchkit._errors import CheckpointError
from langchain_batchkit._item import (
    ItemError,
    ItemResult,
    TokenUsage,
    dump_history,
    legacy_history,
    load_history,
)
from langchain_batchkit._serialize import dumps_value, fingerprint_value, loads_value
from langchain_batchkit._sqlite import transaction

__all__ = [
    "COLUMNS",
    "INSERT",
    "ROW_ERRORS",
    "SCHEMA_VERSION",
    "Row",
    "columns_of",
    "db_key",
    "error_row",
    "explain",
    "from_db_key",
    "item_row",
    "layout_of",
    "load",
    "prepare",
    "row_to_result",
    "write_each",
]

logger = logging.getLogger(__name__)

#: Bumped when the table layout changes. Layout 1 and 2 files are migrated in place
#: (see the module docstring); any other version is refused.
SCHEMA_VERSION = 3

SCHEMA = """
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
    run INTEGER,
    cost REAL
);
CREATE INDEX IF NOT EXISTS items_idx ON items (idx);
"""
COLUMNS = (
    "key, idx, ok, input, output, error, attempts, latency, usage, history, written_at, "
    "input_fp, run, cost"
)
INSERT = f"INSERT OR REPLACE INTO items ({COLUMNS}) VALUES ({', '.join('?' * 14)})"

#: The columns each older layout lacks, read as NULL.
_MISSING = {1: ("input_fp", "run", "cost"), 2: ("cost",)}

#: What a single row's values (not the file) can make SQLite refuse: text it cannot
#: encode, a constraint, a value too big or of an unsupported type.
ROW_ERRORS = (
    ValueError,
    TypeError,
    OverflowError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
)

Row = tuple[Any, ...]


def prepare(db: sqlite3.Connection, path: Path, expected: str | None) -> int:
    """Create, migrate or check the layout and the job; count this run. Returns its id."""
    for statement in SCHEMA.strip().split(";"):
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
    layout = _known_layout(path, meta.get("schema_version"))
    if layout < SCHEMA_VERSION:
        _migrate(db, layout)
        db.execute(
            "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),)
        )
        logger.info("checkpoint %s: migrated from layout %d to %d", path, layout, SCHEMA_VERSION)
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


def db_key(key: str) -> str | bytes:
    """The key as SQLite stores it: text, or (when UTF-8 cannot encode it: lone
    surrogates) a BLOB of its ``surrogatepass`` bytes, which never equals a text key."""
    if key.isascii():
        return key
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogatepass")
    return key


def from_db_key(stored: str | bytes) -> str:
    return stored if isinstance(stored, str) else stored.decode("utf-8", "surrogatepass")


def explain(path: Path, exc: sqlite3.DatabaseError) -> CheckpointError:
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


def layout_of(db: sqlite3.Connection, path: Path) -> int:
    """The layout of an open file, for reading it as it is (see :func:`columns_of`).

    Raises:
        CheckpointError: a layout this release does not know.
    """
    row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    return _known_layout(path, row[0] if row else None)


def columns_of(layout: int) -> str:
    """The SELECT list reading a file of ``layout`` as rows of the current one."""
    missing = _MISSING.get(layout, ())
    return ", ".join(f"NULL AS {name}" if name in missing else name for name in COLUMNS.split(", "))


def _known_layout(path: Path, version: str | None) -> int:
    if version in ("1", "2", str(SCHEMA_VERSION)):
        return int(version)
    newer = version is not None and version.isdigit() and int(version) > SCHEMA_VERSION
    raise CheckpointError(
        f"checkpoint {path} has layout version {version}"
        + (", written by a newer langchain-batchkit" if newer else "")
        + f"; this release reads layouts 1 to {SCHEMA_VERSION}: use a new file, or the "
        "release that wrote it"
    )


def _migrate(db: sqlite3.Connection, layout: int) -> None:
    """Bring a layout 1 or 2 file to the current layout (inside the caller's transaction)."""
    if layout == 1:
        db.execute("ALTER TABLE items ADD COLUMN input_fp TEXT")
        db.execute("ALTER TABLE items ADD COLUMN run INTEGER")
    db.execute("ALTER TABLE items ADD COLUMN cost REAL")
    last = 0
    while rows := db.execute(  # chunk by chunk: only retried items have a history
        "SELECT rowid, history FROM items WHERE history IS NOT NULL AND rowid > ? "
        "ORDER BY rowid LIMIT 1000",
        (last,),
    ).fetchall():
        db.executemany(
            "UPDATE items SET history = ? WHERE rowid = ?",
            [(legacy_history(history), rowid) for rowid, history in rows],
        )
        last = rows[-1][0]


def _dump_error(error: ItemError) -> str:
    return json.dumps(error.to_dict())


def error_row(row: Row, cause: str) -> Row:
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


def load(text: str | None, *, lenient: bool) -> Any:
    if text is None:
        return None
    try:
        return loads_value(text)
    except Exception:
        if not lenient:
            raise
        logger.warning("a stored value cannot be loaded back; returning its stored JSON text")
        return text


def row_to_result(
    row: Row, *, lenient: bool = False, layout: int = SCHEMA_VERSION
) -> ItemResult[Any, Any]:
    """The result a row holds (``layout``: of the file it was read from, as is).

    Raises:
        Exception: a stored value cannot be decoded now, unless ``lenient`` (its
            stored JSON text is returned in its place, with a warning).
    """
    key, idx, ok, inp, out, err, attempts, latency, usage, history = row[:10]
    if history and layout < 3:
        history = legacy_history(history)
    return ItemResult(
        index=idx,
        input=load(inp, lenient=lenient),
        output=load(out, lenient=lenient) if ok else None,
        error=None if ok else _load_error(json.loads(err)),
        attempts=attempts,
        latency=latency,
        usage=TokenUsage(*json.loads(usage)) if usage else None,
        history=load_history(history, lenient=lenient),
        key=from_db_key(key),
        cost=row[13],
    )


def item_row(key: str, result: ItemResult[Any, Any], run: int) -> Row:
    """The ``items`` row of ``result`` under ``key``, written by run number ``run``."""
    usage = result.usage
    return (
        db_key(key),
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
        dump_history(result.history) if result.history else None,
        time.time(),
        fingerprint_value(result.input),
        run,
        result.cost,
    )


def write_each(db: sqlite3.Connection, rows: list[Row], path: object) -> None:
    """Write ``rows`` one by one: a row SQLite refuses is stored as a failed item
    instead (or, failing that too, skipped and logged), never costing its neighbours."""
    with transaction(db):
        for row in rows:
            try:
                with _savepoint(db):
                    db.execute(INSERT, row)
                continue
            except ROW_ERRORS as exc:
                cause = f"{type(exc).__name__}: {exc}"
            key = from_db_key(row[0])
            try:
                with _savepoint(db):
                    db.execute(INSERT, error_row(row, cause))
            except ROW_ERRORS as again:
                logger.error(
                    "checkpoint %s: the row for key %r cannot be written (%s), nor an "
                    "error row (%s: %s); skipped: the item runs again on resume",
                    path, key, cause, type(again).__name__, again,
                )  # fmt: skip
            else:
                logger.error(
                    "checkpoint %s: the row for key %r cannot be written (%s); stored as "
                    "a failed item instead (retry_failed=True runs it again)",
                    path, key, cause,
                )  # fmt: skip


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
