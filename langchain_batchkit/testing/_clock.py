"""A controllable clock: time that moves only when something sleeps on it."""

from __future__ import annotations

import asyncio

__all__ = ["FakeClock"]


class FakeClock:
    """Fake monotonic time for rate limiters, backoff and timers.

    ``clock()`` reads the time; ``await clock.sleep(s)`` records the sleep, lets
    other tasks run once, and advances the time by ``s`` without waiting, so a
    test of a 60-second window finishes in milliseconds. ``advance()`` moves time
    by hand.

    Example:
        >>> clock = FakeClock()
        >>> policy = RetryPolicy(sleep=clock.sleep, clock=clock)   # doctest: +SKIP
    """

    __slots__ = ("now", "sleeps")

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Advance time by ``seconds`` at once (after yielding to other tasks)."""
        self.sleeps.append(seconds)
        await asyncio.sleep(0)
        if seconds > 0:
            self.now += seconds

    def sleep_sync(self, seconds: float) -> None:
        """The blocking twin of :meth:`sleep`."""
        self.sleeps.append(seconds)
        if seconds > 0:
            self.now += seconds
