"""Structured answers: tool calls and JSON objects, scripted mistakes, re-asks, tool order.

With ``FakeServerConfig(structured_answers=True)`` a request that forces a tool
(``tool_choice`` naming a function, or ``"required"``) is answered with a call of that
tool, and one asking for ``response_format`` ``json_schema`` or ``json_object`` with a
JSON object as its content. The object is ``response_text(prompt)`` when that is a
JSON object's text, else one built from the schema (strings echo the prompt,
integers are the prompt's length).

A scripted mistake (``"missing_field"``, ``"wrong_type"``, ``"truncated_json"``,
``"text_before_json"``) spoils that answer, as a model sometimes does. A **re-ask**
is a request whose conversation ends with an assistant answer followed by feedback
(tool messages, or a user message). When the feedback names what was wrong with that
answer (the field that is missing or of the wrong type, or "JSON" for text that is not
JSON), the model "acts on it": a scripted mistake is not made, and the answer is
valid. Feedback that does not name the mistake gets what the script says, as a
first ask would.

OpenAI's rule on tool calls holds for every request, structured or not: an
assistant message with ``tool_calls`` must be followed by one tool message per
call id, and a tool message must answer such a call; otherwise HTTP 400.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_batchkit.testing._fakeserver._config import BadAnswer
from langchain_batchkit.testing._fakeserver._exchange import InvalidRequest

__all__ = [
    "Conversation",
    "StructuredSpec",
    "answer_object",
    "assistant_message",
    "call_arguments",
    "check_tool_messages",
    "conversation_of",
    "names_mistake",
    "spoil",
    "structured_spec",
    "tool_call",
]

_PREAMBLE = "Sure! Here is the JSON you asked for:\n"


@dataclass(frozen=True, slots=True)
class StructuredSpec:
    """What shape a request wants its answer in.

    ``tool`` names the forced function (``None``: the answer is message content);
    ``schema`` is the JSON schema of the object (``None`` for ``json_object``).
    """

    tool: str | None
    schema: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Conversation:
    """The parts of a request's messages a re-ask is judged by.

    Attributes:
        prompt: the last user text before the last assistant answer.
        previous: that answer (its first tool call's arguments, or its content).
        feedback: the text of the tool and user messages after it.
    """

    prompt: str
    previous: str
    feedback: str


def structured_spec(payload: Mapping[str, Any]) -> StructuredSpec | None:
    """The structured answer ``payload`` asks for, or ``None`` (a plain text answer)."""
    tools = payload.get("tools")
    choice = payload.get("tool_choice")
    if isinstance(tools, list) and tools and choice not in (None, "none", "auto"):
        functions: list[dict[str, Any]] = [
            t["function"]
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        wanted = None
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            wanted = choice["function"].get("name")
        for function in functions:
            if wanted in (None, function.get("name")):
                return StructuredSpec(str(function.get("name")), _mapping(function, "parameters"))
    response_format = payload.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema":
            inner = response_format.get("json_schema")
            schema = _mapping(inner, "schema") if isinstance(inner, dict) else None
            return StructuredSpec(None, schema)
        if kind == "json_object":
            return StructuredSpec(None, None)
    return None


def conversation_of(messages: Sequence[Mapping[str, Any]]) -> Conversation | None:
    """The re-ask parts of a conversation that ends with feedback on an assistant answer."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    if last < 0 or last == len(messages) - 1:
        return None
    if any(m.get("role") not in ("tool", "user") for m in messages[last + 1 :]):
        return None
    prompts = [_text(m) for m in messages[:last] if m.get("role") == "user"]
    answer = messages[last]
    calls = answer.get("tool_calls")
    if isinstance(calls, list) and calls and isinstance(calls[0], dict):
        previous = str((calls[0].get("function") or {}).get("arguments", ""))
    else:
        previous = _text(answer)
    feedback = "\n".join(_text(m) for m in messages[last + 1 :])
    return Conversation(prompts[-1] if prompts else "", previous, feedback)


def check_tool_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    """Raise OpenAI's 400 when tool calls and tool messages do not pair up."""
    open_ids: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_ids:
                raise InvalidRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{i}].role",
                )
            open_ids.remove(call_id)
            continue
        if open_ids:
            raise _unanswered(open_ids, i - 1)
        calls = message.get("tool_calls") if role == "assistant" else None
        if isinstance(calls, list):
            open_ids = [str(c.get("id")) for c in calls if isinstance(c, dict)]
    if open_ids:
        raise _unanswered(open_ids, len(messages) - 1)


def _unanswered(ids: list[str], index: int) -> InvalidRequest:
    return InvalidRequest(
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(ids),
        param=f"messages.[{index}].role",
    )


def answer_object(spec: StructuredSpec, prompt: str, text: str) -> dict[str, Any]:
    """The valid object: ``text`` if it is a JSON object, else built from the schema."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    if spec.schema is None:
        return {"answer": text}
    built = _example(spec.schema, spec.schema, prompt, text, 0)
    return built if isinstance(built, dict) else {"answer": built}


def spoil(obj: Mapping[str, Any], mistake: BadAnswer) -> str:
    """``obj`` as JSON text with ``mistake`` made in it."""
    data = dict(obj)
    first = next(iter(data), None)
    if mistake == "missing_field" and first is not None:
        del data[first]
    elif mistake == "wrong_type" and first is not None:
        value = data[first]
        data[first] = 12345 if isinstance(value, str) else f"not a {type(value).__name__}"
    text = json.dumps(data)
    if mistake == "truncated_json":
        return text[: max(1, len(text) // 2)]
    if mistake == "text_before_json":
        return _PREAMBLE + text
    return text


def names_mistake(conversation: Conversation, valid: Mapping[str, Any]) -> bool:
    """Does the feedback name what is wrong with the previous answer?

    Unparsable JSON must be called "JSON"; a missing field or a field of the wrong
    type must be named. Feedback on an answer with nothing wrong counts as named.
    """
    feedback = conversation.feedback
    try:
        previous = json.loads(conversation.previous)
    except ValueError:
        return "json" in feedback.lower()
    if not isinstance(previous, dict):
        return "json" in feedback.lower()
    wrong = [
        key
        for key, value in valid.items()
        if key not in previous or type(previous[key]) is not type(value)
    ]
    return all(key in feedback for key in wrong) and bool(feedback.strip())


def assistant_message(completion_id: str, text: str, tool: str | None) -> dict[str, object]:
    """The answer's message: ``text`` as content, or as the arguments of a call of ``tool``."""
    if tool is None:
        return {"role": "assistant", "content": text, "refusal": None}
    call = tool_call(completion_id, tool, text)
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}


def tool_call(completion_id: str, tool: str, arguments: str) -> dict[str, object]:
    """One tool call; its id is unique per completion."""
    call_id = "call_" + completion_id.removeprefix("chatcmpl-")
    return {"id": call_id, "type": "function", "function": {"name": tool, "arguments": arguments}}


def call_arguments(call: object) -> str:
    """The arguments text of a tool call an assistant message sent back."""
    function = call.get("function") if isinstance(call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    return arguments if isinstance(arguments, str) else ""


def _mapping(container: object, key: str) -> Mapping[str, Any] | None:
    value = container.get(key) if isinstance(container, dict) else None
    return value if isinstance(value, dict) else None


def _example(
    schema: Mapping[str, Any], root: Mapping[str, Any], prompt: str, text: str, depth: int
) -> Any:
    """A value valid for ``schema`` (``$ref``, ``anyOf``, enums, nested objects)."""
    if depth > 8:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _example(target, root, prompt, text, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
            return _example((usable or options)[0], root, prompt, text, depth + 1)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {
            name: _example(sub, root, prompt, text, depth + 1)
            for name, sub in properties.items()
            if isinstance(sub, dict)
        }
    if kind == "array":
        items = schema.get("items")
        return [_example(items, root, prompt, text, depth + 1)] if isinstance(items, dict) else []
    if kind == "integer":
        return len(prompt)
    if kind == "number":
        return float(len(prompt))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""
