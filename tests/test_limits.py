"""RateLimit: request/token pacing, the in-flight cap, adaptation, sharing; on fake time."""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import threading
from typing import Any
from uuid import uuid4

import httpx2
import openai
import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_openai import ChatOpenAI
from pydantic import Field

from langchain_batchkit import (
    BatchKitError,
    ConfigurationError,
    RateLimit,
    RetryPolicy,
    batchkit,
)
from langchain_batchkit._limits import RequestTooLargeError, parse_reset
from langchain_batchkit.sizing import estimate_tokens
from langchain_batchkit.testing import FakeChatModel, FakeClock


class ClockedModel(FakeChatModel):
    """Records the (fake) time at which each request reaches the 'provider'."""

    clock: Any = None
    seen: list[float] = Field(default_factory=list)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(self.clock())
        return await super()._agenerate(messages, stop, run_manager, **kwargs)


def clocked(clock: FakeClock) -> ClockedModel:
    return ClockedModel(clock=clock)


def limiter(clock: FakeClock, **kw: Any) -> RateLimit:
    kw.setdefault("headroom", 1.0)  # exact arithmetic; the default leaves 3% for jitter
    return RateLimit(clock=clock, **kw)


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def rate_limited(retry_after: str | None = None) -> openai.RateLimitError:
    headers = {"retry-after": retry_after} if retry_after else {}
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    return openai.RateLimitError(
        "rate limited", response=httpx2.Response(429, headers=headers, request=request), body=None
    )


# -- pacing ---------------------------------------------------------------------------


async def test_requests_never_exceed_the_rate_over_any_window() -> None:
    clock = FakeClock()
    model = clocked(clock)
    limit = limiter(clock, requests_per_minute=60)
    kit = batchkit(model, rate_limit=limit, max_concurrency=20, progress=False)

    results = await kit.abatch([f"q{i}" for i in range(150)])

    assert all(r.ok for r in results)
    assert len(model.seen) == 150
    assert max_in_any_window(model.seen, 60.0) <= 60
    assert model.seen[-1] - model.seen[0] == pytest.approx(149.0)  # evenly paced, no slack


async def test_default_headroom_spaces_requests_three_percent_wider() -> None:
    clock = FakeClock()
    limit = RateLimit(requests_per_minute=60, clock=clock)
    await limit.aacquire()
    start = clock()
    await limit.aacquire()
    assert clock() - start == pytest.approx(1 / 0.97)


async def test_tokens_are_paced_by_the_estimate() -> None:
    clock = FakeClock()
    model = clocked(clock)
    est = lambda messages, params: 100  # noqa: E731
    limit = limiter(clock, tokens_per_minute=600, token_estimator=est)
    kit = batchkit(model, rate_limit=limit, max_concurrency=5, progress=False)
    start = clock()

    await kit.abatch(["a", "b", "c", "d"])

    gaps = [b - a for a, b in zip(model.seen, model.seen[1:], strict=False)]
    # 10 tokens/s and, at headroom=1.0, no burst: one request per 10 s, the first one too
    assert model.seen[0] - start == pytest.approx(10.0)
    assert gaps == pytest.approx([10.0, 10.0, 10.0])


async def test_token_estimate_is_corrected_from_usage() -> None:
    clock = FakeClock()
    # headroom 0.5: 5 tokens/s, and a burst of 10 s of the configured 10 tokens/s = 100
    limit = limiter(clock, tokens_per_minute=600, headroom=0.5, token_estimator=lambda m, p: 100)
    first, second = uuid4(), uuid4()
    await limit.enter(first, 100)  # empties the bucket
    limit.exit(first, used_tokens=20)  # 80 tokens come back
    start = clock()
    await limit.enter(second, 100)
    assert clock() - start == pytest.approx(4.0)  # owes 20 tokens = 4 s at 5 tokens/s


def test_estimate_counts_text_images_and_the_completion() -> None:
    text_only = estimate_tokens([HumanMessage("x" * 400)], {"max_tokens": 50})
    assert 150 <= text_only <= 170
    image = HumanMessage(
        content=[
            {"type": "text", "text": "caption"},
            {"type": "image_url", "image_url": {"url": "http://x/a.png"}},
        ]
    )
    assert estimate_tokens([image], {}) > 765 + 256


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("250ms", 0.25), ("6m0s", 360.0), ("1.5s", 1.5), ("2", 2.0), ("", None)],
)
def test_reset_durations_parse(text: str, seconds: float | None) -> None:
    assert parse_reset(text) == seconds


# -- the in-flight cap --------------------------------------------------------------------


async def test_requests_in_flight_are_capped_across_a_fanning_out_chain() -> None:
    # max_concurrency caps items per nesting level (langchain-ai/langchain #15767): four
    # items x three parallel model calls would put 12 requests in flight.
    model = FakeChatModel(latency=0.01)
    fan_out = RunnableParallel(a=model, b=model, c=model)
    limit = RateLimit(max_in_flight=5)
    kit = batchkit(fan_out, rate_limit=limit, max_concurrency=4, progress=False)

    results = await kit.abatch([f"q{i}" for i in range(16)])

    assert all(r.ok for r in results)
    assert model.calls == 48
    assert model.max_in_flight == 5
    assert limit.stats().max_in_flight == 5
    assert limit.stats().in_flight == 0


async def test_without_a_cap_the_same_chain_sends_more_requests_than_items() -> None:
    model = FakeChatModel(latency=0.01)
    kit = batchkit(RunnableParallel(a=model, b=model, c=model), max_concurrency=4, progress=False)
    await kit.abatch([f"q{i}" for i in range(16)])
    assert model.max_in_flight == 12


def test_one_limiter_caps_requests_across_threads_and_loops() -> None:
    model = FakeChatModel(latency=0.005)
    limit = RateLimit(max_in_flight=3)
    kits = [batchkit(model, rate_limit=limit, max_concurrency=6, progress=False) for _ in range(2)]
    outcomes: list[bool] = []

    def run(kit: Any) -> None:
        outcomes.append(all(r.ok for r in kit.batch([f"q{i}" for i in range(30)])))

    threads = [threading.Thread(target=run, args=(k,)) for k in kits]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == [True, True]
    assert model.max_in_flight == 3
    assert limit.stats().in_flight == 0


async def test_two_concurrent_batches_share_one_budget() -> None:
    clock = FakeClock()
    model = clocked(clock)
    limit = limiter(clock, requests_per_minute=120)
    kit_a = batchkit(model, rate_limit=limit, max_concurrency=8, progress=False)
    kit_b = batchkit(RunnableLambda(lambda x: x) | model, rate_limit=limit, progress=False)

    a, b = await asyncio.gather(
        kit_a.abatch([f"a{i}" for i in range(60)]), kit_b.abatch([f"b{i}" for i in range(60)])
    )

    assert all(r.ok for r in [*a, *b])
    assert max_in_any_window(model.seen, 60.0) <= 120
    assert model.seen[-1] - model.seen[0] == pytest.approx(119 * 0.5)


async def test_cancelled_waiters_give_their_slots_back() -> None:
    model = FakeChatModel()
    limit = RateLimit(max_in_flight=1)
    kit = batchkit(model, rate_limit=limit, max_concurrency=4, progress=False)
    first = uuid4()
    await limit.enter(first, 0)  # hold the only slot
    task = asyncio.create_task(kit.abatch(["a", "b", "c"]))
    for _ in range(10):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert model.calls == 0  # all three were waiting for the slot
    limit.exit(first)
    assert limit.stats().in_flight == 0
    assert (await kit.ainvoke("d")).ok


# -- adaptation ---------------------------------------------------------------------------


async def test_a_429_pauses_everyone_until_retry_after_and_halves_the_cap() -> None:
    clock = FakeClock()
    limit = limiter(clock, max_in_flight=8)
    ids = [uuid4() for _ in range(4)]
    for run_id in ids:
        await limit.enter(run_id, 0)
    limit.exit(ids[0], error=rate_limited("5"))

    assert limit.stats().in_flight_cap == 2  # half of the 4 that were in flight
    assert limit.stats().rate_limited == 1
    start = clock()
    for run_id in ids[1:]:
        limit.exit(run_id)
    await limit.enter(uuid4(), 0)
    assert clock() - start >= 5.0


async def test_the_cap_recovers_additively_after_successes() -> None:
    clock = FakeClock()
    limit = limiter(clock, max_in_flight=4)
    ids = [uuid4() for _ in range(4)]
    for run_id in ids:
        await limit.enter(run_id, 0)
    limit.exit(ids[0], error=rate_limited())
    low = limit.stats().in_flight_cap
    for run_id in ids[1:]:
        limit.exit(run_id)
    for _ in range(40):
        run_id = uuid4()
        await limit.enter(run_id, 0)
        limit.exit(run_id)
    assert low < 4
    assert limit.stats().in_flight_cap == 4.0


async def test_running_out_of_remaining_requests_pauses_until_reset() -> None:
    clock = FakeClock()
    limit = limiter(clock)
    first = uuid4()
    await limit.enter(first, 0)
    limit.exit(
        first,
        headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"},
    )
    start = clock()
    await limit.enter(uuid4(), 0)
    assert clock() - start == pytest.approx(2.0)
    assert limit.stats().pauses == 1


async def test_headers_are_read_from_the_model_response() -> None:
    clock = FakeClock()
    limit = limiter(clock)
    run_id = uuid4()
    await limit.callback.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run_id)
    message = AIMessage(
        "ok",
        response_metadata={
            "headers": {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "3s"}
        },
    )
    await limit.callback.on_llm_end(
        LLMResult(generations=[[ChatGeneration(message=message)]]), run_id=run_id
    )
    start = clock()
    await limit.aacquire()
    assert clock() - start == pytest.approx(3.0)


# -- settling under a limit it was not told: re-pacing, spreading, a learned ceiling ---------


async def _starts_of_waiters(
    limit: RateLimit, clock: FakeClock, n: int
) -> list[asyncio.Task[float]]:
    """``n`` requests queued for their turn; each task returns the time it was let go."""

    async def one() -> float:
        await limit.enter(uuid4(), 0)
        return clock()

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.sleep(0)  # every one has reserved its turn
    return tasks


async def test_requests_already_reserved_are_repaced_after_a_429_without_retry_after() -> None:
    clock = FakeClock()
    limit = limiter(clock, requests_per_minute=60)  # one request a second
    first = uuid4()
    await limit.enter(first, 0)
    start = clock()
    waiters = await _starts_of_waiters(limit, clock, 4)  # their turns: +1 s, +2 s, +3 s, +4 s

    limit.exit(first, error=rate_limited())  # no Retry-After: the provider's window is full
    starts = [await w - start for w in waiters]

    assert starts[0] > 1.0  # none fires at the turn it had before the 429
    assert all(b - a > 1.0 for a, b in itertools.pairwise(starts))  # at the lowered pace
    assert limit.stats().pace < 1.0


async def test_requests_already_reserved_when_a_pause_begins_are_spread_after_it() -> None:
    clock = FakeClock()
    limit = limiter(clock, requests_per_minute=60)
    first = uuid4()
    await limit.enter(first, 0)
    start = clock()
    waiters = await _starts_of_waiters(limit, clock, 4)

    limit.exit(first, error=rate_limited("10"))
    starts = [await w - start for w in waiters]

    spacing = 1.0 / limit.stats().pace
    assert starts[0] == pytest.approx(10.0)
    assert [b - a for a, b in itertools.pairwise(starts)] == pytest.approx([spacing] * 3)


async def test_requests_waiting_for_their_turn_are_not_counted_in_flight() -> None:
    clock = FakeClock()
    limit = limiter(clock, requests_per_minute=60)

    async def one() -> None:
        run_id = uuid4()
        await limit.enter(run_id, 0)
        limit.exit(run_id)  # answered at once: never two requests open

    await asyncio.gather(*(one() for _ in range(10)))

    assert limit.stats().max_in_flight == 1


async def test_the_in_flight_cap_is_halved_from_requests_open_not_waiting() -> None:
    clock = FakeClock()
    limit = limiter(clock, requests_per_minute=60)
    open_ids = [uuid4(), uuid4()]
    for run_id in open_ids:
        await limit.enter(run_id, 0)
    waiters = await _starts_of_waiters(limit, clock, 10)

    limit.exit(open_ids[0], error=rate_limited("1"))

    assert limit.stats().in_flight_cap == 1  # half of the 2 open, not of 12
    limit.exit(open_ids[1])
    for waiter in waiters:  # let the queue drain, one open at a time
        await waiter


async def test_without_retry_after_everyone_pauses_for_a_probe_that_doubles() -> None:
    clock = FakeClock()
    limit = limiter(clock, requests_per_minute=60)
    sent: list[float] = []
    for _ in range(3):  # the provider's window stays full: each probe is refused
        run_id = uuid4()
        await limit.enter(run_id, 0)
        sent.append(clock())
        limit.exit(run_id, error=rate_limited())
    run_id = uuid4()
    await limit.enter(run_id, 0)
    sent.append(clock())

    first, second, third = (b - a for a, b in itertools.pairwise(sent))
    assert second == pytest.approx(2 * first)
    assert third == pytest.approx(2 * second)
    assert limit.stats().pauses == 3


async def test_a_429_for_a_request_sent_before_the_pace_changed_changes_nothing() -> None:
    clock = FakeClock()
    limit = limiter(clock, requests_per_minute=60, max_in_flight=2)
    early, late = uuid4(), uuid4()
    await limit.enter(early, 0)
    await limit.enter(late, 0)  # both went at the first pace
    limit.exit(early, error=rate_limited())
    before = limit.stats()

    limit.exit(late, error=rate_limited())  # the same news, sent before we reacted

    after = limit.stats()
    assert after.rate_limited == 2
    assert (after.pace, after.pace_ceiling, after.pauses) == (
        before.pace,
        before.pace_ceiling,
        before.pauses,
    )


class FixedWindowProvider:
    """A provider limit as a LiteLLM proxy counts it: ``limit`` requests per fixed window
    of the clock, and 429s that say nothing about when the window ends."""

    def __init__(self, clock: FakeClock, limit: int, window: float) -> None:
        self.clock, self.limit, self.window = clock, limit, window
        self.start, self.used = -1.0, 0
        self.answers: list[tuple[float, bool]] = []  # (time, admitted)

    def admits(self) -> bool:
        now = self.clock()
        start = now // self.window * self.window
        if start > self.start:
            self.start, self.used = start, 0
        admitted = self.used < self.limit
        self.used += admitted
        self.answers.append((now, admitted))
        return admitted


async def send_through(limit: RateLimit, provider: FixedWindowProvider, items: int) -> None:
    """Eight workers send ``items`` requests; a refused one is sent again at once."""
    todo = list(range(items))

    async def worker() -> None:
        while todo:
            todo.pop()
            while True:
                run_id = uuid4()
                await limit.enter(run_id, 0)
                if provider.admits():
                    limit.exit(run_id)
                    break
                limit.exit(run_id, error=rate_limited())

    await asyncio.gather(*(worker() for _ in range(8)))


async def test_the_pace_settles_under_a_fixed_window_limit_it_was_not_told() -> None:
    # The provider admits 20 per 2 s window (600 a minute); the limiter is told 900.
    clock = FakeClock()
    provider = FixedWindowProvider(clock, limit=20, window=2.0)
    limit = limiter(clock, requests_per_minute=900)

    await send_through(limit, provider, items=800)  # 40 windows' worth

    refused = [t for t, admitted in provider.answers if not admitted]
    assert len(refused) <= 0.03 * len(provider.answers)
    learned = limit.stats().pace_ceiling * 900
    assert 600 <= learned <= 1.1 * 600  # the last 429 came just above the real limit
    late = [t for t, admitted in provider.answers if admitted and t >= clock() - 40.0]
    assert len(late) >= 0.9 * 20 * 20  # over the last 20 windows: at least 90% of the limit


# -- a long Retry-After; a request that can never fit ------------------------------------------


async def test_a_long_retry_after_pauses_everyone_for_at_most_max_pause() -> None:
    clock = FakeClock()
    limit = limiter(clock, max_pause=60)
    first = uuid4()
    await limit.enter(first, 0)
    start = clock()

    limit.exit(first, error=rate_limited("3600"))
    await limit.enter(uuid4(), 0)

    assert clock() - start == pytest.approx(60.0)


async def test_a_capped_pause_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limit = limiter(clock)
    first = uuid4()
    await limit.enter(first, 0)

    with caplog.at_level(logging.WARNING, logger="langchain_batchkit._limits"):
        limit.exit(first, error=rate_limited("3600"))

    stats = limit.stats()
    assert (stats.pauses_capped, stats.longest_pause_asked) == (1, 3600.0)
    assert "3600" in caplog.text
    assert "max_pause" in caplog.text


async def test_a_request_estimated_above_tokens_per_minute_fails_at_once() -> None:
    clock = FakeClock()
    model = clocked(clock)
    limit = limiter(clock, tokens_per_minute=1000, token_estimator=lambda m, p: 4000)
    kit = batchkit(model, rate_limit=limit, retry=RetryPolicy(max_attempts=5), progress=False)

    result = await kit.ainvoke("far too long")

    assert result.error is not None
    assert result.error.type == "RequestTooLargeError"
    assert "4000" in result.error.message
    assert "tokens_per_minute=1000" in result.error.message
    assert result.attempts == 1  # not retried: it would never fit
    assert model.seen == []
    assert clock.sleeps == []
    assert limit.stats().in_flight == 0


def test_a_request_too_large_fails_at_once_on_the_sync_path_too() -> None:
    clock = FakeClock()
    limit = limiter(clock, tokens_per_minute=1000, token_estimator=lambda m, p: 4000)
    model = FakeChatModel()

    with pytest.raises(RequestTooLargeError) as caught:
        model.invoke("far too long", config={"callbacks": [limit.callback]})

    assert isinstance(caught.value, BatchKitError)
    assert (caught.value.estimate, caught.value.limit) == (4000, 1000)
    copy = pickle.loads(pickle.dumps(caught.value))  # results may travel between processes
    assert (copy.estimate, copy.limit, str(copy)) == (4000, 1000, str(caught.value))
    assert model.calls == 0
    assert clock.sleeps == []


# -- LangChain's BaseRateLimiter ----------------------------------------------------------------


def test_it_is_a_langchain_rate_limiter() -> None:
    clock = FakeClock()
    limit = limiter(clock, requests_per_minute=60)
    assert limit.acquire()
    assert not limit.acquire(blocking=False)
    assert limit.acquire()  # blocks (on the fake clock) for a second
    assert clock.sleeps == [pytest.approx(1.0)]
    llm = ChatOpenAI(api_key="sk-test", model="m", rate_limiter=limit)  # type: ignore[arg-type]
    assert llm.rate_limiter is limit


async def test_async_acquire_waits_its_turn() -> None:
    clock = FakeClock()
    limit = limiter(clock, requests_per_minute=30)
    assert await limit.aacquire()
    assert not await limit.aacquire(blocking=False)
    start = clock()
    assert await limit.aacquire()
    assert clock() - start == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"requests_per_minute": -5}, "requests_per_minute"),
        ({"tokens_per_minute": float("nan")}, "tokens_per_minute"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 2.5}, "max_in_flight"),
        ({"burst": 0.5}, "burst"),
        ({"headroom": 1.5}, "headroom"),
        ({"headroom": 0}, "headroom"),
        ({"token_estimator": 3}, "token_estimator"),
        ({"max_pause": 0}, "max_pause"),
        ({"max_pause": float("inf")}, "max_pause"),
    ],
)
def test_invalid_limits_fail_at_construction(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        RateLimit(**kwargs)


def test_batchkit_refuses_a_rate_limit_that_is_not_one() -> None:
    with pytest.raises(ConfigurationError, match="rate_limit must be a RateLimit"):
        batchkit(FakeChatModel(), rate_limit=60)  # type: ignore[arg-type]


async def test_a_request_waiting_when_a_pause_begins_waits_it_out_once() -> None:
    clock = FakeClock()
    limit = limiter(clock, requests_per_minute=60)
    first, second = uuid4(), uuid4()
    await limit.enter(first, 0)
    start = clock()
    waiting = asyncio.create_task(limit.enter(second, 0))  # its turn comes in 1 s
    await asyncio.sleep(0)
    limit.exit(first, error=rate_limited("5"))  # meanwhile a 429 says: wait 5 s
    await waiting
    assert clock() - start == pytest.approx(5.0)
    assert limit.stats().requests == 2  # one reservation each, none made twice


# -- cancellation never leaks a slot; pauses do not release a herd --------------------------


async def test_cancelling_a_run_mid_call_gives_every_slot_back() -> None:
    # A cancelled model call never fires on_llm_end/on_llm_error: the slot must still
    # come back, or a shared limiter ends up with no slots at all.
    release = asyncio.Event()
    four_in = asyncio.Event()
    entered: list[int] = []

    class Held(FakeChatModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            entered.append(1)
            if len(entered) == 4:
                four_in.set()
            await release.wait()
            return await super()._agenerate(*args, **kwargs)

    limit = RateLimit(max_in_flight=4)
    kit = batchkit(Held(), rate_limit=limit, max_concurrency=4, progress=False)
    task = asyncio.create_task(kit.abatch([f"q{i}" for i in range(8)]))
    await four_in.wait()
    assert limit.stats().in_flight == 4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limit.stats().in_flight == 0
    release.set()
    again = await batchkit(FakeChatModel(), rate_limit=limit, progress=False).abatch(["a", "b"])
    assert all(r.ok for r in again)


async def test_a_slot_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    limit = RateLimit(max_in_flight=1)
    holder = uuid4()
    await limit.enter(holder, 0)
    waiter = asyncio.create_task(limit.enter(uuid4(), 0))
    await asyncio.sleep(0)  # queued for the slot
    waiter.cancel()  # cancelled ...
    limit.exit(holder)  # ... in the same tick as the slot is handed over
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limit.stats().in_flight == 0
    await asyncio.wait_for(limit.enter(uuid4(), 0), 1)  # the next one gets in


async def test_requests_queued_during_a_pause_stay_evenly_spaced_after_it() -> None:
    clock = FakeClock()
    limit = limiter(clock, requests_per_minute=60)
    first = uuid4()
    await limit.enter(first, 0)
    start = clock()
    limit.exit(first, error=rate_limited("10"))
    starts: list[float] = []

    async def one() -> None:
        await limit.enter(uuid4(), 0)
        starts.append(clock() - start)

    await asyncio.gather(*(one() for _ in range(5)))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert starts[0] == pytest.approx(10.0)
    assert limit.stats().pace < 1.0
    assert gaps == pytest.approx([1 / limit.stats().pace] * 4)  # evenly spaced at the eased pace
