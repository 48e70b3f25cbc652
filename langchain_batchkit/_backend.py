"""Where a :class:`~langchain_batchkit.RateLimit` makes its reservations.

A limiter is the same few parts wherever its budget lives: settings, a gate on
requests in flight, the cap's AIMD, the callback, and a *reservation backend*,
the one part that differs. :class:`LocalReservations` keeps a
:class:`~langchain_batchkit._reservations.Reservations` core in this process under a
thread lock; :mod:`langchain_batchkit.ray` forwards the same calls to the same core
running as one Ray actor for a whole cluster.

The methods mirror the core's one to one. Each one that answers has an async twin,
so a remote backend can await its reply on the model call's loop while a thread
blocks on it; the ones that answer nothing (``start``, ``settle``, ``pause``) need
not wait for the core, but an error there must surface by the next call that
answers, never vanish.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol
from uuid import UUID

from langchain_batchkit._limit_settings import RateLimitSettings
from langchain_batchkit._limit_stats import LimiterStats
from langchain_batchkit._reservations import Outcome, Reservations, Turn

__all__ = ["LocalReservations", "ReservationBackend"]


class ReservationBackend(Protocol):
    """The reservation calls a :class:`~langchain_batchkit.RateLimit` makes.

    See :class:`~langchain_batchkit._reservations.Reservations` for what each does.
    """

    def reserve(self, tokens: int, *, blocking: bool = True) -> Turn | None:
        """Reserve one request and ``tokens`` (``None``: not now, when not blocking)."""
        ...

    async def areserve(self, tokens: int, *, blocking: bool = True) -> Turn | None:
        """:meth:`reserve`, awaiting the answer on the running loop."""
        ...

    def next_turn(self, turn: Turn, tokens: int) -> Turn:
        """After waiting out ``turn``: go now, or the further wait."""
        ...

    async def anext_turn(self, turn: Turn, tokens: int) -> Turn:
        """:meth:`next_turn`, awaiting the answer on the running loop."""
        ...

    def start(self, call_id: UUID, tokens: int, epoch: int) -> None:
        """The request went out."""
        ...

    def settle(self, call_id: UUID, outcome: Outcome) -> None:
        """The request ended so."""
        ...

    def pause(self, seconds: float) -> None:
        """Start no request for ``seconds``."""
        ...

    def stats(self) -> LimiterStats:
        """The core's counters."""
        ...


class LocalReservations:
    """A :class:`~langchain_batchkit._reservations.Reservations` core in this process.

    One thread lock makes it safe for every thread and event loop sharing the
    limiter; no call waits for anything but that lock, so the async twins simply
    call the blocking ones.

    Example:
        >>> backend = LocalReservations(RateLimitSettings(requests_per_minute=60))
        >>> backend.reserve(0)
        Turn(delay=0.0, epoch=0)
    """

    __slots__ = ("_core", "_lock")

    def __init__(
        self, settings: RateLimitSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._core = Reservations(settings, clock)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalReservations({self._core!r})"

    def reserve(self, tokens: int, *, blocking: bool = True) -> Turn | None:
        """Reserve one request and ``tokens``."""
        with self._lock:
            return self._core.reserve(tokens, blocking=blocking)

    async def areserve(self, tokens: int, *, blocking: bool = True) -> Turn | None:
        """The same as :meth:`reserve` (it never waits)."""
        return self.reserve(tokens, blocking=blocking)

    def next_turn(self, turn: Turn, tokens: int) -> Turn:
        """After waiting out ``turn``: go now, or the further wait."""
        with self._lock:
            return self._core.next_turn(turn, tokens)

    async def anext_turn(self, turn: Turn, tokens: int) -> Turn:
        """The same as :meth:`next_turn` (it never waits)."""
        return self.next_turn(turn, tokens)

    def start(self, call_id: UUID, tokens: int, epoch: int) -> None:
        """The request went out."""
        with self._lock:
            self._core.start(call_id, tokens, epoch)

    def settle(self, call_id: UUID, outcome: Outcome) -> None:
        """The request ended so."""
        with self._lock:
            self._core.settle(call_id, outcome)

    def pause(self, seconds: float) -> None:
        """Start no request for ``seconds``."""
        with self._lock:
            self._core.pause(seconds)

    def stats(self) -> LimiterStats:
        """The core's counters."""
        with self._lock:
            return self._core.stats()
