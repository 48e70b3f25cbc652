"""SQLite state of a Batch API run, so a restarted process resumes instead of paying twice.

One file (stdlib ``sqlite3``, WAL journal) holds the run's identity (an id, the
input count, a format version), every job (key, provider id, input file, status,
collected or not), which custom_id of which job carries which item, and every
item (request digest, status, submissions, answer body, error, and the
:class:`Attempt` records of earlier submissions). A job is
written *before* its file is uploaded, and its provider id right after creation,
so a crash between the two is found again by the job's metadata. Without a path
the same tables live in memory. Nothing here ever holds an API key.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterable
from typing import cast

from langchain_batchkit._batch_api._errors import BatchStateError
from langchain_batchkit._batch_api._state import ItemState, ItemStatus, JobState
from langchain_batchkit._item import ItemError, dump_history, legacy_history, load_history
from langchain_batchkit._sqlite import open_wal, transaction

__all__ = ["JobStore", "running_batch_ids"]

logger = logging.getLogger(__name__)

#: Bumped when the layout changes. Formats 1 (history as a list of errors) and 2
#: (one round) are migrated in place; any other version is refused.
SCHEMA_VERSION = "3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    batch_id TEXT,
    input_file_id TEXT,
    status TEXT NOT NULL,
    collected INTEGER NOT NULL,
    round INTEGER NOT NULL DEFAULT 0,
    created_after REAL
);
CREATE TABLE IF NOT EXISTS members (
    job TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    line INTEGER NOT NULL,
    PRIMARY KEY (job, custom_id)
);
CREATE TABLE IF NOT EXISTS items (
    round INTEGER NOT NULL DEFAULT 0,
    idx INTEGER NOT NULL,
    digest TEXT NOT NULL,
    status TEXT NOT NULL,
    submissions INTEGER NOT NULL,
    job TEXT,
    response TEXT,
    error TEXT,
    retryable INTEGER NOT NULL,
    history TEXT NOT NULL,
    PRIMARY KEY (round, idx)
);
"""

#: Format 2 -> 3: every job and item belongs to round 0.
_MIGRATE_2 = """
ALTER TABLE jobs ADD COLUMN round INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN created_after REAL;
ALTER TABLE items RENAME TO items_2;
CREATE TABLE items (
    round INTEGER NOT NULL DEFAULT 0,
    idx INTEGER NOT NULL,
    digest TEXT NOT NULL,
    status TEXT NOT NULL,
    submissions INTEGER NOT NULL,
    job TEXT,
    response TEXT,
    error TEXT,
    retryable INTEGER NOT NULL,
    history TEXT NOT NULL,
    PRIMARY KEY (round, idx)
);
INSERT INTO items SELECT 0, idx, digest, status, submissions, job, response, error,
    retryable, history FROM items_2;
DROP TABLE items_2;
"""


class JobStore:
    """The persisted state of one run; open it inside the loop thread that uses it.

    Args:
        path: the SQLite file (created if missing), or ``None`` for memory only.

    Example:
        >>> store = JobStore(None)
        >>> store.begin(n_items=3).startswith("run-")
        True
    """

    __slots__ = ("_conn", "path")

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = os.fspath(path) if path is not None else None
        try:
            self._conn = open_wal(self.path or ":memory:", synchronous="FULL")
        except sqlite3.Error as exc:
            raise BatchStateError(f"cannot use {self.path!r} as a state file: {exc}") from exc
        try:
            self._conn.executescript(_SCHEMA)  # an older file's tables are kept as they are
        except sqlite3.Error as exc:
            self._conn.close()
            raise BatchStateError(f"cannot use {self.path!r} as a state file: {exc}") from exc

    def close(self) -> None:
        self._conn.close()

    # -- identity ------------------------------------------------------------------------

    def begin(self, *, n_items: int) -> str:
        """The run id: a new one for a fresh file, the stored one when resuming.

        Raises:
            BatchStateError: the file was written for another number of inputs or
                another format version.
        """
        meta = dict(self._conn.execute("SELECT name, value FROM meta").fetchall())
        if not meta:
            run_id = f"run-{uuid.uuid4().hex[:16]}"
            with transaction(self._conn, "BEGIN IMMEDIATE"):
                self._conn.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [("version", SCHEMA_VERSION), ("run_id", run_id), ("items", str(n_items))],
                )
            return run_id
        self._migrate(meta.get("version"))
        if meta.get("items") != str(n_items):
            raise BatchStateError(
                f"state file {self.path!r} belongs to a run of {meta.get('items')} inputs, "
                f"not {n_items}: use a new state file for other inputs"
            )
        return str(meta["run_id"])

    def _migrate(self, version: str | None) -> None:
        """Bring a file of an older format to this one, in place; refuse a newer one.

        Raises:
            BatchStateError: the file has a format this release does not know.
        """
        if version == "1":
            self._migrate_from_1()
            version = "2"
        if version == "2":
            self._migrate_from_2()
        elif version != SCHEMA_VERSION:
            raise BatchStateError(
                f"state file {self.path!r} has format {version!r}, this version of "
                f"langchain-batchkit reads {SCHEMA_VERSION!r} (and migrates '1' and '2'): it was "
                "written by another release; finish the run with that release or use a new file"
            )

    def migrated(self) -> JobStore:
        """This store, its file brought to this format first if it is older (for
        readers that do not :meth:`begin` a run, such as ``cancel()``)."""
        row = self._conn.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
        if row is not None:
            self._migrate(row[0])
        return self

    def _migrate_from_1(self) -> None:
        """Format 1 kept each item's earlier submissions as a list of errors: make each
        one an :class:`Attempt` of that error (all that was known), in one transaction."""
        with transaction(self._conn, "BEGIN IMMEDIATE"):
            rows = self._conn.execute("SELECT idx, history FROM items").fetchall()
            self._conn.executemany(
                "UPDATE items SET history = ? WHERE idx = ?",
                [(legacy_history(history), idx) for idx, history in rows],
            )
            self._conn.execute("UPDATE meta SET value = '2' WHERE name = 'version'")
        logger.info("state file %s: migrated from format 1 to 2", self.path)

    def _migrate_from_2(self) -> None:
        """Format 2 had one round: its jobs and items become round 0, in one transaction."""
        with transaction(self._conn, "BEGIN IMMEDIATE"):
            for statement in _MIGRATE_2.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(
                "UPDATE meta SET value = ? WHERE name = 'version'", (SCHEMA_VERSION,)
            )
        logger.info("state file %s: migrated from format 2 to %s", self.path, SCHEMA_VERSION)

    # -- reading -------------------------------------------------------------------------

    def load_items(self, round: int = 0) -> dict[int, ItemState]:
        rows = self._conn.execute(
            "SELECT idx, digest, status, submissions, job, response, error, retryable, history "
            "FROM items WHERE round = ?",
            (round,),
        ).fetchall()
        items: dict[int, ItemState] = {}
        for idx, digest, status, submissions, job, response, error, retryable, history in rows:
            items[idx] = ItemState(
                index=idx,
                digest=digest,
                status=cast(ItemStatus, status),
                submissions=submissions,
                job=job,
                response=json.loads(response) if response else None,
                error=ItemError.from_dict(json.loads(error)) if error else None,
                retryable=bool(retryable),
                history=list(load_history(history)),
                round=round,
            )
        return items

    def load_jobs(self, round: int | None = 0) -> list[JobState]:
        """The jobs of ``round`` (``None``: of every round), in creation order."""
        where, args = ("", ()) if round is None else (" WHERE round = ?", (round,))
        jobs = {
            key: JobState(key, {}, batch_id, input_file_id, status, bool(collected), rnd, after)
            for key, batch_id, input_file_id, status, collected, rnd, after in self._conn.execute(
                "SELECT key, batch_id, input_file_id, status, collected, round, created_after "
                f"FROM jobs{where} ORDER BY round, key",
                args,
            )
        }
        for job, custom_id, idx in self._conn.execute(
            "SELECT job, custom_id, idx FROM members ORDER BY job, line"
        ):
            if job in jobs:
                jobs[job].members[custom_id] = idx
        return list(jobs.values())

    def batch_ids(self) -> frozenset[str]:
        """The provider ids of every job the file holds, in any round."""
        rows = self._conn.execute("SELECT batch_id FROM jobs WHERE batch_id IS NOT NULL")
        return frozenset(row[0] for row in rows)

    def rounds(self) -> int:
        """How many rounds the file holds items of."""
        row = self._conn.execute("SELECT MAX(round) FROM items").fetchone()
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    # -- writing -------------------------------------------------------------------------

    def add_job(self, job: JobState, items: Iterable[ItemState]) -> None:
        """Record a job and its items' submission, before anything is uploaded."""
        with transaction(self._conn, "BEGIN IMMEDIATE"):
            self._write_job(job)
            self._conn.executemany(
                "INSERT INTO members (job, custom_id, idx, line) VALUES (?, ?, ?, ?)",
                [(job.key, cid, idx, line) for line, (cid, idx) in enumerate(job.members.items())],
            )
            self._write_items(items)

    def save(self, jobs: Iterable[JobState] = (), items: Iterable[ItemState] = ()) -> None:
        """Write jobs and items in one transaction."""
        with transaction(self._conn, "BEGIN IMMEDIATE"):
            for job in jobs:
                self._write_job(job)
            self._write_items(items)

    def _write_job(self, job: JobState) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO jobs (key, batch_id, input_file_id, status, collected, "
            "round, created_after) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                job.key,
                job.batch_id,
                job.input_file_id,
                job.status,
                int(job.collected),
                job.round,
                job.created_after,
            ),
        )

    def _write_items(self, items: Iterable[ItemState]) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO items (round, idx, digest, status, submissions, job, "
            "response, error, retryable, history) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    s.round,
                    s.index,
                    s.digest,
                    s.status,
                    s.submissions,
                    s.job,
                    json.dumps(s.response) if s.response is not None else None,
                    json.dumps(ItemError.to_dict(s.error)) if s.error is not None else None,
                    int(s.retryable),
                    dump_history(s.history),
                )
                for s in items
            ],
        )


def running_batch_ids(path: str | os.PathLike[str]) -> dict[str, int]:
    """Provider ids of the jobs a state file holds as created and not yet collected,
    with their rounds."""
    if not os.path.exists(path):
        return {}
    store = JobStore(path)
    try:
        return {
            job.batch_id: job.round
            for job in store.migrated().load_jobs(None)
            if job.batch_id is not None and not job.collected
        }
    finally:
        store.close()
