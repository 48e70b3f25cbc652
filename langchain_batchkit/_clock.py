"""Time, injected: one :class:`Clock` object reads the time and sleeps, sync and async.

Everything that waits (retry backoff, the window's not-before times, rate limits)
takes a clock, so tests run on a fake one
(:class:`~langchain_batchkit.testing.FakeClock`) and finish in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic seconds (``clock()``), an async ``sleep`` and a blocking ``sleep_sync``."""

    def __call__(self) -> float:
        """The current monotonic time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the event loop."""
        ...

    def sleep_sync(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``asyncio.sleep`` and ``time.sleep``."""

    __slots__ = ()

    def __call__(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


#: The clock used unless one is injected.
SYSTEM_CLOCK = SystemClock()
