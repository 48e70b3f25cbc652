"""What an Anthropic Messages request means, its answer as a ``Message``, Anthropic's errors.

Pure functions, no I/O. A Messages body (``POST /v1/messages``, or a Message
Batch request's ``params``) is read into the same :class:`ChatRequest` the OpenAI
endpoints answer, so :func:`compose_answer` (``response_text``, ``reject_prompts``,
``max_tokens`` truncation, ``structured_answers``) decides the answer for both
providers. Only the shapes differ: system prompts and content blocks in, a
``message`` object with ``text`` or ``tool_use`` blocks, a ``stop_reason`` and
``usage`` out, and errors as ``{"type": "error", "error": {"type", "message"}}``.

A forced tool (``tool_choice`` ``{"type": "tool"}`` or ``{"type": "any"}``) or an
``output_config.format`` JSON schema asks for a structured answer, as
``tool_choice`` and ``response_format`` do in OpenAI's shape. A structured request
ending with an answer and feedback after it is a re-ask, judged as in OpenAI's shape
(its prompt is the user text before the answer); a ``tool_use`` block not answered by
a ``tool_result`` in the next message is refused with a 400, as Anthropic does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from langchain_batchkit.testing._fakeserver._chat import ChatAnswer, ChatRequest, MessageContent
from langchain_batchkit.testing._fakeserver._exchange import (
    ApiError,
    InvalidRequest,
    Response,
    json_response,
)
from langchain_batchkit.testing._fakeserver._images import check_image_url
from langchain_batchkit.testing._fakeserver._structured import Conversation, StructuredSpec

__all__ = [
    "ANTHROPIC_VERSION",
    "anthropic_error",
    "anthropic_error_body",
    "as_anthropic_error",
    "check_anthropic_headers",
    "message_object",
    "parse_message_payload",
]

#: The ``anthropic-version`` every request must send (the SDK sends this one).
ANTHROPIC_VERSION: Final = "2023-06-01"

_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_ROLES = ("user", "assistant")


def anthropic_error_body(error_type: str, message: str) -> dict[str, object]:
    """Anthropic's error object, also what an ``errored`` batch result carries."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def anthropic_error(status: int, message: str, error_type: str | None = None) -> Response:
    """An error response in Anthropic's shape; the type follows the status by default."""
    kind = error_type or _ERROR_TYPES.get(status, "api_error")
    return json_response(status, anthropic_error_body(kind, message))


def as_anthropic_error(exc: ApiError) -> Response:
    """A shared handler error (raised in OpenAI's terms) answered in Anthropic's shape."""
    return anthropic_error(exc.status, exc.message)


def check_anthropic_headers(headers: Mapping[str, str]) -> Response | None:
    """The 401 of a request without a key, or the 400 of one without a version.

    The key is ``x-api-key``, or ``Authorization: Bearer`` as recent SDKs send it. Its
    value is never read beyond its presence, so it cannot be logged.
    """
    bearer = headers.get("authorization", "").removeprefix("Bearer").strip()
    if not headers.get("x-api-key") and not bearer:
        return anthropic_error(401, "x-api-key header is required")
    if not headers.get("anthropic-version"):
        return anthropic_error(400, "anthropic-version: header is required")
    return None


def parse_message_payload(payload: object) -> ChatRequest:
    """Read a Messages body; raises :class:`InvalidRequest` where Anthropic answers 400.

    Example:
        >>> chat = parse_message_payload({"model": "claude-3-5-haiku-latest", "max_tokens": 9,
        ...     "messages": [{"role": "user", "content": "hi"}]})
        >>> chat.prompt, chat.max_tokens
        ('hi', 9)
    """
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required")
    max_tokens = payload.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest("max_tokens: Field required (a positive integer)")
    temperature = payload.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 1
    ):
        raise InvalidRequest("temperature: Input should be less than or equal to 1")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required")
    contents = [_system(payload.get("system"))]
    prompt = ""
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise InvalidRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = _content(message.get("content"), f"messages.{i}.content")
        contents.append(content)
        turns.append((message["role"], "\n".join(content.texts)))
        if message["role"] == "user":
            prompt = "\n".join(content.texts)
    _check_tool_results(messages)
    structured = _structured(payload)
    conversation = _conversation(turns) if structured is not None else None
    if conversation is not None:
        prompt = conversation.prompt
    return ChatRequest(
        model=model,
        prompt=prompt,
        messages=tuple(c for c in contents if c.texts or c.images),
        image_count=sum(c.images for c in contents),
        max_tokens=max_tokens,
        stream=payload.get("stream") is True,
        include_usage=True,
        structured=structured,
        conversation=conversation,
    )


def _conversation(turns: Sequence[tuple[str, str]]) -> Conversation | None:
    """A re-ask's parts: the user text before the last answer, the answer, the feedback."""
    last = max((i for i, (role, _) in enumerate(turns) if role == "assistant"), default=None)
    if last is None or last == len(turns) - 1:
        return None
    before = [text for role, text in turns[:last] if role == "user"]
    feedback = "\n".join(text for _, text in turns[last + 1 :])
    return Conversation(before[-1] if before else "", turns[last][1], feedback)


def _check_tool_results(messages: Sequence[Any]) -> None:
    """Anthropic's rule: every ``tool_use`` block is answered by a ``tool_result`` block
    with its id in the next (user) message, else HTTP 400."""
    for i, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        ids = {b.get("id") for b in content if isinstance(b, dict) and b.get("type") == "tool_use"}
        if not ids or i + 1 == len(messages):
            continue
        reply = messages[i + 1].get("content")
        answered = {
            b.get("tool_use_id")
            for b in (reply if isinstance(reply, list) else [])
            if isinstance(b, dict) and b.get("type") == "tool_result"
        }
        missing = sorted(str(x) for x in ids - answered)
        if missing:
            raise InvalidRequest(
                f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )


def message_object(
    message_id: str, chat: ChatRequest, answer: ChatAnswer, *, tier: str = "standard"
) -> dict[str, object]:
    """The ``message`` object of ``answer``: one text block, or one ``tool_use`` block.

    Cached prompt tokens (``cached_prompt_fraction``) are reported as cache reads, which
    Anthropic counts apart from ``input_tokens``.
    """
    if answer.tool is not None:
        block: dict[str, object] = {
            "type": "tool_use",
            "id": "toolu_" + message_id.removeprefix("msg_"),
            "name": answer.tool,
            "input": _tool_input(answer.text),
        }
        stop_reason = "tool_use"
    else:
        block = {"type": "text", "text": answer.text}
        stop_reason = "max_tokens" if answer.finish_reason == "length" else "end_turn"
    cached = min(answer.cached_tokens, answer.prompt_tokens)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": chat.model,
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": answer.prompt_tokens - cached,
            "output_tokens": answer.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
            "service_tier": tier,
        },
    }


def _tool_input(text: str) -> dict[str, Any]:
    """A tool call's input object (a spoiled answer that is no object is wrapped)."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"answer": text}


def _system(system: object) -> MessageContent:
    if system is None:
        return MessageContent((), 0)
    if isinstance(system, str):
        return MessageContent((system,), 0)
    if isinstance(system, list):
        return _content(system, "system")
    raise InvalidRequest("system: Input should be a valid string or a list of text blocks")


def _content(content: object, param: str) -> MessageContent:
    """The texts of one message's content (tool inputs and results included) and its images."""
    if isinstance(content, str):
        return MessageContent((content,), 0)
    if not isinstance(content, list):
        raise InvalidRequest(f"{param}: Input should be a valid string or a list of blocks")
    texts: list[str] = []
    images = 0
    for j, block in enumerate(content):
        where = f"{param}.{j}"
        if not isinstance(block, dict):
            raise InvalidRequest(f"{where}: Input should be an object")
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise InvalidRequest(f"{where}.text: Field required")
            texts.append(block["text"])
        elif kind == "image":
            _check_image(block.get("source"), where)
            images += 1
        elif kind == "tool_use":
            texts.append(json.dumps(block.get("input", {})))
        elif kind == "tool_result":
            texts += _content(block.get("content", ""), f"{where}.content").texts
    return MessageContent(tuple(texts), images)


def _check_image(source: object, where: str) -> None:
    """Refuse an image source as :func:`check_image_url` refuses an image part."""
    if not isinstance(source, dict):
        raise InvalidRequest(f"{where}.source: Field required")
    if source.get("type") == "url":
        url = source.get("url")
    elif source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    else:
        raise InvalidRequest(f"{where}.source.type: Input should be 'base64' or 'url'")
    check_image_url({"image_url": {"url": url}}, f"{where}.source")


def _structured(payload: Mapping[str, Any]) -> StructuredSpec | None:
    """The structured answer a forced tool or an ``output_config.format`` asks for."""
    tools = payload.get("tools")
    choice = payload.get("tool_choice")
    if (
        isinstance(tools, list)
        and isinstance(choice, dict)
        and choice.get("type") in ("tool", "any")
    ):
        wanted = choice.get("name") if choice.get("type") == "tool" else None
        for tool in _named(tools):
            if wanted in (None, tool["name"]):
                schema = tool.get("input_schema")
                return StructuredSpec(
                    str(tool["name"]), schema if isinstance(schema, dict) else None
                )
        raise InvalidRequest(f"tool_choice: no tool named {wanted!r} in tools")
    config = payload.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return StructuredSpec(None, schema if isinstance(schema, dict) else None)
    return None


def _named(tools: Sequence[object]) -> list[dict[str, Any]]:
    return [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
