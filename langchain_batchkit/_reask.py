"""Re-ask: send the model its rejected answer and the parser's error, for a corrected one.

An answer that fails to parse or validate (``OutputParserException``, pydantic's
``ValidationError``) is not a transient error: sending the same prompt again often
fails the same way, and costs again. ``reask=Reask(...)`` instead sends the original
messages, the model's answer, and the error as a message the model can act on:

* a tool-call answer is followed by one ``ToolMessage`` per call id carrying the
  error (OpenAI rejects an assistant message with ``tool_calls`` that tool
  messages do not answer);
* a text or JSON answer is followed by a ``HumanMessage`` carrying the error.

To see the model's answer, the kit cuts the chain at its one chat model step
(:func:`~langchain_batchkit._split.split_at_model`) and puts a tap there: the tap
adds the re-ask messages to the model's input and keeps the answer on the item's
:class:`ReaskState`, which rides in the attempt's config. The chain still runs as
one call per attempt, with the kit's retries, limits, costs and checkpoint.

Two things the tap does so that every structured-output mode can be re-asked:

* ``with_structured_output(Schema, method="json_schema")`` has the openai SDK
  validate the answer inside the model call, where the answer is lost when it
  fails. The tap binds the same ``response_format`` as its wire JSON (the request
  is unchanged) and validates the answer itself, raising the same
  ``ValidationError`` after keeping the answer.
* A tool call whose arguments are not JSON lands in ``invalid_tool_calls``, and
  ``with_structured_output(method="function_calling")`` then returns ``None``
  without an error. With re-asks on, such an answer is a parse failure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSequence
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import BaseModel, ValidationError

from langchain_batchkit._errors import ConfigurationError, exception_message
from langchain_batchkit._split import split_at_model
from langchain_batchkit._validate import check_int

__all__ = [
    "Reask",
    "ReaskState",
    "as_messages",
    "broken_tool_call",
    "follow_up",
    "is_parse_error",
    "reask_chain",
    "with_state",
]

_NOISE = re.compile(r"\s*For (further information|troubleshooting),? visit")  # links, no help
_STATE_KEY = "__batchkit_reask"  # "__": core keeps it out of the run's metadata
_SHAPE = (
    "reask= needs a chain with one chat model step whose answer a later step parses, "
    "e.g. prompt | llm.with_structured_output(Schema) or prompt | llm | PydanticOutputParser"
    "(...) (with_structured_output(include_raw=True) returns parse errors as values: "
    "leave include_raw off)"
)


@dataclass(frozen=True, slots=True)
class Reask:
    """Re-ask the model, with its answer and the error, when the answer fails to parse.

    A re-ask counts as an attempt: it is in ``ItemResult.attempts``, and the answer
    it corrects is kept in ``ItemResult.history`` as an :class:`Attempt` (the raw
    ``AIMessage`` as ``output``, the parse error as ``error``, and its tokens and
    cost). When the last answer still fails, the item fails with that error, and
    ``result.error.output`` holds the last raw answer. Re-asks wait for nothing and
    do not use the retry policy's attempts; transient errors of a re-ask are
    retried by it as usual.

    Attributes:
        max_attempts: most answers the model gives per item, the first included:
            ``2`` re-asks once.
        max_error_chars: the error text sent to the model is cut to this length.

    Example:
        >>> Reask(max_attempts=2)
        Reask(max_attempts=2, max_error_chars=2000)
        >>> chain = prompt | llm.with_structured_output(Person)  # doctest: +SKIP
        >>> kit = batchkit(chain, reask=Reask())                 # doctest: +SKIP
    """

    max_attempts: int = 3
    max_error_chars: int = 2000

    def __post_init__(self) -> None:
        check_int("Reask.max_attempts", self.max_attempts, minimum=2)
        check_int("Reask.max_error_chars", self.max_error_chars, minimum=100)


class ReaskState:
    """One item's re-ask state: what its next attempt adds, and the answer just given.

    Owned by one attempt at a time, like the item itself.
    """

    __slots__ = ("answer", "extra", "rejected")

    def __init__(self) -> None:
        self.answer: BaseMessage | None = None
        self.extra: tuple[BaseMessage, ...] = ()
        self.rejected = 0

    def take(self) -> BaseMessage | None:
        """The answer the model gave in the attempt that just ended, if any (once)."""
        answer, self.answer = self.answer, None
        return answer


def with_state(config: RunnableConfig, state: ReaskState) -> RunnableConfig:
    """``config`` carrying ``state`` to the chain's tap."""
    configurable = {**config.get("configurable", {}), _STATE_KEY: state}
    return {**config, "configurable": configurable}


def is_parse_error(exc: BaseException) -> bool:
    """Did an answer fail to parse or validate?"""
    return isinstance(exc, OutputParserException | ValidationError)


def follow_up(answer: BaseMessage, exc: BaseException, max_chars: int) -> tuple[BaseMessage, ...]:
    """The messages a re-ask adds: the rejected answer, then the error it must fix."""
    error = "\n".join(
        line for line in exception_message(exc).splitlines() if not _NOISE.match(line)
    ).strip()
    if len(error) > max_chars:
        error = error[: max_chars - 1] + "…"
    ids = _call_ids(answer)
    if ids:
        text = f"Error: the arguments failed validation:\n{error}\nCall the tool again, fixed."
        return (answer, *(ToolMessage(content=text, tool_call_id=i) for i in ids))
    text = (
        f"Your answer failed validation:\n{error}\n"
        "Answer again with the corrected JSON only, no other text."
    )
    return (answer, HumanMessage(content=text))


def _call_ids(answer: BaseMessage) -> list[str]:
    if not isinstance(answer, AIMessage):
        return []
    calls = [*answer.tool_calls, *answer.invalid_tool_calls]
    return [call_id for call in calls if (call_id := call.get("id"))]


def reask_chain(chain: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """``chain`` with a tap on its model step (see the module docstring).

    Raises:
        ConfigurationError: re-asking cannot work on this chain: no chat model step
            can be reached, there are several, or nothing parses the model's answer.
    """
    split = split_at_model(chain, _SHAPE)
    model = split.model
    if not isinstance(model, BaseChatModel):
        raise ConfigurationError(
            f"{_SHAPE}; {model.get_name()} is not a chat model, and a re-ask sends messages"
        )
    schema = split.kwargs.get("response_format")
    schema = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None
    if schema is None and not split.after:
        raise ConfigurationError(
            f"{_SHAPE}; nothing after {model.get_name()} parses its answer, so no answer "
            "can fail to parse"
        )
    step = split.step
    if schema is not None:
        step = step.bind(response_format=_wire_format(schema))
    steps = (*split.before, _Tap(step, schema), *split.after)
    if len(steps) == 1:
        return steps[0]
    return RunnableSequence(*steps, name=chain.name)


def _wire_format(schema: type[BaseModel]) -> Any:
    """The ``response_format`` the openai SDK sends for ``schema`` (the same request)."""
    from openai.lib._parsing._completions import type_to_response_format_param

    return type_to_response_format_param(schema)


class _Tap(Runnable[Any, Any]):
    """The model step, seen by the item's :class:`ReaskState` (no run of its own)."""

    def __init__(self, step: Runnable[Any, Any], schema: type[BaseModel] | None) -> None:
        self.step = step
        self.schema = schema
        self.name = step.get_name()

    @property
    def InputType(self) -> Any:
        return self.step.InputType

    @property
    def OutputType(self) -> Any:
        return self.step.OutputType

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return self.step.config_specs

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        state = _state_of(config)
        answer = self.step.invoke(_with_extra(input, state), config, **kwargs)
        return self._checked(answer, state)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        state = _state_of(config)
        answer = await self.step.ainvoke(_with_extra(input, state), config, **kwargs)
        return self._checked(answer, state)

    def _checked(self, answer: Any, state: ReaskState | None) -> Any:
        if state is None:
            return answer
        state.answer = answer
        if not isinstance(answer, AIMessage):
            return answer
        broken = broken_tool_call(answer)
        if broken is not None:
            raise broken
        if self.schema is not None:
            return _validated(answer, self.schema)
        return answer


def broken_tool_call(answer: AIMessage) -> OutputParserException | None:
    """The parse error of an answer whose only tool calls have arguments that are not
    JSON (``with_structured_output`` would return ``None`` for it, without an error)."""
    if answer.invalid_tool_calls and not answer.tool_calls:
        bad = answer.invalid_tool_calls[0]
        return OutputParserException(
            bad.get("error") or f"the arguments of {bad.get('name')} are not valid JSON",
            llm_output=bad.get("args") or "",
        )
    return None


def _validated(answer: AIMessage, schema: type[BaseModel]) -> AIMessage:
    """``answer`` with its content validated as the SDK's ``parse`` does it."""
    content = answer.content
    if answer.tool_calls or answer.additional_kwargs.get("refusal"):
        return answer
    if not isinstance(content, str) or not content:
        return answer
    parsed = schema.model_validate_json(content)  # its ValidationError is the SDK's
    kwargs = {**answer.additional_kwargs, "parsed": parsed}
    return answer.model_copy(update={"additional_kwargs": kwargs})


def _state_of(config: RunnableConfig | None) -> ReaskState | None:
    state = (config or {}).get("configurable", {}).get(_STATE_KEY)
    return state if isinstance(state, ReaskState) else None


def _with_extra(input: Any, state: ReaskState | None) -> Any:
    if state is None:
        return input
    state.answer = None
    if not state.extra:
        return input
    return [*as_messages(input), *state.extra]


def as_messages(input: Any) -> Sequence[BaseMessage]:
    """A chat model's input (a prompt value, a string, messages) as its messages."""
    if isinstance(input, PromptValue):
        return input.to_messages()
    if isinstance(input, str):
        return [HumanMessage(content=input)]
    return convert_to_messages(input)
