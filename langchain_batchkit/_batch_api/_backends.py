"""One model step's provider: request bodies, the job client, messages from answers.

Each provider's own LangChain package builds its request bodies and reads its
answers, so a request in a batch carries exactly what the model would send online
(messages, images, tools, bound parameters, structured output) and an answer comes
back as the same ``AIMessage`` with usage. :func:`backend_for` picks the backend
of a model, or refuses it with a message saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import AIMessage
from langchain_openai import AzureChatOpenAI, ChatOpenAI
from langchain_openai.chat_models.base import BaseChatOpenAI

from langchain_batchkit._batch_api._anthropic import anthropic_backend
from langchain_batchkit._batch_api._azure import AzureBackend
from langchain_batchkit._batch_api._jobapi import JobClient
from langchain_batchkit._batch_api._provider import OpenAIBatches
from langchain_batchkit._batch_api._requests import PreparedRequest, RequestBuilder
from langchain_batchkit._batch_api._responses import message_from_body
from langchain_batchkit._errors import ConfigurationError

__all__ = ["ModelBackend", "OpenAIBackend", "backend_for"]


class ModelBackend(Protocol):
    """What a run needs of one model step's provider.

    Attributes:
        model: the chat model as written in the chain.
        provider: the provider's name (``"openai"``, ``"azure"``, ``"anthropic"``).
        model_name: the model asked for (prices the answers).
    """

    model: BaseLanguageModel[Any]
    provider: str
    model_name: str | None

    def build(self, model_input: Any) -> PreparedRequest:
        """The request body the model would send online for ``model_input``."""
        ...

    def message(self, body: Mapping[str, Any]) -> AIMessage:
        """The ``AIMessage`` the model returns online for an answer body."""
        ...

    def client(self, *, private_loop: bool) -> JobClient:
        """The job client, made in the loop that uses it (see :class:`OpenAIBatches`)."""
        ...


class OpenAIBackend:
    """``ChatOpenAI``: Chat Completions bodies from its own payload code."""

    __slots__ = ("_builder", "model", "model_name", "provider")

    def __init__(self, model: ChatOpenAI, kwargs: Mapping[str, Any]) -> None:
        self.model = model
        self.provider = "openai"
        self.model_name = model.model_name
        self._builder = RequestBuilder(model, kwargs)

    def build(self, model_input: Any) -> PreparedRequest:
        return self._builder.build(model_input)

    def message(self, body: Mapping[str, Any]) -> AIMessage:
        return message_from_body(self.model, self._builder, body)  # type: ignore[arg-type]

    def client(self, *, private_loop: bool) -> JobClient:
        return OpenAIBatches.for_model(self.model, private_loop=private_loop)


def backend_for(model: BaseLanguageModel[Any], kwargs: Mapping[str, Any], shape: str) -> Any:
    """The backend of ``model`` called with the bound ``kwargs``.

    Raises:
        ConfigurationError: no Batch API support for this model here, a ChatOpenAI
            that would call the Responses API, or a ChatAnthropic without the
            ``anthropic`` extra's packages.
    """
    if isinstance(model, ChatOpenAI) and not isinstance(model, AzureChatOpenAI):
        _no_responses_api(model, kwargs)
        return OpenAIBackend(model, kwargs)
    if isinstance(model, AzureChatOpenAI):
        _no_responses_api(model, kwargs)
        return AzureBackend(model, kwargs)
    anthropic = anthropic_backend(model, kwargs)
    if anthropic is not None:
        return anthropic
    raise ConfigurationError(
        f"{shape}; {model.get_name()} has no Batch API support here (supported: ChatOpenAI, "
        "AzureChatOpenAI, ChatAnthropic)"
    )


def _no_responses_api(model: BaseChatOpenAI, kwargs: Mapping[str, Any]) -> None:
    if model._use_responses_api({**kwargs, **model.model_kwargs}):
        raise ConfigurationError(
            f"{model.get_name()} would call the Responses API; BatchAPIRunner sends Chat "
            f"Completions batches: use {model.get_name()}(use_responses_api=False)"
        )
