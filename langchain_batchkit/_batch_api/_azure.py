"""``AzureChatOpenAI`` steps through Azure OpenAI's Batch API (global or data-zone batch).

Azure runs OpenAI's Files and Batches under its own routes (``/openai/files``,
``/openai/batches``, each call with an ``api-version``), and a batch line differs
from OpenAI's in two ways: its URL is ``/chat/completions`` (no ``/v1``), and its
body's ``model`` names the *deployment* that serves it, not the model. Online,
``AzureChatOpenAI`` puts the deployment in the URL and leaves the body's ``model``
as the model's name (or ``None``), so the body is built by its own payload code and
only ``model`` is replaced here. The routes, ``api-version`` and the ``api-key`` (or
Entra ID token provider) come with a copy of the model's ``AsyncAzureOpenAI``.
Answers go through ``AzureChatOpenAI``'s own ``_create_chat_result``: content
filter results land in the message's metadata, a filtered answer fails its item, and
``response_metadata["model_name"]`` is the model Azure says answered, which prices it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote

from langchain_core.messages import AIMessage
from langchain_openai import AzureChatOpenAI

from langchain_batchkit._batch_api._jobapi import JobClient
from langchain_batchkit._batch_api._provider import OpenAIBatches
from langchain_batchkit._batch_api._requests import PreparedRequest, RequestBuilder
from langchain_batchkit._batch_api._responses import message_from_body
from langchain_batchkit._errors import ConfigurationError

__all__ = ["ENDPOINT", "MAX_REQUESTS", "AzureBackend", "deployment_of"]

#: The URL of every request line and the endpoint of every job on Azure OpenAI.
ENDPOINT: Final = "/chat/completions"
#: Azure OpenAI's most requests in one batch input file (OpenAI's is 50,000).
MAX_REQUESTS: Final = 100_000

_DEPLOYMENT = re.compile(r"/deployments/([^/]+)")


class AzureBackend:
    """``AzureChatOpenAI``: Chat Completions bodies addressed to its deployment.

    Attributes:
        deployment: the deployment each request line names as its ``model``.

    Example:
        >>> llm = AzureChatOpenAI(azure_endpoint="https://res.openai.azure.com",
        ...                       azure_deployment="gpt-4o-mini-batch",
        ...                       api_version="2025-04-01-preview")   # doctest: +SKIP
        >>> backend = AzureBackend(llm, {})                          # doctest: +SKIP
        >>> json.loads(backend.build("Hi").body_json)["model"]       # doctest: +SKIP
        'gpt-4o-mini-batch'
    """

    __slots__ = ("_builder", "deployment", "model", "model_name", "provider")

    def __init__(self, model: AzureChatOpenAI, kwargs: Mapping[str, Any]) -> None:
        self.model = model
        self.provider = "azure"
        self.deployment = deployment_of(model, kwargs)
        self.model_name: str | None = model.model_name or self.deployment
        self._builder = RequestBuilder(model, kwargs, body_model=self.deployment)

    def build(self, model_input: Any) -> PreparedRequest:
        return self._builder.build(model_input)

    def message(self, body: Mapping[str, Any]) -> AIMessage:
        return message_from_body(self.model, self._builder, body)

    def client(self, *, private_loop: bool) -> JobClient:
        return OpenAIBatches.for_client(
            _jobs_root(self.model.root_async_client),
            self.model.http_async_client,
            private_loop=private_loop,
            endpoint=ENDPOINT,
            max_requests=MAX_REQUESTS,
        )


def deployment_of(model: AzureChatOpenAI, kwargs: Mapping[str, Any]) -> str:
    """The deployment ``model``'s online calls go to, which a batch line must name.

    As the openai SDK routes an online call: ``azure_deployment``, else the
    deployment in a ``base_url`` ending ``/openai/deployments/{name}``, else the
    body's ``model`` (the bound ``model=``, or the model's own name).

    Raises:
        ConfigurationError: nothing names a deployment.
    """
    if model.deployment_name:
        return model.deployment_name
    found = _DEPLOYMENT.search(model.root_async_client.base_url.path)
    if found:
        return unquote(found.group(1))
    named = kwargs.get("model") or model.model_name
    if isinstance(named, str) and named:
        return named
    raise ConfigurationError(
        "AzureChatOpenAI names no deployment: set azure_deployment= to the global (or "
        "data-zone) batch deployment; Azure batch lines name it as their model"
    )


def _jobs_root(root: Any) -> Any:
    """The client for files and batches: ``root`` itself, unless its ``base_url`` ends
    in ``/deployments/{name}`` (no ``azure_endpoint``), where the SDK would send them
    under the deployment; then a copy rooted at ``/openai`` (same key, api-version and
    HTTP client)."""
    if root._azure_endpoint is not None:
        return root  # the SDK itself sends files and batches to {endpoint}/openai
    base = str(root.base_url)
    found = _DEPLOYMENT.search(base)
    return root if found is None else root.copy(base_url=base[: found.start()])
