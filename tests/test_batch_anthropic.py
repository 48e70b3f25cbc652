"""Specification of BatchAPIRunner on ChatAnthropic: Message Batches through the real SDK.

Every test points a real ``ChatAnthropic`` at the fake server's Anthropic routes;
batch timelines run on a :class:`FakeClock` shared by the server and the runner's
polling, so no test waits in real time.
"""

from __future__ import annotations

import base64
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_anthropic")

from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel

from langchain_batchkit import BatchAPIOptions, BatchAPIRunner
from langchain_batchkit._batch_api import BatchJobUnfinishedError, BatchRequestError
from langchain_batchkit._batch_api._anthropic_batches import AnthropicBatches
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._retry import is_transient
from langchain_batchkit.costs import CallUsage, PriceBook
from langchain_batchkit.testing import FakeClock
from tests.anthropic_support import API_KEY, MODEL, SentBatches, claude_for, spy_on_create
from tests.batch_support import llm_for, options_on, prompts

PNG = b"\x89PNG\r\n\x1a\n" + bytes(16)


class Crash(BaseException):
    """Stands for the process dying at some point of a run (not an error to handle)."""


class Weather(BaseModel):
    """Look up the weather of a city."""

    city: str
    days: int


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> SentBatches:
    return spy_on_create(monkeypatch)


# --------------------------------------------------------------------------- answers


async def test_a_bare_model_returns_one_aimessage_with_usage_per_input_mapped_by_custom_id(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_completion_delay=120.0, seed=4)
    runner = BatchAPIRunner(claude_for(server), options=options_on(batch_clock))

    results = await runner.arun(prompts(12))

    assert [r.output.content for r in results if r.output] == [f"echo: {p}" for p in prompts(12)]
    first = results[0].output
    assert isinstance(first, AIMessage) and first.usage_metadata is not None
    assert first.usage_metadata["input_tokens"] > 0
    assert first.response_metadata["model_name"] == MODEL
    assert first.response_metadata["stop_reason"] == "end_turn"
    assert first.response_metadata["usage"]["service_tier"] == "batch"
    assert results[0].usage is not None and results[0].usage.total_tokens > 0
    assert server.stats().batches_created == 1
    assert batch_clock.sleeps == [10.0, 20.0, 40.0, 80.0]


async def test_a_chain_answers_in_batch_as_it_does_online(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on()
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "tell {x}")])
    chain = prompt | claude_for(server) | StrOutputParser()
    inputs = [{"x": "a"}, {"x": "b"}]

    batch = await BatchAPIRunner(chain, options=options_on(batch_clock)).arun(inputs)

    online = [await chain.ainvoke(x) for x in inputs]
    assert batch.outputs == online == ["echo: tell a", "echo: tell b"]


async def test_batch_messages_carry_the_same_metadata_as_online_ones(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on()
    model = claude_for(server)

    [batch] = await BatchAPIRunner(model, options=options_on(batch_clock)).arun(["hi"])
    online = await model.ainvoke("hi")

    assert batch.output is not None
    assert batch.output.response_metadata.keys() == online.response_metadata.keys()
    assert batch.output.usage_metadata == online.usage_metadata


def test_a_sync_run_answers_as_an_async_one(batch_server_on: Any, batch_clock: FakeClock) -> None:
    server = batch_server_on(batch_completion_delay=30.0)
    runner = BatchAPIRunner(claude_for(server) | StrOutputParser(), options=options_on(batch_clock))

    results = runner.run(prompts(3))

    assert results.outputs == [f"echo: {p}" for p in prompts(3)]
    assert server.stats().batches_created == 1


async def test_each_item_costs_the_batch_price_half_the_standard_one(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on()

    results = await BatchAPIRunner(claude_for(server), options=options_on(batch_clock)).arun(
        prompts(3)
    )

    book = PriceBook()
    for r in results:
        assert r.usage is not None and r.cost is not None
        usage = CallUsage(r.usage.input_tokens, r.usage.output_tokens)
        standard = book.cost(usage, MODEL)
        assert standard is not None and r.cost == pytest.approx(standard / 2)
        assert r.cost == pytest.approx(book.cost(usage, MODEL, tier="batch"))


async def test_a_chain_of_claude_then_gpt_runs_one_round_per_provider(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on()
    chain = (
        claude_for(server)
        | StrOutputParser()
        | (lambda text: f"again {text}")
        | llm_for(server)
        | StrOutputParser()
    )

    results = await BatchAPIRunner(chain, options=options_on(batch_clock)).arun(prompts(2))

    assert results.outputs == [f"echo: again echo: {p}" for p in prompts(2)]
    assert server.stats().batches_created == 2  # one Message Batch, then one OpenAI batch
    assert server.stats().files_uploaded == 1


# --------------------------------------------------------------------------- requests


async def test_bound_parameters_reach_every_request(
    batch_server_on: Any, batch_clock: FakeClock, sent: SentBatches
) -> None:
    server = batch_server_on()
    model = claude_for(server, temperature=0.1).bind(temperature=0.3, max_tokens=2)

    results = await BatchAPIRunner(model, options=options_on(batch_clock)).arun(
        ["a long prompt to cut", "another long prompt"]
    )

    for request in sent.requests:
        assert request["params"]["temperature"] == 0.3
        assert request["params"]["max_tokens"] == 2
        assert "stream" not in request["params"]
    for r in results:
        assert r.output is not None and r.output.response_metadata["stop_reason"] == "max_tokens"


async def test_an_image_message_is_sent_as_an_image_block(
    batch_server_on: Any, batch_clock: FakeClock, sent: SentBatches
) -> None:
    server = batch_server_on()
    image = base64.b64encode(PNG).decode()
    message = HumanMessage(
        content=[
            {"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
        ]
    )

    [result] = await BatchAPIRunner(claude_for(server), options=options_on(batch_clock)).arun(
        [[message]]
    )

    assert result.output is not None and result.output.content == "echo: describe"
    [request] = sent.requests
    block = request["params"]["messages"][0]["content"][1]
    assert block == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": image},
    }


async def test_forced_tool_calls_come_back_as_tool_calls(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(structured_answers=True)
    model = claude_for(server).bind_tools([Weather], tool_choice="Weather")

    [result] = await BatchAPIRunner(model, options=options_on(batch_clock)).arun(["Oslo"])

    assert result.output is not None
    [call] = result.output.tool_calls
    assert call["name"] == "Weather"
    assert call["args"] == {"city": "echo: Oslo", "days": 4}


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
async def test_structured_output_is_parsed_into_the_schema(
    batch_server_on: Any, batch_clock: FakeClock, method: str
) -> None:
    server = batch_server_on(structured_answers=True)
    model = claude_for(server).with_structured_output(Weather, method=method)

    results = await BatchAPIRunner(model, options=options_on(batch_clock)).arun(["Rome", "Lima"])

    assert results.outputs == [Weather(city=f"echo: {c}", days=4) for c in ("Rome", "Lima")]


async def test_betas_of_the_model_are_sent_as_the_batch_header_not_in_the_params(
    batch_server_on: Any, batch_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anthropic.resources.beta.messages.batches import AsyncBatches

    server = batch_server_on()
    calls: list[dict[str, Any]] = []
    create = AsyncBatches.create

    async def spying(self: AsyncBatches, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return await create(self, **kwargs)

    monkeypatch.setattr(AsyncBatches, "create", spying)
    model = claude_for(server, betas=["some-beta-2025-01-01"])

    results = await BatchAPIRunner(model, options=options_on(batch_clock)).arun(prompts(2))

    assert all(r.ok for r in results)
    [call] = calls
    assert call["betas"] == ["some-beta-2025-01-01"]
    assert all("betas" not in request["params"] for request in call["requests"])


async def test_requests_of_one_batch_with_different_betas_are_refused_clearly(
    batch_server_on: Any,
) -> None:
    server = batch_server_on()
    lines = [
        b'{"custom_id":"0-1","params":{"betas":["a"],"model":"m"}}\n',
        b'{"custom_id":"1-1","params":{"model":"m"}}\n',
    ]

    async with AnthropicBatches.for_model(claude_for(server)) as api:
        with pytest.raises(BatchRequestError, match="different betas") as refused:
            await api.create(
                name="x", lines=lines, input_file_id=None, metadata={}, on_upload=print
            )

    assert refused.value.code == "mixed_betas"
    assert server.stats().batches_created == 0


# --------------------------------------------------------------------------- jobs


async def test_inputs_beyond_max_requests_per_job_are_split_into_several_batches(
    batch_server_on: Any, batch_clock: FakeClock, sent: SentBatches
) -> None:
    server = batch_server_on()
    options = options_on(batch_clock, max_requests_per_job=4)

    results = await BatchAPIRunner(claude_for(server), options=options).arun(prompts(10))

    assert all(r.ok for r in results)
    assert [len(batch) for batch in sent.batches] == [4, 4, 2]
    assert server.stats().batches_created == 3


async def test_api_errors_are_resubmitted_until_they_succeed(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_line_error_rate=0.4, seed=1)
    options = options_on(batch_clock, max_resubmits=6)

    results = await BatchAPIRunner(claude_for(server), options=options).arun(prompts(12))

    assert all(r.ok for r in results), results.failed
    retried = [r for r in results if r.attempts > 1]
    assert retried
    for r in retried:
        assert all(a.error is not None and "api_error" in a.error.message for a in r.history)


async def test_expired_requests_are_resubmitted_in_a_new_batch(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_expired_fraction=0.25)
    options = options_on(batch_clock, max_resubmits=1)

    results = await BatchAPIRunner(claude_for(server), options=options).arun(prompts(8))

    # 2 of 8 expire, then 1 of the 2 resubmitted, which has no submission left
    assert len(results.succeeded) == 7
    [last] = results.failed
    assert last.error is not None and isinstance(last.error.exception, BatchJobUnfinishedError)
    assert last.error.exception.status == "expired" and last.attempts == 2
    assert server.stats().batches_created == 2


async def test_invalid_requests_are_not_resubmitted(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(reject_prompts=frozenset({"poison"}))
    runner = BatchAPIRunner(claude_for(server) | StrOutputParser(), options=options_on(batch_clock))

    results = await runner.arun(["fine", "a poison pill"])

    assert results.outputs == ["echo: fine", None]
    error = results[1].error
    assert error is not None and isinstance(error.exception, BatchRequestError)
    assert error.exception.code == "invalid_request_error"
    assert results[1].attempts == 1
    assert server.stats().batches_created == 1


class Pacer:
    """An async sleep that parks the run until the test lets it go."""

    def __init__(self) -> None:
        import asyncio

        self.waiting = asyncio.Event()
        self.go = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.waiting.set()
        await self.go.wait()


async def test_cancel_ends_the_running_batch_and_fails_what_did_not_run(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    import asyncio

    server = batch_server_on(batch_completion_delay=10.0)
    pacer = Pacer()
    options = BatchAPIOptions(sleep=pacer.sleep, clock=batch_clock, poll_initial_wait=1.0)
    runner = BatchAPIRunner(claude_for(server), options=options)
    run = asyncio.ensure_future(runner.arun(prompts(10)))
    await pacer.waiting.wait()  # the batch exists and was checked once
    batch_clock.advance(3.0)  # 3 of its 10 requests are answered

    cancelled = await runner.acancel()
    pacer.go.set()
    results = await run

    assert cancelled == ["msgbatch_fake000000000001"]
    assert len(results.succeeded) == 3 and len(results.failed) == 7
    for r in results.failed:
        assert r.error is not None and isinstance(r.error.exception, BatchJobUnfinishedError)
        assert r.error.exception.status == "cancelled" and r.attempts == 1
    assert server.stats().batches_created == 1


async def test_cancelling_a_batch_that_has_ended_cancels_nothing(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on()
    runner = BatchAPIRunner(claude_for(server), options=options_on(batch_clock))
    await runner.arun(prompts(1))

    async with AnthropicBatches.for_model(claude_for(server)) as api:
        assert await api.cancel("msgbatch_fake000000000001") is False


# --------------------------------------------------------------------------- state file


async def test_a_run_killed_while_waiting_resumes_without_a_new_batch_or_a_second_answer(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path
) -> None:
    server = batch_server_on(batch_completion_delay=100.0)
    state = tmp_path / "jobs.sqlite"

    async def crash(seconds: float) -> None:
        raise Crash("the process died while waiting")

    killed = BatchAPIOptions(sleep=crash, clock=batch_clock, max_requests_per_job=5)
    with pytest.raises(Crash):
        await BatchAPIRunner(claude_for(server), options=killed, state_path=state).arun(prompts(10))
    assert server.stats().batches_created == 2

    options = options_on(batch_clock, max_requests_per_job=5)
    results = await BatchAPIRunner(claude_for(server), options=options, state_path=state).arun(
        prompts(10)
    )

    assert [r.output.content for r in results if r.output] == [f"echo: {p}" for p in prompts(10)]
    assert all(r.attempts == 1 for r in results)
    assert server.stats().batches_created == 2
    assert server.stats().batch_lines_processed == 10


async def test_a_batch_created_just_before_a_crash_is_found_again_not_created_twice(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = batch_server_on()
    state = tmp_path / "jobs.sqlite"
    create = AnthropicBatches.create

    async def create_then_crash(self: AnthropicBatches, **kwargs: Any) -> Any:
        await create(self, **kwargs)
        raise Crash("died before recording the batch id")

    with monkeypatch.context() as patch:
        patch.setattr(AnthropicBatches, "create", create_then_crash)
        with pytest.raises(Crash):
            await BatchAPIRunner(
                claude_for(server), options=options_on(batch_clock), state_path=state
            ).arun(prompts(3))

    results = await BatchAPIRunner(
        claude_for(server), options=options_on(batch_clock), state_path=state
    ).arun(prompts(3))

    assert all(r.ok for r in results)
    assert server.stats().batches_created == 1


async def test_find_takes_only_a_batch_of_the_same_size_created_since_the_run_recorded_it(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    import time

    server = batch_server_on()
    lines = [b'{"custom_id":"%d-1","params":{"model":"m","max_tokens":1}}\n' % i for i in range(3)]

    async with AnthropicBatches.for_model(claude_for(server)) as api:
        made = await api.create(
            name="x", lines=lines, input_file_id=None, metadata={}, on_upload=print
        )
    async with AnthropicBatches.for_model(claude_for(server)) as api:
        other_size = await api.find({}, requests=2, created_after=time.time())
        too_old = await api.find({}, requests=3, created_after=time.time() + 7200)
        found = await api.find({}, requests=3, created_after=time.time())
        again = await api.find({}, requests=3, created_after=time.time())

    assert (other_size, too_old, again) == (None, None, None)
    assert found is not None and found.id == made.id


async def test_find_never_takes_a_batch_the_run_already_holds(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    import time

    server = batch_server_on()
    lines = [b'{"custom_id":"%d-1","params":{"model":"m","max_tokens":1}}\n' % i for i in range(3)]
    async with AnthropicBatches.for_model(claude_for(server)) as api:
        earlier = await api.create(
            name="x", lines=lines, input_file_id=None, metadata={}, on_upload=lambda _: None
        )

    async with AnthropicBatches.for_model(claude_for(server)) as api:
        found = await api.find(
            {}, requests=3, created_after=time.time(), known=frozenset({earlier.id})
        )

    assert found is None  # the crash came before this job was created: nothing to adopt


# --------------------------------------------------------------------------- safety


async def test_the_api_key_is_never_logged_stored_or_shown(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "-".join(("sk", "ant", "api03", "very", "secret", "key", "98765"))
    server = batch_server_on(reject_prompts=frozenset({"poison"}))
    state = tmp_path / "jobs.sqlite"
    caplog.set_level(logging.DEBUG)
    model = claude_for(server, api_key=secret)
    runner = BatchAPIRunner(model, options=options_on(batch_clock), state_path=state)

    results = await runner.arun(["ok", "poison"])

    assert results[0].ok and not results[1].ok
    assert secret not in caplog.text
    assert secret.encode() not in state.read_bytes()
    assert secret not in repr(runner)
    assert secret not in repr(AnthropicBatches.for_model(model))
    assert secret not in str(results[1].error)


def test_a_dropped_connection_to_anthropic_is_transient() -> None:
    import anthropic
    import httpx2

    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages/batches")

    assert is_transient(anthropic.APIConnectionError(request=request))
    assert is_transient(anthropic.APITimeoutError(request=request))


def test_claude_through_another_service_is_refused_at_construction() -> None:
    class ElsewhereClaude(ChatAnthropic):
        @property
        def _llm_type(self) -> str:
            return "anthropic-elsewhere"

    made: Any = ElsewhereClaude
    model = made(model=MODEL, api_key=API_KEY)

    with pytest.raises(ConfigurationError, match="another service"):
        BatchAPIRunner(model)


def test_without_langchain_anthropic_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: Any = ChatAnthropic
    model = made(model=MODEL, api_key=API_KEY)
    monkeypatch.setitem(sys.modules, "langchain_anthropic", None)

    with pytest.raises(ConfigurationError, match=r"pip install 'langchain-batchkit\[anthropic\]'"):
        BatchAPIRunner(model)


# --------------------------------------------------------------------------- re-ask rounds


class Person(BaseModel):
    name: str
    age: int


async def test_a_claude_answer_that_fails_to_parse_is_re_asked_in_a_round_with_tool_results(
    batch_server_on: Any, batch_clock: FakeClock, sent: SentBatches
) -> None:
    from langchain_batchkit import Reask

    server = batch_server_on(structured_answers=True, script={"flaky": ("missing_field",)})
    prompt = ChatPromptTemplate.from_messages([("user", "{text}")])
    chain = prompt | claude_for(server).with_structured_output(Person)
    runner = BatchAPIRunner(chain, options=options_on(batch_clock), reask=Reask(max_attempts=2))

    results = await runner.arun([{"text": "ok one"}, {"text": "flaky two"}])

    assert all(r.ok for r in results), results.failed
    assert [r.attempts for r in results] == [1, 2]
    assert len(sent.batches) == 2 and len(sent.batches[1]) == 1  # only the failed item
    [request] = sent.batches[1]
    answer, feedback = request["params"]["messages"][-2:]
    [tool_use] = [b for b in answer["content"] if b["type"] == "tool_use"]
    [tool_result] = feedback["content"]
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == tool_use["id"]


def test_the_fake_refuses_a_tool_use_without_its_tool_result(batch_server_on: Any) -> None:
    import anthropic

    server = batch_server_on(structured_answers=True)
    call = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    messages: Any = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": "no tool result here"},
    ]
    client = anthropic.Anthropic(base_url=server.url, api_key=API_KEY, max_retries=0)
    with client, pytest.raises(anthropic.BadRequestError, match="tool_result"):
        client.messages.create(model=MODEL, max_tokens=10, messages=messages)


# --------------------------------------------------------------------------- found in review


def _timeout_on_create(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """The ``at``-th creation raises a timeout before anything was created."""
    create = AnthropicBatches.create
    calls: list[int] = []

    async def flaky(self: AnthropicBatches, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == at:
            raise TimeoutError("the request never reached the server")
        return await create(self, **kwargs)

    monkeypatch.setattr(AnthropicBatches, "create", flaky)


def test_after_a_failed_create_another_runs_batch_of_the_same_size_is_not_taken(
    batch_server_on: Any, batch_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = batch_server_on()
    earlier = BatchAPIRunner(claude_for(server), options=options_on(batch_clock))
    assert all(r.ok for r in earlier.run(["apple", "banana", "cherry"]))
    _timeout_on_create(monkeypatch, at=1)

    results = BatchAPIRunner(claude_for(server), options=options_on(batch_clock)).run(
        ["dog", "elephant", "fox"]
    )

    assert [r.output.content for r in results if r.output] == [
        "echo: dog",
        "echo: elephant",
        "echo: fox",
    ]
    assert server.stats().batches_created == 2


def test_after_a_failed_create_the_runs_own_earlier_round_is_not_taken(
    batch_server_on: Any, batch_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = batch_server_on()
    first = ChatPromptTemplate.from_messages([("user", "summarise {text}")])
    second = ChatPromptTemplate.from_messages([("user", "translate {s}")])
    chain = (
        first
        | claude_for(server)
        | StrOutputParser()
        | (lambda s: {"s": s})
        | second
        | claude_for(server)
        | StrOutputParser()
    )
    _timeout_on_create(monkeypatch, at=2)  # round 2's first try

    results = BatchAPIRunner(chain, options=options_on(batch_clock)).run(
        [{"text": t} for t in ("apple", "banana", "cherry")]
    )

    assert results.outputs == [
        f"echo: translate echo: summarise {t}" for t in ("apple", "banana", "cherry")
    ]
    assert server.stats().batches_created == 2
