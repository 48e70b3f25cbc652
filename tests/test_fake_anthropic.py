"""Specification of the fake server's Anthropic endpoints, through the real anthropic SDK.

``POST /v1/messages`` and the Message Batches routes answer as Anthropic's do:
Anthropic-shaped errors, a key required, batches on the config's clock with results
as JSONL at ``results_url``, and the same answer logic as the OpenAI endpoints.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("langchain_anthropic")

import anthropic

from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from tests.anthropic_support import API_KEY, MODEL

WEATHER_TOOL = {
    "name": "Weather",
    "description": "Look up the weather.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


@pytest.fixture
def client() -> Iterator[Callable[[FakeOpenAIServer], anthropic.Anthropic]]:
    clients: list[anthropic.Anthropic] = []

    def make(server: FakeOpenAIServer) -> anthropic.Anthropic:
        made = anthropic.Anthropic(api_key=API_KEY, base_url=server.url, max_retries=0)
        clients.append(made)
        return made

    yield make
    for made in clients:
        made.close()


def params(text: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    return {"model": MODEL, "max_tokens": 50, "messages": messages, **extra}


def requests(n: int, **extra: Any) -> list[Any]:
    return [{"custom_id": f"req-{i}", "params": params(f"prompt {i}", **extra)} for i in range(n)]


def results_of(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {r.custom_id: r.result for r in client.messages.batches.results(batch_id)}


# --------------------------------------------------------------------------- messages


def test_a_message_is_answered_with_text_usage_and_stop_reason(
    batch_server_on: Any, client: Any
) -> None:
    server = batch_server_on()

    message = client(server).messages.create(**params("hello"))

    assert message.id.startswith("msg_")
    assert [block.text for block in message.content] == ["echo: hello"]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.service_tier == "standard"
    assert server.stats().answers_per_prompt == {"hello": 1}


def test_a_forced_tool_is_answered_with_a_tool_use_block_shaped_by_its_schema(
    batch_server_on: Any, client: Any
) -> None:
    server = batch_server_on(structured_answers=True)

    message = client(server).messages.create(
        **params("Paris", tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "Weather"})
    )

    [block] = message.content
    assert block.type == "tool_use" and block.name == "Weather"
    assert block.input == {"city": "echo: Paris", "days": len("Paris")}
    assert message.stop_reason == "tool_use"


def test_max_tokens_truncates_the_answer_and_says_so(batch_server_on: Any, client: Any) -> None:
    server = batch_server_on()

    message = client(server).messages.create(**(params("a long prompt here") | {"max_tokens": 2}))

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


def test_an_invalid_image_is_refused_with_an_anthropic_error(
    batch_server_on: Any, client: Any
) -> None:
    server = batch_server_on()
    image = {"type": "base64", "media_type": "image/png", "data": "bm90IGEgcG5n"}
    content = [{"type": "text", "text": "look"}, {"type": "image", "source": image}]

    with pytest.raises(anthropic.BadRequestError) as raised:
        client(server).messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": content}]
        )

    body: Any = raised.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "image/png" in body["error"]["message"]


def test_a_request_without_a_key_is_refused_and_the_key_is_never_logged(
    batch_server_on: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = batch_server_on()
    caplog.set_level(logging.DEBUG)
    anonymous = urllib.request.Request(
        f"{server.url}/v1/messages/batches",
        headers={"anthropic-version": "2023-06-01"},
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous)
    client(server).messages.batches.list()

    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error"]["type"] == "authentication_error"
    assert API_KEY not in caplog.text


# --------------------------------------------------------------------------- batches


def test_a_batch_runs_on_the_clock_and_ends_with_its_results_url(
    fake_openai_server_factory: Any, client: Any
) -> None:
    clock = FakeClock()
    server = fake_openai_server_factory(FakeServerConfig(clock=clock, batch_completion_delay=100.0))
    api = client(server)

    created = api.messages.batches.create(requests=requests(4))
    clock.advance(60.0)
    running = api.messages.batches.retrieve(created.id)
    clock.advance(40.0)
    ended = api.messages.batches.retrieve(created.id)

    assert created.processing_status == running.processing_status == "in_progress"
    assert running.request_counts.processing == 4 and running.request_counts.succeeded == 0
    assert running.results_url is None
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.request_counts.succeeded == 4 and ended.request_counts.processing == 0
    assert ended.results_url == f"{server.url}/v1/messages/batches/{created.id}/results"
    assert server.stats().batches_created == 1
    assert server.stats().batch_lines_processed == 4


def test_results_are_one_line_per_request_keyed_by_custom_id_in_shuffled_order(
    batch_server_on: Any, client: Any
) -> None:
    server = batch_server_on(seed=5)
    api = client(server)
    batch = api.messages.batches.create(requests=requests(12))

    lines = list(api.messages.batches.results(batch.id))

    assert sorted(r.custom_id for r in lines) == sorted(f"req-{i}" for i in range(12))
    assert [r.custom_id for r in lines] != [f"req-{i}" for i in range(12)]
    for line in lines:
        assert line.result.type == "succeeded"
        number = line.custom_id.removeprefix("req-")
        assert line.result.message.content[0].text == f"echo: prompt {number}"
        assert line.result.message.usage.service_tier == "batch"


def test_results_of_a_batch_still_in_progress_are_refused(
    batch_server_on: Any, client: Any
) -> None:
    server = batch_server_on(batch_completion_delay=10.0)
    api = client(server)
    batch = api.messages.batches.create(requests=requests(1))

    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        api.messages.batches.results(batch.id)


def test_a_rejected_prompt_errors_that_request_as_an_invalid_request(
    batch_server_on: Any, client: Any
) -> None:
    server = batch_server_on(reject_prompts=frozenset({"prompt 0"}))
    api = client(server)
    batch = api.messages.batches.create(requests=requests(3))

    results = results_of(api, batch.id)

    rejected = results.pop("req-0")
    assert rejected.type == "errored"
    assert rejected.error.error.type == "invalid_request_error"
    assert "rejected" in rejected.error.error.message
    assert {r.type for r in results.values()} == {"succeeded"}


def test_the_expired_fraction_of_a_batch_never_runs(batch_server_on: Any, client: Any) -> None:
    server = batch_server_on(batch_expired_fraction=0.25)
    api = client(server)
    batch = api.messages.batches.create(requests=requests(8))

    kinds = sorted(r.type for r in results_of(api, batch.id).values())

    assert kinds == ["expired"] * 2 + ["succeeded"] * 6
    assert api.messages.batches.retrieve(batch.id).request_counts.expired == 2
    assert server.stats().batch_lines_processed == 6


def test_injected_line_errors_are_api_errors(batch_server_on: Any, client: Any) -> None:
    server = batch_server_on(batch_line_error_rate=1.0)
    api = client(server)
    batch = api.messages.batches.create(requests=requests(3))

    results = results_of(api, batch.id)

    assert {r.type for r in results.values()} == {"errored"}
    assert {r.error.error.type for r in results.values()} == {"api_error"}


def test_a_stream_parameter_errors_that_request_alone(batch_server_on: Any, client: Any) -> None:
    server = batch_server_on()
    api = client(server)
    batch = api.messages.batches.create(
        requests=[*requests(1), {"custom_id": "streamed", "params": params("x", stream=True)}]
    )

    results = results_of(api, batch.id)

    assert results["req-0"].type == "succeeded"
    assert results["streamed"].type == "errored"


def test_cancel_keeps_finished_requests_and_cancels_the_rest(
    fake_openai_server_factory: Any, client: Any
) -> None:
    clock = FakeClock()
    server = fake_openai_server_factory(
        FakeServerConfig(clock=clock, batch_completion_delay=10.0, batch_cancel_delay=5.0)
    )
    api = client(server)
    batch = api.messages.batches.create(requests=requests(10))
    clock.advance(3.0)

    canceling = api.messages.batches.cancel(batch.id)
    clock.advance(5.0)
    ended = api.messages.batches.retrieve(batch.id)

    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (3, 7)
    kinds = [r.type for r in results_of(api, batch.id).values()]
    assert sorted(kinds) == ["canceled"] * 7 + ["succeeded"] * 3


def test_cancelling_an_ended_batch_is_refused(batch_server_on: Any, client: Any) -> None:
    server = batch_server_on()
    api = client(server)
    batch = api.messages.batches.create(requests=requests(1))

    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        api.messages.batches.cancel(batch.id)


def test_batches_are_listed_newest_first_and_paged_both_ways(
    batch_server_on: Any, client: Any
) -> None:
    server = batch_server_on()
    api = client(server)
    ids = [api.messages.batches.create(requests=requests(1)).id for _ in range(5)]

    first = api.messages.batches.list(limit=2)
    listed = [batch.id for batch in api.messages.batches.list(limit=2)]
    before = api.messages.batches.list(limit=2, before_id=ids[1])

    assert [b.id for b in first.data] == [ids[4], ids[3]] and first.has_more
    assert listed == ids[::-1]  # the SDK followed after_id to the end
    assert [b.id for b in before.data] == [ids[3], ids[2]]


def test_an_unknown_batch_is_a_not_found_error(batch_server_on: Any, client: Any) -> None:
    server = batch_server_on()

    with pytest.raises(anthropic.NotFoundError) as missing:
        client(server).messages.batches.retrieve("msgbatch_nope")

    body: Any = missing.value.body
    assert body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("config", "batch", "status", "message"),
    [
        ({"message_batch_max_requests": 2}, requests(3), 400, "at most 2 requests"),
        ({"message_batch_max_bytes": 500}, requests(5), 413, "maximum allowed size"),
        ({}, [], 400, "at least 1"),
        ({}, [{"custom_id": "a b", "params": params("x")}], 400, "pattern"),
        ({}, requests(1) + requests(1), 400, "duplicate"),
    ],
    ids=["too-many", "too-large", "empty", "bad-custom-id", "duplicate-custom-id"],
)
def test_a_batch_beyond_the_limits_is_refused_at_creation(
    batch_server_on: Any,
    client: Any,
    config: dict[str, Any],
    batch: list[Any],
    status: int,
    message: str,
) -> None:
    server = batch_server_on(**config)

    with pytest.raises(anthropic.APIStatusError, match=message) as refused:
        client(server).messages.batches.create(requests=batch)

    assert refused.value.status_code == status
    assert server.stats().batches_created == 0
