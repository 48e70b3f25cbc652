"""The job loop of one run: submit pending items, check jobs, collect results, resubmit.

One loop drives every job of a run::

    adopt jobs a crashed run left half-created (found by their metadata, never made twice)
    repeat:
        submit pending items in as few jobs as the per-job limits allow
        check every job not yet collected; collect those in a final status
        (an item whose request failed for a reason worth it becomes pending again)
        nothing pending and jobs still running: sleep (backoff), then check again

Each step writes the store before it moves on, so a process killed anywhere
resumes from the file without creating a job twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from openai.types import Batch

from langchain_batchkit._batch_api._errors import (
    BatchJobUnfinishedError,
    BatchRequestError,
)
from langchain_batchkit._batch_api._options import BatchAPIOptions
from langchain_batchkit._batch_api._provider import OpenAIBatches
from langchain_batchkit._batch_api._requests import (
    ENDPOINT,
    PreparedRequest,
    plan_jobs,
    request_line,
)
from langchain_batchkit._batch_api._responses import (
    LineOutcome,
    body_of,
    line_errors,
    not_run,
    parse_lines,
)
from langchain_batchkit._batch_api._state import FINAL_STATUSES, ItemState, JobState
from langchain_batchkit._batch_api._store import JobStore
from langchain_batchkit._errors import redact_secrets
from langchain_batchkit._retry import is_transient

__all__ = ["AnswerSink", "JobLoop"]

logger = logging.getLogger(__name__)

_SHOWN = 20  # item indices named in a log line at most

#: Takes a collected job's answer bodies by item index, before the state file records
#: them, and says what the file keeps of each: a (smaller) body, or an exception that
#: fails that item. Embeddings put their vectors in their own store this way.
AnswerSink: TypeAlias = Callable[
    [Mapping[int, Mapping[str, Any]]], Mapping[int, "dict[str, Any] | Exception"]
]


class JobLoop:
    """Drives the jobs of one run until every item has succeeded or failed for good.

    Args:
        run_id: the run's id, set as job metadata (with the job key) to find jobs again.
        items: the items that go to the model, by index (resumed ones as stored).
        jobs: the jobs the store already holds (empty for a fresh run).
        requests: each item's prepared request.
        store: where every step is written before the next.
        api: the provider calls.
        options: limits, polling and resubmission.
        live: provider ids of jobs running now, shared with ``cancel()``.
        cancelled: tells whether ``cancel()`` was called (no new job is created then).
        endpoint: the URL of every request line and job.
        sink: what is kept of answers (default: the bodies, whole).
    """

    __slots__ = (
        "_api",
        "_cancelled",
        "_endpoint",
        "_items",
        "_jobs",
        "_live",
        "_options",
        "_requests",
        "_run_id",
        "_sink",
        "_store",
    )

    def __init__(
        self,
        *,
        run_id: str,
        items: dict[int, ItemState],
        jobs: list[JobState],
        requests: Mapping[int, PreparedRequest],
        store: JobStore,
        api: OpenAIBatches,
        options: BatchAPIOptions,
        live: set[str],
        cancelled: Callable[[], bool],
        endpoint: str = ENDPOINT,
        sink: AnswerSink | None = None,
    ) -> None:
        self._run_id = run_id
        self._items = items
        self._jobs = jobs
        self._requests = requests
        self._store = store
        self._api = api
        self._options = options
        self._live = live
        self._cancelled = cancelled
        self._endpoint = endpoint
        self._sink = sink

    async def drive(self) -> None:
        """Run until no item is pending and no job is running."""
        for job in self._jobs:
            if not job.collected and job.batch_id is None:
                await self._adopt(job)
            elif not job.collected and job.batch_id is not None:
                self._live.add(job.batch_id)
        checks = 0
        while True:
            if await self._submit_pending():
                checks = 0
            active = [job for job in self._jobs if not job.collected]
            if not active:
                if self._has_pending():
                    continue
                return
            for job in active:
                await self._check(job)
            if self._has_pending() or all(job.collected for job in self._jobs):
                continue
            checks += 1
            await self._options.timer.sleep(self._options.poll_wait(checks))

    def _has_pending(self) -> bool:
        return any(item.status == "pending" for item in self._items.values())

    # -- submitting ----------------------------------------------------------------------

    async def _submit_pending(self) -> bool:
        pending = sorted(
            (s for s in self._items.values() if s.status == "pending"), key=lambda s: s.index
        )
        if not pending:
            return False
        now = self._options.timer()
        if self._cancelled():
            for state in pending:
                state.fail(
                    BatchJobUnfinishedError(
                        "cancel() was called before this item's job was created",
                        status="cancelled",
                        batch_id=None,
                    ),
                    max_resubmits=self._options.max_resubmits,
                    now=now,
                )
            self._store.save(items=pending)
            return True
        by_id = {f"{s.index}-{s.submissions + 1}": s for s in pending}
        sizes = [
            (cid, len(request_line(cid, self._requests[s.index], self._endpoint)))
            for cid, s in by_id.items()
        ]
        planned, too_large = plan_jobs(
            sizes,
            max_requests=self._options.max_requests_per_job,
            max_bytes=self._options.max_bytes_per_job,
        )
        size_of = dict(sizes)
        for cid in too_large:
            size = size_of[cid]
            by_id[cid].fail(
                BatchRequestError(
                    f"the request is {size} bytes; a job's input file may hold at most "
                    f"{self._options.max_bytes_per_job} (max_bytes_per_job)",
                    code="request_too_large",
                ),
                max_resubmits=self._options.max_resubmits,
                now=now,
            )
        if too_large:
            self._store.save(items=[by_id[cid] for cid in too_large])
        for custom_ids in planned:
            job = JobState(
                key=f"job-{len(self._jobs) + 1:05d}",
                members={cid: by_id[cid].index for cid in custom_ids},
            )
            members = [by_id[cid] for cid in custom_ids]
            for state in members:
                state.submit(job.key)
            self._store.add_job(job, members)
            self._jobs.append(job)
            await self._create(job)
        return True

    def _input_file(self, job: JobState) -> bytes:
        return b"".join(
            request_line(cid, self._requests[idx], self._endpoint)
            for cid, idx in job.members.items()
            if idx in self._requests
        )

    def _metadata(self, job: JobState) -> dict[str, str]:
        return {**self._options.metadata, "batchkit_run": self._run_id, "batchkit_job": job.key}

    async def _create(self, job: JobState) -> None:
        """Upload the job's file and create it; on failure its items fail with the error."""
        data = self._input_file(job)
        try:
            if job.input_file_id is None:
                job.input_file_id = await self._api.upload(
                    f"batchkit-{self._run_id}-{job.key}.jsonl", data
                )
                self._store.save(jobs=[job])
            batch = await self._api.create(
                job.input_file_id,
                window=self._options.completion_window,
                metadata=self._metadata(job),
                endpoint=self._endpoint,
            )
        except Exception as exc:
            found = await self._created_anyway(job, exc)
            if found is None:
                logger.warning(
                    "could not create job %s (%d requests): %s",
                    job.key,
                    len(job.members),
                    redact_secrets(repr(exc)),
                )
                job.status = "not_created"
                self._settle_all(job, exc)
                return
            batch = found
        self._record_created(job, batch)
        logger.info(
            "created job %s (%s): %d requests, %d bytes",
            job.key,
            batch.id,
            len(job.members),
            len(data),
        )

    def _record_created(self, job: JobState, batch: Batch) -> None:
        job.batch_id, job.input_file_id, job.status = batch.id, batch.input_file_id, batch.status
        self._store.save(jobs=[job])
        self._live.add(batch.id)

    async def _created_anyway(self, job: JobState, exc: Exception) -> Batch | None:
        """After a transient error creating a job (a timeout, a dropped connection), the
        provider may have created it all the same: look before sending the items again."""
        if job.input_file_id is None or not is_transient(exc):
            return None
        try:
            return await self._api.find(self._metadata(job))
        except Exception as lookup:
            logger.warning(
                "could not look for job %s after a failed creation: %s",
                job.key,
                redact_secrets(repr(lookup)),
            )
            return None

    async def _adopt(self, job: JobState) -> None:
        """A job written but maybe not created before a crash: find it, or create it now."""
        found = await self._api.find(self._metadata(job))
        if found is not None:
            logger.info("found job %s created before a restart: %s", job.key, found.id)
            self._record_created(job, found)
            return
        await self._create(job)

    # -- checking and collecting -----------------------------------------------------------

    async def _check(self, job: JobState) -> None:
        assert job.batch_id is not None
        try:
            batch = await self._api.retrieve(job.batch_id)
        except Exception as exc:
            if is_transient(exc):
                logger.warning(
                    "checking job %s failed, will try again: %s",
                    job.batch_id,
                    redact_secrets(repr(exc)),
                )
                return
            self._settle_all(job, exc)
            return
        if batch.status != job.status:
            job.status = batch.status
            self._store.save(jobs=[job])
            logger.debug("job %s (%s): %s", job.key, batch.id, batch.status)
        if batch.status in FINAL_STATUSES:
            await self._collect(job, batch)

    async def _collect(self, job: JobState, batch: Batch) -> None:
        """Read the job's output and error files and settle each of its items."""
        outcomes: dict[str, LineOutcome] = {}
        try:
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    data = await self._api.download(file_id)
                    for line_outcome in parse_lines(data, batch_id=batch.id, status=batch.status):
                        outcomes.setdefault(line_outcome.custom_id, line_outcome)
        except Exception as exc:
            if is_transient(exc):
                logger.warning(
                    "downloading the results of job %s failed, will try again: %s",
                    batch.id,
                    redact_secrets(repr(exc)),
                )
                return
            self._settle_all(job, exc)
            return
        errors_by_line = line_errors(batch)
        now = self._options.timer()
        settled: list[ItemState] = []
        unfinished: list[int] = []
        ok = 0
        carried = {
            cid: idx
            for cid, idx in job.members.items()
            if (state := self._items.get(idx)) is not None
            and state.status == "submitted"
            and state.job == job.key
        }
        kept = self._keep(
            {idx: body for cid, idx in carried.items() if (body := body_of(outcomes.get(cid)))}
        )
        for line, (cid, idx) in enumerate(job.members.items(), start=1):
            if cid not in carried:
                continue
            state = self._items[idx]
            outcome = outcomes.pop(cid) if cid in outcomes else None
            answer = kept.get(idx)
            if isinstance(answer, dict):
                state.succeed(answer, now)
                ok += 1
            else:
                error: Exception | None = answer
                if error is None and outcome is not None:
                    error = outcome.error
                if error is None:
                    error = not_run(batch, line, errors_by_line)
                if isinstance(error, BatchJobUnfinishedError):
                    unfinished.append(idx)
                state.fail(error, max_resubmits=self._options.max_resubmits, now=now)
            settled.append(state)
        if outcomes:
            logger.warning(
                "job %s: ignored %d result line(s) whose custom_id it did not carry",
                batch.id,
                len(outcomes),
            )
        job.collected = True
        self._store.save(jobs=[job], items=settled)
        self._live.discard(batch.id)
        logger.info(
            "job %s (%s) %s: %d ok, %d failed",
            job.key,
            batch.id,
            batch.status,
            ok,
            len(settled) - ok,
        )
        if unfinished:
            logger.warning(
                "job %s (%s) %s: %d item(s) did not finish: %s%s",
                job.key,
                batch.id,
                batch.status,
                len(unfinished),
                sorted(unfinished)[:_SHOWN],
                " ..." if len(unfinished) > _SHOWN else "",
            )

    def _keep(
        self, answers: Mapping[int, Mapping[str, Any]]
    ) -> Mapping[int, dict[str, Any] | Exception]:
        """What the state file keeps of each answer (the sink's say, or the body)."""
        if self._sink is None or not answers:
            return {idx: dict(body) for idx, body in answers.items()}
        return self._sink(answers)

    def _settle_all(self, job: JobState, exc: Exception) -> None:
        """Fail every item the job still carries with ``exc``; the job is done with."""
        now = self._options.timer()
        settled = []
        for idx in job.members.values():
            state = self._items.get(idx)
            if state is not None and state.status == "submitted" and state.job == job.key:
                state.fail(exc, max_resubmits=self._options.max_resubmits, now=now)
                settled.append(state)
        job.collected = True
        self._store.save(jobs=[job], items=settled)
        if job.batch_id is not None:
            self._live.discard(job.batch_id)
