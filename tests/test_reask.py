"""Re-ask: an answer that fails to parse goes back to the model with the error.

Real ``ChatOpenAI(...).with_structured_output(...)`` against the fake server, which
scripts mistakes in structured answers, answers a re-ask that names the mistake
validly, and refuses (HTTP 400) tool calls that tool messages do not answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers import PydanticOutputParser, StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, field_validator

from langchain_batchkit import (
    ConfigurationError,
    ItemResult,
    KitOptions,
    Reask,
    RetryPolicy,
    batchkit,
)
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

MISTAKES = ("missing_field", "wrong_type", "truncated_json", "text_before_json")
METHODS = ("function_calling", "json_schema")


class Person(BaseModel):
    name: str
    age: int


class Adult(BaseModel):
    """A schema with a rule the model never meets: every answer fails validation."""

    name: str
    age: int

    @field_validator("age")
    @classmethod
    def _adult(cls, age: int) -> int:
        if age < 1000:
            raise ValueError("age must be at least 1000")
        return age


def chat(server: FakeOpenAIServer) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="sk-test",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        timeout=5.0,
    )


def person(prompt: str) -> Person:
    """The valid object the fake server builds for ``prompt``."""
    return Person(name=f"echo: {prompt}", age=len(prompt))


def start(factory: FakeServerFactory, script: dict[str, tuple[Any, ...]]) -> FakeOpenAIServer:
    return factory(FakeServerConfig(structured_answers=True, script=script))


class Conversations(BaseCallbackHandler):
    """Records the messages of every chat model call."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self, serialized: Any, messages: list[list[BaseMessage]], *, run_id: UUID, **kw: Any
    ) -> None:
        self.calls.extend(messages)


# -- every mistake, both methods ---------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_kind_of_bad_answer_is_re_asked_and_ends_valid(
    fake_openai_server_factory: FakeServerFactory, method: str, mistake: str
) -> None:
    prompt = f"bad-{mistake}"
    server = start(fake_openai_server_factory, {prompt: (mistake,)})
    kit = batchkit(
        chat(server).with_structured_output(Person, method=method),  # type: ignore[arg-type]
        reask=Reask(max_attempts=2),
        progress=False,
    )

    results = kit.batch(["good", prompt])

    good, fixed = results
    assert (good.output, good.attempts, good.history) == (person("good"), 1, ())
    assert fixed.output == person(prompt) and fixed.attempts == 2
    [rejected] = fixed.history
    assert isinstance(rejected.output, AIMessage)  # the raw answer, kept
    assert rejected.error is not None
    assert rejected.error.type in ("ValidationError", "OutputParserException")
    assert server.stats().responses_by_status == {200: 3}


def test_history_keeps_each_rejected_answer_with_its_error_tokens_and_cost(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = start(fake_openai_server_factory, {"bob": ("missing_field",)})
    kit = batchkit(
        chat(server).with_structured_output(Adult, method="function_calling"),
        reask=Reask(max_attempts=3),
        progress=False,
    )

    [result] = kit.batch(["bob"])

    assert result.attempts == 3
    first, second = result.history
    assert [a.output.tool_calls[0]["args"] for a in (first, second)] == [
        {"age": 3},
        {"name": "echo: bob", "age": 3},
    ]
    assert [a.error.message.splitlines()[1:3] for a in (first, second) if a.error] == [
        ["name", "  Field required [type=missing, input_value={'age': 3}, input_type=dict]"],
        ["age", "  Value error, age must be at least 1000 [type=value_error, input_value=3, "
         "input_type=int]"],
    ]  # fmt: skip
    assert all(a.usage is not None and a.usage.total_tokens > 0 for a in (first, second))
    assert all(a.cost is not None and a.cost > 0 for a in (first, second))
    # each re-ask carries the conversation so far, so it costs more tokens
    assert first.usage is not None and second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    assert result.usage is not None and result.usage.input_tokens > second.usage.input_tokens


# -- the messages a re-ask sends ---------------------------------------------------------


def test_a_tool_call_answer_is_followed_by_a_tool_message_per_call_id(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = start(fake_openai_server_factory, {"ann": ("missing_field",)})
    seen = Conversations()
    kit = batchkit(
        chat(server).with_structured_output(Person, method="function_calling"),
        reask=Reask(),
        progress=False,
    )

    [result] = kit.batch(["ann"], {"callbacks": [seen]})

    assert result.output == person("ann")
    _, reask = seen.calls
    assert [type(m) for m in reask] == [HumanMessage, AIMessage, ToolMessage]
    answer, feedback = reask[1], reask[2]
    assert isinstance(answer, AIMessage) and isinstance(feedback, ToolMessage)
    assert feedback.tool_call_id == answer.tool_calls[0]["id"]
    assert "name" in str(feedback.content) and "Field required" in str(feedback.content)
    assert server.stats().responses_by_status == {200: 2}  # the provider's rule held


def test_a_json_answer_is_followed_by_a_human_message_with_the_error(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = start(fake_openai_server_factory, {"cy": ("text_before_json",)})
    seen = Conversations()
    kit = batchkit(
        chat(server).with_structured_output(Person, method="json_schema"),
        reask=Reask(),
        progress=False,
    )

    [result] = kit.batch(["cy"], {"callbacks": [seen]})

    assert result.output == person("cy")
    _, reask = seen.calls
    assert [type(m) for m in reask] == [HumanMessage, AIMessage, HumanMessage]
    assert str(reask[1].content).startswith("Sure!")
    assert "Invalid JSON" in str(reask[2].content)


def test_a_parser_after_the_model_is_re_asked_with_the_prompts_messages(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = start(fake_openai_server_factory, {"dee": ("wrong_type",)})
    seen = Conversations()
    prompt = ChatPromptTemplate.from_messages([("system", "Extract."), ("user", "{text}")])
    llm = chat(server).bind(response_format={"type": "json_schema", "json_schema": _schema()})
    kit = batchkit(
        prompt | llm | PydanticOutputParser(pydantic_object=Person),
        reask=Reask(),
        progress=False,
    )

    [result] = kit.batch([{"text": "dee"}], {"callbacks": [seen]})

    assert result.output == person("dee") and result.attempts == 2
    assert [m.type for m in seen.calls[1]] == ["system", "human", "ai", "human"]


def _schema() -> dict[str, Any]:
    return {"name": "Person", "schema": Person.model_json_schema()}


def test_the_fake_server_refuses_tool_calls_no_tool_message_answers(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = start(fake_openai_server_factory, {})
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    call = {"id": "call_1", "type": "function", "function": {"name": "Person", "arguments": "{}"}}
    answered_by_a_user = [
        {"role": "user", "content": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "user", "content": "Error: name is missing"},
    ]
    stray_tool_message = [
        {"role": "user", "content": "ann"},
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: name is missing"},
    ]

    for messages in (answered_by_a_user, stray_tool_message):
        with pytest.raises(openai.BadRequestError, match="tool"):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]

    assert server.stats().responses_by_status == {400: 2}


def test_the_fake_server_repeats_the_mistake_when_the_feedback_does_not_name_it(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = start(fake_openai_server_factory, {"eve": ("missing_field", "missing_field")})
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    schema: Any = {"type": "json_schema", "json_schema": _schema()}

    def ask(messages: list[dict[str, Any]]) -> str:
        sent: Any = messages
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=sent, response_format=schema
        )
        return reply.choices[0].message.content or ""

    first = ask([{"role": "user", "content": "eve"}])
    vague = ask(
        [
            {"role": "user", "content": "eve"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "That is wrong, try again."},
        ]
    )
    named = ask(
        [
            {"role": "user", "content": "eve"},
            {"role": "assistant", "content": vague},
            {"role": "user", "content": "Field 'name' is required."},
        ]
    )

    assert first == vague == '{"age": 3}'
    assert Person.model_validate_json(named) == person("eve")


# -- when re-asks run out ------------------------------------------------------------------


def test_when_re_asks_run_out_the_error_keeps_the_last_raw_answer(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = start(fake_openai_server_factory, {})
    kit = batchkit(
        chat(server).with_structured_output(Adult, method="function_calling"),
        reask=Reask(max_attempts=3),
        progress=False,
    )

    [result] = kit.batch(["fay"])

    assert not result.ok and result.attempts == 3 and len(result.history) == 2
    assert result.error is not None and result.error.type == "ValidationError"
    assert "at least 1000" in result.error.message
    last = result.error.output
    assert isinstance(last, AIMessage) and last.tool_calls[0]["args"]["name"] == "echo: fay"
    assert all(isinstance(a.output, AIMessage) for a in result.history)
    assert server.stats().responses_by_status == {200: 3}


def test_without_reask_a_bad_answer_fails_at_once(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = start(fake_openai_server_factory, {"gus": ("missing_field",)})
    kit = batchkit(chat(server).with_structured_output(Person), progress=False)

    [result] = kit.batch(["gus"])

    assert result.error is not None and result.error.type == "ValidationError"
    assert result.attempts == 1 and result.error.output is None


def test_a_transient_error_during_a_re_ask_is_retried_with_the_same_messages(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = start(fake_openai_server_factory, {"hal": ("missing_field", "429", "ok")})
    seen = Conversations()
    clock = FakeClock()
    kit = batchkit(
        chat(server).with_structured_output(Person, method="function_calling"),
        reask=Reask(max_attempts=2),
        retry=RetryPolicy(max_attempts=3, sleep=clock.sleep, clock=clock, seed=0),
        progress=False,
    )

    [result] = kit.batch(["hal"], {"callbacks": [seen]})

    assert result.output == person("hal") and result.attempts == 3
    assert [a.error.type for a in result.history if a.error] == [
        "ValidationError",
        "OpenAIRateLimitError",
    ]
    assert result.history[1].output is None
    assert len(seen.calls[1]) == len(seen.calls[2]) == 3  # the re-ask, sent again


# -- every entry point -------------------------------------------------------------------


def _kit(server: FakeOpenAIServer, **options: Any) -> Any:
    return batchkit(
        chat(server).with_structured_output(Person, method="function_calling"),
        reask=Reask(max_attempts=2),
        progress=False,
        **options,
    )


PROMPTS = ["p0", "bad-1", "p2", "bad-3"]
SCRIPT: dict[str, tuple[Any, ...]] = {"bad-1": ("wrong_type",), "bad-3": ("truncated_json",)}


def _check(results: list[ItemResult[Any, Any]]) -> None:
    by_input = {r.input: r for r in results}
    assert {p: r.output for p, r in by_input.items()} == {p: person(p) for p in PROMPTS}
    assert {p: r.attempts for p, r in by_input.items()} == {
        "p0": 1,
        "bad-1": 2,
        "p2": 1,
        "bad-3": 2,
    }


async def test_abatch_re_asks(fake_openai_server_factory: FakeServerFactory) -> None:
    server = start(fake_openai_server_factory, SCRIPT)

    _check(await _kit(server).abatch(PROMPTS))


def test_stream_results_re_asks(fake_openai_server_factory: FakeServerFactory) -> None:
    server = start(fake_openai_server_factory, SCRIPT)

    _check(list(_kit(server).stream_results(PROMPTS)))


async def test_astream_results_re_asks(fake_openai_server_factory: FakeServerFactory) -> None:
    server = start(fake_openai_server_factory, SCRIPT)

    _check([r async for r in _kit(server).astream_results(PROMPTS)])


def test_run_re_asks_and_its_summary_counts_every_attempt(
    fake_openai_server_factory: FakeServerFactory, tmp_path: Path
) -> None:
    server = start(fake_openai_server_factory, SCRIPT)
    kit = _kit(server, checkpoint=tmp_path / "run.db")

    report = kit.run(PROMPTS)

    assert (report.summary.succeeded, report.summary.attempts) == (4, 6)
    _check(list(kit.checkpoint.iter_results()))


def test_invoke_re_asks(fake_openai_server_factory: FakeServerFactory) -> None:
    server = start(fake_openai_server_factory, SCRIPT)

    result = _kit(server).invoke("bad-1")

    assert result.output == person("bad-1") and result.attempts == 2


def test_a_resumed_run_returns_stored_answers_and_their_history_without_calling_again(
    fake_openai_server_factory: FakeServerFactory, tmp_path: Path
) -> None:
    server = start(fake_openai_server_factory, SCRIPT)
    path = tmp_path / "reask.db"
    first = _kit(server, checkpoint=path).batch(PROMPTS[:2])
    calls = sum(server.stats().responses_by_status.values())

    resumed = _kit(server, checkpoint=path).batch(PROMPTS)

    assert sum(server.stats().responses_by_status.values()) == calls + 3  # p2, bad-3 twice
    _check(list(resumed))
    stored = {r.input: r for r in resumed}["bad-1"]
    assert stored.history == first[1].history  # errors, usage, cost: read back
    assert stored.history[0].output.tool_calls == first[1].history[0].output.tool_calls


def test_a_failed_items_last_answer_survives_the_checkpoint(
    fake_openai_server_factory: FakeServerFactory, tmp_path: Path
) -> None:
    server = start(fake_openai_server_factory, {})
    path = tmp_path / "adult.db"

    def kit() -> Any:
        chain = chat(server).with_structured_output(Adult, method="function_calling")
        return batchkit(chain, reask=Reask(max_attempts=2), checkpoint=path, progress=False)

    [failed] = kit().batch(["ivy"])
    [stored] = kit().batch(["ivy"])

    assert stored.error == failed.error and stored.attempts == 2
    assert isinstance(stored.error.output, AIMessage)
    assert stored.error.output.tool_calls == failed.error.output.tool_calls


# -- where re-asking cannot work -----------------------------------------------------------


def _impossible(server: FakeOpenAIServer) -> dict[str, Any]:
    llm = chat(server)
    return {
        "model-alone": llm,
        "model-then-nothing-parsing": ChatPromptTemplate.from_messages([("user", "{q}")]) | llm,
        "model-inside-a-function": RunnableLambda(lambda x: llm.invoke(x)) | StrOutputParser(),
        "include-raw": llm.with_structured_output(Person, include_raw=True),
        "two-models": llm | StrOutputParser() | llm | StrOutputParser(),
        "no-model": RunnableLambda(lambda x: x),
    }


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("model-alone", "nothing after ChatOpenAI parses"),
        ("model-then-nothing-parsing", "nothing after ChatOpenAI parses"),
        ("model-inside-a-function", "no model step"),
        ("include-raw", "include_raw.*ChatOpenAI sits inside another step"),
        ("two-models", "2 model steps"),
        ("no-model", "no model step"),
    ],
)
def test_a_chain_that_cannot_be_re_asked_fails_when_the_kit_is_built(
    fake_openai_server_factory: FakeServerFactory, shape: str, message: str
) -> None:
    chain = _impossible(fake_openai_server_factory(FakeServerConfig()))[shape]

    with pytest.raises(ConfigurationError, match=f"reask= needs.*{message}"):
        batchkit(chain, reask=Reask())


def test_setting_reask_later_on_such_a_chain_fails_too(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig())
    kit = batchkit(chat(server) | RunnableLambda(lambda m: m), progress=False)
    bare = batchkit(chat(server), progress=False)

    with pytest.raises(ConfigurationError, match="reask="):
        bare.with_options(reask=Reask())
    with pytest.raises(ConfigurationError, match="reask="):
        bare.batch(["x"], reask=Reask())
    kit.with_options(reask=Reask())  # something after the model: it can be re-asked


def test_reask_options_are_validated_by_name() -> None:
    with pytest.raises(ConfigurationError, match="max_attempts"):
        Reask(max_attempts=1)
    with pytest.raises(ConfigurationError, match="max_error_chars"):
        Reask(max_error_chars=0)
    with pytest.raises(ConfigurationError, match="reask must be a Reask"):
        KitOptions(reask=2)  # type: ignore[arg-type]
