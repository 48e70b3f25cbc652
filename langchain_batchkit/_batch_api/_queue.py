"""One run's place in the enqueued-token queue: what the job loop asks before and after a job.

The loop plans pending items into jobs within :meth:`JobQueue.budget` (the
model's cap), asks :meth:`JobQueue.admit` before creating each job (jobs that
do not fit wait, and the loop polls its jobs with its usual backoff until one
ends: :meth:`release` makes room and ends the wait), records the creation
(:meth:`created`), and hands every finished job to :meth:`refusal` before
reading its results: a job the provider refused for its cap teaches the cap,
and its items are sent again later without counting a submission. Decisions are
:mod:`._queue_policy`'s; the shared state is :class:`._queue_store.QueueStore`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from langchain_batchkit._batch_api._errors import BatchRequestError
from langchain_batchkit._batch_api._jobapi import JobView
from langchain_batchkit._batch_api._options import BatchAPIOptions
from langchain_batchkit._batch_api._queue_policy import (
    REFUSAL_CODE,
    Cap,
    Verdict,
    is_refusal,
    prompt_tokens,
    tighter,
)
from langchain_batchkit._batch_api._queue_store import QueueStore
from langchain_batchkit._batch_api._requests import PreparedRequest
from langchain_batchkit._batch_api._state import JobState
from langchain_batchkit._clock import Clock

__all__ = ["JobQueue", "Refusal", "Turn"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Turn:
    """May a planned job be created now?

    Attributes:
        admitted: yes: it holds its tokens in the queue from now on.
        error: it never can (a single request over an exact cap): its item's error.
    """

    admitted: bool
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A job the provider refused for its enqueued-token cap.

    Attributes:
        cap: the cap learned from it.
        error: ``None``: its items are sent again later, the refusal not counted as a
            submission; else the error its single request fails with (it was refused
            with nothing of ours enqueued: it can never fit).
    """

    cap: Cap
    error: Exception | None = None


def wall_clock(timer: Clock) -> Callable[[], float]:
    """Unix seconds that move with ``timer`` (a fake clock moves them in tests).

    Example:
        >>> from langchain_batchkit._clock import SYSTEM_CLOCK
        >>> abs(wall_clock(SYSTEM_CLOCK)() - time.time()) < 1.0
        True
    """
    offset = time.time() - timer()
    return lambda: timer() + offset


class JobQueue:
    """The queue as one round of one run sees it (see the module docstring).

    Args:
        store: the queue's tables (shared by every runner given the same file).
        owner: the run's id: its rows in the queue.
        requests: each item's request (its model and prompt tokens are read from it).
        options: ``max_enqueued_tokens``, and the clock.

    Attributes:
        waiting: the last job asked to wait; cleared when a job of ours leaves the
            queue (room was made) or is refused (the plan changes).
    """

    __slots__ = (
        "_counts",
        "_now",
        "_options",
        "_owner",
        "_requests",
        "_store",
        "_told",
        "_waits_for",
        "waiting",
    )

    def __init__(
        self,
        store: QueueStore,
        *,
        owner: str,
        requests: Mapping[int, PreparedRequest],
        options: BatchAPIOptions,
    ) -> None:
        self._store = store
        self._owner = owner
        self._requests = requests
        self._options = options
        self._now = wall_clock(options.timer)
        self._counts: dict[int, tuple[str, int]] = {}
        self._told: str | None = None
        self.waiting = False
        self._waits_for: str | None = None

    # -- counting ------------------------------------------------------------------------

    def tokens(self, index: int) -> int:
        """The prompt tokens of item ``index``'s request (counted once)."""
        return self._count(index)[1]

    def _count(self, index: int) -> tuple[str, int]:
        counted = self._counts.get(index)
        if counted is None:
            request = self._requests.get(index)
            counted = prompt_tokens(request.body_json) if request is not None else ("", 0)
            self._counts[index] = counted
        return counted

    def _job(self, indices: Iterable[int]) -> tuple[str, int, int]:
        """The model (of the first request), prompt tokens and request count of a job."""
        counts = [self._count(index) for index in indices]
        model = counts[0][0] if counts else ""
        return model, sum(tokens for _, tokens in counts), len(counts)

    def _configured(self, model: str) -> Cap | None:
        cap = self._options.enqueued_cap(model)
        return None if cap is None else Cap(cap, exact=True, source="max_enqueued_tokens")

    def budget(self, index: int) -> int | None:
        """The most prompt tokens one job may hold, for the model of item ``index``'s
        request (``None``: no cap known)."""
        model = self._count(index)[0]
        cap = tighter(self._configured(model), self._store.learned(model, self._now()))
        return None if cap is None else cap.tokens

    # -- before and after a job ----------------------------------------------------------

    def admit(self, key: str, indices: Sequence[int]) -> Turn:
        """Ask the queue for room for job ``key`` of these items; log why it waits."""
        model, tokens, requests = self._job(indices)
        verdict = self._store.admit(
            owner=self._owner,
            job=key,
            model=model,
            tokens=tokens,
            requests=requests,
            configured=self._configured(model),
            now=self._now(),
        )
        self.waiting = verdict.decision == "wait"
        self._waits_for = model
        if self.waiting:
            self._tell(key, model, requests, verdict)
        elif verdict.decision == "split":
            logger.info(
                "job %s (%d requests) is split smaller for the enqueued-token cap of %s: %s",
                key,
                requests,
                model,
                verdict.reason(),
            )
        elif verdict.decision == "too_large":
            return Turn(False, _too_large(model, verdict))
        else:
            self._told = None
        return Turn(verdict.admitted)

    def _tell(self, key: str, model: str, requests: int, verdict: Verdict) -> None:
        """Say once (at INFO) that a job waits, and why; later polls only at DEBUG."""
        level = logging.DEBUG if self._told == key else logging.INFO
        self._told = key
        logger.log(
            level,
            "job %s (%d requests, %d prompt tokens) waits for the enqueued-token queue of %s: "
            "%s; it is sent when open jobs end",
            key,
            requests,
            verdict.tokens,
            model,
            verdict.reason(),
        )

    def created(self, job: JobState) -> None:
        """The job exists at the provider: its tokens are enqueued."""
        model, tokens, _ = self._job(job.members.values())
        self._store.created(
            owner=self._owner,
            job=job.key,
            model=model,
            tokens=tokens,
            now=self._now(),
            batch_id=job.batch_id,
        )

    def others(self) -> list[tuple[str, str, str]]:
        """Other runners' open jobs of the model ours wait for (so of our provider, whose
        client can look them up): (owner, job key, provider id)."""
        if self._waits_for is None:
            return []
        return self._store.others(self._owner, self._waits_for)

    def forget(self, owner: str, job: str) -> None:
        """Another runner's job that ended at the provider while its runner was gone (an
        interrupted run that will not resume): its tokens leave the queue."""
        self._store.release(owner=owner, job=job)
        self.waiting = False

    def release(self, job: JobState) -> None:
        """The job ended or was never created: room for the next one."""
        self._store.release(owner=self._owner, job=job.key)
        self.waiting = False

    def adopt(self, jobs: Iterable[JobState]) -> None:
        """A resumed run takes back the rows of its jobs still open, and drops the rest."""
        self._store.adopt(
            owner=self._owner,
            jobs={
                job.key: (*self._job(job.members.values())[:2], job.batch_id is not None)
                for job in jobs
                if not job.collected
            },
            now=self._now(),
        )

    # -- refusals ------------------------------------------------------------------------

    def refusal(self, job: JobState, view: JobView) -> Refusal | None:
        """A failed job refused for the cap: learn from it; ``None`` for any other job."""
        if view.outcome != "failed":
            return None
        for code, message in view.errors.values():
            if is_refusal(code, message):
                return self._refused(job, message)
        return None

    def refused_on_create(self, job: JobState, exc: Exception) -> Refusal | None:
        """A create call answered with the cap's error (rather than a failed job)."""
        code = getattr(exc, "code", None)
        message = str(exc)
        if is_refusal(code if isinstance(code, str) else None, message):
            return self._refused(job, message)
        return None

    def _refused(self, job: JobState, message: str) -> Refusal:
        model, tokens, requests = self._job(job.members.values())
        cap, ahead = self._store.refused(
            owner=self._owner,
            job=job.key,
            model=model,
            tokens=tokens,
            message=message,
            now=self._now(),
        )
        self.waiting = False
        if requests == 1 and ahead == 0:
            logger.warning(
                "job %s: its one request (%d prompt tokens) was refused for the enqueued-token "
                "limit of %s with nothing else enqueued; it fails",
                job.key,
                tokens,
                model,
            )
            error = BatchRequestError(
                f"the request ({tokens:,} prompt tokens) was refused for the enqueued-token "
                f"limit of {model} with no other job enqueued: {message}",
                code=REFUSAL_CODE,
                batch_id=job.batch_id,
            )
            return Refusal(cap, error)
        logger.warning(
            "job %s (%s, %d requests, %d prompt tokens) was refused for the enqueued-token "
            "limit of %s (%d tokens enqueued ahead of it); cap now %d tokens (%s): its "
            "requests wait and are sent again, no submission counted",
            job.key,
            job.batch_id,
            requests,
            tokens,
            model,
            ahead,
            cap.tokens,
            cap.source,
        )
        return Refusal(cap)


def _too_large(model: str, verdict: Verdict) -> BatchRequestError:
    cap = verdict.cap
    assert cap is not None
    return BatchRequestError(
        f"the request is {verdict.tokens:,} prompt tokens; the enqueued-token cap of {model} "
        f"is {cap.tokens:,} ({cap.source}), so no job can hold it",
        code=REFUSAL_CODE,
    )
