"""A controllable clock: virtual time that moves only when the loop has gone quiet."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Iterator

__all__ = ["FakeClock"]


class FakeClock:
    """Fake monotonic time for rate limiters, backoff and timers.

    ``clock()`` reads the time. ``await clock.sleep(s)`` parks the caller until
    virtual time reaches ``now + s``; concurrent sleepers wake in deadline order, and
    a test of a 60-second window finishes in milliseconds. ``advance()`` moves time by
    hand (for code that only reads it); ``sleep_sync()`` advances it at once.

    When time moves by itself: while anyone sleeps, the clock watches the event loop
    through one ``call_soon`` callback per loop iteration (public asyncio only, so it
    works on any loop). Time jumps to the earliest deadline once ``quiet_hops``
    consecutive iterations have passed with no sleep started, no sleeper resumed and
    no hand ``advance()``. So:

    * a task that gets to its next ``sleep`` within ``quiet_hops - 1`` bare yields
      (``await asyncio.sleep(0)``, awaiting another task's result, a chain of
      already-resolved futures) of the clock's last activity is never overtaken by a
      later deadline;
    * a task that yields forever (a polling loop) does not stop time;
    * work in another thread (``run_in_executor``, a server thread answering a
      socket) is not waited for: its result is taken in order if it arrives within
      those iterations, otherwise time may move first. Tests that need the thread's
      result before a deadline should wait on it rather than on the clock, or hold
      time still while it runs with :meth:`busy` (an HTTP request in flight to a
      fake server on the same clock, so the server sees it at the time it was sent).

    One loop is watched at a time: a sleep on another loop (the next test's) moves the
    watch there, and sleepers left on a closed loop are dropped.

    Example:
        >>> clock = FakeClock()
        >>> async def nap() -> float:
        ...     await clock.sleep(60)
        ...     return clock()
        >>> asyncio.run(nap())
        1060.0
    """

    __slots__ = (
        "_activity",
        "_heap",
        "_holds",
        "_loop",
        "_seq",
        "now",
        "quiet_hops",
        "sleeps",
    )

    def __init__(self, start: float = 1000.0, *, quiet_hops: int = 32) -> None:
        if quiet_hops < 1:
            raise ValueError(f"quiet_hops must be at least 1, got {quiet_hops!r}")
        self.now = start
        self.quiet_hops = quiet_hops
        self.sleeps: list[float] = []
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._activity = 0
        self._holds = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop being watched

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (sleepers whose deadline passed wake up)."""
        self.now += seconds
        self._activity += 1
        self._wake_due()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Hold time still while the block runs (work the loop cannot see, e.g. I/O).

        Example:
            >>> clock = FakeClock()
            >>> with clock.busy():   # no sleeper wakes here, however long this takes
            ...     pass
        """
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            self._activity += 1

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time."""
        self.sleeps.append(seconds)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (self.now + max(0.0, seconds), next(self._seq), future))
        self._activity += 1
        if self._loop is not loop:
            self._loop = loop
            loop.call_soon(self._watch, loop, self._activity, 0)
        try:
            await future
        finally:
            self._activity += 1  # resumed (or cancelled): this task runs again

    def sleep_sync(self, seconds: float) -> None:
        """The blocking twin of :meth:`sleep`: advances time at once."""
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    def _watch(self, loop: asyncio.AbstractEventLoop, seen: int, quiet: int) -> None:
        """One loop iteration has passed; move time once enough of them were quiet."""
        if self._loop is not loop:  # a later loop took over (this one is finishing)
            return
        while self._heap and _gone(self._heap[0][2]):
            heapq.heappop(self._heap)
        if not self._heap:
            self._loop = None
            return
        quiet = quiet + 1 if self._activity == seen and not self._holds else 0
        if quiet >= self.quiet_hops:
            self.now = max(self.now, self._heap[0][0])
            self._activity += 1
            self._wake_due()
            quiet = 0
        loop.call_soon(self._watch, loop, self._activity, quiet)

    def _wake_due(self) -> None:
        while self._heap and self._heap[0][0] <= self.now:
            _, _, future = heapq.heappop(self._heap)
            if not _gone(future):
                future.set_result(None)


def _gone(future: asyncio.Future[None]) -> bool:
    """Cancelled, or left behind on a loop that has been closed since."""
    return future.done() or future.get_loop().is_closed()
