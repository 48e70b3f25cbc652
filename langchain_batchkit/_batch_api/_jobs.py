"""The job loop of one run: submit pending items, check jobs, collect results, resubmit.

One loop drives every job of a run::

    adopt jobs a crashed run left half-created (found by their metadata, never made twice)
    repeat:
        submit pending items in as few jobs as the per-job limits allow, each job only
        when the enqueued-token queue has room for it (the others wait, see ._queue)
        check every job not yet collected; collect those in a final status
        (an item whose request failed for a reason worth it becomes pending again;
        the items of a job refused for the enqueued-token cap too, uncounted)
        nothing to submit now and jobs still running: sleep (backoff), then check again

Each step writes the store before it moves on, so a process killed anywhere
resumes from the file without creating a job twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

from langchain_batchkit._batch_api._create import JobCreator
from langchain_batchkit._batch_api._errors import (
    BatchJobUnfinishedError,
    BatchRequestError,
)
from langchain_batchkit._batch_api._jobapi import JobClient, JobView, LineOutcome
from langchain_batchkit._batch_api._options import BatchAPIOptions
from langchain_batchkit._batch_api._queue import JobQueue
from langchain_batchkit._batch_api._requests import PreparedRequest, plan_lazily
from langchain_batchkit._batch_api._responses import body_of
from langchain_batchkit._batch_api._state import (
    ItemState,
    JobState,
    custom_id,
    job_key,
    settle_lines,
)
from langchain_batchkit._batch_api._store import JobStore
from langchain_batchkit._errors import redact_secrets
from langchain_batchkit._retry import is_transient

__all__ = ["AnswerSink", "JobLoop"]

logger = logging.getLogger(__name__)

_SHOWN = 20  # item indices named in a log line at most
_LOOK_AT_OTHERS = 3  # polls waiting for the queue between looks at other runners' jobs

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
        live: provider ids of jobs running now (and their rounds), shared with ``cancel()``.
        cancelled: tells whether ``cancel()`` was called (no new job is created then).
        sink: what is kept of answers (default: the bodies, whole).
        round: the round these items and jobs belong to (see :mod:`._run`).
        queue: the enqueued-token queue jobs are admitted through.
        seen: provider ids of every job the runner created or found (shared with
            its other rounds and runs; see :class:`JobCreator`).
        on_counts: told after every check how many items succeeded and failed for
            good so far (a progress bar).
    """

    __slots__ = (
        "_api",
        "_cancelled",
        "_creator",
        "_items",
        "_jobs",
        "_live",
        "_on_counts",
        "_options",
        "_queue",
        "_requests",
        "_round",
        "_run_id",
        "_sink",
        "_store",
        "_tag",
    )

    def __init__(
        self,
        *,
        run_id: str,
        items: dict[int, ItemState],
        jobs: list[JobState],
        requests: Mapping[int, PreparedRequest],
        store: JobStore,
        api: JobClient,
        options: BatchAPIOptions,
        live: dict[str, int],
        cancelled: Callable[[], bool],
        queue: JobQueue,
        sink: AnswerSink | None = None,
        round: int = 0,
        seen: set[str] | None = None,
        on_counts: Callable[[int, int], None] | None = None,
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
        self._sink = sink
        self._round = round
        self._queue = queue
        self._on_counts = on_counts
        seen = set() if seen is None else seen
        # the run's tag in custom_ids, where jobs have no metadata to tell runs apart
        self._tag = run_id.removeprefix("run-")[:8] if api.unique_ids else ""
        self._creator = JobCreator(
            run_id=run_id,
            requests=requests,
            store=store,
            api=api,
            options=options,
            live=live,
            queue=queue,
            round=round,
            settle=self._settle_all,
            seen=seen,
        )

    async def drive(self) -> None:
        """Run until no item is pending and no job is running."""
        self._queue.adopt(self._jobs)
        for job in self._jobs:
            if not job.collected and job.batch_id is None:
                await self._creator.adopt(job)
            elif not job.collected and job.batch_id is not None:
                self._live[job.batch_id] = self._round
        checks = 0
        while True:
            if await self._submit_pending():
                checks = 0
            for job in [job for job in self._jobs if not job.collected]:
                await self._check(job)
            self._report()
            backoff, self._creator.backoff = self._creator.backoff, False
            if self._has_pending():
                if not self._queue.waiting and not backoff:
                    continue  # to resubmit, or our job ended and made room in the queue
            elif all(job.collected for job in self._jobs):
                self._report()
                return
            checks += 1
            if self._queue.waiting and checks % _LOOK_AT_OTHERS == 0:
                await self._forget_ended_jobs_of_others()
            # after failed creations, wait as long as that many checks would
            wait = self._options.poll_wait(max(checks, self._creator.failures))
            await self._options.timer.sleep(wait)

    async def _forget_ended_jobs_of_others(self) -> None:
        """While our jobs wait for the queue, look at other runners' open jobs: one that
        ended at the provider (its runner was interrupted and is not collecting it) or
        that the provider does not know leaves the queue instead of blocking it for a day."""
        for owner, key, batch_id in self._queue.others():
            try:
                view = await self._api.retrieve(batch_id)
            except Exception as exc:
                if getattr(exc, "status_code", None) != 404:
                    continue  # another provider's or a passing error: leave it be
                ended = True
            else:
                ended = view.final
            if ended:
                logger.info(
                    "job %s of another run (%s) ended at the provider: it leaves the queue",
                    batch_id,
                    owner,
                )
                self._queue.forget(owner, key)

    def _report(self) -> None:
        """Tell ``on_counts`` how many items are settled for good, ok and failed."""
        if self._on_counts is None:
            return
        states = [item.status for item in self._items.values()]
        self._on_counts(states.count("succeeded"), states.count("failed"))

    def _has_pending(self) -> bool:
        return any(item.status == "pending" for item in self._items.values())

    # -- submitting ----------------------------------------------------------------------

    async def _submit_pending(self) -> bool:
        """Create jobs for pending items while the queue has room; whether any item moved."""
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
        max_bytes = self._options.max_bytes_per_job or self._api.max_bytes
        by_id: dict[str, ItemState] = {}
        size_of: dict[str, int] = {}

        def measured() -> Iterator[tuple[str, int, int]]:
            for state in pending:
                cid = custom_id(self._round, state, self._tag)
                by_id[cid] = state
                size_of[cid] = len(self._api.line(cid, self._requests[state.index].body_json))
                yield cid, size_of[cid], self._queue.tokens(state.index)

        moved = False
        for kind, custom_ids in plan_lazily(
            measured(),
            max_requests=self._options.max_requests_per_job or self._api.max_requests,
            max_bytes=max_bytes,
            max_tokens=self._queue.budget(pending[0].index),
        ):
            members = [by_id[cid] for cid in custom_ids]
            key = job_key(self._round, len(self._jobs) + 1)
            if kind == "too_large":
                error: Exception | None = BatchRequestError(
                    f"the request is {size_of[custom_ids[0]]} bytes; a job may hold at most "
                    f"{max_bytes} (max_bytes_per_job)",
                    code="request_too_large",
                )
            else:
                turn = self._queue.admit(key, [s.index for s in members])
                if turn.error is None and not turn.admitted:
                    break  # this job and the later ones wait for room
                error = turn.error
            moved = True
            if error is not None:
                for state in members:
                    state.fail(error, max_resubmits=self._options.max_resubmits, now=now)
                self._store.save(items=members)
                continue
            job = JobState(
                key=key,
                members={cid: by_id[cid].index for cid in custom_ids},
                round=self._round,
            )
            for state in members:
                state.submit(job.key)
            self._store.add_job(job, members)
            self._jobs.append(job)
            await self._creator.create(job)
            if self._creator.backoff:
                break  # the provider did not take it: the next waits the backoff
        return moved

    # -- checking and collecting -----------------------------------------------------------

    async def _check(self, job: JobState) -> None:
        assert job.batch_id is not None
        try:
            view = await self._api.retrieve(job.batch_id)
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
        if view.status != job.status:
            job.status = view.status
            self._store.save(jobs=[job])
            logger.debug("job %s (%s): %s", job.key, view.id, view.status)
        if view.final:
            await self._collect(job, view)

    async def _collect(self, job: JobState, batch: JobView) -> None:
        """Read the job's result lines and settle each of its items."""
        refusal = self._queue.refusal(job, batch)
        if refusal is not None:
            self._settle_all(job, refusal.error)
            return
        outcomes: dict[str, LineOutcome] = {}
        try:
            for line_outcome in await self._api.results(batch):
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
        carried = job.carried(self._items)
        if outcomes and carried and not any(cid in outcomes for cid in carried):
            logger.warning(
                "job %s (%s): none of its result lines is one of its requests (a job found "
                "after a crash that was not this one): its %d item(s) are sent again",
                job.key,
                batch.id,
                len(carried),
            )
            self._settle_all(job, None)
            return
        kept = self._keep(
            {idx: body for cid, idx in carried.items() if (body := body_of(outcomes.get(cid)))}
        )
        settled, ok, unfinished = settle_lines(
            job,
            batch,
            self._items,
            carried=carried,
            outcomes=outcomes,
            kept=kept,
            max_resubmits=self._options.max_resubmits,
            now=self._options.timer(),
        )
        if outcomes:
            logger.warning(
                "job %s: ignored %d result line(s) whose custom_id it did not carry",
                batch.id,
                len(outcomes),
            )
        job.collected = True
        self._store.save(jobs=[job], items=settled)
        self._live.pop(batch.id, None)
        self._queue.release(job)
        logger.info(
            "job %s (%s) %s: %d ok, %d failed",
            job.key,
            batch.id,
            batch.outcome,
            ok,
            len(settled) - ok,
        )
        if unfinished:
            logger.warning(
                "job %s (%s) %s: %d item(s) did not finish: %s%s",
                job.key,
                batch.id,
                batch.outcome,
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

    def _settle_all(self, job: JobState, exc: Exception | None) -> None:
        """Fail every item the job still carries with ``exc`` (``None``: the job was refused
        for the enqueued-token cap, its items are pending again as if never sent); the job
        is done with, and leaves the queue."""
        now = self._options.timer()
        settled = []
        for idx in job.members.values():
            state = self._items.get(idx)
            if state is not None and state.status == "submitted" and state.job == job.key:
                if exc is None:
                    state.withdraw()
                else:
                    state.fail(exc, max_resubmits=self._options.max_resubmits, now=now)
                settled.append(state)
        job.collected = True
        self._store.save(jobs=[job], items=settled)
        if job.batch_id is not None:
            self._live.pop(job.batch_id, None)
        self._queue.release(job)
