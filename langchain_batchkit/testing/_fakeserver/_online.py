"""The online endpoints: ``/v1/chat/completions``, ``/v1/embeddings`` and ``/v1/models``.

Every chat request meets these decisions in this order:

1. the body is validated (JSON, ``messages``, image parts, ``service_tier``, tool
   messages answering each tool call) → 400;
2. ``reject_prompts``, and flex for a model in ``flex_unsupported_models`` → 400,
   every time;
3. a flex request only: no flex capacity (a scripted ``"flex_unavailable"`` step,
   or a draw of ``flex_unavailable_rate``) → 429 ``resource_unavailable`` at once,
   with no ``Retry-After`` and no ``x-ratelimit-*`` headers, not admitted;
4. the rate limiter (exact sliding window, or fixed windows) → 429;
5. a fault: the prompt's next ``script`` step if it has one left, otherwise a
   draw from the seeded RNG (``error_rate_5xx``, ``drop_rate``, ``hang_rate``);
6. latency (drops and hangs skip it; flex multiplies it by
   ``flex_latency_factor``), then the fault's response or the answer (JSON, or
   server-sent events when ``"stream": true``), which names the tier that served it;
   a scripted mistake (``"missing_field"``, ...) spoils a structured answer.

An embeddings request meets the same steps (no flex): 400s for its body and the
API's request limits (:mod:`._embeddings`), ``reject_prompts`` against any input,
the limiter with its inputs' tokens, a fault, latency, then the vectors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping

from langchain_batchkit.testing._fakeserver._chat import (
    ChatRequest,
    check_not_rejected,
    check_service_tier,
    completion_object,
    compose_answer,
    parse_chat_body,
    stream_events,
)
from langchain_batchkit.testing._fakeserver._config import BAD_ANSWERS, FakeServerConfig
from langchain_batchkit.testing._fakeserver._embeddings import (
    check_inputs_not_rejected,
    embedding_object,
    parse_embedding_body,
)
from langchain_batchkit.testing._fakeserver._exchange import (
    EventStream,
    InvalidRequest,
    Outcome,
    Request,
    Response,
    Route,
    Silence,
    error_response,
    json_response,
)
from langchain_batchkit.testing._fakeserver._faults import SERVER_ERRORS, FaultPlan
from langchain_batchkit.testing._fakeserver._ratelimit import (
    RateLimiter,
    Verdict,
    ceil_ms,
    format_seconds,
)
from langchain_batchkit.testing._fakeserver._stats import Counters

__all__ = ["OnlineEndpoints"]

_Headers = tuple[tuple[str, str], ...]


class OnlineEndpoints:
    """Handlers for chat completions and models; state lives on the server's loop."""

    __slots__ = ("_config", "_counters", "_faults", "_ids", "_limiter")

    def __init__(self, config: FakeServerConfig, counters: Counters, ids: Iterator[int]) -> None:
        self._config = config
        self._counters = counters
        self._ids = ids
        self._limiter = RateLimiter(config)
        self._faults = FaultPlan(config)

    async def embeddings(self, request: Request, params: Mapping[str, str]) -> Outcome:
        """``POST /v1/embeddings``: validation, the limiter, faults, then the vectors."""
        config = self._config
        try:
            embedding = parse_embedding_body(await request.body(), config)
            self._counters.record_embedding_request()
            check_inputs_not_rejected(embedding.inputs, config)
        except InvalidRequest as exc:
            return error_response(
                400,
                exc.message,
                "invalid_request_error",
                code=exc.code,
                param=exc.param,
                headers=self._limiter.headers(config.clock()),
            )
        now = config.clock()
        verdict = self._limiter.admit(now, embedding.total_tokens, embedding.model)
        headers = self._limiter.headers(now)
        if not verdict.admitted:
            return _rate_limited(verdict, headers, config.send_retry_after)
        self._counters.record_admission(now)
        fault = self._faults.next_fault(embedding.prompt)
        if fault == "drop":
            return Silence.DROP
        if fault == "hang":
            return Silence.HANG
        delay = self._faults.sample_latency()
        if delay > 0:
            await asyncio.sleep(delay)
        failed = _fault_response(fault, embedding.model, headers, config)
        if failed is not None:
            return failed
        self._counters.record_embedded(len(embedding.inputs), embedding.total_tokens)
        return json_response(200, embedding_object(embedding, config), headers)

    def routes(self) -> tuple[Route, ...]:
        return (
            Route("POST", "/v1/chat/completions", self.chat_completions),
            Route("POST", "/v1/embeddings", self.embeddings),
            Route("GET", "/v1/models", self.list_models),
            Route("GET", "/v1/models/{model}", self.retrieve_model),
        )

    async def list_models(self, request: Request, params: Mapping[str, str]) -> Outcome:
        data = [_model_object(model) for model in self._config.models]
        return json_response(200, {"object": "list", "data": data})

    async def retrieve_model(self, request: Request, params: Mapping[str, str]) -> Outcome:
        model = params["model"]
        if model not in self._config.models:
            return error_response(
                404,
                f"The model '{model}' does not exist.",
                "invalid_request_error",
                code="model_not_found",
                param="model",
            )
        return json_response(200, _model_object(model))

    async def chat_completions(self, request: Request, params: Mapping[str, str]) -> Outcome:
        config = self._config
        try:
            chat = parse_chat_body(await request.body())
            self._counters.record_images(chat.image_count)
            if chat.flex:
                self._counters.record_flex_request()
            check_not_rejected(chat, config)
            check_service_tier(chat, config)
        except InvalidRequest as exc:
            return error_response(
                400,
                exc.message,
                "invalid_request_error",
                code=exc.code,
                param=exc.param,
                headers=self._limiter.headers(config.clock()),
            )
        if chat.flex and self._faults.flex_unavailable(chat.prompt):
            self._counters.record_flex_unavailable()
            return _flex_unavailable(chat)
        answer = compose_answer(chat, config)

        now = config.clock()
        verdict = self._limiter.admit(now, answer.cost, chat.model)
        headers = self._limiter.headers(now)
        if not verdict.admitted:
            return _rate_limited(verdict, headers, config.send_retry_after)
        self._counters.record_admission(now)

        fault = self._faults.next_fault(chat.prompt)
        if fault == "drop":
            return Silence.DROP
        if fault == "hang":
            return Silence.HANG
        delay = self._faults.sample_latency(config.flex_latency_factor if chat.flex else 1.0)
        if delay > 0:
            await asyncio.sleep(delay)
        failed = _fault_response(fault, chat.model, headers, config)
        if failed is not None:
            return failed
        if fault in BAD_ANSWERS:
            answer = compose_answer(chat, config, mistake=fault)  # type: ignore[arg-type]
        self._counters.record_answer(chat.prompt)
        completion_id = f"chatcmpl-fake{next(self._ids):08d}"
        created = int(time.time())
        if chat.stream:
            return EventStream(stream_events(completion_id, chat, answer, created), headers)
        return json_response(200, completion_object(completion_id, chat, answer, created), headers)


def _fault_response(
    fault: str, model: str, headers: _Headers, config: FakeServerConfig
) -> Response | None:
    """The answer of a scripted or drawn 429/5xx, or ``None`` to answer normally."""
    if fault == "429":
        scripted = Verdict(
            admitted=False,
            kind="requests",
            retry_after=config.scripted_retry_after,
            message=f"Rate limit reached for {model} (scripted fault).",
        )
        return _rate_limited(scripted, headers, config.send_retry_after)
    if fault in SERVER_ERRORS:
        status = int(fault)
        return error_response(
            status,
            f"The server had an error while processing your request ({status}, injected fault).",
            "server_error",
            headers=headers,
        )
    return None


def _model_object(model: str) -> dict[str, object]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "fake-openai"}


def _flex_unavailable(chat: ChatRequest) -> Response:
    """OpenAI's 429 when flex capacity is short: try later or on the default tier.

    It says nothing about when to retry: no ``Retry-After``, no ``x-ratelimit-*``.
    """
    return error_response(
        429,
        f"Resource unavailable: there is not enough flex processing capacity for "
        f"{chat.model} right now. Please retry later, or send the request with the "
        "default service tier.",
        "server_error",
        code="resource_unavailable",
    )


def _rate_limited(verdict: Verdict, headers: _Headers, send_retry_after: bool) -> Response:
    if verdict.retry_after is not None and send_retry_after:
        headers += (
            ("retry-after", format_seconds(verdict.retry_after)),
            ("retry-after-ms", str(ceil_ms(verdict.retry_after))),
        )
    return error_response(
        429,
        verdict.message,
        verdict.kind or "requests",
        code="rate_limit_exceeded",
        headers=headers,
    )
