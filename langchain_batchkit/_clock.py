"""Time, injected: one :class:`Clock` object reads the time and sleeps, sync and async.

Everything that waits (retry backoff, the window's not-before times, rate limits)
takes a clock, so tests run on a fake one
(:class:`~langchain_batchkit.testing.FakeClock`) and finish in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "as_clock"]


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


def as_clock(
    clock: Clock | Callable[[], float] | None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    sync_sleep: Callable[[float], None] | None = None,
) -> Clock:
    """One :class:`Clock` from what an older option gave: a full clock, or a bare
    ``now`` function with a separate ``sleep`` (and ``sync_sleep``).

    A full clock is used as is unless a different sleep is given with it.
    """
    if clock is None:
        clock = SYSTEM_CLOCK
    if isinstance(clock, Clock):
        same_sleep = sleep is None or sleep is asyncio.sleep or sleep == clock.sleep
        same_sync = sync_sleep is None or sync_sleep is time.sleep or sync_sleep == clock.sleep_sync
        if same_sleep and same_sync:
            return clock
        return _Composed(
            clock,
            sleep if not same_sleep and sleep is not None else clock.sleep,
            sync_sleep if not same_sync and sync_sleep is not None else clock.sleep_sync,
        )
    return _Composed(clock, sleep or asyncio.sleep, sync_sleep or time.sleep)


class _Composed:
    """A :class:`Clock` put together from a ``now`` function and two sleeps."""

    __slots__ = ("_now", "_sleep", "_sync_sleep")

    def __init__(
        self,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        sync_sleep: Callable[[float], None],
    ) -> None:
        self._now = now
        self._sleep = sleep
        self._sync_sleep = sync_sleep

    def __call__(self) -> float:
        return self._now()

    async def sleep(self, seconds: float) -> None:
        await self._sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        self._sync_sleep(seconds)
