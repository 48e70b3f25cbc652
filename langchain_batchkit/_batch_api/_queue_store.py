"""The enqueued-token queue's state in SQLite, so runners sharing a file share one queue.

Two tables, beside a run's own (in its state file by default, or in a file
several runners name as ``BatchAPIOptions.queue_path``):

* ``queue_jobs``: one row per open job of any runner: its owner (the run id),
  job key, model, prompt tokens, the tokens enqueued ahead of it when it was
  admitted, ``reserved`` (admitted, being created) or ``enqueued`` (created), and
  since when (wall seconds);
* ``queue_caps``: the caps learned from refusals, per model.

Every read-decide-write is one ``BEGIN IMMEDIATE`` transaction, so two runners
(two processes, or two connections in one) never both take the last room under
the cap. Rows of a runner that died do not block forever: a reservation lapses
after :data:`RESERVED_FOR` (creating a job takes minutes at most), an enqueued
job after :data:`ENQUEUED_FOR` (the provider ends every job within its 24 h
window), and a run that resumes takes its own rows back (:meth:`QueueStore.adopt`).
Learned caps lapse after :data:`LEARNED_FOR` (an organisation's tier may rise).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from langchain_batchkit._batch_api._errors import BatchStateError
from langchain_batchkit._batch_api._queue_policy import Cap, Verdict, admit, learn, tighter
from langchain_batchkit._sqlite import open_wal, transaction

__all__ = ["ENQUEUED_FOR", "LEARNED_FOR", "RESERVED_FOR", "QueueEntry", "QueueStore"]

logger = logging.getLogger(__name__)

#: Seconds a reservation holds room without its job being created.
RESERVED_FOR: Final = 3600.0
#: Seconds a created job holds room at most: the 24 h window, and an hour to finalize.
ENQUEUED_FOR: Final = 25 * 3600.0
#: Seconds a learned cap is trusted.
LEARNED_FOR: Final = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_jobs (
    owner TEXT NOT NULL,
    job TEXT NOT NULL,
    model TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    ahead INTEGER NOT NULL,
    state TEXT NOT NULL,
    since REAL NOT NULL,
    batch_id TEXT,
    PRIMARY KEY (owner, job)
);
CREATE INDEX IF NOT EXISTS queue_jobs_model ON queue_jobs (model);
CREATE TABLE IF NOT EXISTS queue_caps (
    model TEXT PRIMARY KEY,
    tokens INTEGER NOT NULL,
    exact INTEGER NOT NULL,
    source TEXT NOT NULL,
    since REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One open job in the queue (see the module docstring for the fields)."""

    owner: str
    job: str
    model: str
    tokens: int
    ahead: int
    state: str
    since: float


class QueueStore:
    """The queue tables of one file (``None``: in memory, private to one run).

    Open it in the thread of the loop that uses it; no call awaits inside a
    transaction, so runners on one loop never wait on each other's locks.

    Example:
        >>> store = QueueStore(None)
        >>> store.admit(owner="run-a", job="job-00001", model="m", tokens=60,
        ...             requests=3, configured=Cap(100, True, "max_enqueued_tokens"),
        ...             now=0.0).decision
        'admit'
        >>> store.admit(owner="run-b", job="job-00001", model="m", tokens=60,
        ...             requests=3, configured=Cap(100, True, "max_enqueued_tokens"),
        ...             now=0.0).decision
        'wait'
    """

    __slots__ = ("_conn", "path")

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = os.fspath(path) if path is not None else None
        try:
            if self.path is not None and os.path.dirname(self.path):
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._conn = open_wal(self.path or ":memory:", synchronous="FULL")
        except (sqlite3.Error, OSError) as exc:
            raise BatchStateError(f"cannot use {self.path!r} as a queue file: {exc}") from exc
        try:
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._conn.close()
            raise BatchStateError(f"cannot use {self.path!r} as a queue file: {exc}") from exc

    def close(self) -> None:
        self._conn.close()

    # -- reading -------------------------------------------------------------------------

    def learned(self, model: str, now: float) -> Cap | None:
        """The cap learned for ``model`` and still trusted, if any."""
        row = self._conn.execute(
            "SELECT tokens, exact, source FROM queue_caps WHERE model = ? AND since > ?",
            (model, now - LEARNED_FOR),
        ).fetchone()
        return None if row is None else Cap(int(row[0]), bool(row[1]), str(row[2]))

    def entries(self, model: str | None = None) -> list[QueueEntry]:
        """The open jobs (of ``model``), oldest first; expired ones included until the
        next admission removes them."""
        where, args = ("", ()) if model is None else (" WHERE model = ?", (model,))
        rows = self._conn.execute(
            "SELECT owner, job, model, tokens, ahead, state, since FROM queue_jobs"
            f"{where} ORDER BY since, owner, job",
            args,
        ).fetchall()
        return [QueueEntry(*row) for row in rows]

    # -- deciding and writing ------------------------------------------------------------

    def admit(
        self,
        *,
        owner: str,
        job: str,
        model: str,
        tokens: int,
        requests: int,
        configured: Cap | None,
        now: float,
    ) -> Verdict:
        """Decide on a job (see :func:`._queue_policy.admit`); an admitted one holds its
        tokens as ``reserved`` from now on."""
        with transaction(self._conn, "BEGIN IMMEDIATE"):
            self._expire(now)
            cap = tighter(configured, self.learned(model, now))
            enqueued = self._enqueued(model, owner, job)
            verdict = admit(tokens=tokens, requests=requests, enqueued=enqueued, cap=cap)
            if verdict.admitted:
                self._conn.execute(
                    "INSERT OR REPLACE INTO queue_jobs (owner, job, model, tokens, ahead, state, "
                    "since) VALUES (?, ?, ?, ?, ?, 'reserved', ?)",
                    (owner, job, model, tokens, enqueued, now),
                )
        return verdict

    def created(
        self,
        *,
        owner: str,
        job: str,
        model: str,
        tokens: int,
        now: float,
        batch_id: str | None = None,
    ) -> None:
        """The job exists at the provider (as ``batch_id``): its tokens stay enqueued until
        it is released."""
        with transaction(self._conn, "BEGIN IMMEDIATE"):
            updated = self._conn.execute(
                "UPDATE queue_jobs SET state = 'enqueued', since = ?, batch_id = ? "
                "WHERE owner = ? AND job = ?",
                (now, batch_id, owner, job),
            ).rowcount
            if not updated:  # its reservation lapsed meanwhile: it is enqueued all the same
                self._conn.execute(
                    "INSERT INTO queue_jobs (owner, job, model, tokens, ahead, state, since, "
                    "batch_id) VALUES (?, ?, ?, ?, 0, 'enqueued', ?, ?)",
                    (owner, job, model, tokens, now, batch_id),
                )

    def others(self, owner: str, model: str) -> list[tuple[str, str, str]]:
        """The jobs of ``model`` other runners hold as enqueued, with a provider id:
        (owner, job, id)."""
        rows = self._conn.execute(
            "SELECT owner, job, batch_id FROM queue_jobs WHERE owner != ? AND model = ? "
            "AND state = 'enqueued' AND batch_id IS NOT NULL ORDER BY since",
            (owner, model),
        )
        return [(str(o), str(j), str(b)) for o, j, b in rows]

    def release(self, *, owner: str, job: str) -> None:
        """The job ended (or was never created): its tokens leave the queue."""
        with transaction(self._conn, "BEGIN IMMEDIATE"):
            self._conn.execute("DELETE FROM queue_jobs WHERE owner = ? AND job = ?", (owner, job))

    def refused(
        self, *, owner: str, job: str, model: str, tokens: int, message: str, now: float
    ) -> tuple[Cap, int]:
        """The provider refused the job for its cap: learn the cap, release the job.

        Returns:
            The cap learned, and the tokens that were enqueued ahead of the job.
        """
        with transaction(self._conn, "BEGIN IMMEDIATE"):
            row = self._conn.execute(
                "SELECT ahead FROM queue_jobs WHERE owner = ? AND job = ?", (owner, job)
            ).fetchone()
            ahead = int(row[0]) if row is not None else self._enqueued(model, owner, job)
            cap = learn(self.learned(model, now), message=message, ahead=ahead, tokens=tokens)
            self._conn.execute(
                "INSERT OR REPLACE INTO queue_caps (model, tokens, exact, source, since) "
                "VALUES (?, ?, ?, ?, ?)",
                (model, cap.tokens, int(cap.exact), cap.source, now),
            )
            self._conn.execute("DELETE FROM queue_jobs WHERE owner = ? AND job = ?", (owner, job))
        return cap, ahead

    def adopt(self, *, owner: str, jobs: Mapping[str, tuple[str, int, bool]], now: float) -> None:
        """A run (re)starting takes its rows back: those of ``jobs`` (job key -> model,
        tokens, created) are kept or added (a created one as enqueued), every other row
        of ``owner`` is dropped."""
        with transaction(self._conn, "BEGIN IMMEDIATE"):
            mine = {
                job
                for (job,) in self._conn.execute(
                    "SELECT job FROM queue_jobs WHERE owner = ?", (owner,)
                )
            }
            self._conn.executemany(
                "DELETE FROM queue_jobs WHERE owner = ? AND job = ?",
                [(owner, job) for job in sorted(mine - set(jobs))],
            )
            for job, (model, tokens, made) in jobs.items():
                if job in mine and made:  # created just before the crash
                    self._conn.execute(
                        "UPDATE queue_jobs SET state = 'enqueued', since = ? "
                        "WHERE owner = ? AND job = ? AND state = 'reserved'",
                        (now, owner, job),
                    )
                elif job not in mine:
                    self._conn.execute(
                        "INSERT INTO queue_jobs (owner, job, model, tokens, ahead, state, since) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            owner,
                            job,
                            model,
                            tokens,
                            self._enqueued(model, owner, job),
                            "enqueued" if made else "reserved",
                            now,
                        ),
                    )

    def _enqueued(self, model: str, owner: str, job: str) -> int:
        row = self._conn.execute(
            "SELECT COALESCE(SUM(tokens), 0) FROM queue_jobs "
            "WHERE model = ? AND NOT (owner = ? AND job = ?)",
            (model, owner, job),
        ).fetchone()
        return int(row[0])

    def _expire(self, now: float) -> None:
        where = (
            "(state = 'reserved' AND since <= ?) OR (state = 'enqueued' AND since <= ?)",
            (now - RESERVED_FOR, now - ENQUEUED_FOR),
        )
        lapsed = self._conn.execute(
            f"SELECT owner, job, tokens FROM queue_jobs WHERE {where[0]}", where[1]
        ).fetchall()
        if lapsed:
            self._conn.execute(f"DELETE FROM queue_jobs WHERE {where[0]}", where[1])
        for owner, job, tokens in lapsed:
            logger.info(
                "queue: dropped job %s of %s (%d tokens): its runner stopped tracking it",
                job,
                owner,
                tokens,
            )
        self._conn.execute("DELETE FROM queue_caps WHERE since <= ?", (now - LEARNED_FOR,))
