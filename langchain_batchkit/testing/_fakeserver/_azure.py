"""Azure OpenAI's routes: ``/openai/files``, ``/openai/batches`` and a deployment's chat.

Azure serves OpenAI's Files and Batches under ``/openai`` and names its chat batch
endpoint (and the URL of each line) ``/chat/completions``; the fake serves them
from the Batch API's own store and timeline (:mod:`._batch_api`), so a batch made
here runs on ``config.clock`` like any other. Online, a deployment answers at
``/openai/deployments/{deployment}/chat/completions`` as ``/v1/chat/completions``
would (rate limits, faults, latency), whatever the body's ``model`` says.

What Azure adds is checked on every route, before anything else: an
``api-version`` query parameter, a dated version such as ``2025-04-01-preview``
(HTTP 400 without it, as Azure answers), and credentials, an ``api-key`` header or
an ``Authorization: Bearer`` token (HTTP 401 without). Any non-empty credential is
accepted; none is logged or echoed. Answers name the model deployed (see
:mod:`._azure_answers`) and carry content filter results.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping

from langchain_batchkit.testing._fakeserver._azure_answers import (
    AZURE_CHAT,
    deployed_model,
    with_filter_results,
)
from langchain_batchkit.testing._fakeserver._batch_api import BatchApiEndpoints
from langchain_batchkit.testing._fakeserver._config import FakeServerConfig
from langchain_batchkit.testing._fakeserver._exchange import (
    ApiError,
    Handler,
    Outcome,
    Request,
    Response,
    Route,
    json_response,
)
from langchain_batchkit.testing._fakeserver._online import OnlineEndpoints

__all__ = ["AzureEndpoints"]

_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")


class AzureEndpoints:
    """Azure OpenAI's routes over the server's online and Batch API endpoints.

    Example:
        >>> from openai import AzureOpenAI
        >>> with FakeOpenAIServer(FakeServerConfig()) as server:  # doctest: +SKIP
        ...     client = AzureOpenAI(azure_endpoint=server.url, api_key=key,
        ...                          api_version="2025-04-01-preview")
        ...     client.batches.list().data
        []
    """

    __slots__ = ("_batch_api", "_config", "_online")

    def __init__(
        self, config: FakeServerConfig, online: OnlineEndpoints, batch_api: BatchApiEndpoints
    ) -> None:
        self._config = config
        self._online = online
        self._batch_api = batch_api

    def routes(self) -> tuple[Route, ...]:
        shared = self._batch_api.routes(prefix="/openai", endpoints=(AZURE_CHAT,))
        chat = Route("POST", "/openai/deployments/{deployment}/chat/completions", self.chat)
        return tuple(
            dataclasses.replace(route, handler=_azure_checked(route.handler))
            for route in (*shared, chat)
        )

    async def chat(self, request: Request, params: Mapping[str, str]) -> Outcome:
        """A deployment's chat completion: the body as the deployed model's, answered
        online, with content filter results."""
        body = _naming(
            await request.body(), deployed_model(params["deployment"], self._config.models)
        )

        async def read() -> bytes:
            return body

        outcome = await self._online.chat_completions(
            dataclasses.replace(request, body=read), params
        )
        if isinstance(outcome, Response) and outcome.status == 200:
            completion = json.loads(outcome.body)
            return json_response(200, with_filter_results(completion), outcome.headers)
        return outcome


def _azure_checked(handler: Handler) -> Handler:
    """``handler`` behind Azure's checks of ``api-version`` and credentials."""

    async def checked(request: Request, params: Mapping[str, str]) -> Outcome:
        version = request.query.get("api-version")
        if not version:
            raise ApiError(
                400,
                "The api-version query parameter (?api-version=) is required for all requests.",
                code="MissingApiVersionParameter",
                param="api-version",
            )
        if _API_VERSION.fullmatch(version) is None:
            raise ApiError(
                400,
                f"The api-version {version!r} is not a dated version such as '2025-04-01-preview'.",
                code="UnsupportedApiVersion",
                param="api-version",
            )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        bearer = token.strip() if scheme == "Bearer" else ""
        if not (request.headers.get("api-key", "").strip() or bearer):
            raise ApiError(
                401,
                "Access denied: send an api-key header or an Authorization Bearer token.",
                error_type="invalid_request_error",
                code="401",
            )
        return await handler(request, params)

    return checked


def _naming(body: bytes, model: str) -> bytes:
    """A JSON body with ``model`` set; any other body unchanged (the handler refuses it)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body
    if not isinstance(payload, dict):
        return body
    return json.dumps({**payload, "model": model}).encode()
