"""A controllable clock: virtual time that moves only when every task is waiting on it."""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]


class FakeClock:
    """Fake monotonic time for rate limiters, backoff and timers.

    ``clock()`` reads the time. ``await clock.sleep(s)`` parks the caller until
    virtual time reaches ``now + s``; time jumps to the earliest such deadline as
    soon as the event loop has nothing else ready to run, so concurrent sleepers
    wake in deadline order and a test of a 60-second window finishes in
    milliseconds. ``advance()`` moves time by hand (for code that only reads it).

    Example:
        >>> clock = FakeClock()
        >>> policy = RetryPolicy(sleep=clock.sleep, clock=clock)   # doctest: +SKIP
    """

    __slots__ = ("_heap", "_scheduled", "_seq", "now", "sleeps")

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._scheduled = False

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (sleepers whose deadline passed wake up)."""
        self.now += seconds
        self._wake_due()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time."""
        self.sleeps.append(seconds)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (self.now + max(0.0, seconds), next(self._seq), future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._advance_when_idle, loop)
        await future

    def sleep_sync(self, seconds: float) -> None:
        """The blocking twin of :meth:`sleep`: advances time at once."""
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    def _advance_when_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        ready = getattr(loop, "_ready", None)
        if ready:  # other callbacks are runnable: let them go first (they may sleep too)
            loop.call_soon(self._advance_when_idle, loop)
            return
        while self._heap and self._heap[0][2].done():  # cancelled sleepers
            heapq.heappop(self._heap)
        if not self._heap:
            self._scheduled = False
            return
        self.now = max(self.now, self._heap[0][0])
        self._wake_due()
        if self._heap:
            loop.call_soon(self._advance_when_idle, loop)
        else:
            self._scheduled = False

    def _wake_due(self) -> None:
        while self._heap and self._heap[0][0] <= self.now:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                future.set_result(None)
