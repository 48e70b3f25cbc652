"""``ChatAnthropic`` model steps: Messages requests from its own payload code, messages back.

A request in a Message Batch is what ``ChatAnthropic`` would send online: its own
``_get_request_payload`` turns messages, images, tools, bound parameters and
structured output (a forced tool, or an ``output_config`` JSON schema) into the
Messages body, and only what belongs to the HTTP call is dropped (streaming, SDK
options). An answer comes back through its own ``_format_output``, so the
``AIMessage`` (tool calls, usage, response metadata) is the one ``invoke`` returns.

langchain-anthropic and the anthropic SDK are the ``anthropic`` extra: nothing
here imports them until a ChatAnthropic model is met. We call two private
methods of ChatAnthropic, so the extra pins the versions we test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatResult

from langchain_batchkit._batch_api._jobapi import JobClient
from langchain_batchkit._batch_api._requests import PreparedRequest
from langchain_batchkit._errors import ConfigurationError

if TYPE_CHECKING:
    from langchain_anthropic import ChatAnthropic

__all__ = ["INSTALL", "AnthropicBackend", "anthropic_backend"]

#: How to get what this module needs.
INSTALL: Final = "pip install 'langchain-batchkit[anthropic]'"
#: Options the SDK takes besides the body (or that only make sense online).
_NOT_IN_BODY: Final = ("stream", "extra_headers", "extra_query", "timeout")
_DIRECT_API: Final = "anthropic-chat"


class AnthropicBackend:
    """``ChatAnthropic``: Messages bodies from its own payload code, one batch per job.

    Example:
        >>> backend = AnthropicBackend(ChatAnthropic(model="claude-3-5-haiku-latest"),
        ...                            {"temperature": 0})            # doctest: +SKIP
        >>> json.loads(backend.build("Hi").body_json)["temperature"]  # doctest: +SKIP
        0
    """

    __slots__ = ("_kwargs", "model", "model_name", "provider")

    def __init__(self, model: ChatAnthropic, kwargs: Mapping[str, Any]) -> None:
        kwargs = dict(kwargs)
        kwargs.pop("ls_structured_output_format", None)  # tracing only, never sent
        self.model: BaseLanguageModel[Any] = model
        self.provider = "anthropic"
        self.model_name: str | None = model.model
        self._kwargs = kwargs

    def build(self, model_input: Any) -> PreparedRequest:
        """The Messages body ChatAnthropic would send for ``model_input``.

        ``betas`` stay in the body: the job client sends them as the batch's header
        (see :class:`AnthropicBatches`).
        """
        model: Any = self.model
        payload: dict[str, Any] = model._get_request_payload(model_input, **self._kwargs)
        for key in _NOT_IN_BODY:
            payload.pop(key, None)
        extra = payload.pop("extra_body", None)
        if isinstance(extra, Mapping):
            payload.update(extra)  # the SDK merges extra_body into the JSON body too
        body_json = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return PreparedRequest(body_json, hashlib.sha256(body_json.encode()).hexdigest())

    def message(self, body: Mapping[str, Any]) -> AIMessage:
        """The AIMessage (usage, tool calls, response metadata) ``invoke`` returns for ``body``."""
        model: Any = self.model
        result: ChatResult = model._format_output(_validated(body))
        generation = result.generations[0]
        message = generation.message
        if not isinstance(message, AIMessage):
            raise TypeError(f"expected an AIMessage from the answer, got {type(message).__name__}")
        if getattr(model, "output_version", None) == "v1":  # as BaseChatModel does online
            message = message.model_copy(
                update={
                    "content": message.content_blocks,
                    "response_metadata": {**message.response_metadata, "output_version": "v1"},
                }
            )
        message.response_metadata = {
            **(result.llm_output or {}),
            **(generation.generation_info or {}),
            **message.response_metadata,
        }
        return message

    def client(self, *, private_loop: bool) -> JobClient:
        """A job client on an HTTP client of its own, whatever the loop (see
        :mod:`._anthropic_batches`)."""
        from langchain_batchkit._batch_api._anthropic_batches import AnthropicBatches

        model: Any = self.model
        return AnthropicBatches.for_model(model)


def _validated(body: Mapping[str, Any]) -> Any:
    """The SDK's ``Message`` of an answer body (``BetaMessage`` for beta-only content)."""
    from anthropic.types import Message
    from pydantic import ValidationError

    try:
        return Message.model_validate(dict(body))
    except ValidationError:
        from anthropic.types.beta import BetaMessage

        return BetaMessage.model_validate(dict(body))


def anthropic_backend(
    model: BaseLanguageModel[Any], kwargs: Mapping[str, Any]
) -> AnthropicBackend | None:
    """The backend of a ``ChatAnthropic`` model, ``None`` for any other model.

    Raises:
        ConfigurationError: langchain-anthropic cannot be imported (or lacks what we
            call), or the model reaches Claude through another service (Bedrock,
            Vertex), which has no Message Batches.
    """
    if not _from_langchain_anthropic(model):
        return None
    try:
        from langchain_anthropic import ChatAnthropic
    except ImportError as exc:
        raise ConfigurationError(
            f"{model.get_name()} needs langchain-anthropic for the Batch API: {INSTALL}"
        ) from exc
    if not isinstance(model, ChatAnthropic):
        return None
    if not all(hasattr(model, name) for name in ("_get_request_payload", "_format_output")):
        raise ConfigurationError(
            f"this langchain-anthropic lacks what BatchAPIRunner calls; install the tested "
            f"versions: {INSTALL}"
        )
    if getattr(model, "_llm_type", None) != _DIRECT_API:
        raise ConfigurationError(
            f"{model.get_name()} reaches Claude through another service than Anthropic's own "
            "API, which has no Message Batches here"
        )
    return AnthropicBackend(model, kwargs)


def _from_langchain_anthropic(model: object) -> bool:
    """Is ``model`` a langchain-anthropic class (found without importing it)?"""
    return any(cls.__module__.split(".")[0] == "langchain_anthropic" for cls in type(model).__mro__)
