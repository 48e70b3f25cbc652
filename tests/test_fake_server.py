"""Specification of FakeOpenAIServer, driven by the real openai / langchain_openai clients.

Every test talks real HTTP to a server on 127.0.0.1. Rate-limit windows run on a fake
clock; the only real waiting is a 0.3 s client timeout for hung requests and a few
short latencies that make concurrent requests overlap.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletion
from pydantic import SecretStr

from langchain_batchkit.testing._clock import FakeClock
from langchain_batchkit.testing._fakeserver import FakeOpenAIServer, FakeServerConfig

if TYPE_CHECKING:  # importing the plugin here would run before pytest can register it
    from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

pytest_plugins = ["pytester"]

API_KEY = "sk-test"
MODEL = "gpt-4o-mini"
HANG_TIMEOUT = 0.3


def chat_model(server: FakeOpenAIServer, **kwargs: Any) -> ChatOpenAI:
    options: dict[str, Any] = {"max_retries": 0, "timeout": 5.0, **kwargs}
    return ChatOpenAI(base_url=server.base_url, api_key=SecretStr(API_KEY), model=MODEL, **options)


@pytest.fixture
def make_client() -> Iterator[Any]:
    """Build raw openai clients (max_retries=0) and close them after the test."""
    clients: list[openai.OpenAI] = []

    def make(server: FakeOpenAIServer, timeout: float = 5.0) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=timeout
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def ask(client: openai.OpenAI, prompt: str, **kwargs: Any) -> ChatCompletion:
    completion: ChatCompletion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], **kwargs
    )
    return completion


def ask_with_headers(client: openai.OpenAI, prompt: str, **kwargs: Any) -> httpx.Headers:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], **kwargs
    )
    return raw.headers  # type: ignore[return-value]


def rate_limit_error(client: openai.OpenAI, prompt: str, **kwargs: Any) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, prompt, **kwargs)
    return caught.value


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(url: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


PNG = b"\x89PNG\r\n\x1a\n" + bytes(16)
JPEG = b"\xff\xd8\xff\xe0" + bytes(16)
GIF = b"GIF89a" + bytes(16)
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(8)


# --------------------------------------------------------------------------- answers


def test_each_prompt_gets_its_own_echo_and_usage(fake_openai_server: FakeOpenAIServer) -> None:
    prompts: list[LanguageModelInput] = ["alpha", "beta", "gamma"]

    replies = chat_model(fake_openai_server).batch(prompts)

    assert [reply.content for reply in replies] == ["echo: alpha", "echo: beta", "echo: gamma"]
    for reply in replies:
        usage = reply.usage_metadata
        assert usage is not None
        assert usage["input_tokens"] > 0
        assert usage["output_tokens"] > 0
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert fake_openai_server.stats().answers_per_prompt == {p: 1 for p in prompts}


def test_completion_object_echoes_the_model(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    completion = make_client(fake_openai_server).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_async_invoke_is_answered(fake_openai_server: FakeOpenAIServer) -> None:
    reply = await chat_model(fake_openai_server).ainvoke("async hello")

    assert reply.content == "echo: async hello"


def test_custom_response_text_builds_the_answer(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(response_text=str.upper))

    assert chat_model(server).invoke("shout").content == "SHOUT"


def test_streaming_sends_the_answer_in_chunks_with_usage(
    fake_openai_server: FakeOpenAIServer,
) -> None:
    chunks = list(chat_model(fake_openai_server, stream_usage=True).stream("one two three"))

    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert isinstance(merged, AIMessageChunk)
    assert len(chunks) > 3
    assert merged.content == "echo: one two three"
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["total_tokens"] > 0


def test_max_tokens_truncates_the_answer(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    completion = ask(make_client(fake_openai_server), "a long prompt " * 10, max_tokens=2)

    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "echo: a "
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2


def test_failing_response_text_becomes_a_logged_500(
    fake_openai_server_factory: FakeServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(prompt: str) -> str:
        raise RuntimeError("bug in the answer builder")

    server = fake_openai_server_factory(FakeServerConfig(response_text=broken))

    with pytest.raises(openai.InternalServerError):
        chat_model(server).invoke("anything")
    assert "bug in the answer builder" in caplog.text


# --------------------------------------------------------------------------- routing and HTTP


def test_models_endpoint_lists_configured_models(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(models=("m-1", "m-2")))

    models = make_client(server).models.list()

    assert [model.id for model in models] == ["m-1", "m-2"]


def test_unknown_route_gets_openai_style_404(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    with pytest.raises(openai.NotFoundError, match="Invalid URL"):
        make_client(fake_openai_server).fine_tuning.jobs.list()


def test_wrong_method_gets_405_with_allow_header(fake_openai_server: FakeOpenAIServer) -> None:
    response = httpx.get(f"{fake_openai_server.base_url}/chat/completions")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_keep_alive_serves_sequential_requests_on_one_connection(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(fake_openai_server)

    for prompt in ("one", "two", "three"):
        ask(client, prompt)

    stats = fake_openai_server.stats()
    assert stats.responses_by_status == {200: 3}
    assert stats.connections_opened == 1


def test_malformed_json_body_gets_400(fake_openai_server: FakeOpenAIServer) -> None:
    response = httpx.post(f"{fake_openai_server.base_url}/chat/completions", content=b"{nope")

    assert response.status_code == 400
    assert "parse the JSON body" in response.json()["error"]["message"]


@pytest.mark.parametrize("upload", [False, True], ids=["json", "multipart"])
def test_a_body_over_max_body_bytes_gets_413(
    fake_openai_server_factory: FakeServerFactory, upload: bool
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(max_body_bytes=1000))

    if upload:
        files = {"file": ("big.jsonl", b"x" * 5000)}
        response = httpx.post(f"{server.base_url}/files", files=files, data={"purpose": "batch"})
    else:
        response = httpx.post(f"{server.base_url}/chat/completions", content=b"x" * 5000)

    assert response.status_code == 413
    assert "exceeds 1000 bytes" in response.json()["error"]["message"]
    assert server.stats().responses_by_status == {413: 1}


# --------------------------------------------------------------------------- rate limits


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def two_per_second(fake_openai_server_factory: FakeServerFactory, clock: FakeClock) -> Any:
    """A server admitting 2 requests per 1-second sliding window, on a fake clock."""
    config = FakeServerConfig(requests_per_minute=2, window_seconds=1.0, clock=clock)
    return fake_openai_server_factory(config)


def test_over_the_limit_gets_429_with_exact_retry_after(
    two_per_second: FakeOpenAIServer, clock: FakeClock, make_client: Any
) -> None:
    client = make_client(two_per_second)
    ask(client, "first")  # t = 0
    clock.advance(0.25)
    ask(client, "second")  # t = 0.25
    clock.advance(0.25)

    error = rate_limit_error(client, "third")  # t = 0.5: "first" leaves the window at 1.0

    headers = error.response.headers
    assert headers["retry-after"] == "0.5"
    assert headers["retry-after-ms"] == "500"
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "750ms"  # "second" leaves at 1.25
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"


def test_request_is_admitted_exactly_when_retry_after_has_passed(
    two_per_second: FakeOpenAIServer, clock: FakeClock, make_client: Any
) -> None:
    client = make_client(two_per_second)
    ask(client, "first")
    ask(client, "second")
    clock.advance(0.4)
    retry_after = float(rate_limit_error(client, "third").response.headers["retry-after"])
    assert retry_after == pytest.approx(0.6)

    clock.advance(retry_after - 0.001)
    rate_limit_error(client, "third")
    clock.advance(0.001)
    completion = ask(client, "third")

    assert completion.choices[0].message.content == "echo: third"


def test_every_chat_response_carries_ratelimit_headers(
    fake_openai_server_factory: FakeServerFactory, clock: FakeClock, make_client: Any
) -> None:
    config = FakeServerConfig(
        requests_per_minute=10, tokens_per_minute=1000, window_seconds=1.0, clock=clock
    )
    client = make_client(fake_openai_server_factory(config))

    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}]
    )

    usage = raw.parse().usage
    assert usage is not None
    assert {name: value for name, value in raw.headers.items() if "ratelimit" in name} == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": str(1000 - usage.total_tokens),
        "x-ratelimit-reset-tokens": "1s",
    }


def test_token_limit_gets_429_of_type_tokens(
    fake_openai_server_factory: FakeServerFactory, clock: FakeClock, make_client: Any
) -> None:
    config = FakeServerConfig(tokens_per_minute=100, window_seconds=1.0, clock=clock)
    client = make_client(fake_openai_server_factory(config))
    ask(client, "first", max_tokens=60)
    clock.advance(0.25)

    error = rate_limit_error(client, "second", max_tokens=60)

    assert error.type == "tokens"
    assert error.response.headers["retry-after"] == "0.75"


def test_request_larger_than_token_limit_gets_429_without_retry_after(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    client = make_client(fake_openai_server_factory(FakeServerConfig(tokens_per_minute=10)))

    error = rate_limit_error(client, "big", max_tokens=50)

    assert "Request too large" in error.message
    assert "retry-after" not in error.response.headers


def test_admissions_never_exceed_the_limit_in_any_window(
    fake_openai_server_factory: FakeServerFactory, clock: FakeClock, make_client: Any
) -> None:
    config = FakeServerConfig(requests_per_minute=3, window_seconds=1.0, clock=clock)
    server = fake_openai_server_factory(config)
    client = make_client(server)

    for i in range(20):  # one request every 0.1 s of fake time
        with contextlib.suppress(openai.RateLimitError):
            ask(client, f"p{i}")
        clock.advance(0.1)

    stats = server.stats()
    assert stats.max_admitted_in_window(1.0) == 3
    assert len(stats.admitted_timestamps) == 6  # at 0.0-0.2 and 1.0-1.2
    assert stats.rate_limited == 14


def test_a_fixed_window_counts_from_each_boundary_and_forgets_at_the_next(
    fake_openai_server_factory: FakeServerFactory, clock: FakeClock, make_client: Any
) -> None:
    # Windows are [1000, 1001), [1001, 1002), ... on the clock, as a per-minute counter.
    config = FakeServerConfig(
        requests_per_minute=2, window_seconds=1.0, rate_limit_window="fixed", clock=clock
    )
    client = make_client(fake_openai_server_factory(config))
    clock.advance(0.5)
    ask(client, "first")
    ask(client, "second")
    clock.advance(0.25)
    rate_limit_error(client, "third")  # t = 1000.75: the window is full
    clock.advance(0.25)

    ask(client, "fourth")  # t = 1001.0: a new window; a sliding one would refuse both
    ask(client, "fifth")

    assert rate_limit_error(client, "sixth").response.headers["retry-after"] == "1"


def test_the_litellm_mode_sends_no_retry_after_and_no_ratelimit_headers(
    fake_openai_server_factory: FakeServerFactory, clock: FakeClock, make_client: Any
) -> None:
    config = FakeServerConfig(
        requests_per_minute=1,
        window_seconds=60.0,
        rate_limit_window="fixed",
        send_retry_after=False,
        send_ratelimit_headers=False,
        clock=clock,
    )
    client = make_client(fake_openai_server_factory(config))

    answered = ask_with_headers(client, "first")
    refused = rate_limit_error(client, "second").response.headers

    for headers in (answered, refused):
        assert not [name for name in headers if name.startswith(("x-ratelimit", "retry-after"))]


def test_without_headers_a_too_large_request_still_gets_a_429(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    config = FakeServerConfig(
        tokens_per_minute=10, rate_limit_window="fixed", send_ratelimit_headers=False
    )
    client = make_client(fake_openai_server_factory(config))

    error = rate_limit_error(client, "big", max_tokens=50)

    assert "Request too large" in error.message


# --------------------------------------------------------------------------- random faults


def test_error_rate_5xx_raises_internal_server_error(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(error_rate_5xx=1.0))

    with pytest.raises(openai.InternalServerError) as caught:
        chat_model(server).invoke("boom")

    assert caught.value.status_code in {500, 502, 503}


def test_random_faults_repeat_with_the_same_seed(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    def statuses(server: FakeOpenAIServer) -> list[int]:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
        with httpx.Client(base_url=server.base_url) as client:
            return [client.post("/chat/completions", json=body).status_code for _ in range(12)]

    config = FakeServerConfig(error_rate_5xx=0.5, seed=7)
    first = statuses(fake_openai_server_factory(config))
    second = statuses(fake_openai_server_factory(config))

    assert first == second
    assert {200} < set(first) <= {200, 500, 502, 503}


def test_dropped_connection_raises_api_connection_error(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(drop_rate=1.0))

    with pytest.raises(openai.APIConnectionError) as caught:
        chat_model(server).invoke("vanish")

    assert not isinstance(caught.value, openai.APITimeoutError)
    assert server.stats().dropped == 1


def test_hung_request_times_out_and_the_server_still_stops_promptly(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(hang_rate=1.0))

    with pytest.raises(openai.APITimeoutError):
        chat_model(server, timeout=HANG_TIMEOUT).invoke("never")
    started = time.monotonic()
    server.stop()

    assert time.monotonic() - started < 1.0
    assert not server.running
    assert server.stats().hung == 1


def test_stop_releases_a_request_that_is_still_hanging(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(hang_rate=1.0))
    client = make_client(server, timeout=30.0)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(ask, client, "stuck")
        server.wait_for_stats(lambda stats: stats.hung == 1)
        server.stop()
        error = pending.exception(timeout=5.0)

    assert isinstance(error, openai.APIConnectionError)
    assert not server.running


# --------------------------------------------------------------------------- deterministic faults


def test_rejected_prompt_gets_400_every_time(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(reject_prompts=frozenset({"poison"})))
    llm = chat_model(server)

    for _ in range(3):
        with pytest.raises(openai.BadRequestError, match="reject_prompts"):
            llm.invoke("a poison pill")

    assert llm.invoke("healthy").content == "echo: healthy"
    assert server.stats().responses_by_status == {400: 3, 200: 1}


def test_script_plays_faults_in_order_then_succeeds(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    config = FakeServerConfig(script={"flaky-1": ("429", "500", "drop", "ok")})
    llm = chat_model(fake_openai_server_factory(config))

    with pytest.raises(openai.RateLimitError):
        llm.invoke("flaky-1")
    with pytest.raises(openai.InternalServerError):
        llm.invoke("flaky-1")
    with pytest.raises(openai.APIConnectionError):
        llm.invoke("flaky-1")
    assert llm.invoke("flaky-1").content == "echo: flaky-1"
    assert llm.invoke("flaky-1").content == "echo: flaky-1"  # the script has run out


def test_script_steps_are_counted_per_prompt(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    llm = chat_model(fake_openai_server_factory(FakeServerConfig(script={"flaky": ("500",)})))

    for prompt in ("flaky a", "flaky b"):
        with pytest.raises(openai.InternalServerError):
            llm.invoke(prompt)

    assert llm.invoke("flaky a").content == "echo: flaky a"


def test_rate_limited_attempts_do_not_consume_script_steps(
    fake_openai_server_factory: FakeServerFactory, clock: FakeClock
) -> None:
    config = FakeServerConfig(
        requests_per_minute=1, window_seconds=1.0, clock=clock, script={"s": ("500",)}
    )
    llm = chat_model(fake_openai_server_factory(config))
    llm.invoke("warm-up")

    with pytest.raises(openai.RateLimitError):
        llm.invoke("s")
    clock.advance(1.0)
    with pytest.raises(openai.InternalServerError):
        llm.invoke("s")
    clock.advance(1.0)

    assert llm.invoke("s").content == "echo: s"


# --------------------------------------------------------------------------- concurrency


async def test_max_in_flight_counts_overlapping_requests(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(latency=0.2))
    llm = chat_model(server)

    await asyncio.gather(*(llm.ainvoke(f"p{i}") for i in range(4)))

    stats = server.stats()
    assert stats.max_in_flight == 4
    assert stats.in_flight == 0


async def test_max_in_flight_never_exceeds_the_client_concurrency(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(latency=0.05))

    replies = await chat_model(server).abatch(
        [f"p{i}" for i in range(6)], config={"max_concurrency": 2}
    )

    assert [reply.content for reply in replies] == [f"echo: p{i}" for i in range(6)]
    assert server.stats().max_in_flight == 2


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    "url",
    [
        data_url("image/png", PNG),
        data_url("image/jpeg", JPEG),
        data_url("image/gif", GIF),
        data_url("image/webp", WEBP),
        "https://example.com/cat.png",
    ],
    ids=["png", "jpeg", "gif", "webp", "https"],
)
def test_valid_images_are_accepted_and_counted(
    fake_openai_server: FakeOpenAIServer, url: str
) -> None:
    message = HumanMessage(
        content=[
            {"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
    )

    reply = chat_model(fake_openai_server).invoke([message])

    assert reply.content == "echo: describe"
    assert fake_openai_server.stats().images_seen == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,@@not-base64@@", "not valid base64"),
        (data_url("image/png", GIF), "do not start with the image/png signature"),
        ("ftp://example.com/cat.png", "scheme 'ftp'"),
        (data_url("image/bmp", b"BM" + bytes(8)), "Unsupported image type 'image/bmp'"),
        ("data:image/png,rawbytes", "expected 'data:image/<png|jpeg|gif|webp>;base64"),
    ],
    ids=["bad-base64", "wrong-magic", "ftp", "bmp", "not-base64-url"],
)
def test_invalid_images_get_400(
    fake_openai_server: FakeOpenAIServer, make_client: Any, url: str, reason: str
) -> None:
    client = make_client(fake_openai_server)

    with pytest.raises(openai.BadRequestError, match=reason):
        client.chat.completions.create(model=MODEL, messages=image_message(url))

    assert fake_openai_server.stats().images_seen == 0


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("options", "field_name"),
    [
        ({"latency": -1.0}, "latency"),
        ({"latency": float("nan")}, "latency"),
        ({"latency_distribution": "uniform"}, "latency_distribution"),
        ({"latency_distribution": "pareto"}, "latency"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"tokens_per_minute": 2.5}, "tokens_per_minute"),
        ({"window_seconds": 0.0}, "window_seconds"),
        ({"rate_limit_window": "rolling"}, "rate_limit_window"),
        ({"send_retry_after": 1}, "send_retry_after"),
        ({"send_ratelimit_headers": None}, "send_ratelimit_headers"),
        ({"error_rate_5xx": 1.5}, "error_rate_5xx"),
        ({"drop_rate": -0.1}, "drop_rate"),
        ({"drop_rate": 0.6, "hang_rate": 0.6}, "error_rate_5xx \\+ drop_rate \\+ hang_rate"),
        ({"reject_prompts": "poison"}, "reject_prompts"),
        ({"script": {"x": ("500", "teapot")}}, "script\\['x'\\]"),
        ({"script": {"x": "500"}}, "script\\['x'\\]"),
        ({"clock": 3.0}, "clock"),
        ({"models": ()}, "models"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(
    options: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(ValueError, match=f"FakeServerConfig.{field_name} must be"):
        FakeServerConfig(**options)


def test_config_is_an_immutable_value() -> None:
    config = FakeServerConfig(
        reject_prompts=["a", "b"],  # type: ignore[arg-type]
        script={"x": ["500", "ok"]},
    )

    assert config.reject_prompts == frozenset({"a", "b"})
    assert config.script == {"x": ("500", "ok")}
    with pytest.raises(TypeError):
        config.script["y"] = ("ok",)  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.latency = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- lifecycle, counters


def test_server_is_single_use() -> None:
    server = FakeOpenAIServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.base_url

    with server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        with pytest.raises(RuntimeError, match="single-use"):
            server.start()

    assert not server.running


def test_reset_zeroes_the_counters(fake_openai_server: FakeOpenAIServer, make_client: Any) -> None:
    ask(make_client(fake_openai_server), "before")

    fake_openai_server.reset()

    stats = fake_openai_server.stats()
    assert stats.total_requests == 0
    assert stats.responses_by_status == {}
    assert stats.answers_per_prompt == {}
    assert stats.admitted_timestamps == ()
    assert stats.max_in_flight == 0


def test_wait_for_stats_raises_when_the_state_is_not_reached(
    fake_openai_server: FakeOpenAIServer,
) -> None:
    with pytest.raises(TimeoutError, match="expected state"):
        fake_openai_server.wait_for_stats(lambda stats: stats.hung > 0, timeout=0.0)


def test_api_key_never_reaches_the_logs(
    fake_openai_server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-very-secret-key-123456"
    caplog.set_level(logging.DEBUG, logger="langchain_batchkit")
    with openai.OpenAI(base_url=fake_openai_server.base_url, api_key=secret) as client:
        ask(client, "hello")
        with pytest.raises(openai.NotFoundError) as caught:
            client.fine_tuning.jobs.list()

    assert "POST /v1/chat/completions -> 200" in caplog.text
    assert secret not in caplog.text
    assert secret not in caught.value.response.text


# --------------------------------------------------------------------------- pytest plugin


def test_fake_openai_server_fixture_is_running(fake_openai_server: FakeOpenAIServer) -> None:
    assert fake_openai_server.running
    assert chat_model(fake_openai_server).invoke("fixture").content == "echo: fixture"


def test_factory_fixture_stops_every_server_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from langchain_batchkit.testing._fakeserver import FakeServerConfig

        pytest_plugins = ["langchain_batchkit.testing.pytest_plugin"]
        STARTED = []

        def test_starts_two(fake_openai_server_factory):
            STARTED.append(fake_openai_server_factory())
            STARTED.append(fake_openai_server_factory(FakeServerConfig(latency=0.01)))
            assert all(server.running for server in STARTED)

        def test_both_were_stopped():
            assert len(STARTED) == 2
            assert not any(server.running for server in STARTED)
        """
    )

    result = pytester.runpytest_inprocess(
        "-p", "no:randomly", "-o", "asyncio_default_fixture_loop_scope=function"
    )

    result.assert_outcomes(passed=2)


# --------------------------------------------------------------------------- optional aiohttp

WITHOUT_AIOHTTP = """
import sys

sys.modules["aiohttp"] = None  # as if the 'testing' extra were not installed

import langchain_batchkit.testing.pytest_plugin
from langchain_batchkit.testing import FakeChatModel, FakeClock, FakeOpenAIServer, FakeServerConfig

clock = FakeClock(start=5.0)
clock.advance(1.0)
assert clock() == 6.0
assert FakeChatModel().invoke("hi").content
config = FakeServerConfig(requests_per_minute=10)
try:
    FakeOpenAIServer(config)
except ImportError as exc:
    print(exc)
else:
    raise AssertionError("FakeOpenAIServer started without aiohttp")
"""


def test_fakes_work_without_aiohttp_and_the_server_names_the_extra() -> None:
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }

    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_AIOHTTP],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "pip install 'langchain-batchkit[testing]'" in result.stdout
