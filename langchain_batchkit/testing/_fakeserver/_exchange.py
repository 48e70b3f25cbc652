"""The handler contract: what an endpoint reads, what it returns, and OpenAI's errors.

Endpoints (:mod:`._online`, :mod:`._batch_api`) are written against these types only;
:mod:`._web` adapts them to aiohttp. So the endpoints, and everything they call, run
without a web server installed, and a route is one row of data.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "ApiError",
    "EventStream",
    "FormPart",
    "Handler",
    "InvalidRequest",
    "Outcome",
    "Request",
    "Response",
    "Route",
    "Silence",
    "error_body",
    "error_response",
    "json_response",
]

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class FormPart:
    """One field of a ``multipart/form-data`` body: its value and, for a file, its name."""

    name: str
    data: bytes
    filename: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Request:
    """What a handler may read of a request. Headers are never logged.

    ``query`` holds the query string's parameters (the last value of a repeated one).
    ``body()`` reads the whole body (:class:`ApiError` 413 past ``max_body_bytes``);
    ``form()`` the fields of a ``multipart/form-data`` body by name (400 if it is not one).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: Callable[[], Awaitable[bytes]]
    form: Callable[[], Awaitable[Mapping[str, FormPart]]]


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response; bodies are small, so they are built whole."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class EventStream:
    """A 200 ``text/event-stream`` response, sent one server-sent event at a time."""

    events: tuple[bytes, ...]
    headers: Headers = ()
    status: int = 200


class Silence(enum.Enum):
    """Outcomes that send no response at all."""

    DROP = "drop"
    HANG = "hang"


Outcome = Response | EventStream | Silence
Handler = Callable[[Request, Mapping[str, str]], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the route table: method, path template, handler.

    Placeholders in the path (``/v1/batches/{batch_id}``) reach the handler as its
    ``params`` mapping.
    """

    method: str
    path: str
    handler: Handler


class ApiError(Exception):
    """An OpenAI-style error a handler raises; the server answers it as a response.

    Lets resource code (files, batches) say "404, no such file" without knowing HTTP.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param

    def response(self) -> Response:
        return error_response(
            self.status, self.message, self.error_type, code=self.code, param=self.param
        )


class InvalidRequest(ApiError):
    """HTTP 400 ``invalid_request_error``: a request the real API would refuse."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(400, message, code=code, param=param)


def json_response(status: int, payload: object, headers: Headers = ()) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, headers=headers)


def error_body(
    message: str, error_type: str, *, code: str | None = None, param: str | None = None
) -> dict[str, object]:
    """OpenAI's error body, ``{"error": {"message", "type", "param", "code"}}``.

    Also what a failed batch line carries as its ``response.body``.
    """
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    error_type: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Headers = (),
) -> Response:
    """An OpenAI-style error response (see :func:`error_body`)."""
    return json_response(status, error_body(message, error_type, code=code, param=param), headers)
