"""The fake server's flex tier and token counting, through real ``ChatOpenAI`` over HTTP.

OpenAI's flex processing (``service_tier="flex"``) bills Batch API prices on ordinary
chat calls, answers more slowly, and sometimes refuses with a 429
``resource_unavailable`` when flex capacity is short. These tests pin down how the
fake server models it, and how it counts tokens with ``tokenizer="model"``.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from langchain_batchkit import _tokenize
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit.testing._clock import FakeClock
from langchain_batchkit.testing._fakeserver import FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing._fakeserver._faults import FaultPlan

if TYPE_CHECKING:  # importing the plugin here would run before pytest can register it
    from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

MODEL = "gpt-4o-mini"
SAMPLE = "Antidisestablishmentarianism, supercalifragilistic: 12345 67890!"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(16)
RATELIMIT_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def flex_model(server: FakeOpenAIServer, **kwargs: Any) -> ChatOpenAI:
    options: dict[str, Any] = {"max_retries": 0, "timeout": 5.0, "model": MODEL, **kwargs}
    return ChatOpenAI(
        base_url=server.url + "/v1", api_key=SecretStr("fake"), service_tier="flex", **options
    )


@pytest.fixture
def make_client() -> Iterator[Any]:
    """Build raw openai clients (max_retries=0) and close them after the test."""
    clients: list[openai.OpenAI] = []

    def make(server: FakeOpenAIServer) -> openai.OpenAI:
        client = openai.OpenAI(base_url=server.base_url, api_key="fake", max_retries=0, timeout=5)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def ask(client: openai.OpenAI, content: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=kwargs.pop("model", MODEL), messages=[{"role": "user", "content": content}], **kwargs
    )


def chars_prompt_tokens(*texts: str) -> int:
    """The ``tokenizer="chars"`` arithmetic: 3, then 4 plus chars / 4 per message."""
    return 3 + sum(4 + math.ceil(len(text) / 4) for text in texts)


@pytest.fixture
def exact_tokenizer() -> None:
    """Skip unless ``_tokenize`` counts MODEL exactly (``bpe-openai`` installed)."""
    pytest.importorskip("bpe_openai")
    assert _tokenize.count_text("hello", MODEL).exact


# --------------------------------------------------------------------------- the tier


def test_a_flex_answer_reports_the_flex_tier(fake_openai_server: FakeOpenAIServer) -> None:
    reply = flex_model(fake_openai_server).invoke("hello")

    assert reply.content == "echo: hello"
    assert reply.response_metadata["service_tier"] == "flex"
    assert reply.usage_metadata is not None
    details = reply.usage_metadata.get("input_token_details", {})
    assert details.get("flex") == reply.usage_metadata["input_tokens"]


def test_a_streamed_flex_answer_reports_the_flex_tier(
    fake_openai_server: FakeOpenAIServer,
) -> None:
    chunks = list(flex_model(fake_openai_server, stream_usage=True).stream("one two"))

    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == "echo: one two"
    assert merged.response_metadata["service_tier"] == "flex"


def test_a_request_without_service_tier_is_served_by_the_default_tier(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    completion = ask(make_client(fake_openai_server), "hello")

    assert completion.service_tier == "default"


def test_an_unknown_service_tier_gets_400(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(make_client(fake_openai_server), "hello", extra_body={"service_tier": "cheap"})

    assert caught.value.code == "invalid_value"
    assert caught.value.param == "service_tier"


def test_a_model_without_flex_refuses_it_with_400(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(
        FakeServerConfig(flex_unsupported_models=frozenset({"gpt-4o"}))
    )

    with pytest.raises(openai.BadRequestError) as caught:
        flex_model(server, model="gpt-4o").invoke("hello")

    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"
    assert "Unsupported service_tier: flex" in caught.value.message
    assert flex_model(server).invoke("hello").content == "echo: hello"  # another model


def test_flex_multiplies_the_drawn_latency_and_max_latency_caps_it() -> None:
    plan = FaultPlan(FakeServerConfig(latency=0.5, max_latency=2.0))

    assert plan.sample_latency(3.0) == pytest.approx(1.5)
    assert plan.sample_latency(10.0) == 2.0


def test_a_flex_request_waits_latency_times_the_flex_factor(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(latency=0.02, flex_latency_factor=10.0))
    llm = flex_model(server)

    started = time.monotonic()
    llm.invoke("slow")

    assert time.monotonic() - started >= 0.2


# --------------------------------------------------------------------------- no capacity


def test_scripted_flex_unavailable_is_a_429_resource_unavailable_without_retry_after(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    config = FakeServerConfig(requests_per_minute=100, script={"busy": ("flex_unavailable",)})
    server = fake_openai_server_factory(config)

    with pytest.raises(openai.RateLimitError) as caught:
        flex_model(server).invoke("busy")

    error = caught.value
    assert error.code == "resource_unavailable"
    assert "Resource unavailable" in error.message
    assert not [name for name in RATELIMIT_HEADERS if name in error.response.headers]
    assert error.body == {
        "message": error.body["message"],  # type: ignore[index]
        "type": "server_error",
        "param": None,
        "code": "resource_unavailable",
    }


def test_a_flex_request_is_answered_once_the_script_has_passed(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    config = FakeServerConfig(script={"busy": ("flex_unavailable", "flex_unavailable")})
    llm = flex_model(fake_openai_server_factory(config))

    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            llm.invoke("busy")
    assert llm.invoke("busy").content == "echo: busy"


def test_flex_unavailable_is_not_admitted_by_the_rate_limiter(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    config = FakeServerConfig(
        requests_per_minute=1,
        clock=FakeClock(),
        script={"busy": ("flex_unavailable", "flex_unavailable")},
    )
    server = fake_openai_server_factory(config)
    llm = flex_model(server)

    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            llm.invoke("busy")
    llm.invoke("busy")  # the one request a minute is still free

    stats = server.stats()
    assert len(stats.admitted_timestamps) == 1
    assert stats.responses_by_status == {429: 2, 200: 1}


def test_a_default_tier_request_meeting_a_flex_unavailable_step_is_answered(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    config = FakeServerConfig(script={"busy": ("flex_unavailable",)})
    server = fake_openai_server_factory(config)

    completion = ask(make_client(server), "busy")

    assert completion.choices[0].message.content == "echo: busy"
    assert completion.service_tier == "default"


def test_flex_unavailable_rate_refuses_flex_requests_only(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(flex_unavailable_rate=1.0))

    with pytest.raises(openai.RateLimitError) as caught:
        flex_model(server).invoke("hello")

    assert caught.value.code == "resource_unavailable"
    assert ask(make_client(server), "hello").service_tier == "default"


def test_stats_count_flex_requests_and_flex_unavailable_answers(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    config = FakeServerConfig(script={"busy": ("flex_unavailable",)})
    server = fake_openai_server_factory(config)
    llm = flex_model(server)

    with pytest.raises(openai.RateLimitError):
        llm.invoke("busy")
    llm.invoke("busy")
    ask(make_client(server), "default tier")

    stats = server.stats()
    assert (stats.flex_requests, stats.flex_unavailable) == (2, 1)
    assert stats.rate_limited == 1
    server.reset()
    assert (server.stats().flex_requests, server.stats().flex_unavailable) == (0, 0)


# --------------------------------------------------------------------------- tokens


def test_the_chars_tokenizer_keeps_the_old_arithmetic(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    completion = ask(make_client(fake_openai_server), SAMPLE)

    assert completion.usage.prompt_tokens == chars_prompt_tokens(SAMPLE)
    assert completion.usage.completion_tokens == math.ceil(len("echo: " + SAMPLE) / 4)


@pytest.mark.usefixtures("exact_tokenizer")
def test_the_model_tokenizer_counts_as_tokenize_does(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(tokenizer="model"))
    messages = [SystemMessage("Be brief."), HumanMessage(SAMPLE)]

    reply = flex_model(server).invoke(messages)

    assert reply.usage_metadata is not None
    prompt_tokens = reply.usage_metadata["input_tokens"]
    completion_tokens = reply.usage_metadata["output_tokens"]
    assert prompt_tokens == _tokenize.count_messages(messages, MODEL).tokens
    assert completion_tokens == _tokenize.count_text("echo: " + SAMPLE, MODEL).tokens
    assert prompt_tokens != chars_prompt_tokens("Be brief.", SAMPLE)
    assert completion_tokens != math.ceil(len("echo: " + SAMPLE) / 4)


@pytest.mark.usefixtures("exact_tokenizer")
def test_the_model_tokenizer_counts_text_parts_and_images(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(tokenizer="model"))
    image = {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}
    content: list[str | dict[Any, Any]] = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": image},
        {"type": "text", "text": SAMPLE},
    ]

    completion = ask(make_client(server), content)

    expected = _tokenize.count_messages([HumanMessage(content=content)], MODEL).tokens
    assert completion.usage.prompt_tokens == expected
    assert expected == (
        _tokenize.REPLY_PRIMING
        + _tokenize.PER_MESSAGE
        + _tokenize.count_text("describe", MODEL).tokens
        + _tokenize.count_text(SAMPLE, MODEL).tokens
        + _tokenize.IMAGE_TOKENS
    )


@pytest.mark.usefixtures("exact_tokenizer")
def test_the_model_tokenizer_truncates_to_max_tokens_by_its_own_count(
    fake_openai_server_factory: FakeServerFactory, make_client: Any
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(tokenizer="model"))

    completion = ask(make_client(server), SAMPLE, max_tokens=5)

    text = completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert _tokenize.count_text(text, MODEL).tokens == 5
    assert ("echo: " + SAMPLE).startswith(text)


def test_no_prompt_tokens_are_cached_by_default(
    fake_openai_server: FakeOpenAIServer, make_client: Any
) -> None:
    completion = ask(make_client(fake_openai_server), SAMPLE)

    assert completion.usage.prompt_tokens_details.cached_tokens == 0


def test_cached_prompt_fraction_reports_that_share_as_cached(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(cached_prompt_fraction=0.5))

    reply = flex_model(server).invoke(SAMPLE)

    assert reply.usage_metadata is not None
    prompt_tokens = reply.usage_metadata["input_tokens"]
    details = reply.usage_metadata.get("input_token_details", {})
    assert details.get("flex_cache_read") == prompt_tokens // 2
    assert details.get("flex") == prompt_tokens - prompt_tokens // 2


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("flex_latency_factor", 0.5),
        ("flex_latency_factor", float("inf")),
        ("flex_unavailable_rate", 1.5),
        ("flex_unsupported_models", "gpt-4o"),
        ("flex_unsupported_models", {""}),
        ("tokenizer", "words"),
        ("cached_prompt_fraction", -0.1),
    ],
)
def test_a_bad_new_field_is_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"FakeServerConfig.{field} must be"):
        FakeServerConfig(**{field: value})


def test_a_script_may_hold_flex_unavailable_steps() -> None:
    config = FakeServerConfig(script={"busy": ["flex_unavailable", "ok"]})

    assert config.script["busy"] == ("flex_unavailable", "ok")
    assert config.flex_unsupported_models == frozenset()
