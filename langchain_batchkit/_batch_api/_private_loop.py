"""Run the runner's own job I/O to completion from sync code, on a private event loop.

Only the BatchAPIRunner's own calls go here (upload, create, poll, download,
cancel), through an openai client made inside that loop for that call; never a
user's chain, whose cached clients may be bound to the user's own loop. The loop
is new for each call and closed when the call ends, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_on_private_loop"]

T = TypeVar("T")


def run_on_private_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new event loop and return its result.

    With no loop running in this thread, ``asyncio.run`` runs it right here; a
    Ctrl-C cancels it, lets it clean up, then raises ``KeyboardInterrupt``. Inside
    a running loop (a Jupyter cell), it runs in a short-lived worker thread while
    this thread blocks, as any sync call would; an interrupt while waiting cancels
    it there, waits for its clean-up, then propagates.

    Example:
        >>> run_on_private_loop(asyncio.sleep(0, "done"))
        'done'
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    return _run_in_worker_thread(coro)


def _run_in_worker_thread(coro: Coroutine[Any, Any, T]) -> T:
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
    started = threading.Event()
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        running.append((asyncio.get_running_loop(), task))
        started.set()
        return await coro

    def work() -> None:
        try:
            outcome.set_result(asyncio.run(main()))
        except BaseException as exc:  # handed to the waiting thread, which re-raises it
            outcome.set_exception(exc)

    def stop() -> None:
        """Cancel the coroutine on its loop and wait until it has cleaned up."""
        started.wait()
        [(loop, task)] = running
        with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
            loop.call_soon_threadsafe(task.cancel)
        thread.join()

    # A daemon: if a second interrupt stops the waiting, exit must not wait for it.
    thread = threading.Thread(target=work, name="batchkit-jobs", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no thread could start: the coroutine never ran
        coro.close()
        raise
    except BaseException:  # interrupted while the thread started (KeyboardInterrupt)
        stop()
        raise
    try:
        return outcome.result()
    except BaseException:
        if not outcome.done():  # interrupted while waiting (KeyboardInterrupt)
            stop()
        raise
