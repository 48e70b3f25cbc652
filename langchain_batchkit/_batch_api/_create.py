"""Creating a run's jobs exactly once, across crashes.

A job is written to the state file before its requests are sent, its uploaded file
as soon as it exists, and its provider id right after creation. A job the file holds
without an id was maybe created before a crash: it is looked for first (by metadata,
or at providers without it by size and time, never taking a job the runner holds),
and created only if it is not found. After a transient error while creating, the
same look comes first; then the items wait the loop's backoff, uncounted, before
they are sent again (at most :data:`CREATE_TRIES` times in a row).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from langchain_batchkit._batch_api._jobapi import JobClient, JobView
from langchain_batchkit._batch_api._options import BatchAPIOptions
from langchain_batchkit._batch_api._queue import JobQueue
from langchain_batchkit._batch_api._requests import PreparedRequest
from langchain_batchkit._batch_api._state import JobState
from langchain_batchkit._batch_api._store import JobStore
from langchain_batchkit._errors import redact_secrets
from langchain_batchkit._retry import is_transient

__all__ = ["CREATE_TRIES", "JobCreator"]

logger = logging.getLogger(__name__)

#: Creations in a row that may fail for a transient reason (a 5xx, a 429, a timeout)
#: before the items fail with the error: each try waits the loop's poll backoff
#: first (30 s, 60 s, ... up to 600 s), so about 40 minutes with the defaults.
CREATE_TRIES = 8


class JobCreator:
    """Creates, or finds again, the jobs of one round of a run (see the module docstring).

    Args:
        run_id: the run's id, set as job metadata (with the job key).
        requests: each item's prepared request.
        store: the state file.
        api: the provider calls.
        options: the user's job metadata.
        live: provider ids of jobs running now (and their rounds), shared with ``cancel()``.
        queue: the enqueued-token queue (told of created jobs and of refusals).
        round: the round the jobs belong to.
        settle: ends a job that could not be created: fails its items with the error
            (``None``: its items are pending again, uncounted: refused for the
            enqueued-token cap, or a transient error creating it).
        seen: provider ids of every job the runner created or found, in any round or
            run (never taken again for another job by :meth:`JobClient.find`).

    Attributes:
        backoff: a creation just failed: the loop waits before it creates again.
    """

    __slots__ = (
        "_api",
        "_failures",
        "_live",
        "_options",
        "_queue",
        "_requests",
        "_round",
        "_run_id",
        "_seen",
        "_settle",
        "_store",
        "backoff",
    )

    def __init__(
        self,
        *,
        run_id: str,
        requests: Mapping[int, PreparedRequest],
        store: JobStore,
        api: JobClient,
        options: BatchAPIOptions,
        live: dict[str, int],
        queue: JobQueue,
        round: int,
        settle: Callable[[JobState, Exception | None], None],
        seen: set[str],
    ) -> None:
        self._run_id = run_id
        self._requests = requests
        self._store = store
        self._api = api
        self._options = options
        self._live = live
        self._queue = queue
        self._round = round
        self._settle = settle
        self._seen = seen
        self._failures = 0  # creations failed in a row
        self.backoff = False

    def _lines(self, job: JobState) -> list[bytes]:
        return [
            self._api.line(cid, self._requests[idx].body_json)
            for cid, idx in job.members.items()
            if idx in self._requests
        ]

    def _metadata(self, job: JobState) -> dict[str, str]:
        return {**self._options.metadata, "batchkit_run": self._run_id, "batchkit_job": job.key}

    async def create(self, job: JobState) -> None:
        """Upload the job's requests and create it; on failure its items fail with the error."""
        lines = self._lines(job)
        if job.created_after is None:
            job.created_after = time.time()  # the provider's clock, for find()
            self._store.save(jobs=[job])

        def uploaded(file_id: str) -> None:
            job.input_file_id = file_id
            self._store.save(jobs=[job])

        try:
            view = await self._api.create(
                name=f"batchkit-{self._run_id}-{job.key}",
                lines=lines,
                input_file_id=job.input_file_id,
                metadata=self._metadata(job),
                on_upload=uploaded,
            )
        except Exception as exc:
            found = await self._created_anyway(job, exc)
            refusal = self._queue.refused_on_create(job, exc) if found is None else None
            if refusal is not None:
                self._settle(job, refusal.error)
                return
            if found is None:
                logger.warning(
                    "could not create job %s (%d requests): %s",
                    job.key,
                    len(job.members),
                    redact_secrets(repr(exc)),
                )
                job.status = "not_created"
                self._failures += 1
                self.backoff = True
                if is_transient(exc) and self._failures <= CREATE_TRIES:
                    self._settle(job, None)  # pending again, uncounted: wait, then again
                else:
                    self._settle(job, exc)
                return
            view = found
        self._record(job, view)
        logger.info(
            "created job %s (%s): %d requests, %d bytes",
            job.key,
            view.id,
            len(job.members),
            sum(map(len, lines)),
        )

    def _record(self, job: JobState, view: JobView) -> None:
        self._failures = 0
        self._seen.add(view.id)
        job.batch_id, job.status = view.id, view.status
        job.input_file_id = view.input_file_id or job.input_file_id
        self._store.save(jobs=[job])
        self._live[view.id] = self._round
        self._queue.created(job)

    @property
    def failures(self) -> int:
        """Creations failed in a row."""
        return self._failures

    async def _find(self, job: JobState) -> JobView | None:
        return await self._api.find(
            self._metadata(job),
            requests=len(job.members),
            created_after=job.created_after,
            known=self._store.batch_ids() | self._seen,
        )

    async def _created_anyway(self, job: JobState, exc: Exception) -> JobView | None:
        """After a transient error creating a job (a timeout, a dropped connection), the
        provider may have created it all the same: look before sending the items again."""
        if not is_transient(exc):
            return None
        try:
            return await self._find(job)
        except Exception as lookup:
            logger.warning(
                "could not look for job %s after a failed creation: %s",
                job.key,
                redact_secrets(repr(lookup)),
            )
            return None

    async def adopt(self, job: JobState) -> None:
        """A job written but maybe not created before a crash: find it, or send its items
        back to pending (uncounted), to be planned again through the queue."""
        found = await self._find(job)
        if found is not None:
            logger.info("found job %s created before a restart: %s", job.key, found.id)
            self._record(job, found)
            return
        logger.info("job %s was not created before the restart: its items go again", job.key)
        self._settle(job, None)
