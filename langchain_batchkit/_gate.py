"""A cap on requests in flight, handed out first come first served to threads and loops.

A model request may wait for its slot on an event loop (an async chain) or in a
blocked thread (a sync chain in a worker thread), and one limiter serves both at
once. So a waiter is either a future on its own loop, resolved with
``call_soon_threadsafe``, or an event a thread blocks on; they queue in one line.
A freed slot goes straight to the next waiter (counted in before it wakes), so a
newcomer cannot overtake the queue and nothing polls.

Cancellation never leaks a slot: a waiter cancelled while queued leaves the line,
and one cancelled just as its slot arrived hands the slot on.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque

__all__ = ["Gate"]


class Gate:
    """At most ``cap`` holders at once; the rest wait in FIFO order.

    The cap is a float so an adaptive limiter can raise it by fractions (AIMD);
    ``inf`` means no cap. Lowering it lets current holders finish: newcomers wait
    until fewer than ``cap`` are in.

    Example:
        >>> gate = Gate(2)
        >>> gate.acquire_sync()
        True
        >>> gate.in_flight
        1
        >>> gate.release()
    """

    __slots__ = ("_cap", "_in_flight", "_lock", "_max_seen", "_waiters")

    def __init__(self, cap: float = math.inf) -> None:
        self._cap = _checked(cap)
        self._in_flight = 0
        self._max_seen = 0
        self._lock = threading.Lock()
        self._waiters: deque[_LoopWaiter | _ThreadWaiter] = deque()

    def __repr__(self) -> str:
        return f"Gate(cap={self._cap}, in_flight={self._in_flight}, waiting={len(self._waiters)})"

    @property
    def cap(self) -> float:
        """The most holders at once (raising it lets waiters in at once)."""
        return self._cap

    @cap.setter
    def cap(self, value: float) -> None:
        value = _checked(value)
        with self._lock:
            self._cap = value
            granted = self._grant_waiting()
        self._wake(granted)

    @property
    def in_flight(self) -> int:
        """Slots held right now (waiters not counted)."""
        return self._in_flight

    @property
    def max_seen(self) -> int:
        """The most slots ever held at once."""
        return self._max_seen

    @property
    def waiting(self) -> int:
        """Waiters queued for a slot."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Wait on this loop for a slot; cancelling the wait takes none."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._enter_now():
                return
            waiter = _LoopWaiter(loop)
            self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:
            if self._withdraw(waiter):
                self.release()  # granted just as we were cancelled: hand it on
            raise

    def acquire_sync(self, timeout: float | None = None) -> bool:
        """Block this thread until a slot is free; ``False`` if ``timeout`` passed first.

        A slot granted in the same instant as the timeout is kept (``True``).
        """
        with self._lock:
            if self._enter_now():
                return True
            waiter = _ThreadWaiter()
            self._waiters.append(waiter)
        try:
            if waiter.event.wait(timeout):
                return True
        except BaseException:
            if self._withdraw(waiter):
                self.release()
            raise
        return self._withdraw(waiter)

    def release(self) -> None:
        """Give a slot back; the first waiter that can still use it gets it."""
        with self._lock:
            if self._in_flight <= 0:
                raise RuntimeError("Gate.release() called with no slot held")
            self._in_flight -= 1
            granted = self._grant_waiting()
        self._wake(granted)

    # -- internals (the lock is held where noted) -------------------------------------------

    def _enter_now(self) -> bool:
        """Take a slot if one is free and nobody is queued (lock held)."""
        if self._in_flight < self._cap and not self._waiters:
            self._count_in()
            return True
        return False

    def _count_in(self) -> None:
        self._in_flight += 1
        self._max_seen = max(self._max_seen, self._in_flight)

    def _grant_waiting(self) -> list[_LoopWaiter | _ThreadWaiter]:
        """Count in queued waiters while slots are free (lock held); wake them after."""
        granted: list[_LoopWaiter | _ThreadWaiter] = []
        while self._waiters and self._in_flight < self._cap:
            waiter = self._waiters.popleft()
            if waiter.abandoned():
                continue  # cancelled while queued, or its loop is gone: not counted in
            waiter.granted = True
            self._count_in()
            granted.append(waiter)
        return granted

    def _wake(self, granted: list[_LoopWaiter | _ThreadWaiter]) -> None:
        for waiter in granted:
            if not waiter.wake():
                self.release()  # its loop closed in between: the slot goes to the next one

    def _withdraw(self, waiter: _LoopWaiter | _ThreadWaiter) -> bool:
        """Take a waiter that stopped waiting out of the line; ``True`` if it holds a slot."""
        with self._lock:
            if waiter.granted:
                return True
            if waiter in self._waiters:  # else already skipped as abandoned
                self._waiters.remove(waiter)
            return False


class _LoopWaiter:
    """A coroutine queued for a slot, on the loop it waits in."""

    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False

    def abandoned(self) -> bool:
        return self.future.done() or self.loop.is_closed()

    def wake(self) -> bool:
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # the loop closed after abandoned() was checked
            return False
        return True


class _ThreadWaiter:
    """A thread blocked until it is granted a slot."""

    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.granted = False

    def abandoned(self) -> bool:
        return False  # a thread that gives up leaves the queue itself, under the lock

    def wake(self) -> bool:
        self.event.set()
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # else cancelled after being counted in: its waiter hands it on
        future.set_result(None)


def _checked(cap: float) -> float:
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not cap >= 1:
        raise ValueError(f"cap must be a number >= 1 (or inf), got {cap!r}")
    return float(cap)
