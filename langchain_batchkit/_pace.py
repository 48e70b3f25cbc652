"""The adaptive pace: how much of the configured rates to use, learned from 429s.

Arithmetic only: no clock, no sleep, no lock. The requests carry their send times
(:class:`Call`), and :class:`~langchain_batchkit._reservations.Reservations`
multiplies its buckets' rates by :attr:`Pace.value`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Call", "Pace"]

#: Pace during a 429 episode and the most it restarts at afterwards, as a share of the ceiling.
EPISODE_PACE = 0.95
#: The least the pace restarts at after an episode, as a share of the ceiling.
LOWEST_RESTART = 0.25
#: Spacings (at the lowered pace) of the first probe pause after a 429 without Retry-After.
PROBE_SPACINGS = 2.0
#: How far the pace creeps up, as a share of the ceiling, per provider window of successes...
CREEP = 0.02
#: ... up to this share of the ceiling; beyond it, it probes upward four times slower.
NEAR_CEILING = 0.97
#: The fewest and the most successes taken as one provider window (for the creep): a first
#: 429 after a long clean run (jitter) says little about the window, and must not make the
#: pace crawl back for the rest of the run.
MIN_WINDOW_SUCCESSES = 20
MAX_WINDOW_SUCCESSES = 500


@dataclass(frozen=True, slots=True)
class Call:
    """A request let through: its token estimate, when it went, the schedule it was in."""

    tokens: int
    sent_at: float
    epoch: int
    pace: float


class Pace:
    """How much of the configured rates to use, learned from 429s: arithmetic only.

    ``value`` multiplies the configured rates; ``epoch`` names the schedule that
    reservations are made in, and changes whenever the ones already made must be
    made again (the pace went down, a pause began).

    - The first 429 of an *episode* (429s with no success in between, counting only
      requests sent since the last change) makes the pace that request went at the
      ``ceiling``. Without a ``Retry-After`` everyone then pauses: two spacings, doubled
      at each further 429 of the episode, so a window that stays full until it ends
      (a fixed-window proxy) costs a few 429s, not one per request still queued.
    - The first success of a request sent since ends the episode: the provider's
      window reopened between the last refused request and that one (the midpoint is
      taken). The pace restarts at the *goodput* of the cycle that ends there (the
      configured budget's share that got through since the previous episode), between
      :data:`LOWEST_RESTART` and :data:`EPISODE_PACE` of the ceiling. A window never
      lets more through than its limit, so that is at or under the real limit.
    - Each success then raises the pace by :data:`CREEP` of the ceiling per "window" of
      successes (as many as got through before the first 429), and four times slower
      from :data:`NEAR_CEILING` of it on, probing upward: a later 429 comes just above
      the real limit, costs a probe or two, and sets a tight ceiling, every few windows
      at most. The pace never goes above the configured rates.

    Nothing here reads a clock or sleeps: the requests carry their send times.
    """

    __slots__ = (
        "_cycle_start",
        "_delivered",
        "_episode_epoch",
        "_episode_start",
        "_in_episode",
        "_last_refused",
        "_probes",
        "_successes",
        "_upto_episode",
        "_window",
        "ceiling",
        "epoch",
        "value",
    )

    def __init__(self) -> None:
        self.value = 1.0
        self.ceiling = 1.0
        self.epoch = 0
        self._in_episode = False
        self._episode_epoch = 0
        self._episode_start = 0.0
        self._last_refused = 0.0
        self._probes = 0
        self._successes = 0
        self._window: float | None = None  # successes before the first 429
        self._cycle_start: float | None = None  # the first request, then each episode's end
        self._delivered = 0.0  # seconds of configured budget that got through in the cycle
        self._upto_episode = 0.0  # ... by requests sent before the episode began

    def sent(self, now: float) -> None:
        """A request went out (the first cycle starts with the first one)."""
        if self._cycle_start is None:
            self._cycle_start = now

    def repace(self) -> None:
        """Reservations already made must be made again (a pause began)."""
        self.epoch += 1

    def pushback(self, call: Call, cost: float, *, told_when: bool) -> float | None:
        """A 429 for ``call``, which used ``cost`` seconds of the configured budget.

        Returns ``None`` when it says nothing new (the request went before the last
        change), else the probe pause in seconds (0 when the provider said how long
        to wait); then reservations already made are to be made again.
        """
        if call.epoch != self.epoch:
            return None
        if not self._in_episode:
            self._in_episode = True
            self._probes = 0
            if self._window is None:
                self._window = float(
                    min(max(self._successes, MIN_WINDOW_SUCCESSES), MAX_WINDOW_SUCCESSES)
                )
            self.ceiling = call.pace
            self._upto_episode = self._delivered
            self._episode_start = call.sent_at
            self.value = min(self.value, call.pace * EPISODE_PACE)
            self._episode_epoch = self.epoch + 1
        self._probes += 1
        self._last_refused = call.sent_at
        self.repace()
        if told_when or cost <= 0:
            return 0.0
        return cost / self.value * PROBE_SPACINGS * 2.0 ** (self._probes - 1)

    def success(self, call: Call, cost: float) -> bool:
        """``call`` got through; ``True`` when that lowered the pace (re-pace then)."""
        self._successes += 1
        self._delivered += cost
        if not self._in_episode:
            if self._window is not None:
                step = self.ceiling * CREEP / self._window
                if self.value >= NEAR_CEILING * self.ceiling:
                    step /= 4
                self.value = min(1.0, self.value + step)
            return False
        if call.epoch < self._episode_epoch:
            if call.sent_at < self._episode_start:
                self._upto_episode += cost  # late news of the cycle that just ended
            return False
        self._in_episode = False
        reopened = (self._last_refused + call.sent_at) / 2
        start = self._cycle_start if self._cycle_start is not None else reopened
        goodput = self._upto_episode / (reopened - start) if reopened > start else self.ceiling
        restart = min(max(goodput, LOWEST_RESTART * self.ceiling), EPISODE_PACE * self.ceiling)
        self._cycle_start = reopened
        self._delivered = cost
        lowered = restart < self.value
        self.value = restart
        if lowered:
            self.repace()
        return lowered
