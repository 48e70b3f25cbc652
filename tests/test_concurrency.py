"""Concurrency presets, the auto size rule and the Little's-law calculator."""

from __future__ import annotations

import asyncio

import pytest

from langchain_batchkit import ConfigurationError
from langchain_batchkit._concurrency import (
    AdaptiveConcurrency,
    resolve_max_concurrency,
    validate_max_concurrency,
)
from langchain_batchkit.sizing import PRESETS, concurrency_for_rate_limit, concurrency_for_size


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 10), (19, 10), (20, 8), (99, 8), (100, 5), (999, 5), (1000, 5), (10**6, 5), (None, 5)],
)
def test_auto_rule_by_batch_size(n: int | None, expected: int) -> None:
    assert concurrency_for_size(n) == expected


def test_every_preset_value_lies_in_its_table_range() -> None:
    for p in PRESETS.values():
        assert p.low <= p.value <= p.high, p.name


def test_presets_transcribe_the_course_tables() -> None:
    table = {name: (p.low, p.high) for name, p in PRESETS.items()}
    assert table == {
        "small": (10, 20),
        "medium": (5, 10),
        "large": (2, 5),
        "sequential": (1, 1),
        "batch": (5, 10),
        "abatch": (10, 20),
        "abatch_chunked": (2, 5),
    }


def test_an_int_always_wins() -> None:
    assert resolve_max_concurrency(37, 10**6) == 37


def test_a_preset_name_resolves_to_its_value() -> None:
    assert resolve_max_concurrency("abatch", None) == 20


@pytest.mark.parametrize("bad", [0, -3, "turbo", True, 1.5, None])
def test_invalid_values_are_refused_with_the_choices(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        validate_max_concurrency(bad)


def test_unknown_preset_names_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="abatch_chunked"):
        validate_max_concurrency("turbo")


def test_littles_law_reproduces_the_course_example() -> None:
    plan = concurrency_for_rate_limit(60, item_latency=30, calls_per_item=3)
    assert plan.concurrency == 10
    assert plan.requests_in_flight == 30
    assert plan.requests_per_minute == pytest.approx(60)


def test_littles_law_stays_under_the_limit() -> None:
    for rpm in (30, 60, 500, 3500):
        for latency in (0.5, 2.0, 12.5):
            for calls in (1, 2, 3):
                plan = concurrency_for_rate_limit(rpm, item_latency=latency, calls_per_item=calls)
                if plan.concurrency > 1:
                    assert plan.requests_per_minute <= rpm + 1e-6
                    bigger = (plan.concurrency + 1) * calls * 60 / latency
                    assert bigger > rpm


def test_headroom_leaves_part_of_the_limit_unused() -> None:
    plan = concurrency_for_rate_limit(600, item_latency=1, headroom=0.5)
    assert plan.concurrency == 5


def test_concurrency_is_at_least_one_even_for_tiny_limits() -> None:
    assert concurrency_for_rate_limit(1, item_latency=0.1).concurrency == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"requests_per_minute": 0, "item_latency": 1}, "requests_per_minute"),
        ({"requests_per_minute": 60, "item_latency": -1}, "item_latency"),
        ({"requests_per_minute": 60, "item_latency": 1, "calls_per_item": 0}, "calls_per_item"),
        ({"requests_per_minute": 60, "item_latency": 1, "headroom": 1.5}, "headroom"),
    ],
)
def test_calculator_rejects_bad_values(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        concurrency_for_rate_limit(**kwargs)  # type: ignore[arg-type]


# -- adaptive concurrency ("auto") -------------------------------------------------------------


def test_adaptive_halves_on_pushback_once_per_round() -> None:
    a = AdaptiveConcurrency(8, 8)
    a.observe(pushed_back=True)
    assert a.current() == 4
    a.observe(pushed_back=True)  # the same burst: not again until a round has passed
    assert a.current() == 4
    for _ in range(3):
        a.observe(pushed_back=True)
    assert a.current() == 2


def test_adaptive_recovers_additively_up_to_the_ceiling() -> None:
    a = AdaptiveConcurrency(8, 8)
    a.observe(pushed_back=True)
    steps = 0
    while a.current() < 8:
        a.observe(pushed_back=False)
        steps += 1
    assert 12 <= steps <= 30  # about +1 per round of `limit` items
    for _ in range(100):
        a.observe(pushed_back=False)
    assert a.current() == 8


def test_adaptive_never_goes_below_one() -> None:
    a = AdaptiveConcurrency(2, 2)
    for _ in range(50):
        a.observe(pushed_back=True)
    assert a.current() == 1


async def test_auto_lowers_items_in_flight_when_the_provider_pushes_back() -> None:
    import httpx2
    import openai
    from langchain_core.runnables import RunnableLambda

    from langchain_batchkit import batchkit

    in_flight = 0
    seen: list[int] = []
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")

    async def call(i: int) -> int:
        nonlocal in_flight
        in_flight += 1
        seen.append(in_flight)
        try:
            await asyncio.sleep(0)
            if 20 <= i < 40:
                response = httpx2.Response(429, request=request)
                raise openai.RateLimitError("slow down", response=response, body=None)
            return i
        finally:
            in_flight -= 1

    results = await batchkit(RunnableLambda(call), retry=None, progress=False).abatch(
        list(range(400))
    )

    assert sorted(r.index for r in results) == list(range(400))  # nothing lost or repeated
    assert max(seen[:20]) == 5  # the auto value for 400 items
    assert min(seen[40:80]) == 1  # pushed back down
    assert max(seen[-50:]) == 5  # and recovered
