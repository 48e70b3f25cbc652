"""HTTP/1.1 on asyncio streams: requests in, responses out, and the route table's types.

Requests are parsed by hand (request line, headers, ``Content-Length`` body,
keep-alive). Headers are lower-cased and never logged, so the Authorization header
cannot leak.
"""

from __future__ import annotations

import asyncio
import enum
import http
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "ApiError",
    "Handler",
    "HttpError",
    "InvalidRequest",
    "Outcome",
    "Request",
    "Response",
    "Route",
    "Silence",
    "encode_response",
    "error_body",
    "error_response",
    "json_response",
    "read_request",
    "until_disconnected",
]


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request. Headers are lower-cased and never logged.

    ``query`` holds the query string's parameters (the last value of a repeated one).
    """

    method: str
    path: str
    version: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str]

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass(frozen=True, slots=True)
class Response:
    """A complete HTTP response; bodies are small, so they are built whole."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class Silence(enum.Enum):
    """Outcomes that send no response at all."""

    DROP = "drop"
    HANG = "hang"


Outcome = Response | Silence
Handler = Callable[[Request, Mapping[str, str]], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the route table: method, full-match path pattern, handler.

    Named groups in the pattern (``/v1/batches/(?P<batch_id>[^/]+)``) reach the
    handler as its ``params`` mapping.
    """

    method: str
    pattern: re.Pattern[str]
    handler: Handler


class HttpError(Exception):
    """A request the HTTP layer cannot parse; answered, then the connection is closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ApiError(Exception):
    """An OpenAI-style error a handler raises; the dispatcher answers it as a response.

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


async def read_request(reader: asyncio.StreamReader, max_body: int) -> Request | None:
    """Read one request, or return None on a clean end of stream between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise HttpError(400, "incomplete HTTP request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise HttpError(431, "request head too large") from exc
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"unsupported HTTP version {version}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise HttpError(400, "malformed header line")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpError(501, "chunked request bodies are not supported; send Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise HttpError(400, "Content-Length is not an integer") from exc
    if length < 0:
        raise HttpError(400, "Content-Length is negative")
    if length > max_body:
        raise HttpError(413, f"request body of {length} bytes exceeds {max_body}")
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise HttpError(400, "request body shorter than Content-Length") from exc
    url = urlsplit(target)
    query = MappingProxyType(dict(parse_qsl(url.query)))
    return Request(method.upper(), url.path or "/", version, MappingProxyType(headers), body, query)


def encode_response(response: Response, *, keep_alive: bool, request_id: str) -> bytes:
    reason = http.HTTPStatus(response.status).phrase
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"content-type: {response.content_type}",
        f"content-length: {len(response.body)}",
        f"connection: {'keep-alive' if keep_alive else 'close'}",
        f"x-request-id: {request_id}",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


async def until_disconnected(reader: asyncio.StreamReader) -> None:
    """Wait for the client to close its side (a hung request ends when the client gives up)."""
    while await reader.read(65536):
        pass


def json_response(
    status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
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
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """An OpenAI-style error response (see :func:`error_body`)."""
    return json_response(status, error_body(message, error_type, code=code, param=param), headers)
