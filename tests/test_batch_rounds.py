"""Chains with several model steps run in rounds; answers that fail to parse are re-asked
in later rounds. Real ChatOpenAI over HTTP against the fake server, on a fake clock."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from pydantic import BaseModel, field_validator

from langchain_batchkit import BatchAPIOptions, BatchAPIRunner, ConfigurationError, Reask
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer
from tests.batch_support import API_KEY, llm_for, options_on, prompts


class Crash(BaseException):
    """Stands for the process dying (not an error to handle)."""


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture
def files() -> Iterator[Any]:
    clients: list[openai.OpenAI] = []

    def read(server: FakeOpenAIServer) -> list[list[dict[str, Any]]]:
        """Every uploaded batch input file, oldest first, as parsed lines."""
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
        clients.append(client)
        found = sorted(client.files.list(purpose="batch"), key=lambda f: f.id)
        return [
            [json.loads(line) for line in client.files.content(f.id).text.splitlines()]
            for f in found
        ]

    yield read
    for client in clients:
        client.close()


def two_steps(server: FakeOpenAIServer) -> Any:
    first = ChatPromptTemplate.from_messages([("user", "summarise {text}")])
    second = ChatPromptTemplate.from_messages([("user", "translate {summary}")])
    return (
        first
        | llm_for(server)
        | StrOutputParser()
        | RunnableLambda(lambda s: {"summary": s})
        | second
        | llm_for(server, model="gpt-4o")
        | StrOutputParser()
    )


# --------------------------------------------------------------------------- rounds


async def test_a_chain_with_two_model_steps_runs_in_two_rounds(
    batch_server_on: Any, batch_clock: FakeClock, files: Any
) -> None:
    server = batch_server_on()
    runner = BatchAPIRunner(two_steps(server), options=options_on(batch_clock))

    results = await runner.arun([{"text": f"doc {i}"} for i in range(4)])

    assert results.outputs == [f"echo: translate echo: summarise doc {i}" for i in range(4)]
    first, second = files(server)
    assert [line["body"]["model"] for line in first] == ["gpt-4o-mini"] * 4
    assert [line["body"]["model"] for line in second] == ["gpt-4o"] * 4
    assert server.stats().batches_created == 2
    assert all(r.attempts == 2 and r.usage is not None for r in results)


def test_sync_run_goes_through_the_rounds_too(batch_server_on: Any, batch_clock: FakeClock) -> None:
    server = batch_server_on()
    runner = BatchAPIRunner(two_steps(server), options=options_on(batch_clock))

    results = runner.run([{"text": "a"}, {"text": "b"}])

    assert results.outputs == [
        "echo: translate echo: summarise a",
        "echo: translate echo: summarise b",
    ]


async def test_an_item_that_failed_in_round_1_does_not_enter_round_2(
    batch_server_on: Any, batch_clock: FakeClock, files: Any
) -> None:
    server = batch_server_on(reject_prompts=frozenset({"poison"}))
    runner = BatchAPIRunner(two_steps(server), options=options_on(batch_clock))

    results = await runner.arun([{"text": "fine"}, {"text": "poison"}, {"text": "also fine"}])

    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error is not None and results[1].error.type == "BatchRequestError"
    _, second = files(server)
    assert [line["custom_id"] for line in second] == ["r1-0-1", "r1-2-1"]


async def test_an_item_whose_local_step_fails_between_rounds_stops_there(
    batch_server_on: Any, batch_clock: FakeClock, files: Any
) -> None:
    server = batch_server_on()

    def pick(summary: str) -> dict[str, str]:
        if "bad" in summary:
            raise ValueError(f"cannot use {summary!r}")
        return {"summary": summary}

    prompt = ChatPromptTemplate.from_messages([("user", "{summary}")])
    chain = llm_for(server) | StrOutputParser() | pick | prompt | llm_for(server)
    runner = BatchAPIRunner(chain, options=options_on(batch_clock))

    results = await runner.arun(["good", "bad", "good too"])

    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error is not None and "cannot use 'echo: bad'" in results[1].error.message
    assert results[1].usage is not None and results[1].usage.output_tokens > 0  # round 1 paid
    _, second = files(server)
    assert len(second) == 2


async def test_a_restart_resumes_at_the_second_round_without_paying_for_the_first_again(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path
) -> None:
    server = batch_server_on(batch_completion_delay=100.0)
    state = tmp_path / "jobs.sqlite"
    inputs = [{"text": f"doc {i}"} for i in range(3)]
    waits: list[float] = []

    async def crash_in_round_2(seconds: float) -> None:
        waits.append(seconds)
        if server.stats().batches_created == 2:
            raise Crash("the process died while round 2 ran")
        await batch_clock.sleep(seconds)

    options = BatchAPIOptions(sleep=crash_in_round_2, clock=batch_clock, poll_initial_wait=50.0)
    first = BatchAPIRunner(two_steps(server), options=options, state_path=state)
    with pytest.raises(Crash):
        await first.arun(inputs)
    lines_before = server.stats().batch_lines_processed

    second = BatchAPIRunner(two_steps(server), options=options_on(batch_clock), state_path=state)
    results = await second.arun(inputs)

    assert results.outputs == [f"echo: translate echo: summarise doc {i}" for i in range(3)]
    assert server.stats().batches_created == 2  # neither round sent again
    assert (
        server.stats().batch_lines_processed - lines_before <= 3
    )  # only round 2's lines ran since


@pytest.mark.parametrize(
    "chain",
    [
        pytest.param(lambda s: RunnableParallel(a=llm_for(s), b=llm_for(s)), id="parallel"),
        pytest.param(lambda s: RunnableLambda(lambda x: llm_for(s).invoke(x)), id="lambda"),
    ],
)
def test_a_model_the_rounds_cannot_reach_is_refused_naming_flex(chain: Any) -> None:
    server = FakeOpenAIServer.__new__(FakeOpenAIServer)  # never started: only a base_url
    server._port = 1  # type: ignore[attr-defined]

    with pytest.raises(ConfigurationError, match=r"(inside another step|no model step).*flex=True"):
        BatchAPIRunner(chain(server))


# --------------------------------------------------------------------------- re-ask rounds


def people(server: FakeOpenAIServer, method: str) -> Any:
    prompt = ChatPromptTemplate.from_messages([("user", "{text}")])
    return prompt | llm_for(server).with_structured_output(Person, method=method)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
async def test_answers_that_fail_to_parse_are_re_asked_in_a_round_of_their_own(
    batch_server_on: Any, batch_clock: FakeClock, files: Any, method: str
) -> None:
    server = batch_server_on(structured_answers=True, script={"flaky": ("missing_field",)})
    runner = BatchAPIRunner(
        people(server, method), options=options_on(batch_clock), reask=Reask(max_attempts=2)
    )

    results = await runner.arun([{"text": "ok one"}, {"text": "flaky two"}, {"text": "ok three"}])

    assert all(r.ok for r in results), results.failed
    assert [r.attempts for r in results] == [1, 2, 1]
    [rejected] = results[1].history
    assert isinstance(rejected.output, AIMessage) and rejected.error is not None
    assert rejected.usage is not None and rejected.cost is not None
    first, reask = files(server)
    assert len(first) == 3
    assert [line["custom_id"] for line in reask] == ["r1000-1-1"]  # only the failed item
    messages = reask[0]["body"]["messages"]
    assert messages[-2]["role"] == "assistant"
    if method == "function_calling":
        assert messages[-1]["role"] == "tool"
        assert messages[-1]["tool_call_id"] == messages[-2]["tool_calls"][0]["id"]
    else:
        assert messages[-1]["role"] == "user" and "validation" in messages[-1]["content"]


async def test_when_re_asks_run_out_the_error_keeps_the_last_answer(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(structured_answers=True)

    class Strict(BaseModel):
        """A rule the fake's answers never meet: every answer fails validation."""

        name: str
        age: int

        @field_validator("age")
        @classmethod
        def _old(cls, age: int) -> int:
            if age < 1000:
                raise ValueError("age must be at least 1000")
            return age

    prompt = ChatPromptTemplate.from_messages([("user", "{text}")])
    chain = prompt | llm_for(server).with_structured_output(Strict)
    runner = BatchAPIRunner(chain, options=options_on(batch_clock), reask=Reask(max_attempts=3))

    [result] = await runner.arun([{"text": "hopeless"}])

    assert result.error is not None and result.attempts == 3
    assert isinstance(result.error.output, AIMessage)
    assert len(result.history) == 2
    assert server.stats().batches_created == 3


async def test_without_reask_a_parse_failure_fails_the_item_keeping_the_answer(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(structured_answers=True, script={"flaky": ("wrong_type",)})
    runner = BatchAPIRunner(people(server, "json_schema"), options=options_on(batch_clock))

    [result] = await runner.arun([{"text": "flaky"}])

    assert result.error is not None and isinstance(result.error.output, AIMessage)
    assert server.stats().batches_created == 1


async def test_a_restart_does_not_send_a_finished_re_ask_round_again(
    batch_server_on: Any, batch_clock: FakeClock, tmp_path: Path
) -> None:
    server = batch_server_on(
        structured_answers=True, script={"flaky": ("truncated_json",)}, batch_completion_delay=10.0
    )
    state = tmp_path / "jobs.sqlite"

    async def crash_after_the_reask_round(seconds: float) -> None:
        if server.stats().batches_created == 2:
            raise Crash("died while the re-ask round ran")
        await batch_clock.sleep(seconds)

    inputs = [{"text": "flaky"}, {"text": "fine"}]
    options = BatchAPIOptions(sleep=crash_after_the_reask_round, clock=batch_clock)
    with pytest.raises(Crash):
        await BatchAPIRunner(
            people(server, "function_calling"), options=options, state_path=state, reask=Reask()
        ).arun(inputs)

    runner = BatchAPIRunner(
        people(server, "function_calling"),
        options=options_on(batch_clock),
        state_path=state,
        reask=Reask(),
    )
    results = await runner.arun(inputs)

    assert all(r.ok for r in results)
    assert server.stats().batches_created == 2


def test_reask_on_a_chain_where_nothing_parses_the_answer_is_refused(
    batch_server_on: Any,
) -> None:
    server = batch_server_on()

    with pytest.raises(ConfigurationError, match="nothing after the model parses"):
        BatchAPIRunner(llm_for(server), reask=Reask())


def test_tool_messages_of_a_re_ask_answer_every_call() -> None:
    from langchain_batchkit._reask import follow_up

    answer = AIMessage(content="", tool_calls=[{"name": "Person", "args": {}, "id": "c1"}])

    added = follow_up(answer, ValueError("age is missing"), 500)

    assert added[0] is answer
    assert [m.tool_call_id for m in added[1:] if isinstance(m, ToolMessage)] == ["c1"]


# --------------------------------------------------------------------------- found in review


async def test_a_round_whose_requests_all_fail_to_build_returns_each_item_once(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on()
    not_a_prompt: RunnableLambda[str, Any] = RunnableLambda(lambda s: 12345)
    chain = llm_for(server) | StrOutputParser() | not_a_prompt | llm_for(server)
    runner = BatchAPIRunner(chain, options=options_on(batch_clock))

    results = await runner.arun(["a", "b"])

    assert [r.index for r in results] == [0, 1]
    assert not any(r.ok for r in results)
    assert all(r.error is not None and "Invalid input type" in r.error.message for r in results)
    # round 1 was paid for: its answer is kept on the error
    assert all(r.error is not None and isinstance(r.error.output, AIMessage) for r in results)


async def test_cancel_during_a_re_ask_round_cancels_its_job(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(
        structured_answers=True, script={"flaky": ("missing_field",)}, batch_completion_delay=100.0
    )
    cancelled: list[list[str]] = []

    async def cancel_in_the_re_ask_round(seconds: float) -> None:
        if server.stats().batches_created == 2 and not cancelled:
            cancelled.append(await runner.acancel())
        await batch_clock.sleep(seconds)

    options = BatchAPIOptions(sleep=cancel_in_the_re_ask_round, clock=batch_clock)
    runner = BatchAPIRunner(people(server, "function_calling"), options=options, reask=Reask())

    results = await runner.arun([{"text": "fine"}, {"text": "flaky"}])

    assert len(cancelled) == 1 and len(cancelled[0]) == 1
    assert results[0].ok
    assert results[1].error is not None and results[1].error.type == "BatchJobUnfinishedError"
    assert isinstance(results[1].error.output, AIMessage)  # the rejected answer, paid for


async def test_retry_failed_after_a_cancel_runs_the_items_again(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_completion_delay=100.0)
    cancelled: list[list[str]] = []

    async def cancel_once(seconds: float) -> None:
        if not cancelled:
            cancelled.append(await runner.acancel())
        await batch_clock.sleep(seconds)

    options = BatchAPIOptions(sleep=cancel_once, clock=batch_clock)
    runner = BatchAPIRunner(two_steps(server), options=options)
    first = await runner.arun([{"text": "a"}, {"text": "b"}])
    assert not any(r.ok for r in first)

    again = await first.aretry_failed()

    assert all(r.ok for r in again)
    assert server.stats().batches_created == 1 + 2  # the cancelled one, then both rounds


async def test_an_item_stopped_by_a_cancel_in_round_2_keeps_its_round_1_answer(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_completion_delay=100.0)
    cancelled: list[list[str]] = []

    async def cancel_in_round_2(seconds: float) -> None:
        if server.stats().batches_created == 2 and not cancelled:
            cancelled.append(await runner.acancel())
        await batch_clock.sleep(seconds)

    options = BatchAPIOptions(sleep=cancel_in_round_2, clock=batch_clock)
    runner = BatchAPIRunner(two_steps(server), options=options)

    [result] = await runner.arun([{"text": "a"}])

    assert result.error is not None and result.error.type == "BatchJobUnfinishedError"
    assert isinstance(result.error.output, AIMessage)
    assert result.error.output.content == "echo: summarise a"
    assert result.usage is not None and result.cost is not None


def test_cancel_reads_a_state_file_of_the_previous_format(
    batch_server_on: Any, tmp_path: Path
) -> None:
    from tests.test_batch_api_store import _old_file

    server = batch_server_on()
    state = tmp_path / "jobs.sqlite"
    _old_file(state, "2", "[]")  # one job, batch_2, in progress, as 0.3.0 wrote it
    runner = BatchAPIRunner(llm_for(server), state_path=state)

    assert runner.cancel() == []  # the provider has no such job: nothing to cancel


async def test_a_run_without_a_state_file_keeps_a_learned_cap_across_rounds(
    batch_server_on: Any, batch_clock: FakeClock
) -> None:
    server = batch_server_on(batch_completion_delay=100.0, batch_max_enqueued_tokens=60)
    prompt = ChatPromptTemplate.from_messages([("user", "{text}")])
    tail: RunnableLambda[str, dict[str, str]] = RunnableLambda(lambda s: {"text": s[-12:]})
    step = prompt | llm_for(server) | StrOutputParser()
    runner = BatchAPIRunner(step | tail | step | tail | step, options=options_on(batch_clock))

    results = await runner.arun([{"text": f"item {i}"} for i in range(8)])

    assert all(r.ok for r in results)
    assert server.stats().enqueued_token_refusals == 1  # learned once, for all 3 rounds


def test_a_model_called_inside_a_local_function_is_reported_as_online(
    batch_server_on: Any, batch_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = batch_server_on()
    hidden = llm_for(server, model="gpt-4o")
    ask: RunnableLambda[str, Any] = RunnableLambda(lambda text: hidden.invoke(text))
    chain = llm_for(server) | StrOutputParser() | ask | StrOutputParser()
    runner = BatchAPIRunner(chain, options=options_on(batch_clock))
    caplog.set_level(logging.WARNING, logger="langchain_batchkit")

    results = runner.run(["a", "b"])

    assert results.outputs == ["echo: echo: a", "echo: echo: b"]  # it works, online
    warnings = [r for r in caplog.records if "ran inside a local step" in r.getMessage()]
    assert len(warnings) == 1 and "full price" in warnings[0].getMessage()


def test_each_round_shows_a_bar_over_its_requests(
    batch_server_on: Any, batch_clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    server = batch_server_on(reject_prompts=frozenset({"poison"}))
    runner = BatchAPIRunner(two_steps(server), options=options_on(batch_clock), progress=True)

    runner.run([{"text": "a"}, {"text": "poison"}, {"text": "c"}])

    shown = capsys.readouterr().err
    assert "batch round 1/2 (gpt-4o-mini)" in shown and "batch round 2/2 (gpt-4o)" in shown
    assert "3/3" in shown and "ok=2 failed=1" in shown  # round 1
    assert "2/2" in shown and "ok=2 failed=0" in shown  # round 2: the items still alive


def test_no_bar_below_ten_requests_unless_asked(
    batch_server_on: Any, batch_clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    server = batch_server_on()

    BatchAPIRunner(llm_for(server), options=options_on(batch_clock)).run(prompts(3))
    BatchAPIRunner(llm_for(server), options=options_on(batch_clock), progress=False).run(
        prompts(12)
    )

    assert "batch round" not in capsys.readouterr().err
