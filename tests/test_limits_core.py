"""RateLimit's parts on their own: settings, the reservation core on a fake clock, the cap."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from langchain_batchkit import ConfigurationError, RateLimit, RateLimitSettings
from langchain_batchkit._aimd import RequestCap
from langchain_batchkit._backend import LocalReservations, ReservationBackend
from langchain_batchkit._buckets import RefillingBucket, make_buckets
from langchain_batchkit._reservations import Outcome, Reservations, Turn
from langchain_batchkit.testing import FakeClock

# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requests_per_minute", 0),
        ("requests_per_minute", True),
        ("tokens_per_minute", float("inf")),
        ("max_in_flight", 1.5),
        ("max_in_flight", False),
        ("burst", 0.9),
        ("headroom", 1.01),
        ("adaptive", "yes"),
        ("cooldown", -1),
        ("max_pause", 0),
        ("token_estimator", "len"),
    ],
)
def test_a_bad_setting_is_refused_by_its_name(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"^{field} must be"):
        RateLimitSettings(**{field: value})


def test_settings_are_frozen() -> None:
    settings = RateLimitSettings(requests_per_minute=60)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.requests_per_minute = 120  # type: ignore[misc]


def test_the_keywords_build_settings_and_the_settings_build_a_limiter() -> None:
    limit = RateLimit(requests_per_minute=60, max_in_flight=4, max_pause=30)

    assert limit.settings == RateLimitSettings(
        requests_per_minute=60, max_in_flight=4, max_pause=30.0
    )
    again = RateLimit.from_settings(limit.settings)
    assert again.settings is limit.settings
    assert (again.requests_per_minute, again.max_in_flight, again.max_pause) == (60, 4, 30.0)


def test_a_limiters_settings_are_read_only() -> None:
    limit = RateLimit(requests_per_minute=60)
    with pytest.raises(AttributeError):
        limit.requests_per_minute = 120  # type: ignore[misc]


def test_from_settings_refuses_anything_else() -> None:
    with pytest.raises(ConfigurationError, match="settings must be a RateLimitSettings"):
        RateLimit.from_settings({"requests_per_minute": 60})  # type: ignore[arg-type]


# -- one clock ------------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["sleep", "sync_sleep"])
def test_the_old_sleep_keywords_still_work_with_a_deprecation_warning(keyword: str) -> None:
    clock = FakeClock()
    sleeps: dict[str, Any] = {"sleep": clock.sleep, "sync_sleep": clock.sleep_sync}
    with pytest.warns(DeprecationWarning, match="clock="):
        limit = RateLimit(requests_per_minute=60, clock=clock, **{keyword: sleeps[keyword]})
    assert limit.acquire() and limit.acquire()
    assert clock.sleeps == [pytest.approx(1 / 0.97)]


def test_a_bare_time_function_is_a_clock_too() -> None:
    now = [0.0]
    limit = RateLimit(requests_per_minute=60, clock=lambda: now[0])
    assert limit.acquire(blocking=False)
    assert not limit.acquire(blocking=False)
    now[0] = 2.0
    assert limit.acquire(blocking=False)


# -- the reservation core, with no RateLimit around it --------------------------------------


def core(clock: FakeClock, **settings: Any) -> Reservations:
    settings.setdefault("headroom", 1.0)
    return Reservations(RateLimitSettings(**settings), clock=clock)


def test_reservations_are_spaced_by_the_rate_and_counted() -> None:
    clock = FakeClock()
    c = core(clock, requests_per_minute=60)

    turns = [c.reserve() for _ in range(3)]

    assert turns == [Turn(0.0, 0), Turn(1.0, 0), Turn(2.0, 0)]
    stats = c.stats()
    assert (stats.requests, stats.waited, stats.wait_seconds) == (3, 2, 3.0)


def test_a_turn_waited_out_in_the_same_schedule_goes_at_once() -> None:
    clock = FakeClock()
    c = core(clock, requests_per_minute=60)
    c.reserve()
    turn = c.reserve()
    assert turn is not None

    clock.advance(turn.delay)

    assert c.next_turn(turn) == Turn(0.0, turn.epoch)
    assert c.stats().repaced == 0


def test_a_pause_makes_waiting_turns_book_again_after_it() -> None:
    clock = FakeClock()
    c = core(clock, requests_per_minute=60)
    c.reserve()
    turn = c.reserve()
    assert turn is not None

    c.pause(5.0)
    again = c.next_turn(turn)

    assert again.epoch == turn.epoch + 1 and again.delay == pytest.approx(5.0)  # at its end
    stats = c.stats()
    assert (stats.pauses, stats.paused_seconds, stats.repaced) == (1, 5.0, 1)


def test_settling_corrects_the_token_estimate() -> None:
    clock = FakeClock()
    c = core(clock, tokens_per_minute=600)  # 10 a second, no burst at headroom=1.0
    turn = c.reserve(100)
    assert turn == Turn(pytest.approx(10.0), 0)  # type: ignore[arg-type]
    c.start("a", 100, turn.epoch)

    c.settle("a", Outcome(used_tokens=20))

    assert c.stats().tokens_given_back == 80
    # owes 20 tokens, not 100, then 100 more: 12 s at 10 tokens/s
    assert c.reserve(100) == Turn(pytest.approx(12.0), 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headroom", "capacity"), [(0.97, 6_000 * 0.03), (0.5, 1_000.0), (1.0, 0.0)]
)
def test_the_token_burst_is_the_headrooms_slack_at_most_ten_seconds(
    headroom: float, capacity: float
) -> None:
    buckets = make_buckets(RateLimitSettings(tokens_per_minute=6_000, headroom=headroom), 0.0)
    bucket = buckets["tokens"]
    assert isinstance(bucket, RefillingBucket)
    assert bucket.capacity == pytest.approx(capacity)
    assert bucket.level == bucket.capacity  # full at the start


def admitted_in_any_window(admissions: list[tuple[float, int]], window: float) -> float:
    """The most tokens admitted within ``window`` seconds, both ends included."""
    admissions = sorted(admissions)
    best = total = 0.0
    lo = 0
    for t, tokens in admissions:
        total += tokens
        while admissions[lo][0] < t - window:
            total -= admissions[lo][1]
            lo += 1
        best = max(best, total)
    return best


def test_tokens_admitted_in_any_minute_never_exceed_the_limit() -> None:
    # Greedy callers against a 6,000-TPM limit: a full bucket, bursts after idle spells,
    # over-estimates corrected late. A provider counting any 60 s window must never
    # see more than 6,000 tokens from us (the old 10 s burst let 6,667 through).
    clock = FakeClock()
    c = core(clock, tokens_per_minute=6_000, headroom=0.97)
    admissions: list[tuple[float, int]] = []
    open_calls: list[tuple[str, int]] = []
    for i in range(400):
        if i % 50 == 0:
            clock.advance(90.0)  # idle: the bucket fills up again
        estimate = 100 + (i * 37) % 200
        turn = c.reserve(estimate)
        assert turn is not None
        clock.advance(turn.delay)
        c.start(f"r{i}", estimate, turn.epoch)
        used = estimate // 2 if i % 3 else estimate
        admissions.append((clock(), used))
        open_calls.append((f"r{i}", used))
        if len(open_calls) > 5:  # corrections arrive a few requests later
            call_id, used_tokens = open_calls.pop(0)
            c.settle(call_id, Outcome(used_tokens=used_tokens))

    assert admitted_in_any_window(admissions, 60.0) <= 6_000 * (1 + 1e-9)
    assert c.stats().tokens_given_back > 0


def test_a_correction_never_returns_tokens_the_refill_already_repaid() -> None:
    clock = FakeClock()
    c = core(clock, tokens_per_minute=6_000, headroom=0.97)  # 97 a second, 180 at once
    for name in "abcde":  # five requests over-estimated at 100 tokens each
        turn = c.reserve(100)
        assert turn is not None
        c.start(name, 100, turn.epoch)
    clock.advance(60.0)  # their debt is long repaid: the bucket is full
    assert c.reserve(180) == Turn(0.0, 0)

    for name in "abcde":  # each used 10: 450 tokens the refill already made up for
        c.settle(name, Outcome(used_tokens=10))

    assert c.reserve(97) == Turn(pytest.approx(1.0), 0)  # type: ignore[arg-type]


def test_a_429_with_retry_after_pauses_everyone_for_it_capped_at_max_pause() -> None:
    clock = FakeClock()
    c = core(clock, requests_per_minute=60, max_pause=30)
    c.start("a", 0, 0)

    c.settle("a", Outcome(ok=False, rate_limited=True, retry_after=3600))

    stats = c.stats()
    assert (stats.rate_limited, stats.pauses_capped, stats.longest_pause_asked) == (1, 1, 3600)
    turn = c.reserve()
    assert turn is not None and turn.delay == pytest.approx(30.0)


def test_a_429_without_retry_after_lowers_the_pace_and_pauses_for_a_probe() -> None:
    clock = FakeClock()
    c = core(clock, requests_per_minute=60)
    c.reserve()
    c.start("a", 0, 0)

    c.settle("a", Outcome(ok=False, rate_limited=True))

    stats = c.stats()
    assert stats.pace < 1.0 and stats.pace_ceiling == 1.0 and stats.pauses == 1


def test_a_success_after_the_429s_ends_the_episode() -> None:
    clock = FakeClock()
    c = core(clock, requests_per_minute=60)
    c.start("refused", 0, 0)
    c.settle("refused", Outcome(ok=False, rate_limited=True))
    turn = c.reserve()
    assert turn is not None
    clock.advance(turn.delay)
    c.start("admitted", 0, c.next_turn(turn).epoch)

    c.settle("admitted", Outcome())

    stats = c.stats()
    assert 0.25 <= stats.pace <= 0.95  # restarted under the ceiling


def test_headers_saying_the_budget_ran_out_pause_until_the_reset() -> None:
    clock = FakeClock()
    c = core(clock)
    c.start("a", 0, 0)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}

    c.settle("a", Outcome(headers=headers))

    turn = c.reserve()
    assert turn is not None and turn.delay == pytest.approx(2.0)


def test_an_unknown_or_repeated_settle_changes_nothing() -> None:
    clock = FakeClock()
    c = core(clock, requests_per_minute=60)
    c.start("a", 0, 0)
    c.settle("a", Outcome(ok=False, rate_limited=True))
    before = c.stats()

    c.settle("a", Outcome(ok=False, rate_limited=True))
    c.settle("never-started", Outcome(ok=False, rate_limited=True))

    assert c.stats() == before


def test_calls_in_flight_are_counted_between_start_and_settle() -> None:
    clock = FakeClock()
    c = core(clock)
    c.start("a", 0, 0)
    c.start("b", 0, 0)
    c.settle("a", Outcome())

    stats = c.stats()
    assert (stats.in_flight, stats.max_in_flight, stats.in_flight_cap) == (1, 2, math.inf)


def test_a_non_adaptive_core_obeys_retry_after_and_learns_nothing() -> None:
    clock = FakeClock()
    c = core(clock, requests_per_minute=60, adaptive=False)
    c.start("a", 0, 0)

    c.settle("a", Outcome(ok=False, rate_limited=True))

    assert c.stats().pace == 1.0 and c.stats().pauses == 0


def test_the_local_backend_is_a_reservation_backend() -> None:
    backend: ReservationBackend = LocalReservations(RateLimitSettings(requests_per_minute=60))
    assert backend.reserve(0) == Turn(0.0, 0)


# -- the in-flight cap's AIMD ---------------------------------------------------------------


def test_the_cap_halves_from_the_requests_open_at_most_once_per_cooldown() -> None:
    cap = RequestCap(math.inf, cooldown=1.0)
    assert not cap.success()  # no cap until the first 429

    assert cap.pushback(now=0.0, open_requests=10) and cap.value == 5
    assert not cap.pushback(now=0.5, open_requests=5) and cap.value == 5
    assert cap.pushback(now=1.0, open_requests=1) and cap.value == 1
    assert cap.lowest == 1


def test_the_cap_grows_back_by_one_over_cap_per_success_up_to_its_ceiling() -> None:
    cap = RequestCap(4.0, cooldown=0.0)
    cap.pushback(now=0.0, open_requests=4)
    for _ in range(40):
        cap.success()
    assert cap.value == 4.0
