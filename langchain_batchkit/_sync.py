"""Thin sync drivers for the async engine.

``kit.batch(...)`` must work in a plain script and inside a running event loop
(a Jupyter cell), where ``asyncio.run`` fails. A driver owns a private event loop
and a thread pool sized for the batch (sync-only chains run there through
``ainvoke``'s executor fallback):

* no loop running in this thread: the private loop runs right here;
* a loop running (Jupyter): the private loop runs in a helper thread and this
  thread blocks on it, as plain ``chain.batch`` would.

A KeyboardInterrupt while waiting cancels the work on the private loop, lets it
finish its clean-up (pending items are cancelled, finished ones kept), then
propagates.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, Protocol, TypeVar

__all__ = ["Driver", "iterate_sync", "open_driver", "run_sync"]

T = TypeVar("T")


class Driver(Protocol):
    """Runs coroutines to completion on a private loop, from sync code."""

    def call(self, coro: Coroutine[Any, Any, T]) -> T: ...

    def close(self) -> None: ...


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _LocalDriver:
    """A private loop run in the calling thread."""

    __slots__ = ("_executor", "_loop")

    def __init__(self, workers: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, "batchkit")
        self._loop.set_default_executor(self._executor)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        task = self._loop.create_task(coro)
        try:
            return self._loop.run_until_complete(task)
        except BaseException:
            if not task.done():
                # Interrupted mid-run (KeyboardInterrupt): let the work cancel cleanly.
                task.cancel()
                with contextlib.suppress(BaseException):  # the original error is re-raised
                    self._loop.run_until_complete(task)
            raise

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._loop.close()


class _ThreadDriver:
    """A private loop run in a helper thread, for callers inside a running loop."""

    __slots__ = ("_executor", "_loop", "_thread")

    def __init__(self, workers: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, "batchkit")
        self._loop.set_default_executor(self._executor)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="batchkit-loop", daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        done = threading.Event()
        tasks: list[asyncio.Task[T]] = []

        def start() -> None:
            task = self._loop.create_task(coro)
            task.add_done_callback(lambda _: done.set())
            tasks.append(task)

        def cancel() -> None:
            tasks[0].cancel()

        self._loop.call_soon_threadsafe(start)
        try:
            done.wait()
        except BaseException:
            # Interrupted while waiting: cancel on the loop (after `start`, FIFO) and
            # wait until the work has finished its clean-up.
            self._loop.call_soon_threadsafe(cancel)
            done.wait()
            raise
        return tasks[0].result()

    def close(self) -> None:
        async def shutdown() -> None:
            await self._loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._loop.close()


def open_driver(workers: int) -> Driver:
    """A driver suited to the calling thread (see the module docstring)."""
    return _ThreadDriver(workers) if _in_running_loop() else _LocalDriver(workers)


def run_sync(coro: Coroutine[Any, Any, T], *, workers: int) -> T:
    """Run ``coro`` to completion from sync code, inside a running loop or not."""
    driver = open_driver(workers)
    try:
        return driver.call(coro)
    finally:
        driver.close()


def iterate_sync(agen: AsyncIterator[T], *, workers: int) -> Iterator[T]:
    """Iterate an async iterator from sync code; closing the iterator closes ``agen``.

    Work on the private loop advances while the caller waits for the next item.
    """
    driver = open_driver(workers)

    async def step() -> T:
        return await anext(agen)

    try:
        while True:
            try:
                item = driver.call(step())
            except StopAsyncIteration:
                return
            yield item
    finally:
        try:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                driver.call(aclose())
        finally:
            driver.close()
