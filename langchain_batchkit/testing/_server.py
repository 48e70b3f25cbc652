"""An OpenAI-compatible fake HTTP server for tests, benchmarks and demos.

Batch runners are only as good as their behaviour against a real service: rate
limits with ``Retry-After``, transient 5xx, dropped connections, requests that
never return, one bad prompt in a thousand. :class:`FakeOpenAIServer` reproduces
those over real HTTP/1.1 on ``127.0.0.1``, so the genuine ``openai`` and
``langchain_openai`` clients (connection pools, retries, timeouts, header
parsing) are exercised end to end, with no network and no API key.

It uses the standard library only: one daemon thread runs its own asyncio event
loop with :func:`asyncio.start_server`, and requests are parsed by hand
(request line, headers, ``Content-Length`` body, keep-alive).

Every decision a request meets is made in this order, and documented on
:class:`FakeServerConfig`:

1. the body is validated (JSON, ``messages``, image parts) → 400;
2. ``reject_prompts`` → 400, every time;
3. the rate limiter (exact sliding window, see :class:`FakeServerConfig`) → 429;
4. a fault: the prompt's next ``script`` step if it has one left, otherwise a
   draw from the seeded RNG (``error_rate_5xx``, ``drop_rate``, ``hang_rate``);
5. latency (drops and hangs skip it), then the fault's response or the answer
   (JSON, or server-sent events when ``"stream": true``).

Example:
    >>> from openai import OpenAI
    >>> config = FakeServerConfig(script={"flaky": ("500", "ok")})
    >>> with FakeOpenAIServer(config) as server:  # doctest: +SKIP
    ...     client = OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=1)
    ...     reply = client.chat.completions.create(
    ...         model="gpt-4o-mini", messages=[{"role": "user", "content": "flaky"}]
    ...     )
    ...     reply.choices[0].message.content, server.stats().responses_by_status
    ('echo: flaky', mappingproxy({500: 1, 200: 1}))
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import http
import itertools
import json
import logging
import math
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Literal, get_args
from urllib.parse import urlsplit

from langchain_batchkit._errors import ConfigurationError

__all__ = [
    "FakeOpenAIServer",
    "FakeServerConfig",
    "LatencyDistribution",
    "ScriptedFault",
    "ServerStats",
]

logger = logging.getLogger(__name__)

LatencyDistribution = Literal["fixed", "lognormal", "pareto"]
"""How per-request latency is drawn; see :attr:`FakeServerConfig.latency`."""

ScriptedFault = Literal["ok", "429", "500", "502", "503", "drop", "hang"]
"""What one attempt of a scripted prompt meets; see :attr:`FakeServerConfig.script`."""

_HOST = "127.0.0.1"
_EPSILON = 1e-9  # float slack so "wait exactly Retry-After" is always enough
_SERVER_ERRORS: tuple[ScriptedFault, ...] = ("500", "502", "503")
_DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")


def _echo(prompt: str) -> str:
    """The default answer: deterministic and unique per prompt, so tests can match them."""
    return f"echo: {prompt}"


# --------------------------------------------------------------------------- configuration


def _bad(name: str, expected: str, value: object) -> ConfigurationError:
    return ConfigurationError(f"FakeServerConfig.{name} must be {expected}, got {value!r}")


def _check_real(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(name, "a finite number", value)
    if positive and value <= 0:
        raise _bad(name, "> 0", value)
    if value < 0:
        raise _bad(name, ">= 0", value)
    return float(value)


def _check_probability(name: str, value: object) -> None:
    if _check_real(name, value) > 1:
        raise _bad(name, "a probability between 0 and 1", value)


def _check_int(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(name, "None or an int >= 1" if optional else "an int >= 1", value)


def _normalize_reject(value: object) -> frozenset[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise _bad("reject_prompts", "a collection of non-empty strings (not a str)", value)
    items = frozenset(value)
    if not all(isinstance(item, str) and item for item in items):
        raise _bad("reject_prompts", "a collection of non-empty strings", value)
    return items


def _normalize_script(value: object) -> Mapping[str, tuple[ScriptedFault, ...]]:
    if not isinstance(value, Mapping):
        raise _bad("script", "a mapping of prompt substring to a sequence of faults", value)
    allowed = get_args(ScriptedFault)
    script: dict[str, tuple[ScriptedFault, ...]] = {}
    for key, steps in value.items():
        if not isinstance(key, str) or not key:
            raise _bad("script", "keyed by non-empty strings", key)
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
            raise _bad(f"script[{key!r}]", "a sequence of faults such as ('429', 'ok')", steps)
        for step in steps:
            if step not in allowed:
                raise _bad(f"script[{key!r}]", f"made of faults from {allowed}", step)
        script[key] = tuple(steps)
    return MappingProxyType(script)


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeServerConfig:
    """How a :class:`FakeOpenAIServer` behaves: an immutable, validated value.

    Every field is checked when the config is built, and a bad one raises
    :class:`~langchain_batchkit._errors.ConfigurationError` (a ``ValueError``) naming
    it, so a typo in a benchmark fails at once rather than after a silent run.

    Rate limiting is an **exact sliding-window log**: a request is admitted when, over
    the last ``window_seconds`` (half-open, ``(now - window, now]``), fewer than
    ``requests_per_minute`` requests and at most ``tokens_per_minute - cost`` tokens
    were admitted. So *no* window of that length ever holds more than the limit
    (a fixed window would allow twice the limit across a boundary), and
    ``Retry-After`` is exact: the time until enough old admissions slide out,
    rounded up to the millisecond. Only admitted requests count; 400s and 429s
    cost nothing. A request costing more tokens than ``tokens_per_minute`` can never
    be admitted and gets a 429 *without* ``Retry-After``. The limiter reads
    ``clock``, so tests drive windows with a fake clock and never wait.

    Attributes:
        latency: seconds added before answering an admitted request. With
            ``"lognormal"`` it is the median, with ``"pareto"`` the minimum (scale).
            Latency runs on the server's own loop in real time; tests mostly use 0.
        latency_distribution: ``"fixed"``, or a heavy tail drawn from the seeded RNG
            (``"lognormal"``/``"pareto"`` need ``latency > 0``).
        latency_sigma: shape of the lognormal tail (sigma of the underlying normal).
        latency_alpha: shape of the Pareto tail; smaller is heavier.
        max_latency: optional cap on any drawn latency, in seconds.
        seed: seeds the one ``random.Random`` behind latency and random faults, so
            runs are reproducible when requests arrive in the same order.
        requests_per_minute: admitted requests per window (OpenAI's RPM when the
            window is 60 s), or ``None`` for no limit.
        tokens_per_minute: admitted tokens per window, or ``None``. A request costs its
            estimated prompt tokens (about ``chars / 4`` per message, 85 per image)
            plus ``max_tokens``/``max_completion_tokens`` if given, else the answer size.
        window_seconds: the window of both limits, so benches can say "20 requests per
            1-second window".
        error_rate_5xx: probability that an admitted request gets 500, 502 or 503.
        drop_rate: probability that the connection is closed without any response.
        hang_rate: probability that no answer comes until the client gives up or the
            server stops.
        reject_prompts: substrings; a request whose last user message contains one gets
            HTTP 400 ``invalid_request_error``, every time (a poison item).
        script: maps a prompt substring to the faults its successive attempts meet,
            e.g. ``{"flaky-1": ("429", "500", "ok")}``. Attempts are counted per
            distinct prompt (last user text), so every prompt containing the key runs
            the sequence; the first key in mapping order that matches wins. Only
            requests the rate limiter admits consume a step. Once the steps run out the
            prompt is treated normally (random faults included). A scripted ``"429"``
            is a synthetic fault with ``Retry-After: scripted_retry_after``.
        scripted_retry_after: ``Retry-After`` seconds sent with scripted 429s.
        clock: monotonic seconds for the rate limiter and the admission timestamps.
        response_text: builds the answer from the last user text; the default echoes
            it (``"echo: <text>"``), so each item can be checked to get *its* answer.
        models: the ids ``GET /v1/models`` lists (chat accepts and echoes any model).
        max_body_bytes: larger request bodies get HTTP 413.

    Example:
        >>> FakeServerConfig(requests_per_minute=20, window_seconds=1.0).window_seconds
        1.0
        >>> FakeServerConfig(drop_rate=2.0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        langchain_batchkit._errors.ConfigurationError: FakeServerConfig.drop_rate must be ...
    """

    latency: float = 0.0
    latency_distribution: LatencyDistribution = "fixed"
    latency_sigma: float = 0.5
    latency_alpha: float = 2.0
    max_latency: float | None = None
    seed: int = 0
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    window_seconds: float = 60.0
    error_rate_5xx: float = 0.0
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    reject_prompts: frozenset[str] = frozenset()
    script: Mapping[str, Sequence[ScriptedFault]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    scripted_retry_after: float = 0.0
    clock: Callable[[], float] = time.monotonic
    response_text: Callable[[str], str] = _echo
    models: tuple[str, ...] = _DEFAULT_MODELS
    max_body_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        _check_real("latency", self.latency)
        if self.latency_distribution not in get_args(LatencyDistribution):
            raise _bad(
                "latency_distribution",
                f"one of {get_args(LatencyDistribution)}",
                self.latency_distribution,
            )
        if self.latency_distribution != "fixed" and self.latency <= 0:
            raise _bad(
                "latency",
                f"> 0 with latency_distribution={self.latency_distribution!r}",
                self.latency,
            )
        _check_real("latency_sigma", self.latency_sigma, positive=True)
        _check_real("latency_alpha", self.latency_alpha, positive=True)
        if self.max_latency is not None:
            _check_real("max_latency", self.max_latency)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise _bad("seed", "an int", self.seed)
        _check_int("requests_per_minute", self.requests_per_minute, optional=True)
        _check_int("tokens_per_minute", self.tokens_per_minute, optional=True)
        _check_real("window_seconds", self.window_seconds, positive=True)
        for name in ("error_rate_5xx", "drop_rate", "hang_rate"):
            _check_probability(name, getattr(self, name))
        total = self.error_rate_5xx + self.drop_rate + self.hang_rate
        if total > 1 + _EPSILON:
            raise _bad("error_rate_5xx + drop_rate + hang_rate", "at most 1", total)
        object.__setattr__(self, "reject_prompts", _normalize_reject(self.reject_prompts))
        object.__setattr__(self, "script", _normalize_script(self.script))
        _check_real("scripted_retry_after", self.scripted_retry_after)
        if not callable(self.clock):
            raise _bad("clock", "a callable returning seconds", self.clock)
        if not callable(self.response_text):
            raise _bad("response_text", "a callable taking the prompt text", self.response_text)
        if (
            not isinstance(self.models, tuple)
            or not self.models
            or not all(isinstance(m, str) and m for m in self.models)
        ):
            raise _bad("models", "a non-empty tuple of model ids", self.models)
        _check_int("max_body_bytes", self.max_body_bytes)


# --------------------------------------------------------------------------- counters


@dataclass(frozen=True, slots=True)
class ServerStats:
    """A consistent snapshot of a server's counters, taken under one lock.

    Attributes:
        total_requests: HTTP requests received, on any route.
        responses_by_status: responses sent, by HTTP status code.
        rate_limited: responses with status 429 (limiter and scripted).
        dropped: requests whose connection was closed without a response.
        hung: requests that were never answered.
        in_flight: requests being processed right now (hung ones included).
        max_in_flight: the high-water mark of ``in_flight``.
        connections_opened: TCP connections accepted (keep-alive reuses them).
        images_seen: valid ``image_url`` parts in requests that passed validation.
        answers_per_prompt: 200 chat answers per last-user-message text.
        admitted_timestamps: ``clock`` values at which chat requests were admitted
            by the rate limiter, in admission order.
    """

    total_requests: int
    responses_by_status: Mapping[int, int] = field(hash=False)
    rate_limited: int
    dropped: int
    hung: int
    in_flight: int
    max_in_flight: int
    connections_opened: int
    images_seen: int
    answers_per_prompt: Mapping[str, int] = field(hash=False)
    admitted_timestamps: tuple[float, ...]

    def max_admitted_in_window(self, window_seconds: float) -> int:
        """The most admissions inside any half-open window ``[t, t + window_seconds)``.

        Lets a test assert a client never exceeded a rate over *any* window, not just
        aligned ones.

        Example:
            >>> stats = FakeOpenAIServer().stats()
            >>> stats.max_admitted_in_window(1.0)
            0
        """
        times = sorted(self.admitted_timestamps)
        best = 0
        start = 0
        for end, t in enumerate(times):
            while times[start] + window_seconds <= t + _EPSILON:
                start += 1
            best = max(best, end - start + 1)
        return best


class _Counters:
    """The mutable, thread-safe side of :class:`ServerStats`.

    Written by the server thread, read by tests; a condition variable lets tests wait
    for a state (``wait_for``) without polling.
    """

    __slots__ = (
        "_admitted",
        "_answers",
        "_changed",
        "_connections",
        "_dropped",
        "_hung",
        "_images",
        "_in_flight",
        "_max_in_flight",
        "_requests",
        "_statuses",
    )

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._in_flight = 0
        self._requests = 0
        self._connections = 0
        self._dropped = 0
        self._hung = 0
        self._images = 0
        self._max_in_flight = 0
        self._statuses: Counter[int] = Counter()
        self._answers: Counter[str] = Counter()
        self._admitted: list[float] = []

    def reset(self) -> None:
        with self._changed:
            self._requests = self._connections = self._dropped = self._hung = self._images = 0
            self._max_in_flight = self._in_flight
            self._statuses.clear()
            self._answers.clear()
            self._admitted.clear()
            self._changed.notify_all()

    def connection_opened(self) -> None:
        with self._changed:
            self._connections += 1
            self._changed.notify_all()

    def request_started(self) -> None:
        with self._changed:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._changed.notify_all()

    def request_finished(self) -> None:
        with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()

    def record_status(self, status: int) -> None:
        with self._changed:
            self._statuses[status] += 1
            self._changed.notify_all()

    def record_drop(self) -> None:
        with self._changed:
            self._dropped += 1
            self._changed.notify_all()

    def record_hang(self) -> None:
        with self._changed:
            self._hung += 1
            self._changed.notify_all()

    def record_admission(self, now: float) -> None:
        with self._changed:
            self._admitted.append(now)
            self._changed.notify_all()

    def record_answer(self, prompt: str) -> None:
        with self._changed:
            self._answers[prompt] += 1
            self._changed.notify_all()

    def record_images(self, count: int) -> None:
        if count:
            with self._changed:
                self._images += count
                self._changed.notify_all()

    def snapshot(self) -> ServerStats:
        with self._changed:
            return self._snapshot_locked()

    def wait_for(self, predicate: Callable[[ServerStats], bool], timeout: float) -> ServerStats:
        with self._changed:
            satisfied = self._changed.wait_for(
                lambda: predicate(self._snapshot_locked()), timeout=timeout
            )
            snapshot = self._snapshot_locked()
        if not satisfied:
            raise TimeoutError(
                f"server stats did not reach the expected state in {timeout}s: {snapshot}"
            )
        return snapshot

    def _snapshot_locked(self) -> ServerStats:
        return ServerStats(
            total_requests=self._requests,
            responses_by_status=MappingProxyType(dict(self._statuses)),
            rate_limited=self._statuses[429],
            dropped=self._dropped,
            hung=self._hung,
            in_flight=self._in_flight,
            max_in_flight=self._max_in_flight,
            connections_opened=self._connections,
            images_seen=self._images,
            answers_per_prompt=MappingProxyType(dict(self._answers)),
            admitted_timestamps=tuple(self._admitted),
        )


# --------------------------------------------------------------------------- rate limiting


def _ceil_ms(seconds: float) -> int:
    return max(0, math.ceil(seconds * 1000 - 1e-6))


def _format_seconds(seconds: float) -> str:
    """``Retry-After`` seconds, rounded up to the millisecond: ``"0.75"``, ``"2"``."""
    return f"{_ceil_ms(seconds) / 1000:.3f}".rstrip("0").rstrip(".")


def _format_duration(seconds: float) -> str:
    """A Go-style duration as OpenAI sends in ``x-ratelimit-reset-*``: ``"250ms"``, ``"1m3s"``."""
    ms = _ceil_ms(seconds)
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    hours, minutes = divmod(minutes, 60)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class _SlidingWindowLog:
    """An exact sliding-window log of weighted admissions; pure, no I/O, no clock.

    Keeps ``(time, weight)`` for every admission younger than the window, so the
    time until ``weight`` more fits is computed exactly, not approximated.
    """

    __slots__ = ("_entries", "_used", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._entries: deque[tuple[float, int]] = deque()
        self._used = 0

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0][0] + self.window <= now + _EPSILON:
            self._used -= self._entries.popleft()[1]

    def wait_time(self, now: float, weight: int) -> float | None:
        """Seconds until ``weight`` fits (0.0 if now), or None if it never can."""
        self._expire(now)
        if weight > self.limit:
            return None
        excess = self._used + weight - self.limit
        if excess <= 0:
            return 0.0
        freed = 0
        for admitted_at, admitted_weight in self._entries:
            freed += admitted_weight
            if freed >= excess:
                return max(0.0, admitted_at + self.window - now)
        raise AssertionError("unreachable: the whole log frees more than any excess")

    def add(self, now: float, weight: int) -> None:
        self._entries.append((now, weight))
        self._used += weight

    def used(self, now: float) -> int:
        self._expire(now)
        return self._used

    def reset_after(self, now: float) -> float:
        """Seconds until the window is empty again (OpenAI's ``x-ratelimit-reset-*``)."""
        self._expire(now)
        return max(0.0, self._entries[-1][0] + self.window - now) if self._entries else 0.0


@dataclass(frozen=True, slots=True)
class _Verdict:
    """The rate limiter's answer for one request."""

    admitted: bool
    kind: Literal["requests", "tokens"] | None = None
    retry_after: float | None = None
    message: str = ""


class _RateLimiter:
    """Requests-per-window and tokens-per-window, checked and recorded atomically.

    Lives on the server's event loop only, so it needs no lock.
    """

    __slots__ = ("_requests", "_tokens", "_window")

    def __init__(self, config: FakeServerConfig) -> None:
        window = config.window_seconds
        self._window = window
        rpm, tpm = config.requests_per_minute, config.tokens_per_minute
        self._requests = _SlidingWindowLog(rpm, window) if rpm is not None else None
        self._tokens = _SlidingWindowLog(tpm, window) if tpm is not None else None

    def admit(self, now: float, tokens: int, model: str) -> _Verdict:
        request_wait = self._requests.wait_time(now, 1) if self._requests else 0.0
        token_wait = self._tokens.wait_time(now, tokens) if self._tokens else 0.0
        if request_wait == 0.0 and token_wait == 0.0:
            if self._requests:
                self._requests.add(now, 1)
            if self._tokens:
                self._tokens.add(now, tokens)
            return _Verdict(admitted=True)
        window = _format_duration(self._window)
        if token_wait is None:
            assert self._tokens is not None
            return _Verdict(
                admitted=False,
                kind="tokens",
                message=(
                    f"Request too large for {model} on tokens per {window}: "
                    f"Limit {self._tokens.limit}, Requested {tokens}. "
                    "The request can never fit; make it smaller."
                ),
            )
        assert request_wait is not None
        kind: Literal["requests", "tokens"] = "requests" if request_wait > 0 else "tokens"
        log = self._requests if kind == "requests" else self._tokens
        assert log is not None
        retry_after = max(request_wait, token_wait)
        requested = 1 if kind == "requests" else tokens
        return _Verdict(
            admitted=False,
            kind=kind,
            retry_after=retry_after,
            message=(
                f"Rate limit reached for {model} on {kind} per {window}: Limit {log.limit}, "
                f"Used {log.used(now)}, Requested {requested}. "
                f"Please try again in {_format_duration(retry_after)}."
            ),
        )

    def headers(self, now: float) -> tuple[tuple[str, str], ...]:
        """The ``x-ratelimit-*`` headers; a limit that is ``None`` sends none of its three."""
        headers: list[tuple[str, str]] = []
        for kind, log in (("requests", self._requests), ("tokens", self._tokens)):
            if log is None:
                continue
            headers += [
                (f"x-ratelimit-limit-{kind}", str(log.limit)),
                (f"x-ratelimit-remaining-{kind}", str(max(0, log.limit - log.used(now)))),
                (f"x-ratelimit-reset-{kind}", _format_duration(log.reset_after(now))),
            ]
        return tuple(headers)


# --------------------------------------------------------------------------- HTTP/1.1


@dataclass(frozen=True, slots=True)
class _Request:
    """One parsed HTTP request. Headers are lower-cased and never logged."""

    method: str
    path: str
    version: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass(frozen=True, slots=True)
class _Response:
    """A complete HTTP response; bodies are small, so they are built whole."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class _Silence(enum.Enum):
    """Outcomes that send no response at all."""

    DROP = "drop"
    HANG = "hang"


_Outcome = _Response | _Silence
_Handler = Callable[[_Request, Mapping[str, str]], Awaitable[_Outcome]]


@dataclass(frozen=True, slots=True)
class _Route:
    """One row of the route table: method, full-match path pattern, handler.

    Named groups in the pattern (``/v1/batches/(?P<batch_id>[^/]+)``) reach the
    handler as its ``params`` mapping.
    """

    method: str
    pattern: re.Pattern[str]
    handler: _Handler


class _HttpError(Exception):
    """A request the HTTP layer cannot parse; answered, then the connection is closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_request(reader: asyncio.StreamReader, max_body: int) -> _Request | None:
    """Read one request, or return None on a clean end of stream between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _HttpError(400, "incomplete HTTP request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise _HttpError(431, "request head too large") from exc
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _HttpError(505, f"unsupported HTTP version {version}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise _HttpError(400, "malformed header line")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise _HttpError(501, "chunked request bodies are not supported; send Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise _HttpError(400, "Content-Length is not an integer") from exc
    if length < 0:
        raise _HttpError(400, "Content-Length is negative")
    if length > max_body:
        raise _HttpError(413, f"request body of {length} bytes exceeds {max_body}")
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise _HttpError(400, "request body shorter than Content-Length") from exc
    path = urlsplit(target).path or "/"
    return _Request(method.upper(), path, version, MappingProxyType(headers), body)


def _encode_response(response: _Response, *, keep_alive: bool, request_id: str) -> bytes:
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


async def _until_disconnected(reader: asyncio.StreamReader) -> None:
    """Wait for the client to close its side (a hung request ends when the client gives up)."""
    while await reader.read(65536):
        pass


def _json_response(
    status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()
) -> _Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _Response(status, body, headers=headers)


def _error_response(
    status: int,
    message: str,
    error_type: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> _Response:
    """An OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``."""
    error = {"message": message, "type": error_type, "param": param, "code": code}
    return _json_response(status, {"error": error}, headers)


# --------------------------------------------------------------------------- chat requests


class _InvalidRequest(Exception):
    """A chat request the real API would refuse with HTTP 400."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True, slots=True)
class _ChatRequest:
    """The parts of a chat completion request the fake server acts on."""

    model: str
    prompt: str
    prompt_tokens: int
    image_count: int
    max_tokens: int | None
    stream: bool
    include_usage: bool


_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*);base64,(?P<data>.*)", re.DOTALL | re.IGNORECASE)
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def _has_magic(mime: str, data: bytes) -> bool:
    if mime == "image/png":
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    if mime == "image/jpeg":
        return data.startswith(b"\xff\xd8\xff")
    if mime == "image/gif":
        return data[:6] in (b"GIF87a", b"GIF89a")
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _check_image_url(part: Mapping[str, object], param: str) -> None:
    """Refuse image parts the real API would refuse, with a message saying why.

    Catches the classic batch bugs early: a file path instead of a URL, a data URL
    with broken base64, or bytes of one type labelled as another.
    """
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, Mapping) else None
    param = f"{param}.image_url.url"
    if not isinstance(url, str) or not url:
        raise _InvalidRequest(
            f"Invalid image: '{param}' must be a non-empty string.",
            param=param,
            code="invalid_image_url",
        )
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        if not urlsplit(url).netloc:
            raise _InvalidRequest(
                f"Invalid image URL: {url[:80]!r} has no host.",
                param=param,
                code="invalid_image_url",
            )
        return
    if scheme != "data":
        raise _InvalidRequest(
            f"Invalid image URL scheme {scheme or '(none)'!r}: expected an http(s) URL or a "
            "'data:image/<png|jpeg|gif|webp>;base64,...' data URL.",
            param=param,
            code="invalid_image_url",
        )
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise _InvalidRequest(
            "Invalid image data URL: expected 'data:image/<png|jpeg|gif|webp>;base64,<data>'.",
            param=param,
            code="invalid_image_format",
        )
    mime = match["mime"].lower()
    if mime not in _IMAGE_TYPES:
        raise _InvalidRequest(
            f"Unsupported image type {mime!r}: expected one of {', '.join(_IMAGE_TYPES)}.",
            param=param,
            code="invalid_image_format",
        )
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _InvalidRequest(
            f"Invalid image data: the {mime} data URL is not valid base64.",
            param=param,
            code="invalid_image_format",
        ) from exc
    if not _has_magic(mime, data):
        raise _InvalidRequest(
            f"Invalid image data: the decoded bytes do not start with the {mime} signature "
            "(wrong type label or corrupt image).",
            param=param,
            code="invalid_image_format",
        )


def _estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _message_text(content: object, index: int) -> tuple[str, int]:
    """The text of one message's content and its number of (validated) images."""
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise _InvalidRequest(
            f"'messages[{index}].content' must be a string or an array of content parts.",
            param=f"messages[{index}].content",
        )
    texts: list[str] = []
    images = 0
    for j, part in enumerate(content):
        param = f"messages[{index}].content[{j}]"
        if not isinstance(part, dict):
            raise _InvalidRequest(f"'{param}' must be an object.", param=param)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise _InvalidRequest(f"'{param}.text' must be a string.", param=param)
            texts.append(text)
        elif kind == "image_url":
            _check_image_url(part, param)
            images += 1
    return "\n".join(texts), images


def _parse_chat_request(body: bytes) -> _ChatRequest:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _InvalidRequest("We could not parse the JSON body of your request.") from exc
    if not isinstance(payload, dict):
        raise _InvalidRequest("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _InvalidRequest(
            "You must provide a model parameter.", param="model", code="missing_required_parameter"
        )
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _InvalidRequest("'messages' must be a non-empty array.", param="messages")
    prompt = ""
    prompt_tokens = 3
    image_count = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _InvalidRequest(
                f"'messages[{i}]' must be an object with a string 'role'.", param=f"messages[{i}]"
            )
        text, images = _message_text(message.get("content"), i)
        prompt_tokens += 4 + _estimate_tokens(text) + 85 * images
        image_count += images
        if message["role"] == "user":
            prompt = text
    max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _InvalidRequest("'max_tokens' must be a positive integer.", param="max_tokens")
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return _ChatRequest(
        model, prompt, prompt_tokens, image_count, max_tokens, stream, include_usage
    )


def _sse(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


# --------------------------------------------------------------------------- the server


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP/1.1 server on ``127.0.0.1``, in a background thread.

    Endpoints: ``POST /v1/chat/completions`` (JSON, or SSE with ``"stream": true``),
    ``GET /v1/models`` and ``GET /v1/models/{model}``. Routing is a small table
    (``self._routes``), so ``/v1/files`` or ``/v1/batches`` are one row and one
    handler each. Unknown paths get an OpenAI-style 404, wrong methods 405.

    Servers are single-use: ``start()`` once, ``stop()`` as often as you like.
    ``stop()`` cancels every connection (so hung requests end at once and their
    clients see a closed connection), and joins the thread. The Authorization
    header is never logged or echoed.

    Args:
        config: the server's behaviour; the default answers every request at once.

    Example:
        >>> from langchain_openai import ChatOpenAI
        >>> with FakeOpenAIServer() as server:  # doctest: +SKIP
        ...     llm = ChatOpenAI(base_url=server.base_url, api_key="sk-test",
        ...                      model="gpt-4o-mini")
        ...     llm.invoke("hello").content
        'echo: hello'
    """

    __slots__ = (
        "_config",
        "_connection_tasks",
        "_counters",
        "_ids",
        "_limiter",
        "_loop",
        "_port",
        "_ready",
        "_rng",
        "_routes",
        "_script_attempts",
        "_startup_error",
        "_stop_event",
        "_thread",
    )

    def __init__(self, config: FakeServerConfig | None = None) -> None:
        self._config = config if config is not None else FakeServerConfig()
        self._counters = _Counters()
        self._limiter = _RateLimiter(self._config)
        self._rng = random.Random(self._config.seed)
        self._script_attempts: Counter[tuple[str, str]] = Counter()
        self._ids = itertools.count(1)
        self._routes: tuple[_Route, ...] = (
            _Route("POST", re.compile(r"/v1/chat/completions"), self._chat_completions),
            _Route("GET", re.compile(r"/v1/models"), self._list_models),
            _Route("GET", re.compile(r"/v1/models/(?P<model>[^/]+)"), self._retrieve_model),
        )
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._port: int | None = None
        self._connection_tasks: set[asyncio.Task[object]] = set()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = f" at {self.url}" if self._port is not None else ""
        return f"<FakeOpenAIServer {state}{where}>"

    # ------------------------------------------------------------------ lifecycle

    @property
    def config(self) -> FakeServerConfig:
        """The configuration this server was built with."""
        return self._config

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int:
        """The TCP port the OS picked; raises RuntimeError before ``start()``."""
        if self._port is None:
            raise RuntimeError("FakeOpenAIServer is not started; call start() or use `with`")
        return self._port

    @property
    def url(self) -> str:
        """The server root, like ``http://127.0.0.1:54321``."""
        return f"http://{_HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` to OpenAI clients: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def start(self, timeout: float = 10.0) -> FakeOpenAIServer:
        """Bind a free port and serve in a daemon thread; returns self once listening.

        Raises:
            RuntimeError: if already started, or if the server could not start.
        """
        if self._thread is not None:
            raise RuntimeError("FakeOpenAIServer is single-use and was already started")
        self._thread = threading.Thread(target=self._run, name="FakeOpenAIServer", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"FakeOpenAIServer did not start within {timeout}s")
        if self._startup_error is not None:
            raise RuntimeError("FakeOpenAIServer failed to start") from self._startup_error
        logger.info("fake OpenAI server listening on %s", self.base_url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (releasing hung requests) and end the thread.

        Idempotent; a no-op before ``start()``.

        Raises:
            RuntimeError: if called from the server's own thread, or if the thread
                does not end within ``timeout`` seconds.
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        if threading.current_thread() is thread:
            raise RuntimeError("FakeOpenAIServer.stop() cannot be called from its own thread")
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed on its own
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"FakeOpenAIServer thread did not stop within {timeout}s")
        logger.info("fake OpenAI server on port %s stopped", self._port)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ counters

    def stats(self) -> ServerStats:
        """A consistent snapshot of the counters; safe from any thread."""
        return self._counters.snapshot()

    def reset(self) -> None:
        """Zero the counters (e.g. after a warm-up).

        The rate limiter's window and the script positions are server state, not
        counters, and are kept; ``max_in_flight`` restarts from the current
        ``in_flight``.
        """
        self._counters.reset()

    def wait_for_stats(
        self, predicate: Callable[[ServerStats], bool], timeout: float = 5.0
    ) -> ServerStats:
        """Block until ``predicate(stats)`` holds, woken by each change (no polling).

        Lets a test wait for "the request is now hanging" instead of sleeping.

        Raises:
            TimeoutError: if the predicate is still false after ``timeout`` seconds.
        """
        return self._counters.wait_for(predicate, timeout)

    # ------------------------------------------------------------------ event loop

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:
            if self._ready.is_set():
                logger.exception("fake OpenAI server crashed")
            self._startup_error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        stop = self._stop_event = asyncio.Event()
        server = await asyncio.start_server(self._on_connection, host=_HOST, port=0)
        self._port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await stop.wait()
        finally:
            server.close()
            while self._connection_tasks:
                tasks = list(self._connection_tasks)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connection_tasks.add(task)
        self._counters.connection_opened()
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            logger.debug("client connection ended: %r", exc)
        except asyncio.CancelledError:
            # Only stop() cancels these tasks; end them normally, because Python 3.11's
            # StreamReaderProtocol logs a cancelled connection callback as an error.
            if self._stop_event is None or not self._stop_event.is_set():
                raise
            logger.debug("connection closed by stop()")
        finally:
            self._connection_tasks.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; returns whether the connection stays open."""
        try:
            request = await _read_request(reader, self._config.max_body_bytes)
        except _HttpError as exc:
            self._counters.record_status(exc.status)
            response = _error_response(exc.status, exc.message, "invalid_request_error")
            writer.write(_encode_response(response, keep_alive=False, request_id="req_invalid"))
            await writer.drain()
            return False
        if request is None:
            return False
        request_id = f"req_fake_{next(self._ids)}"
        self._counters.request_started()
        try:
            outcome = await self._dispatch(request)
            logger.debug(
                "%s %s -> %s",
                request.method,
                request.path,
                outcome.value if isinstance(outcome, _Silence) else outcome.status,
            )
            if outcome is _Silence.DROP:
                self._counters.record_drop()
                return False
            if outcome is _Silence.HANG:
                self._counters.record_hang()
                await _until_disconnected(reader)
                return False
            self._counters.record_status(outcome.status)
            payload = _encode_response(
                outcome, keep_alive=request.keep_alive, request_id=request_id
            )
        finally:
            # Before the write: once the bytes leave, the client may read the stats or
            # send its next request, and must find every counter of this one settled.
            self._counters.request_finished()
        if writer.is_closing():
            return False
        writer.write(payload)
        await writer.drain()
        return request.keep_alive

    async def _dispatch(self, request: _Request) -> _Outcome:
        allowed: list[str] = []
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method == request.method:
                return await self._call_handler(route, request, match.groupdict())
            allowed.append(route.method)
        if allowed:
            return _error_response(
                405,
                f"Method {request.method} not allowed for {request.path}.",
                "invalid_request_error",
                headers=(("allow", ", ".join(allowed)),),
            )
        return _error_response(
            404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error"
        )

    @staticmethod
    async def _call_handler(
        route: _Route, request: _Request, params: Mapping[str, str]
    ) -> _Outcome:
        """Run a handler; a bug in it (or in ``response_text``) becomes a logged 500."""
        try:
            return await route.handler(request, params)
        except Exception:
            logger.exception("fake server handler for %s %s raised", request.method, request.path)
            return _error_response(
                500, "The fake server's handler raised an exception; see its log.", "server_error"
            )

    # ------------------------------------------------------------------ endpoints

    async def _list_models(self, request: _Request, params: Mapping[str, str]) -> _Outcome:
        return _json_response(
            200,
            {
                "object": "list",
                "data": [self._model_object(model) for model in self._config.models],
            },
        )

    async def _retrieve_model(self, request: _Request, params: Mapping[str, str]) -> _Outcome:
        model = params["model"]
        if model not in self._config.models:
            return _error_response(
                404,
                f"The model '{model}' does not exist.",
                "invalid_request_error",
                code="model_not_found",
                param="model",
            )
        return _json_response(200, self._model_object(model))

    @staticmethod
    def _model_object(model: str) -> dict[str, object]:
        return {"id": model, "object": "model", "created": 0, "owned_by": "fake-openai"}

    async def _chat_completions(self, request: _Request, params: Mapping[str, str]) -> _Outcome:
        config = self._config
        try:
            chat = _parse_chat_request(request.body)
        except _InvalidRequest as exc:
            return _error_response(
                400,
                exc.message,
                "invalid_request_error",
                code=exc.code,
                param=exc.param,
                headers=self._limit_headers(),
            )
        self._counters.record_images(chat.image_count)
        rejected = sorted(s for s in config.reject_prompts if s in chat.prompt)
        if rejected:
            return _error_response(
                400,
                f"This prompt was rejected by the fake server (reject_prompts: {rejected[0]!r}).",
                "invalid_request_error",
                code="rejected_prompt",
                param="messages",
                headers=self._limit_headers(),
            )
        answer = config.response_text(chat.prompt)
        finish_reason = "stop"
        if chat.max_tokens is not None and _estimate_tokens(answer) > chat.max_tokens:
            answer, finish_reason = answer[: chat.max_tokens * 4], "length"
        completion_tokens = _estimate_tokens(answer)
        cost = chat.prompt_tokens + (chat.max_tokens or completion_tokens)

        now = config.clock()
        verdict = self._limiter.admit(now, cost, chat.model)
        headers = self._limiter.headers(now)
        if not verdict.admitted:
            return self._rate_limited(verdict, headers)
        self._counters.record_admission(now)

        fault = self._next_fault(chat.prompt)
        if fault == "drop":
            return _Silence.DROP
        if fault == "hang":
            return _Silence.HANG
        delay = self._sample_latency()
        if delay > 0:
            await asyncio.sleep(delay)
        if fault == "429":
            scripted = _Verdict(
                admitted=False,
                kind="requests",
                retry_after=config.scripted_retry_after,
                message=f"Rate limit reached for {chat.model} (scripted fault).",
            )
            return self._rate_limited(scripted, headers)
        if fault in _SERVER_ERRORS:
            status = int(fault)
            return _error_response(
                status,
                f"The server had an error while processing your "
                f"request ({status}, injected fault).",
                "server_error",
                headers=headers,
            )
        self._counters.record_answer(chat.prompt)
        usage = {
            "prompt_tokens": chat.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": chat.prompt_tokens + completion_tokens,
        }
        completion_id = f"chatcmpl-fake{next(self._ids):08d}"
        if chat.stream:
            return self._stream(completion_id, chat, answer, finish_reason, usage, headers)
        return _json_response(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": chat.model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
            },
            headers,
        )

    # ------------------------------------------------------------------ helpers

    def _limit_headers(self) -> tuple[tuple[str, str], ...]:
        return self._limiter.headers(self._config.clock())

    @staticmethod
    def _rate_limited(verdict: _Verdict, headers: tuple[tuple[str, str], ...]) -> _Response:
        if verdict.retry_after is not None:
            headers += (
                ("retry-after", _format_seconds(verdict.retry_after)),
                ("retry-after-ms", str(_ceil_ms(verdict.retry_after))),
            )
        return _error_response(
            429,
            verdict.message,
            verdict.kind or "requests",
            code="rate_limit_exceeded",
            headers=headers,
        )

    def _next_fault(self, prompt: str) -> ScriptedFault:
        for key, steps in self._config.script.items():
            if key in prompt:
                attempt = self._script_attempts[(key, prompt)]
                self._script_attempts[(key, prompt)] = attempt + 1
                if attempt < len(steps):
                    return steps[attempt]
                break
        config = self._config
        if config.error_rate_5xx == config.drop_rate == config.hang_rate == 0:
            return "ok"
        draw = self._rng.random()
        if draw < config.error_rate_5xx:
            return self._rng.choice(_SERVER_ERRORS)
        if draw < config.error_rate_5xx + config.drop_rate:
            return "drop"
        if draw < config.error_rate_5xx + config.drop_rate + config.hang_rate:
            return "hang"
        return "ok"

    def _sample_latency(self) -> float:
        config = self._config
        if config.latency_distribution == "lognormal":
            delay = self._rng.lognormvariate(math.log(config.latency), config.latency_sigma)
        elif config.latency_distribution == "pareto":
            delay = config.latency * self._rng.paretovariate(config.latency_alpha)
        else:
            delay = config.latency
        return delay if config.max_latency is None else min(delay, config.max_latency)

    @staticmethod
    def _stream(
        completion_id: str,
        chat: _ChatRequest,
        answer: str,
        finish_reason: str,
        usage: Mapping[str, int],
        headers: tuple[tuple[str, str], ...],
    ) -> _Response:
        """The whole answer as server-sent ``chat.completion.chunk`` events, then [DONE]."""
        created = int(time.time())

        def chunk(delta: Mapping[str, str], finish: str | None) -> dict[str, object]:
            event: dict[str, object] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": chat.model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}
                ],
            }
            if chat.include_usage:
                event["usage"] = None
            return event

        events = [_sse(chunk({"role": "assistant", "content": ""}, None))]
        events += [
            _sse(chunk({"content": piece}, None)) for piece in re.findall(r"\s*\S+|\s+$", answer)
        ]
        events.append(_sse(chunk({}, finish_reason)))
        if chat.include_usage:
            events.append(
                _sse(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": chat.model,
                        "choices": [],
                        "usage": dict(usage),
                    }
                )
            )
        events.append(b"data: [DONE]\n\n")
        return _Response(200, b"".join(events), "text/event-stream", headers)
