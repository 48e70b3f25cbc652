"""The two AIMD controllers, side by side: items in flight, and requests in flight.

Both back off by half on a provider's pushback and creep back by ``1/x`` per
success (additive increase, multiplicative decrease), but they watch different
things, damp differently and cap different quantities:

==============  ====================================  =====================================
..              :class:`AdaptiveConcurrency`          :class:`RequestCap`
==============  ====================================  =====================================
used by         ``batchkit(max_concurrency="auto")``  ``RateLimit(adaptive=True)``
caps            items the window starts at once       model requests open at once (gate)
observes        finished *items*: did one meet a      each *request's* end: a 429 or a
                429 (its error or retry history)      success
halves at most  once per ``limit`` completions        once per ``cooldown`` seconds, from
                                                      the requests open (not the cap)
lives           one batch call                        the limiter: every batch, chain,
                                                      thread and loop sharing it
ceiling         the size rule's value (a larger one   ``max_in_flight`` (none if unset)
                behind a ``RateLimit``)
==============  ====================================  =====================================

How they interact. An item makes ``k`` model requests (``k > 1`` for a chain
that fans out), so ``C`` items in flight can open up to ``C x k`` requests. The
request cap binds whenever it is below that: items are started but their
requests queue at the limiter's gate. The item window binds when it is the
smaller. A 429 halves the request cap at once, from the requests actually open;
the item window hears of it only when the item finishes (after its retries), so
it reacts later and more slowly. Behind a ``RateLimit`` the window's ceiling is
raised (the limiter paces and caps the requests, so items may be many); the
request cap is then the control that matters and the window mostly idles at its
ceiling, shrinking only when items keep meeting 429s despite the limiter.

Why both stay. Without a ``RateLimit`` there are no requests to watch (batchkit
sees only items), so the window is the only control; and it also bounds the work
in progress (memory, open chains), which the request cap does not. The request
cap sees every model call, including those of nested chains that
``max_concurrency`` counts per nesting level (langchain-ai/langchain #15767), and
it is shared by everything using the limiter, which one batch's window cannot be.

Both are arithmetic only: the callers hold their locks and read their clocks.
"""

from __future__ import annotations

import math

__all__ = ["AdaptiveConcurrency", "RequestCap"]


class RequestCap:
    """Requests in flight for an adaptive :class:`~langchain_batchkit.RateLimit`.

    Starts at ``max_in_flight`` (``inf``: no cap until the first 429). A 429 halves
    it from the requests open then (at least 1, at most once per ``cooldown``
    seconds, so one burst of 429s counts once); every success adds ``1/cap``
    (about +1 per round of requests), up to ``ceiling``.

    Args:
        ceiling: ``max_in_flight``, or ``inf`` for none.
        cooldown: seconds between two halvings.

    Example:
        >>> cap = RequestCap(8.0, cooldown=1.0)
        >>> cap.pushback(now=10.0, open_requests=6), cap.value
        (True, 3.0)
        >>> cap.pushback(now=10.5, open_requests=3), cap.value  # within the cooldown
        (False, 3.0)
        >>> cap.success(), round(cap.value, 2)
        (True, 3.33)
    """

    __slots__ = ("_last_decrease", "ceiling", "cooldown", "lowest", "value")

    def __init__(self, ceiling: float, cooldown: float) -> None:
        self.ceiling = ceiling
        self.cooldown = cooldown
        self.value = ceiling
        self.lowest = ceiling
        self._last_decrease = -math.inf

    def pushback(self, now: float, open_requests: int) -> bool:
        """A 429 at ``now`` with ``open_requests`` open (this one included); ``True``
        when that lowered the cap."""
        if now - self._last_decrease < self.cooldown:
            return False
        self._last_decrease = now
        self.value = float(max(1, math.floor(min(self.value, open_requests) * 0.5)))
        self.lowest = min(self.lowest, self.value)
        return True

    def success(self) -> bool:
        """A request got through; ``True`` when that raised the cap."""
        if self.value == math.inf:
            return False
        self.value = min(self.ceiling, self.value + 1.0 / self.value)
        return True


class AdaptiveConcurrency:
    """Items in flight for ``max_concurrency="auto"``: AIMD on provider pushback.

    Starts at the size rule's value. An item that met a rate limit (a 429 in its
    error or its retry history) halves the limit, at most once per ``limit``
    completions so one burst of 429s counts once; every other finished item adds
    ``1/limit`` (about +1 per round of items), up to ``ceiling``. Changing the
    limit never drops or repeats an item: it only decides when the next one starts.

    Args:
        start: the initial limit.
        ceiling: the most it may grow to.
    """

    __slots__ = ("_since_decrease", "ceiling", "limit")

    def __init__(self, start: int, ceiling: int) -> None:
        self.limit = float(start)
        self.ceiling = float(max(start, ceiling))
        self._since_decrease = start

    def current(self) -> int:
        """The number of items that may be in flight now."""
        return max(1, int(self.limit))

    def observe(self, pushed_back: bool) -> None:
        """Feed one finished item: did the provider push back on it?"""
        self._since_decrease += 1
        if pushed_back:
            if self._since_decrease >= self.current():
                self.limit = max(1.0, self.limit / 2)
                self._since_decrease = 0
        elif self.limit < self.ceiling:
            self.limit = min(self.ceiling, self.limit + 1 / self.limit)
