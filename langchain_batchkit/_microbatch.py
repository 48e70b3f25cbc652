"""MicroBatcher: single calls from many places, flushed together as one batch call.

A web handler or an agent fan-out calls ``ainvoke`` one item at a time; an
embeddings endpoint or a local model is far cheaper per item when it gets many
at once. The batcher queues concurrent calls and flushes them as **one** call of
the wrapped runnable's ``abatch`` (or of a user batch function) when
``max_batch_size`` items wait or the oldest has waited ``max_queue_time``.

How it waits, without polling: one flusher task per event loop, created on the
first call inside that loop (never at import or construction), sleeps until the
oldest item's deadline or until an event says "a batch is full" or "stop". It
exits when the queue is empty and is created again by the next call, so an idle
batcher owns no task. Each batch runs in its own task, tracked until it ends,
and ``concurrency`` caps how many run at once. Time comes from an injectable
:class:`Clock` (the loop's by default), so tests run on a :class:`FakeClock`.

Sync ``invoke`` never makes an event loop of its own: from a thread beside the
loop the batcher serves it joins that loop's batches; with no such loop it runs
the target's own sync path (``batch``, or the sync batch function) as a batch of
one, as langchain-core would. Running the target's async path on a private loop
would bind the clients it caches (langchain-openai's pooled HTTP client) to that
loop, and break the caller's next ``ainvoke`` on its own loop.

Errors, per caller: a wrapped runnable runs with ``return_exceptions=True``, so
each caller gets its own output or its own exception; an exception raised by the
whole call (or a result list of the wrong length) goes to every caller of that
batch. ``stop(force=True)`` cancels queued and running work, and its callers get
``asyncio.CancelledError``; calls after ``stop()`` raise :class:`BatcherStoppedError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

from langchain_core.runnables import Runnable, RunnableConfig, ensure_config

from langchain_batchkit._clock import Clock
from langchain_batchkit._errors import (
    BatcherStoppedError,
    BatchKitError,
    BatchOutputMismatchError,
    describe_exception,
    exception_traceback,
)
from langchain_batchkit._microbatch_state import Call, Limits, LoopState, queue_clock
from langchain_batchkit._microbatch_target import BatchFunction, BatchTarget, name_of

__all__ = ["BatchOutputMismatchError", "BatcherStoppedError", "MicroBatcher"]

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

_FORCED = "MicroBatcher.stop(force=True) cancelled this call"


class MicroBatcher(Runnable[InputT, OutputT]):
    """A Runnable that groups concurrent single calls into batch calls.

    Why: code that handles one item at a time (a request handler, a tool call in an
    agent) pays a per-call overhead that batch endpoints amortise; the batcher gives
    it batching without restructuring the callers.

    Args:
        target: a Runnable (flushed with ``abatch(..., return_exceptions=True)``, each
            caller's config kept), or a batch function taking a ``list`` of inputs and
            returning one result per input in order, async (awaited) or sync (run in
            ``executor``, off the loop). A batch function may put an ``Exception`` in
            a caller's slot to fail that caller alone. Sync :meth:`invoke` with no
            loop serving the batcher needs a sync path: a Runnable's ``batch`` or a
            sync batch function.
        max_batch_size: most items per batch call; a full batch is flushed at once.
        max_queue_time: seconds the oldest queued item may wait for company (0: flush
            whatever arrived in the same loop iteration).
        concurrency: batch calls running at once; ``None`` or 0 for no limit.
        clock: a :class:`~langchain_batchkit.Clock` that times the queue: deadlines are
            read from it and the wait for them sleeps on it, e.g. a
            :class:`~langchain_batchkit.testing.FakeClock` (default: the event loop's
            clock and ``asyncio.sleep``).
        sleep: deprecated, goes in the next release: with a bare ``clock`` function,
            the async sleep measured on it. Pass one ``Clock`` instead.
        executor: where a sync batch function runs (default: the loop's executor).

    Example:
        >>> embed = MicroBatcher(embeddings.aembed_documents, max_batch_size=64)  # doctest: +SKIP
        >>> async with embed:                                      # doctest: +SKIP
        ...     vector = await embed.ainvoke("one text")           # doctest: +SKIP
    """

    def __init__(
        self,
        target: Runnable[InputT, OutputT] | BatchFunction[InputT, OutputT],
        *,
        max_batch_size: int = 32,
        max_queue_time: float = 0.01,
        concurrency: int | None = None,
        clock: Clock | Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._limits = Limits(max_batch_size, max_queue_time, concurrency)
        self._label = f"MicroBatcher({name_of(target)})"
        self._target = BatchTarget(target, self._label, executor)
        self.target = target
        self._clock = queue_clock(clock, sleep)
        self._state: LoopState[InputT, OutputT] | None = None
        self._stopped = False
        self.name = self._label

    # -- Runnable plumbing -------------------------------------------------------------

    @property
    def max_batch_size(self) -> int:
        """Most items per batch call."""
        return self._limits.max_batch_size

    @property
    def max_queue_time(self) -> float:
        """Seconds the oldest queued item may wait before its batch is flushed."""
        return self._limits.max_queue_time

    @property
    def concurrency(self) -> int | None:
        """Batch calls allowed at once (``None``: unlimited)."""
        return self._limits.concurrency or None

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped

    @property
    def InputType(self) -> Any:
        return self._target.input_type

    @property
    def OutputType(self) -> Any:
        return self._target.output_type

    def __repr__(self) -> str:
        return (
            f"{self._label[:-1]}, max_batch_size={self.max_batch_size}, "
            f"max_queue_time={self.max_queue_time}, concurrency={self.concurrency})"
        )

    # -- calls ---------------------------------------------------------------------------

    async def ainvoke(
        self, input: InputT, config: RunnableConfig | None = None, **kwargs: Any
    ) -> OutputT:
        """Queue one input and wait for its own result from the next batch call.

        Raises:
            BatcherStoppedError: the batcher was stopped.
            asyncio.CancelledError: ``stop(force=True)`` cancelled the call.
            Exception: this input's own error, or the error of its whole batch call.
        """
        _refuse_kwargs(kwargs)
        if self._stopped:
            raise BatcherStoppedError(f"{self._label} is stopped; it takes no new calls")
        state = self._state_for(asyncio.get_running_loop())
        future: asyncio.Future[OutputT] = state.loop.create_future()
        call = Call(input, ensure_config(config), future, self._now(state) + self.max_queue_time)
        state.queue.append(call)
        if state.flusher is None:
            state.flusher = state.loop.create_task(self._flush(state), name=f"{self._label}.flush")
        elif len(state.queue) >= self.max_batch_size:
            state.wakeup.set()
        return await future

    def invoke(self, input: InputT, config: RunnableConfig | None = None, **kwargs: Any) -> OutputT:
        """Sync twin of :meth:`ainvoke`, for threads beside the loop the batcher runs on.

        Called from another thread while the batcher serves a running loop, the item
        joins that loop's batches. With no such loop it runs alone, as a batch of one,
        on the target's own sync path: a Runnable's ``batch``, a sync batch function
        called in this thread. It never runs the target on a private event loop: a
        client the target caches (langchain-openai's pooled async HTTP client) is
        bound to the loop that first used it, and would then fail on the caller's.

        Raises:
            BatcherStoppedError: the batcher was stopped.
            ConfigurationError: the target is an async batch function and no loop
                serves the batcher: ``await ainvoke`` instead.
            Exception: this input's own error, or the error of its batch call.
        """
        _refuse_kwargs(kwargs)
        if self._stopped:
            raise BatcherStoppedError(f"{self._label} is stopped; it takes no new calls")
        state = self._state
        if state is not None and state.serves_another_thread():
            submitted = asyncio.run_coroutine_threadsafe(self.ainvoke(input, config), state.loop)
            return submitted.result()
        [output] = self._target.call([input], [ensure_config(config)])
        if isinstance(output, Exception):
            raise output
        return output

    # -- stopping ------------------------------------------------------------------------

    async def stop(self, *, force: bool = False) -> None:
        """Stop taking calls, then finish (or, with ``force``, cancel) the work.

        ``force=False`` flushes everything queued at once (no waiting for deadlines)
        and returns when every batch call has ended. ``force=True`` cancels queued
        and running calls; their callers get ``asyncio.CancelledError``. Stopping
        twice is fine; a forced stop also ends a graceful stop in progress.
        """
        self._stopped = True
        state = self._state
        if state is None:
            return
        if state.loop is not asyncio.get_running_loop():
            if state.idle or state.loop.is_closed():
                return
            raise BatchKitError(f"await {self._label}.stop() on the event loop it runs on")
        if force:
            for call in state.queue:
                call.future.cancel(_FORCED)
            state.queue.clear()
            if state.flusher is not None:
                state.flusher.cancel(_FORCED)
            for task in state.running:
                task.cancel(_FORCED)
        elif state.queue and state.flusher is None:
            state.flusher = state.loop.create_task(self._flush(state), name=f"{self._label}.flush")
        state.wakeup.set()
        if state.flusher is not None:
            await asyncio.wait({state.flusher})
        while state.running:
            await asyncio.wait(set(state.running))

    async def __aenter__(self) -> MicroBatcher[InputT, OutputT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """A graceful stop; a forced one when the block ends by an exception."""
        await self.stop(force=exc is not None)

    # -- the flusher ---------------------------------------------------------------------

    def _state_for(self, loop: asyncio.AbstractEventLoop) -> LoopState[InputT, OutputT]:
        state = self._state
        if state is not None and state.loop is loop:
            return state
        if state is not None and not state.idle and not state.loop.is_closed():
            raise BatchKitError(
                f"{self._label} is busy on another event loop; use one batcher per loop"
            )
        self._state = LoopState(loop, self._limits.concurrency)
        return self._state

    def _now(self, state: LoopState[InputT, OutputT]) -> float:
        return self._clock() if self._clock is not None else state.loop.time()

    async def _flush(self, state: LoopState[InputT, OutputT]) -> None:
        """Start batch calls while items are queued; exit (and forget itself) when none are."""
        try:
            while True:
                await self._until_due(state)
                if state.slots is not None:
                    await state.slots.acquire()
                batch = self._take(state)
                if batch:
                    self._start(state, batch)
                elif state.slots is not None:
                    state.slots.release()
                if not state.queue:
                    return
        except Exception as exc:  # a bug here must not leave callers waiting forever
            logger.error(
                "%s: the flusher failed; failing the queued calls:\n%s",
                self._label,
                exception_traceback(exc),
            )
            while state.queue:
                call = state.queue.popleft()
                if not call.future.done():
                    call.future.set_exception(exc)
        finally:
            state.flusher = None

    async def _until_due(self, state: LoopState[InputT, OutputT]) -> None:
        """Return when a batch is due: full, its oldest item's deadline passed, or stopping."""
        while True:
            state.wakeup.clear()
            queue = state.queue
            if not queue or self._stopped or len(queue) >= self.max_batch_size:
                return
            remaining = queue[0].deadline - self._now(state)
            if remaining <= 0:
                return
            alarm = state.loop.create_task(self._ring(state.wakeup, remaining))
            try:
                await state.wakeup.wait()
            finally:
                alarm.cancel()
                await asyncio.wait({alarm})

    async def _ring(self, event: asyncio.Event, delay: float) -> None:
        await (asyncio.sleep if self._clock is None else self._clock.sleep)(delay)
        event.set()

    def _take(self, state: LoopState[InputT, OutputT]) -> list[Call[InputT, OutputT]]:
        """Up to ``max_batch_size`` queued calls whose callers still wait."""
        batch: list[Call[InputT, OutputT]] = []
        queue = state.queue
        while queue and len(batch) < self.max_batch_size:
            call = queue.popleft()
            if not call.future.done():  # a caller cancelled while queued is skipped
                batch.append(call)
        return batch

    def _start(self, state: LoopState[InputT, OutputT], batch: list[Call[InputT, OutputT]]) -> None:
        task = state.loop.create_task(self._run(batch), name=f"{self._label}.batch")
        state.running[task] = batch
        task.add_done_callback(functools.partial(self._ended, state))

    def _ended(self, state: LoopState[InputT, OutputT], task: asyncio.Task[None]) -> None:
        batch = state.running.pop(task)
        if state.slots is not None:
            state.slots.release()
        for call in batch:  # a task cancelled before it began never settled its callers
            if not call.future.done():
                call.future.cancel(_FORCED)

    async def _run(self, batch: list[Call[InputT, OutputT]]) -> None:
        """One batch call; settle every caller with its own result or the shared error."""
        logger.debug("%s: flushing %d item(s)", self._label, len(batch))
        try:
            outputs = await self._target.acall([c.input for c in batch], [c.config for c in batch])
        except asyncio.CancelledError:
            for call in batch:
                call.future.cancel(_FORCED)
            raise
        except Exception as exc:
            # Redacted text, never %r: a provider error's repr carries what its body echoed.
            logger.debug(
                "%s: a batch of %d failed: %s", self._label, len(batch), describe_exception(exc)
            )
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        for call, output in zip(batch, outputs, strict=True):
            if call.future.done():
                continue
            if isinstance(output, asyncio.CancelledError):
                call.future.cancel()
            elif isinstance(output, BaseException):
                call.future.set_exception(output)
            else:
                call.future.set_result(output)


def _refuse_kwargs(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(
            f"MicroBatcher calls take no keyword arguments (got {sorted(kwargs)}): they "
            "would apply to a whole batch of other callers; bind them on the target"
        )
