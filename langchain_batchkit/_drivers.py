"""Two thin drivers for one window: tasks on the caller's loop, or worker threads.

* **async** (``abatch``, ``astream_results``, ``arun``): each attempt is a task
  on the caller's running loop calling the chain's ``ainvoke``.
* **sync** (``batch``, ``stream_results``, ``run``): each attempt runs in a
  worker thread calling the chain's own sync ``invoke``, as langchain-core's
  ``batch`` does. No event loop is involved, so it works inside a running loop
  (a Jupyter cell) and never touches a model's cached async HTTP client.

Both ask the same :class:`~langchain_batchkit._window.Window` what to start and
hand it every outcome (one attempt of one item is ``_steps.py``'s). Neither runs
a user's chain on a private event loop.

Leaving early (``break``, an exception, Ctrl-C) stops new work at once. Async
items in flight are cancelled. A worker thread cannot be cancelled: it is
abandoned, its call finishes in the background, and its result is not recorded.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Generator, Iterable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from langchain_core.runnables.config import ContextThreadPoolExecutor

from langchain_batchkit._attempts import ItemRun, RunPlan
from langchain_batchkit._errors import InputSourceError
from langchain_batchkit._item import ItemError, ItemResult
from langchain_batchkit._steps import Verdict, step_async, step_sync
from langchain_batchkit._window import Window

__all__ = ["InputSourceError", "Reader", "drive_tasks", "drive_threads"]

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


class Reader(Generic[InputT]):
    """Reads ``(index, input)`` pairs in chunks from a sync or async iterable."""

    __slots__ = ("_aiter", "_iter", "_next_index")

    def __init__(self, source: Iterable[tuple[int, InputT]] | AsyncIterable[tuple[int, InputT]]):
        self._iter = iter(source) if not isinstance(source, AsyncIterable) else None
        self._aiter = aiter(source) if isinstance(source, AsyncIterable) else None
        self._next_index = 0

    def read_sync(self, n: int) -> tuple[list[tuple[int, InputT]], bool, BaseException | None]:
        """Up to ``n`` pairs, whether the input ended, and the error that ended it."""
        assert self._iter is not None
        pairs: list[tuple[int, InputT]] = []
        try:
            while len(pairs) < n:
                pairs.append(next(self._iter))
                self._next_index = pairs[-1][0] + 1
        except StopIteration:
            return pairs, True, None
        except Exception as exc:
            return pairs, True, self._wrap(exc)
        return pairs, False, None

    async def read(self, n: int) -> tuple[list[tuple[int, InputT]], bool, BaseException | None]:
        """Async twin of :meth:`read_sync` (reads a sync iterable too)."""
        if self._aiter is None:
            return self.read_sync(n)
        pairs: list[tuple[int, InputT]] = []
        try:
            while len(pairs) < n:
                pairs.append(await anext(self._aiter))
                self._next_index = pairs[-1][0] + 1
        except StopAsyncIteration:
            return pairs, True, None
        except Exception as exc:
            return pairs, True, self._wrap(exc)
        return pairs, False, None

    def _wrap(self, exc: Exception) -> InputSourceError:
        error = InputSourceError(
            f"reading input #{self._next_index} failed: {type(exc).__name__}: {exc}"
        )
        error.__cause__ = exc
        return error


# -- many items -----------------------------------------------------------------------------

Unyielded = Callable[[ItemResult[Any, Any]], None] | None


def drive_threads(
    window: Window[InputT, OutputT],
    plan: RunPlan[InputT, OutputT],
    reader: Reader[InputT],
    on_unyielded: Unyielded = None,
) -> Generator[ItemResult[InputT, OutputT], None, None]:
    """Run the window with worker threads; yield results as the window hands them out."""
    finished: queue.SimpleQueue[Future[Verdict[InputT, OutputT]]] = queue.SimpleQueue()
    running: dict[Future[Verdict[InputT, OutputT]], ItemRun[InputT, OutputT]] = {}
    executor = ContextThreadPoolExecutor(max_workers=window.most_workers)
    clock = plan.clock
    try:
        while True:
            while window.wants_input(clock()):
                pairs, ended, error = reader.read_sync(window.read_ahead)
                window.feed(pairs, exhausted=ended, error=error)
            while (item := window.next_to_start(clock())) is not None:
                future = executor.submit(step_sync, plan, item)
                running[future] = item
                future.add_done_callback(finished.put)
            _collect(window, running, finished, block=False)
            yield from window.deliver()
            if window.done:
                if window.source_error is not None:
                    raise window.source_error
                return
            if window.wants_input(clock()) or window.next_ready(clock()):
                continue
            wait = window.wait_time(clock())
            due = window.flush_due()
            if running:
                by_flush = due is not None and (wait is None or due < wait)
                timeout = due if by_flush else wait
                timed_out = not _collect(window, running, finished, block=True, timeout=timeout)
                if timed_out and not by_flush:
                    window.timer_fired()
            elif wait is not None:
                window.flush_now()
                clock.sleep_sync(wait)
                window.timer_fired()
            else:  # pragma: no cover - a bug guard: never spin
                raise RuntimeError("batchkit window stalled with nothing to wait for")
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        if running:
            logger.debug("leaving %d item(s) running in worker threads", len(running))
        try:
            _collect(window, running, finished, block=False, closing=True)
        finally:
            window.close(on_unyielded)


def _collect(
    window: Window[InputT, OutputT],
    running: dict[Future[Verdict[InputT, OutputT]], ItemRun[InputT, OutputT]],
    finished: queue.SimpleQueue[Future[Verdict[InputT, OutputT]]],
    *,
    block: bool,
    timeout: float | None = None,
    closing: bool = False,
) -> bool:
    """Hand finished attempts to the window (waiting for one first when ``block``).

    When ``closing`` (the run ends), attempts that raised are skipped: the first
    such error was raised already. Returns False when a blocking wait timed out.
    """
    got = False
    while True:
        try:
            future = finished.get(block=block, timeout=timeout if block else None)
        except queue.Empty:
            return got or not block
        block, got = False, True
        item = running.pop(future, None)
        if item is None or future.cancelled():
            continue  # never started (the pool was shut down)
        if closing and future.exception() is not None:
            continue
        window.attempt_done(item, future.result())


async def drive_tasks(
    window: Window[InputT, OutputT],
    plan: RunPlan[InputT, OutputT],
    reader: Reader[InputT],
    on_unyielded: Unyielded = None,
) -> AsyncGenerator[ItemResult[InputT, OutputT], None]:
    """Run the window with tasks on the running loop; yield results as handed out."""
    loop = asyncio.get_running_loop()
    running: dict[asyncio.Task[Verdict[InputT, OutputT]], ItemRun[InputT, OutputT]] = {}
    finished: list[asyncio.Task[Verdict[InputT, OutputT]]] = []
    wake = asyncio.Event()
    clock = plan.clock

    def on_done(task: asyncio.Task[Verdict[InputT, OutputT]]) -> None:
        finished.append(task)
        wake.set()

    try:
        while True:
            while window.wants_input(clock()):
                pairs, ended, error = await reader.read(window.read_ahead)
                window.feed(pairs, exhausted=ended, error=error)
            while (item := window.next_to_start(clock())) is not None:
                task = loop.create_task(step_async(plan, item))
                running[task] = item
                task.add_done_callback(on_done)
            _settle_tasks(window, running, finished, closing=False)
            for result in window.deliver():
                yield result
            if window.done:
                if window.source_error is not None:
                    raise window.source_error
                return
            if finished or window.wants_input(clock()) or window.next_ready(clock()):
                continue
            wait = window.wait_time(clock())
            due = window.flush_due()
            if running:
                wake.clear()
                timer: Any = None
                by_flush = False
                if due is not None and (wait is None or due < wait):
                    timer, by_flush = asyncio.sleep(due), True  # real time: the checkpoint's clock
                elif wait is not None:
                    timer = clock.sleep(wait)
                if await _until(wake, timer) and not by_flush:
                    window.timer_fired()
            elif wait is not None:
                window.flush_now()
                await clock.sleep(wait)
                window.timer_fired()
            else:  # pragma: no cover - a bug guard: never spin
                raise RuntimeError("batchkit window stalled with nothing to wait for")
    finally:
        if running:
            logger.debug("cancelling %d item(s) in flight", len(running))
            for task in running:
                task.cancel()
            await asyncio.wait(list(running))
        try:
            _settle_tasks(window, running, finished, closing=True)
        finally:
            window.close(on_unyielded)


def _settle_tasks(
    window: Window[InputT, OutputT],
    running: dict[asyncio.Task[Verdict[InputT, OutputT]], ItemRun[InputT, OutputT]],
    finished: list[asyncio.Task[Verdict[InputT, OutputT]]],
    *,
    closing: bool,
) -> None:
    while finished:
        task = finished.pop(0)
        item = running.pop(task, None)
        if item is None:
            continue
        if task.cancelled():
            if closing:
                continue  # we cancelled it: not a result
            # The item cancelled itself: an error for that item, never a silent loss.
            error = ItemError("CancelledError", "the item's task was cancelled")
            window.attempt_done(item, ItemResult(item.index, item.value, None, error))
            continue
        if closing and task.exception() is not None:
            continue  # the run is ending anyway; the first error was raised already
        window.attempt_done(item, task.result())


async def _until(wake: asyncio.Event, timer: Any) -> bool:
    """Wait for ``wake``, or for ``timer`` (an awaitable sleep) if given, whichever
    first; True when the timer ended first."""
    if timer is None:
        await wake.wait()
        return False
    waiter = asyncio.ensure_future(wake.wait())
    sleeper = asyncio.ensure_future(timer)
    try:
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        fired = sleeper.done() and not waiter.done()
    finally:
        for task in (waiter, sleeper):
            task.cancel()
        await asyncio.wait({waiter, sleeper})
    return fired
