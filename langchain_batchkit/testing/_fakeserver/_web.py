"""The route table served by aiohttp: requests in, outcomes out, connections counted.

The only module of the fake server that imports aiohttp. :class:`FakeOpenAIServer`
imports it when a server is built, so ``langchain_batchkit.testing`` (fake models,
fake clock, config) works without the ``testing`` extra.

aiohttp parses HTTP/1.1 and multipart bodies, keeps connections alive and routes by
path; this module adds what a fake service needs on top: every request counted and
logged once, handler bugs answered as logged 500s, OpenAI-style 404/405 bodies,
server-sent events written one at a time, and the two silences: a dropped request
closes its connection unanswered, a hung one waits until the client gives up (its
handler is cancelled) or the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import MappingProxyType

from aiohttp import BodyPartReader, web
from aiohttp.http import HttpProcessingError

from langchain_batchkit.testing._fakeserver._exchange import (
    ApiError,
    EventStream,
    FormPart,
    Handler,
    InvalidRequest,
    Outcome,
    Request,
    Response,
    Route,
    Silence,
    error_response,
)
from langchain_batchkit.testing._fakeserver._stats import Counters

__all__ = ["WebListener"]

logger = logging.getLogger(__name__)

_SHUTDOWN_GRACE = 0.05  # seconds (twice: aiohttp waits, then cancels) a request gets at stop()

_Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebListener:
    """An aiohttp application for ``routes``, listening on a free port of one host.

    Made and used on the server's own loop. Every TCP connection is counted as it is
    accepted (``connections_opened``), by wrapping the protocol factory aiohttp's
    runner hands out.

    Args:
        routes: the route table.
        counters: where requests, statuses and connections are counted.
        ids: the server's id sequence (for ``x-request-id``).
        released: set by ``stop()``; hung requests end when it is.
        max_body_bytes: larger request bodies get HTTP 413.
    """

    __slots__ = ("_counters", "_ids", "_max_body", "_released", "_routes", "_runner", "_server")

    def __init__(
        self,
        routes: tuple[Route, ...],
        counters: Counters,
        ids: Iterator[int],
        released: asyncio.Event,
        max_body_bytes: int,
    ) -> None:
        self._routes = routes
        self._counters = counters
        self._ids = ids
        self._released = released
        self._max_body = max_body_bytes
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str) -> int:
        """Listen on a free port of ``host``; returns the port."""
        runner = self._runner = web.AppRunner(
            self._application(),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_GRACE,
        )
        await runner.setup()
        factory = runner.server
        assert factory is not None  # set by setup()

        def counting_factory() -> asyncio.BaseProtocol:
            self._counters.connection_opened()
            return factory()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(counting_factory, host=host, port=0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop accepting, close idle connections, cancel requests past the grace."""
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)

    # ------------------------------------------------------------------ dispatch

    def _application(self) -> web.Application:
        @web.middleware
        async def openai_routing_errors(
            request: web.Request, handler: _Endpoint
        ) -> web.StreamResponse:
            try:
                return await handler(request)
            except web.HTTPMethodNotAllowed as exc:
                outcome = error_response(
                    405,
                    f"Method {request.method} not allowed for {request.path}.",
                    "invalid_request_error",
                    headers=(("allow", ", ".join(sorted(exc.allowed_methods))),),
                )
            except web.HTTPNotFound:
                outcome = error_response(
                    404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error"
                )
            return await self._answer(request, _settled(outcome))

        app = web.Application(middlewares=[openai_routing_errors], client_max_size=self._max_body)
        for route in self._routes:
            app.router.add_route(route.method, route.path, self._endpoint(route.handler))
        return app

    def _endpoint(self, handler: Handler) -> _Endpoint:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            return await self._answer(request, self._call(handler, request))

        return endpoint

    async def _call(self, handler: Handler, request: web.Request) -> Outcome:
        """Run a handler; a bug in it (or in ``response_text``) becomes a logged 500."""
        try:
            return await handler(_adapt(request, self._max_body), request.match_info)
        except ApiError as exc:
            return exc.response()
        except Exception:
            logger.exception("fake server handler for %s %s raised", request.method, request.path)
            return error_response(
                500, "The fake server's handler raised an exception; see its log.", "server_error"
            )

    async def _answer(
        self, request: web.Request, pending: Awaitable[Outcome]
    ) -> web.StreamResponse:
        """Count, log and send one request's outcome (or hang up on it)."""
        request_id = f"req_fake_{next(self._ids)}"
        self._counters.request_started()
        try:
            outcome = await pending
            logger.debug(
                "%s %s -> %s",
                request.method,
                request.path,
                outcome.value if isinstance(outcome, Silence) else outcome.status,
            )
            if outcome is Silence.HANG:
                self._counters.record_hang()
                await self._released.wait()
            if isinstance(outcome, Silence):
                if outcome is Silence.DROP:
                    self._counters.record_drop()
                return _hang_up(request)
            # Before the send: once the bytes leave, the client may read the stats or
            # send its next request, and must find every counter of this one settled.
            self._counters.record_status(outcome.status)
        finally:
            self._counters.request_finished()
        return await _send(request, outcome, request_id)


def _adapt(request: web.Request, max_body: int) -> Request:
    async def body() -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise _too_large(max_body) from exc

    async def form() -> Mapping[str, FormPart]:
        if request.content_type != "multipart/form-data":
            raise InvalidRequest(
                "Expected a multipart/form-data body with a boundary "
                f"(got Content-Type {request.content_type!r})."
            )
        parts: dict[str, FormPart] = {}
        size = 0
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or not part.name:
                    raise InvalidRequest(
                        "Malformed multipart/form-data part: expected "
                        "'Content-Disposition: form-data; name=...'."
                    )
                data = bytes(await part.read())
                size += len(data)
                if size > max_body:
                    raise _too_large(max_body)
                parts[part.name] = FormPart(part.name, data, _filename(part))
        except web.HTTPRequestEntityTooLarge as exc:
            raise _too_large(max_body) from exc
        except (ValueError, HttpProcessingError) as exc:
            raise InvalidRequest(f"Malformed multipart/form-data body: {exc}") from exc
        return MappingProxyType(parts)

    query = MappingProxyType(dict(request.query.items()))
    return Request(request.method, request.path, request.headers, query, body, form)


def _too_large(max_body: int) -> ApiError:
    return ApiError(413, f"The request body exceeds {max_body} bytes.")


def _filename(part: BodyPartReader) -> str | None:
    """The part's filename, with the ``%22`` that httpx (like browsers) sends for a quote."""
    return None if part.filename is None else part.filename.replace("%22", '"')


async def _settled(outcome: Outcome) -> Outcome:
    return outcome


def _hang_up(request: web.Request) -> web.StreamResponse:
    """Close the connection unanswered; aiohttp's write of the returned response fails."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


async def _send(
    request: web.Request, outcome: Response | EventStream, request_id: str
) -> web.StreamResponse:
    headers = (("x-request-id", request_id), *outcome.headers)
    if isinstance(outcome, EventStream):
        stream = web.StreamResponse(status=outcome.status, headers=headers)
        stream.content_type = "text/event-stream"
        await stream.prepare(request)
        for event in outcome.events:
            await stream.write(event)
        await stream.write_eof()
        return stream
    return web.Response(
        status=outcome.status,
        body=outcome.body,
        content_type=outcome.content_type,
        headers=headers,
    )
