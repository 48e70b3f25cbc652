"""Thin sync drivers for the async engine.

``kit.batch(...)`` must work in a plain script and inside a running event loop
(a Jupyter cell), where ``asyncio.run`` fails. Sync calls run the engine on a
private event loop that lives as long as the thread (or, inside a running loop,
on one background loop thread for the process):

* no loop running in this thread: this thread's private loop runs right here;
* a loop running (Jupyter): the background loop runs it and this thread blocks,
  as plain ``chain.batch`` would.

The loops are long-lived on purpose: clients such as langchain-openai cache one
async HTTP client per model, and its pooled connections belong to the loop that
opened them; a new loop per call would find them bound to a closed one. Each
private loop has a thread pool for sync-only steps (``ainvoke``'s executor
fallback), sized generously since threads start only when needed.

A KeyboardInterrupt while waiting cancels the work on the private loop, lets it
finish its clean-up (pending items are cancelled, finished ones kept), then
propagates.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["iterate_sync", "run_sync"]

T = TypeVar("T")

#: Threads available to sync-only steps on a private loop (started on demand).
EXECUTOR_WORKERS = 64

_local = threading.local()
_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_background_lock = threading.Lock()
_background: asyncio.AbstractEventLoop | None = None


def _new_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(EXECUTOR_WORKERS, "batchkit"))
    _loops.add(loop)
    return loop


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = _new_loop()
    return loop


def _background_loop() -> asyncio.AbstractEventLoop:
    global _background
    with _background_lock:
        if _background is None or _background.is_closed():
            loop = _new_loop()
            threading.Thread(target=loop.run_forever, name="batchkit-loop", daemon=True).start()
            _background = loop
        return _background


@atexit.register
def _close_loops() -> None:
    for loop in list(_loops):
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        elif not loop.is_closed():
            loop.close()


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_here(coro: Coroutine[Any, Any, T]) -> T:
    loop = _thread_loop()
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            # Interrupted mid-run (KeyboardInterrupt): let the work cancel cleanly.
            task.cancel()
            with contextlib.suppress(BaseException):  # the original error is re-raised
                loop.run_until_complete(task)
        raise


def _run_in_background(coro: Coroutine[Any, Any, T]) -> T:
    loop = _background_loop()
    done = threading.Event()
    tasks: list[asyncio.Task[T]] = []

    def start() -> None:
        task = loop.create_task(coro)
        task.add_done_callback(lambda _: done.set())
        tasks.append(task)

    def cancel() -> None:
        tasks[0].cancel()

    loop.call_soon_threadsafe(start)
    try:
        done.wait()
    except BaseException:
        # Interrupted while waiting: cancel on the loop (after `start`, FIFO) and
        # wait until the work has finished its clean-up.
        loop.call_soon_threadsafe(cancel)
        done.wait()
        raise
    return tasks[0].result()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, inside a running loop or not."""
    return _run_in_background(coro) if _in_running_loop() else _run_here(coro)


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code; closing the iterator closes ``agen``.

    Work on the private loop advances while the caller waits for the next item.
    """
    run = _run_in_background if _in_running_loop() else _run_here

    async def step() -> T:
        return await anext(agen)

    try:
        while True:
            try:
                item = run(step())
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            run(aclose())
