"""Per-item retries: what is transient, Retry-After, budgets, events, no shared rounds."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from typing import Any
from uuid import UUID

import httpx
import httpx2
import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI
from tenacity import RetryCallState

from langchain_batchkit import (
    ConfigurationError,
    ProgressEvent,
    RetryPolicy,
    TokenUsage,
    batchkit,
)
from langchain_batchkit._retry import is_transient, retry_after_seconds
from langchain_batchkit.testing import FakeChatModel, FakeClock

URL = "http://127.0.0.1:1/v1/chat/completions"


def api_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx2.Response(status, headers=headers or {}, request=httpx2.Request("POST", URL))
    cls = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        403: openai.PermissionDeniedError,
        404: openai.NotFoundError,
        409: openai.ConflictError,
        422: openai.UnprocessableEntityError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(f"status {status}", response=response, body=None)


def policy(clock: FakeClock, **kw: Any) -> RetryPolicy:
    kw.setdefault("jitter", 0.0)
    return RetryPolicy(sleep=clock.sleep, clock=clock, **kw)


class Script:
    """A runnable whose successive calls per input raise the scripted errors, then answer."""

    def __init__(self, plan: dict[Any, list[BaseException]]) -> None:
        self.plan = {k: list(v) for k, v in plan.items()}
        self.calls: dict[Any, int] = {}

    def runnable(self) -> RunnableLambda[Any, Any]:
        def run(x: Any) -> Any:
            self.calls[x] = self.calls.get(x, 0) + 1
            errors = self.plan.get(x)
            if errors:
                raise errors.pop(0)
            return f"ok-{x}"

        async def arun(x: Any) -> Any:
            return run(x)

        return RunnableLambda(run, afunc=arun)


# -- the pure decision ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        api_error(429),
        api_error(500),
        api_error(502),
        api_error(503),
        api_error(408),
        api_error(409),
        openai.APITimeoutError(request=httpx2.Request("POST", URL)),
        openai.APIConnectionError(request=httpx2.Request("POST", URL)),
        httpx2.ReadTimeout("slow"),
        httpx2.RemoteProtocolError("peer closed connection"),
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("peer closed connection"),
        TimeoutError(),
        ConnectionResetError(),
    ],
    ids=lambda e: type(e).__name__ + str(getattr(e, "status_code", "")),
)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        api_error(400),
        api_error(401),
        api_error(403),
        api_error(404),
        api_error(422),
        ValueError("bad input"),
        KeyError("missing"),
        ZeroDivisionError(),
    ],
    ids=lambda e: type(e).__name__ + str(getattr(e, "status_code", "")),
)
def test_permanent_errors_are_not_retried(exc: BaseException) -> None:
    assert not is_transient(exc)
    assert not RetryPolicy().should_retry(exc)


def test_user_predicate_adds_retryable_errors() -> None:
    p = RetryPolicy(retry_on=lambda e: isinstance(e, ValueError) and "flaky" in str(e))
    assert p.should_retry(ValueError("flaky parse"))
    assert not p.should_retry(ValueError("bad"))


def test_retry_after_headers_are_read() -> None:
    assert retry_after_seconds(api_error(429, {"retry-after": "2"})) == 2.0
    assert retry_after_seconds(api_error(429, {"retry-after": "0.25"})) == 0.25
    assert retry_after_seconds(api_error(429, {"retry-after-ms": "1500"})) == 1.5
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after_seconds(api_error(429, {"retry-after": date})) or 0) <= 30
    assert retry_after_seconds(api_error(429)) is None
    assert retry_after_seconds(ValueError()) is None


def test_delay_honours_retry_after_with_a_little_jitter() -> None:
    p = RetryPolicy(seed=1)
    for _ in range(20):
        d = p.delay(1, api_error(429, {"retry-after": "7"}))
        assert 7 <= d <= 7.7


def test_delay_caps_retry_after() -> None:
    d = RetryPolicy(max_retry_after=5, seed=1).delay(1, api_error(429, {"retry-after": "600"}))
    assert 5 <= d <= 5.5


def test_delay_grows_exponentially_and_is_capped() -> None:
    p = RetryPolicy(initial_backoff=1, multiplier=2, max_backoff=5, jitter=0)
    assert [p.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_jitter_spreads_delays_below_the_base() -> None:
    p = RetryPolicy(initial_backoff=4, jitter=0.5, seed=3)
    delays = {round(p.delay(1), 6) for _ in range(50)}
    assert len(delays) > 10
    assert all(2 <= d <= 4 for d in delays)


def test_retry_after_can_be_ignored() -> None:
    p = RetryPolicy(honor_retry_after=False, jitter=0, initial_backoff=1)
    assert p.delay(1, api_error(429, {"retry-after": "60"})) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"initial_backoff": -1}, "initial_backoff"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 2}, "jitter"),
        ({"max_backoff": 0.1, "initial_backoff": 1}, "max_backoff"),
        ({"max_total_time": 0}, "max_total_time"),
        ({"retry_on": "yes"}, "retry_on"),
    ],
)
def test_invalid_policy_values_fail_at_construction(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        RetryPolicy(**kwargs)


def test_batchkit_refuses_a_retry_that_is_not_a_policy() -> None:
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
        batchkit(RunnableLambda(str), retry=3)  # type: ignore[arg-type]


# -- the engine's retries ---------------------------------------------------------------------


async def test_transient_failures_are_retried_until_success() -> None:
    clock = FakeClock()
    script = Script({0: [api_error(503), api_error(429)]})
    kit = batchkit(script.runnable(), retry=policy(clock, initial_backoff=1), progress=False)

    results = await kit.abatch([0, 1])

    assert results.outputs == ["ok-0", "ok-1"]
    assert results[0].attempts == 3
    assert [a.error and a.error.type for a in results[0].history] == [
        "InternalServerError",
        "RateLimitError",
    ]
    assert results[1].attempts == 1
    assert clock.sleeps == [1, 1]  # a 429 starts its own schedule


def test_429s_without_retry_after_double_their_wait_up_to_a_minute() -> None:
    p = RetryPolicy(jitter=0, seed=0)
    exc = api_error(429)
    waits = [p.delay(n, exc, rate_limited=n) for n in range(1, 9)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_429_with_a_ratelimit_reset_header_waits_for_the_reset() -> None:
    p = RetryPolicy(seed=0)
    exc = api_error(429, {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "20s"})
    assert 120 <= p.delay(1, exc) <= 132  # the later reset (6 min), capped at max_retry_after
    short = api_error(429, {"x-ratelimit-reset-requests": "250ms"})
    assert 0.25 <= p.delay(1, short) <= 0.275


def test_429s_do_not_use_up_attempts_but_are_bounded() -> None:
    clock = FakeClock()
    errors: list[BaseException] = [*[api_error(429)] * 12, *[api_error(500)] * 2]
    script = Script({0: errors})
    kit = batchkit(
        script.runnable(),
        retry=policy(clock, max_attempts=3, max_total_time=None),
        progress=False,
    )
    result = kit.invoke(0)
    assert result.ok and result.attempts == 15  # 12 429s + 2 failures + the success

    always = Script({0: [api_error(429)] * 100})
    capped = batchkit(
        always.runnable(),
        retry=policy(clock, max_rate_limited=5, max_total_time=None),
        progress=False,
    ).invoke(0)
    assert not capped.ok and capped.attempts == 6


def test_out_of_quota_is_not_retried() -> None:
    request = httpx2.Request("POST", URL)
    exc = openai.RateLimitError(
        "You exceeded your current quota",
        response=httpx2.Response(429, request=request),
        body={"error": {"code": "insufficient_quota", "message": "quota"}},
    )
    assert not RetryPolicy().should_retry(exc)


def test_a_retry_on_predicate_that_raises_is_a_no_not_an_abort() -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug in predicate")

    def fails(x: int) -> int:
        raise ValueError(f"bad {x}")

    results = batchkit(
        RunnableLambda(fails), retry=RetryPolicy(retry_on=broken), progress=False
    ).batch([1, 2, 3])
    assert [r.error.type if r.error else None for r in results] == ["ValueError"] * 3
    assert all(r.attempts == 1 for r in results)


async def test_retry_waits_what_retry_after_says() -> None:
    clock = FakeClock()
    script = Script({"x": [api_error(429, {"retry-after": "12"})]})
    kit = batchkit(script.runnable(), retry=policy(clock, seed=0), progress=False)

    result = await kit.ainvoke("x")

    assert result.output == "ok-x"
    assert len(clock.sleeps) == 1
    assert 12 <= clock.sleeps[0] <= 13.2


async def test_permanent_errors_fail_fast_on_the_first_attempt() -> None:
    clock = FakeClock()
    script = Script({0: [api_error(400)], 1: [ValueError("bug in lambda")]})
    kit = batchkit(script.runnable(), retry=policy(clock), progress=False)

    results = await kit.abatch([0, 1, 2])

    assert [(r.attempts, r.error.type if r.error else None) for r in results] == [
        (1, "BadRequestError"),
        (1, "ValueError"),
        (1, None),
    ]
    assert clock.sleeps == []


async def test_a_permanent_error_never_touches_other_items() -> None:
    # RunnableRetry.batch retries in rounds with a shared counter; one permanent error
    # turns every item of the batch into that error. Here each item stands alone.
    clock = FakeClock()
    script = Script({0: [api_error(400)], 1: [api_error(500)], 2: [api_error(429)] * 2})
    kit = batchkit(script.runnable(), retry=policy(clock), progress=False)

    results = await kit.abatch([0, 1, 2, 3])

    assert results.outputs == [None, "ok-1", "ok-2", "ok-3"]
    assert [r.attempts for r in results] == [1, 2, 3, 1]
    assert script.calls == {0: 1, 1: 2, 2: 3, 3: 1}


async def test_each_item_retries_at_once_without_waiting_for_a_round() -> None:
    released = asyncio.Event()
    sleeping = asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        sleeping.set()
        await released.wait()

    done: list[int] = []
    others_done = asyncio.Event()

    def on_progress(event: ProgressEvent) -> None:
        if event.kind == "done":
            done.append(event.index)
            if len(done) == 5:
                others_done.set()

    script = Script({0: [api_error(503)]})
    kit = batchkit(
        script.runnable(),
        retry=RetryPolicy(sleep=held_sleep),
        max_concurrency=2,
        progress=False,
        on_progress=on_progress,
    )
    task = asyncio.create_task(kit.abatch(list(range(6))))
    await sleeping.wait()
    await others_done.wait()  # the others flow past the item waiting to retry
    assert sorted(done) == [1, 2, 3, 4, 5]
    released.set()
    results = await task
    assert results.outputs == [f"ok-{i}" for i in range(6)]


@pytest.mark.parametrize("path", ["sync", "async"])
async def test_each_retried_attempt_is_recorded_with_its_error_tokens_and_latency(
    path: str,
) -> None:
    clock = FakeClock()
    took = iter([0.5, 1.5, 0.25])  # seconds each attempt's parsing step takes
    failures = [ValueError("unparsable 1"), ValueError("unparsable 2")]

    def parse(message: AIMessage) -> str:
        clock.advance(next(took))
        if failures:
            raise failures.pop(0)
        return str(message.content)

    async def aparse(message: AIMessage) -> str:
        return parse(message)

    chain = FakeChatModel() | RunnableLambda(parse, afunc=aparse)
    retry = policy(clock, max_attempts=3, initial_backoff=2, retry_on=lambda e: True)
    kit = batchkit(chain, retry=retry, progress=False)

    result = kit.invoke("hello") if path == "sync" else await kit.ainvoke("hello")

    assert result.ok and result.attempts == 3
    one_call = TokenUsage(1, 2, 3)  # "hello" -> "echo: hello", about 4 characters a token
    assert [(a.error and a.error.message, a.usage, a.latency) for a in result.history] == [
        ("unparsable 1", one_call, 0.5),
        ("unparsable 2", one_call, 1.5),
    ]
    assert result.usage == TokenUsage(3, 6, 9)  # the item's usage still covers every attempt
    assert result.latency == 0.5 + 1.5 + 0.25 + sum(clock.sleeps)


async def test_attempts_are_bounded_and_every_error_is_kept() -> None:
    clock = FakeClock()
    script = Script({0: [api_error(500), api_error(502), api_error(503), api_error(504)]})
    kit = batchkit(script.runnable(), retry=policy(clock, max_attempts=3), progress=False)

    result = await kit.ainvoke(0)

    assert not result.ok
    assert result.attempts == 3
    assert result.error is not None and "503" in result.error.message
    assert [a.error and a.error.message for a in result.history] == ["status 500", "status 502"]
    assert script.calls[0] == 3


async def test_no_retry_starts_past_the_total_time_budget() -> None:
    clock = FakeClock()
    script = Script({0: [api_error(500)] * 10})
    p = policy(clock, max_attempts=10, initial_backoff=1, multiplier=2, max_total_time=2.5)
    result = await batchkit(script.runnable(), retry=p, progress=False).ainvoke(0)

    assert result.attempts == 2  # waits 1 (t=1), then 2 would end at t=3 > 2.5
    assert clock.sleeps == [1]


async def test_retry_none_never_retries() -> None:
    script = Script({0: [api_error(503)]})
    result = await batchkit(script.runnable(), retry=None).ainvoke(0)
    assert (result.ok, result.attempts) == (False, 1)


async def test_retries_are_reported_as_progress_events() -> None:
    clock = FakeClock()
    events: list[ProgressEvent] = []
    script = Script({0: [api_error(429)]})
    kit = batchkit(script.runnable(), retry=policy(clock), on_progress=events.append)
    await kit.abatch([0, 1])

    retry = [e for e in events if e.kind == "retry"]
    assert len(retry) == 1
    assert retry[0].index == 0
    assert retry[0].retrying == 1
    assert retry[0].error is not None and retry[0].error.type == "RateLimitError"
    assert events[-1].retrying == 0


def test_bar_shows_retrying_items(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    script = Script({0: [api_error(429)]})
    events: list[int] = []
    kit = batchkit(
        script.runnable(),
        retry=policy(clock),
        progress=True,
        on_progress=lambda e: events.append(e.retrying),
    )
    kit.batch([0, 1, 2])
    assert len(clock.sleeps) <= 1  # the one retry's wait (skipped if others were running)
    assert max(events) == 1


class RetryListener(BaseCallbackHandler):
    def __init__(self) -> None:
        self.retries: list[tuple[int, UUID]] = []

    def on_retry(self, retry_state: RetryCallState, *, run_id: UUID, **kwargs: Any) -> None:
        self.retries.append((retry_state.attempt_number, run_id))


async def test_langchain_on_retry_fires_for_callback_handlers() -> None:
    clock = FakeClock()
    listener = RetryListener()
    script = Script({0: [api_error(500), api_error(500)]})
    kit = batchkit(script.runnable(), retry=policy(clock), progress=False)

    await kit.abatch([0], config={"callbacks": [listener]})

    assert [n for n, _ in listener.retries] == [1, 2]


async def test_retry_failed_after_exhausted_retries_starts_a_fresh_budget() -> None:
    clock = FakeClock()
    script = Script({0: [api_error(500)] * 3})
    kit = batchkit(script.runnable(), retry=policy(clock, max_attempts=2), progress=False)
    first = await kit.abatch([0, 1])
    assert first[0].attempts == 2

    again = await first.aretry_failed()

    assert again.outputs == ["ok-0", "ok-1"]
    assert again[0].attempts == 4
    assert len(again[0].history) == 3


# -- SDK retries inside ChatOpenAI ------------------------------------------------------------


def test_warns_when_chatopenai_also_retries(caplog: pytest.LogCaptureFixture) -> None:
    llm = ChatOpenAI(api_key="sk-test-not-real", model="gpt-4o-mini")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="langchain_batchkit"):
        batchkit(llm)
    text = caplog.text
    assert "max_retries=2" in text
    assert f"up to {3 * RetryPolicy().max_attempts} times" in text
    assert "sk-test-not-real" not in text


@pytest.mark.parametrize("setting", ["sdk_off", "batchkit_off"])
def test_no_warning_when_only_one_layer_retries(
    caplog: pytest.LogCaptureFixture, setting: str
) -> None:
    if setting == "sdk_off":
        llm = ChatOpenAI(api_key="sk-test", model="m", max_retries=0)  # type: ignore[arg-type]
        kit_retry: RetryPolicy | None = RetryPolicy()
    else:
        llm = ChatOpenAI(api_key="sk-test", model="m")  # type: ignore[arg-type]
        kit_retry = None
    with caplog.at_level(logging.WARNING, logger="langchain_batchkit"):
        batchkit(llm, retry=kit_retry)
    assert caplog.text == ""


async def test_a_catch_all_retry_predicate_never_retries_cancellation() -> None:
    calls: list[int] = []
    started = asyncio.Event()

    async def slow(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise TimeoutError("transient")  # so the item is inside tenacity's loop
        started.set()
        await asyncio.Event().wait()  # until cancelled
        return x

    clock = FakeClock()
    kit = batchkit(
        RunnableLambda(slow), retry=policy(clock, retry_on=lambda e: True), progress=False
    )
    task = asyncio.create_task(kit.ainvoke(1))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [1, 1]  # the retry, cancelled: not retried again
