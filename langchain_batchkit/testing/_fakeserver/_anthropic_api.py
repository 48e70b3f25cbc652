"""Anthropic's HTTP endpoints: ``POST /v1/messages`` and ``/v1/messages/batches``.

Every route wants an ``x-api-key`` (401 without; its value is never read beyond
its presence, so never logged) and an ``anthropic-version``, and answers errors in
Anthropic's shape, ``{"type": "error", "error": {"type", "message"}}``. Creating a
batch is checked as the real service checks it: a body over
``message_batch_max_bytes`` is refused with 413 ``request_too_large``; no requests,
more than ``message_batch_max_requests``, a ``custom_id`` that is not 1 to 64
letters, digits, ``-`` or ``_``, or one used twice, with 400. What is wrong inside a
request's ``params`` fails that request alone, as an ``errored`` result.

``POST /v1/messages`` answers online, without the rate limiter, faults or
latency of ``/v1/chat/completions`` (nor streaming): it is there so a test can
compare a chain's online and batch answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Final

from langchain_batchkit.testing._fakeserver._anthropic_batches import (
    BatchRequest,
    MessageBatchStore,
)
from langchain_batchkit.testing._fakeserver._anthropic_messages import (
    anthropic_error,
    as_anthropic_error,
    check_anthropic_headers,
    message_object,
    parse_message_payload,
)
from langchain_batchkit.testing._fakeserver._chat import check_not_rejected, compose_answer
from langchain_batchkit.testing._fakeserver._config import FakeServerConfig
from langchain_batchkit.testing._fakeserver._exchange import (
    ApiError,
    Handler,
    InvalidRequest,
    Outcome,
    Request,
    Response,
    Route,
    json_response,
)
from langchain_batchkit.testing._fakeserver._files import WallClock
from langchain_batchkit.testing._fakeserver._stats import Counters

__all__ = ["AnthropicEndpoints"]

_CUSTOM_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_PAGE: Final = 1000


class AnthropicEndpoints:
    """Handlers for Messages and Message Batches over one thread-safe batch store."""

    __slots__ = ("_batches", "_config", "_counters", "_ids")

    def __init__(self, config: FakeServerConfig, counters: Counters, ids: Iterator[int]) -> None:
        self._config = config
        self._counters = counters
        self._ids = ids
        self._batches = MessageBatchStore(config, counters, WallClock(config.clock))

    def routes(self) -> tuple[Route, ...]:
        batches, batch = "/v1/messages/batches", "/v1/messages/batches/{batch_id}"
        return (
            Route("POST", "/v1/messages", _anthropic(self.create_message)),
            Route("POST", batches, _anthropic(self.create_batch)),
            Route("GET", batches, _anthropic(self.list_batches)),
            Route("GET", batch, _anthropic(self.retrieve_batch)),
            Route("POST", batch + "/cancel", _anthropic(self.cancel_batch)),
            Route("GET", batch + "/results", _anthropic(self.batch_results)),
        )

    async def create_message(self, request: Request, params: Mapping[str, str]) -> Outcome:
        chat = parse_message_payload(_json(await request.body()))
        self._counters.record_images(chat.image_count)
        if chat.stream:
            raise InvalidRequest("stream: the fake server answers Messages without streaming")
        check_not_rejected(chat, self._config)
        answer = compose_answer(chat, self._config)
        self._counters.record_answer(chat.prompt)
        message_id = f"msg_fake{next(self._ids):08d}"
        return json_response(200, message_object(message_id, chat, answer))

    async def create_batch(self, request: Request, params: Mapping[str, str]) -> Outcome:
        body = await request.body()
        limit = self._config.message_batch_max_bytes
        if len(body) > limit:
            return anthropic_error(
                413, f"Request exceeds the maximum allowed size of {limit} bytes"
            )
        payload = _json(body)
        requests = payload.get("requests") if isinstance(payload, dict) else None
        batch = self._batches.create(_requests(requests, self._config), base_url=_base(request))
        return json_response(200, batch)

    async def list_batches(self, request: Request, params: Mapping[str, str]) -> Outcome:
        query = request.query
        page = self._batches.page(
            limit=_limit(query.get("limit")),
            after_id=query.get("after_id"),
            before_id=query.get("before_id"),
            base_url=_base(request),
        )
        return json_response(200, page)

    async def retrieve_batch(self, request: Request, params: Mapping[str, str]) -> Outcome:
        return json_response(
            200, self._batches.retrieve(params["batch_id"], base_url=_base(request))
        )

    async def cancel_batch(self, request: Request, params: Mapping[str, str]) -> Outcome:
        return json_response(200, self._batches.cancel(params["batch_id"], base_url=_base(request)))

    async def batch_results(self, request: Request, params: Mapping[str, str]) -> Outcome:
        data = self._batches.results(params["batch_id"])
        return Response(200, data, content_type="application/x-jsonl")


def _anthropic(handler: Handler) -> Handler:
    """``handler`` behind the header checks, its errors answered in Anthropic's shape."""

    async def checked(request: Request, params: Mapping[str, str]) -> Outcome:
        refused = check_anthropic_headers(request.headers)
        if refused is not None:
            return refused
        try:
            return await handler(request, params)
        except ApiError as exc:
            return as_anthropic_error(exc)

    return checked


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest("The request body is not valid JSON.") from exc


def _requests(value: object, config: FakeServerConfig) -> list[BatchRequest]:
    """A create call's requests, checked as the service checks them before accepting."""
    if not isinstance(value, list) or not value:
        raise InvalidRequest("requests: List should have at least 1 item")
    limit = config.message_batch_max_requests
    if len(value) > limit:
        raise InvalidRequest(
            f"requests: a batch can hold at most {limit} requests, got {len(value)}"
        )
    requests: list[BatchRequest] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise InvalidRequest(
                f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )
        if custom_id in seen:
            raise InvalidRequest(f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
        if not isinstance(params, dict):
            raise InvalidRequest(f"requests.{i}.params: Field required")
        seen.add(custom_id)
        requests.append(BatchRequest(custom_id, params))
    return requests


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_PAGE:
        raise InvalidRequest(f"limit: Input should be between 1 and {_MAX_PAGE}, got {raw!r}")
    return limit


def _base(request: Request) -> str:
    """The server's own root, as the client reached it (for ``results_url``)."""
    return f"http://{request.headers.get('host', '127.0.0.1')}"
