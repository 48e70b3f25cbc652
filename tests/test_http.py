"""End to end over real HTTP: real ChatOpenAI against the local fake OpenAI server."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableParallel
from langchain_openai import ChatOpenAI

from langchain_batchkit import Attempt, RateLimit, RetryPolicy, batchkit
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

SECRET = "sk-live-THISISASECRETKEY1234567890"


def chat(server: FakeOpenAIServer, **kw: Any) -> ChatOpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 5.0)
    return ChatOpenAI(base_url=server.base_url, api_key=SECRET, model="gpt-4o-mini", **kw)  # type: ignore[arg-type]


def _error_type(attempt: Attempt) -> str | None:
    return attempt.error.type if attempt.error is not None else None


def fast_retry(clock: FakeClock, **kw: Any) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, clock=clock, seed=0, **kw)


async def test_every_fault_kind_is_retried_and_every_item_gets_its_own_answer(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(
        FakeServerConfig(
            script={
                "flaky-429": ("429", "ok"),
                "flaky-500": ("500", "503", "ok"),
                "flaky-drop": ("drop", "ok"),
                "flaky-hang": ("hang", "ok"),
            },
            reject_prompts=frozenset({"poison"}),
        )
    )
    clock = FakeClock()
    kit = batchkit(
        chat(server, timeout=0.5) | StrOutputParser(),
        retry=fast_retry(clock, max_attempts=4),
        max_concurrency=8,
        progress=False,
    )
    prompts = ["plain-0", "flaky-429", "flaky-500", "flaky-drop", "flaky-hang", "poison", "plain-1"]

    results = await kit.abatch(prompts)

    by_prompt = {r.input: r for r in results}
    for p in prompts:
        if p != "poison":
            assert by_prompt[p].output == f"echo: {p}", p
    assert [by_prompt[p].attempts for p in prompts] == [1, 2, 3, 2, 2, 1, 1]
    # langchain-openai raises provider-neutral subclasses of the openai errors
    assert [_error_type(a) for a in by_prompt["flaky-500"].history] == ["OpenAIAPIError"] * 2
    assert _error_type(by_prompt["flaky-429"].history[0]) == "OpenAIRateLimitError"
    assert _error_type(by_prompt["flaky-drop"].history[0]) == "OpenAIConnectionError"
    assert _error_type(by_prompt["flaky-hang"].history[0]) == "OpenAITimeoutError"
    poison = by_prompt["poison"]
    assert poison.error is not None and poison.error.type == "OpenAIInvalidRequestError"
    stats = server.stats()
    assert all(n == 1 for n in stats.answers_per_prompt.values())  # nothing answered twice
    assert sum(stats.answers_per_prompt.values()) == 6


async def test_retry_after_from_the_server_is_honoured(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(
        FakeServerConfig(script={"busy": ("429", "ok")}, scripted_retry_after=7.0)
    )
    clock = FakeClock()
    kit = batchkit(chat(server), retry=fast_retry(clock), progress=False)

    result = await kit.ainvoke("busy")

    assert result.ok
    assert len(clock.sleeps) == 1
    assert 7.0 <= clock.sleeps[0] <= 7.7


async def test_retry_failed_over_http_reruns_only_the_failed_rows(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(script={"flaky": ("500", "ok")}))
    kit = batchkit(chat(server) | StrOutputParser(), retry=None, progress=False)
    prompts = ["a", "flaky", "b", "flaky too"]

    first = await kit.abatch(prompts)
    assert [r.index for r in first.failed] == [1, 3]
    again = await first.aretry_failed()

    assert again.outputs == [f"echo: {p}" for p in prompts]
    assert dict(server.stats().answers_per_prompt) == {p: 1 for p in prompts}


async def test_request_cap_holds_across_a_fan_out_chain_over_http(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(latency=0.03))
    llm = chat(server)
    fan_out = RunnableParallel(research=llm, write=llm, edit=llm)

    capped = batchkit(fan_out, rate_limit=RateLimit(max_in_flight=3), max_concurrency=4)
    results = await capped.abatch([f"topic {i}" for i in range(8)])
    assert all(r.ok for r in results)
    assert server.stats().max_in_flight == 3

    server.reset()
    plain = batchkit(fan_out, max_concurrency=4, progress=False)
    await plain.abatch([f"topic {i}" for i in range(8)])
    assert server.stats().max_in_flight == 12  # 4 items x 3 requests: #15767


async def test_adaptive_limiter_backs_off_and_recovers_over_http(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    clock = FakeClock()
    server = fake_openai_server_factory(
        FakeServerConfig(requests_per_minute=5, window_seconds=1.0, clock=clock)
    )
    limit = RateLimit(max_in_flight=8, clock=clock)
    kit = batchkit(
        chat(server, include_response_headers=True) | StrOutputParser(),
        rate_limit=limit,
        retry=fast_retry(clock, max_attempts=10),
        max_concurrency=8,
        progress=False,
    )

    results = await kit.abatch([f"q{i}" for i in range(40)])

    assert results.outputs == [f"echo: q{i}" for i in range(40)]  # none lost
    stats = limit.stats()
    assert stats.rate_limited >= 1  # it met the limit ...
    assert stats.pauses >= 1  # ... paused for it ...
    assert stats.lowest_in_flight_cap < 8  # ... and lowered its cap
    assert server.stats().max_admitted_in_window(1.0) <= 5
    assert server.stats().rate_limited < 20  # far fewer 429s than items (40)
    assert all(n == 1 for n in server.stats().answers_per_prompt.values())

    # The pushback ends (another endpoint, same limiter): the cap climbs back.
    calm = fake_openai_server_factory(FakeServerConfig())
    kit_calm = batchkit(chat(calm), rate_limit=limit, max_concurrency=8, progress=False)
    more = await kit_calm.abatch([f"r{i}" for i in range(60)])
    assert all(r.ok for r in more)
    assert limit.stats().in_flight_cap == 8


async def test_api_keys_never_reach_results_errors_logs_or_reprs(
    fake_openai_server_factory: FakeServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(reject_prompts=frozenset({"bad"})))
    llm = chat(server)
    kit = batchkit(llm, retry=RetryPolicy(max_attempts=1), progress=False)

    with caplog.at_level(logging.DEBUG):
        results = await kit.abatch(["good", "bad"])

    texts = [
        repr(results),
        results._repr_html_(),
        str(results.to_records()),
        repr(kit),
        caplog.text,
        *(r.error.traceback for r in results if r.error),
        *(repr(r) for r in results),
    ]
    assert all(SECRET not in t for t in texts)
    assert results[1].error is not None and results[1].error.type == "OpenAIInvalidRequestError"


def test_consecutive_sync_batches_reuse_chatopenai_clients(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    # langchain-openai caches one async HTTP client per model; its connections belong
    # to the loop that opened them, so every sync call must run on the same loop.
    server = fake_openai_server_factory(FakeServerConfig(script={"flaky": ("500", "ok")}))
    kit = batchkit(chat(server) | StrOutputParser(), retry=None, progress=False)
    first = kit.batch(["a", "flaky"])
    assert [r.index for r in first.failed] == [1]
    again = first.retry_failed()
    assert again.outputs == ["echo: a", "echo: flaky"]
    assert kit.batch(["b"]).outputs == ["echo: b"]
    assert kit.invoke("c").output == "echo: c"
