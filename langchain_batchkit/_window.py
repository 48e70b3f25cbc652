"""The sliding window: which item starts next, what finished, what is handed out.

Written once, without I/O, and run by two thin drivers (``_drivers.py``): the
async one starts tasks on the caller's loop, the sync one hands items to worker
threads. The window never materialises the input: the driver feeds it a chunk
when it has room, so memory holds the items in flight, a read-ahead of one
checkpoint chunk, and (in ordered mode) at most ``reorder_buffer`` finished items.

A retry's wait does not hold a slot: the failed item goes back with a
not-before time, and other items start meanwhile. Started-but-waiting items are
capped too (at the window size), so a burst of 429s slows the run down instead
of starting every input.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Generic, TypeVar

from langchain_batchkit._attempts import ItemRun, RunPlan
from langchain_batchkit._concurrency import AdaptiveConcurrency
from langchain_batchkit._errors import dollars
from langchain_batchkit._flex import is_flex_unavailable
from langchain_batchkit._progress import ProgressReporter
from langchain_batchkit._results import ItemError, ItemResult
from langchain_batchkit._resume import Resume
from langchain_batchkit._retry import is_rate_limit
from langchain_batchkit._timeline import Timeline

__all__ = ["Window"]

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


class Window(Generic[InputT, OutputT]):
    """The scheduling state of one run; both drivers call the same methods.

    Args:
        plan: the run's plan (makes items, knows the chain and the clock).
        concurrency: the most items in flight (when ``adaptive`` is not given).
        adaptive: decides the window size from pushback instead, when given.
        resume: a checkpoint to skip finished items from and record new ones to.
        reporter: counts finished items and retries (bar and callback).
        ordered: hand results out in input order.
        reorder_buffer: the most finished items held back to restore the order.
        timeline: records when attempts start and end (see :class:`Timeline`).
        drain_when_stopped: when the run stops early (its budget is spent), read the
            rest of the input and report each as not run (a sized input); otherwise
            stop reading and note where (``stopped_at``).
    """

    __slots__ = (
        "_adaptive",
        "_concurrency",
        "_delayed",
        "_drain",
        "_fresh",
        "_handing",
        "_held",
        "_next_out",
        "_plan",
        "_ready",
        "_reorder_buffer",
        "_reporter",
        "_resume",
        "_seq",
        "_stop_handled",
        "_timeline",
        "_unread",
        "exhausted",
        "in_flight",
        "ordered",
        "read_ahead",
        "source_error",
        "stopped_at",
    )

    def __init__(
        self,
        plan: RunPlan[InputT, OutputT],
        *,
        concurrency: int,
        adaptive: AdaptiveConcurrency | None = None,
        resume: Resume | None = None,
        reporter: ProgressReporter | None = None,
        ordered: bool = False,
        reorder_buffer: int = 1000,
        timeline: Timeline | None = None,
        drain_when_stopped: bool = False,
    ) -> None:
        self._plan = plan
        self._drain = drain_when_stopped
        self._stop_handled = False
        self._unread = 0  # the index after the last input read
        self.stopped_at: int | None = None
        self._timeline = timeline
        self._concurrency = concurrency
        self._adaptive = adaptive
        self._resume = resume
        self._reporter = reporter
        self.ordered = ordered
        self._reorder_buffer = reorder_buffer
        self.read_ahead = resume.chunk_size if resume is not None else 1
        self._fresh: deque[ItemRun[InputT, OutputT]] = deque()
        self._delayed: list[tuple[float, int, ItemRun[InputT, OutputT]]] = []
        # (read order, checkpoint key if the result is new and must be recorded, result)
        self._ready: deque[tuple[int, str | None, ItemResult[InputT, OutputT]]] = deque()
        self._held: dict[int, ItemResult[InputT, OutputT]] = {}
        self._handing: ItemResult[InputT, OutputT] | None = None
        self._next_out = 0
        self._seq = 0
        self.in_flight = 0
        self.exhausted = False
        self.source_error: BaseException | None = None

    # -- input ----------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """Items that may be in flight now."""
        return max(1, self._adaptive.current() if self._adaptive is not None else self._concurrency)

    @property
    def most_workers(self) -> int:
        """The largest the window can ever grow (threads the sync driver may need)."""
        if self._adaptive is not None:
            return max(1, int(self._adaptive.ceiling))
        return self._concurrency

    def wants_input(self, now: float) -> bool:
        """Read more only when a new item could start and nothing else is waiting."""
        if self._stopping():
            return not self.exhausted and not self._ready  # read only to report as not run
        return (
            not self.exhausted
            and not self._fresh
            and not self._ready
            and self.in_flight < self.limit
            and self.in_flight + len(self._delayed) < 2 * self.limit
            and not self._due_retry(now)
        )

    def feed(
        self, pairs: list[tuple[int, InputT]], *, exhausted: bool, error: BaseException | None
    ) -> None:
        """Stage inputs read by the driver; resumed items (and items whose ``key=``
        raised, as errors) go straight out."""
        if exhausted:
            self.exhausted = True
            self.source_error = error
        if pairs:
            self._unread = max(self._unread, pairs[-1][0] + 1)
        resume = self._resume
        if resume is None:
            for index, value in pairs:
                self._fresh.append(self._plan.new_item(self._seq, index, value, None))
                self._seq += 1
            self._stopping()
            return
        staged = []
        for index, value in pairs:
            key = resume.key_of(index, value)
            if isinstance(key, ItemError):  # fails alone, never called nor checkpointed
                self._ready.append((self._seq, None, ItemResult(index, value, None, key, 0)))
            else:
                staged.append(self._plan.new_item(self._seq, index, value, key))
            self._seq += 1
        for item, old in resume.match(staged):
            if old is None:
                self._fresh.append(item)
            else:  # finished in an earlier run: not called again
                self._ready.append((item.seq, None, old))
        self._stopping()

    # -- stopping early (a spent budget) --------------------------------------------------

    def _stopping(self) -> bool:
        """Has the run stopped? The first time: items not started, and retries not
        started again, are reported as not run; a lazy input is read no further."""
        if not self._plan.stopped:
            return False
        plan = self._plan
        while self._fresh:
            item = self._fresh.popleft()
            self._ready.append((item.seq, item.key, plan.not_run(item, _not_started(plan))))
        while self._delayed:
            _, _, item = heapq.heappop(self._delayed)
            reason = item.last_error or _not_started(plan)
            self._ready.append((item.seq, item.key, plan.not_run(item, reason)))
        if not self._stop_handled:
            self._stop_handled = True
            if not self._drain and not self.exhausted:
                self.exhausted = True
                self.stopped_at = self._unread
        return True

    def flush_due(self) -> float | None:
        """Commit checkpoint rows that waited ``flush_interval``; real seconds until
        the next buffered rows are due (``None``: nothing to wake up for)."""
        return self._resume.checkpoint.flush_if_due() if self._resume is not None else None

    def flush_now(self) -> None:
        """Nothing is in flight: commit what is buffered."""
        if self._resume is not None:
            self._resume.checkpoint.flush()

    # -- starting -------------------------------------------------------------------------

    def next_to_start(self, now: float) -> ItemRun[InputT, OutputT] | None:
        """The next item to run an attempt of now (a due retry first), or ``None``."""
        if self.in_flight >= self.limit or self._stopping():
            return None
        if self._due_retry(now):
            _, _, item = heapq.heappop(self._delayed)
            if self._reporter is not None:
                self._reporter.retry_started()
        elif self._fresh and self._may_start_fresh():
            item = self._fresh.popleft()
        else:
            return None
        self.in_flight += 1
        if self._timeline is not None:
            self._timeline.started(now, self.in_flight)
        return item

    def next_ready(self, now: float) -> bool:
        """Could an item start right now?"""
        if self.in_flight >= self.limit or self._stopping():
            return False
        return self._due_retry(now) or bool(self._fresh and self._may_start_fresh())

    def wait_time(self, now: float) -> float | None:
        """Seconds until a delayed retry may start (``None``: nothing is waiting on time)."""
        if not self._delayed or self.in_flight >= self.limit:
            return None
        return max(0.0, self._delayed[0][0] - now)

    def timer_fired(self) -> None:
        """The driver slept the :meth:`wait_time` it was given: the earliest retry is due.

        Trusting the sleep (rather than re-reading the clock) keeps a fake or early
        sleep from turning into a busy loop.
        """
        if self._delayed:
            _, seq, item = self._delayed[0]
            self._delayed[0] = (-math.inf, seq, item)

    def _due_retry(self, now: float) -> bool:
        return bool(self._delayed) and self._delayed[0][0] <= now

    def _may_start_fresh(self) -> bool:
        limit = self.limit
        if self.in_flight + len(self._delayed) >= 2 * limit:
            return False  # enough items are waiting out a backoff already
        return not (self.ordered and self._fresh[0].seq - self._next_out >= self._reorder_buffer)

    # -- finishing ------------------------------------------------------------------------

    def attempt_done(
        self, item: ItemRun[InputT, OutputT], verdict: ItemResult[InputT, OutputT] | float
    ) -> None:
        """An attempt ended: the item finished, or waits ``verdict`` seconds to retry."""
        self.in_flight -= 1
        timeline = self._timeline
        if isinstance(verdict, ItemResult):
            if self._adaptive is not None:
                self._adaptive.observe(pushed_back(verdict) and not verdict.ok)
            self._ready.append((item.seq, item.key, verdict))
            if timeline is not None:  # the end time is the one the attempt measured
                limited = verdict.error is not None and _is_rate_limit_error(verdict.error)
                timeline.finished(
                    item.started + verdict.latency,
                    self.in_flight,
                    verdict,
                    cap=self._cap(),
                    rate_limited=limited,
                )
            return
        error = item.last_error
        limited = error is not None and _is_rate_limit_error(error)
        if self._adaptive is not None and limited:
            self._adaptive.observe(True)  # slow the rest of the batch at the first 429
        heapq.heappush(self._delayed, (item.not_before, item.seq, item))
        self._stopping()  # a stopped run starts no attempt again
        if self._reporter is not None and item.last_error is not None:
            self._reporter.retry_scheduled(item.index, item.last_error)
        if timeline is not None:
            ended = item.not_before - verdict
            timeline.retried(ended, self.in_flight, cap=self._cap(), rate_limited=limited)

    def _cap(self) -> int:
        return self._adaptive.current() if self._adaptive is not None else self._concurrency

    def deliver(self) -> Iterator[ItemResult[InputT, OutputT]]:
        """Hand out finished results (recorded, counted, and in order if asked)."""
        while self._ready:
            seq, key, result = self._ready.popleft()
            result = self._settle(key, result)
            if not self.ordered:
                self._handing = None
                yield result
                continue
            self._held[seq] = result
            while self._next_out in self._held:
                ready = self._held.pop(self._next_out)
                self._next_out += 1
                yield ready

    def _settle(
        self, key: str | None, result: ItemResult[InputT, OutputT]
    ) -> ItemResult[InputT, OutputT]:
        if key is not None and self._resume is not None:
            result = replace(result, key=key)
            self._record(key, result)
        elif self._resume is not None and self._timeline is not None:
            self._timeline.resumed += 1  # returned from the checkpoint, not run
        if self._reporter is not None:
            # A callback may raise KeyboardInterrupt: the result is kept (see close).
            self._handing = result if not self.ordered else None
            self._reporter.item_done(result)
        return result

    def _record(self, key: str, result: ItemResult[InputT, OutputT]) -> None:
        """Store a new result; one not run is not stored, so a resumed run runs it."""
        assert self._resume is not None
        checkpoint = self._resume.checkpoint
        if result.not_run:
            checkpoint.unstage(key)
            return
        checkpoint.record(key, result)
        if self._plan.budget is not None:
            self._plan.budget.recorded(str(checkpoint.path), result.cost)

    @property
    def done(self) -> bool:
        """Every input was read, run and handed out."""
        return (
            self.exhausted
            and not self._fresh
            and not self._delayed
            and not self._ready
            and self.in_flight == 0
        )

    def close(self, on_unyielded: Callable[[ItemResult[Any, Any]], None] | None) -> None:
        """The run ends (maybe early): record and hand over what finished but was not yielded."""
        leftovers = list(self._held.values())
        if self._handing is not None:
            leftovers.append(self._handing)
            self._handing = None
        while self._ready:
            _, key, result = self._ready.popleft()
            if key is not None and self._resume is not None:
                result = replace(result, key=key)
                self._record(key, result)
            leftovers.append(result)
        self._held.clear()
        if self._resume is not None:
            self._resume.checkpoint.flush()
        if on_unyielded is not None:
            for result in leftovers:
                on_unyielded(result)


def _not_started(plan: RunPlan[Any, Any]) -> ItemError:
    budget = plan.budget
    spent = f"{dollars(budget.spent)} of {dollars(budget.usd)}" if budget is not None else "it"
    return ItemError(
        "BudgetExceededError",
        f"not run: the run stopped when its budget was spent ({spent}); resume with a "
        "larger Budget to run it",
        module="langchain_batchkit._errors",
    )


def pushed_back(result: ItemResult[Any, Any]) -> bool:
    """Did the provider push back (429) on any attempt of this item?"""
    errors = (*(attempt.error for attempt in result.history), result.error)
    return any(e is not None and _is_rate_limit_error(e) for e in errors)


def _is_rate_limit_error(error: ItemError) -> bool:
    if error.exception is not None:  # flex short of capacity is not a limit on us
        return is_rate_limit(error.exception) and not is_flex_unavailable(error.exception)
    return error.type.endswith("RateLimitError")
