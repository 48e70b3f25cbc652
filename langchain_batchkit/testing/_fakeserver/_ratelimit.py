"""Rate limiting: an exact sliding-window log (or a fixed-window counter) per limit, and
OpenAI's headers for it."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from langchain_batchkit.testing._fakeserver._config import EPSILON, FakeServerConfig

__all__ = ["RateLimiter", "Verdict", "ceil_ms", "format_seconds"]


def ceil_ms(seconds: float) -> int:
    return max(0, math.ceil(seconds * 1000 - 1e-6))


def format_seconds(seconds: float) -> str:
    """``Retry-After`` seconds, rounded up to the millisecond: ``"0.75"``, ``"2"``."""
    return f"{ceil_ms(seconds) / 1000:.3f}".rstrip("0").rstrip(".")


def format_duration(seconds: float) -> str:
    """A Go-style duration as OpenAI sends in ``x-ratelimit-reset-*``: ``"250ms"``, ``"1m3s"``."""
    ms = ceil_ms(seconds)
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
        while self._entries and self._entries[0][0] + self.window <= now + EPSILON:
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


class _FixedWindowCounter:
    """Weighted admissions counted per fixed window of the clock; pure, no I/O, no clock.

    Windows are ``[k * window, (k + 1) * window)``; each starts from zero, like the
    per-minute counters of a proxy (LiteLLM), so a full window refuses everything
    until its end, and up to twice the limit fits across a boundary.
    """

    __slots__ = ("_start", "_used", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._start = -math.inf
        self._used = 0

    def _roll(self, now: float) -> None:
        start = math.floor((now + EPSILON) / self.window) * self.window
        if start > self._start:
            self._start = start
            self._used = 0

    def wait_time(self, now: float, weight: int) -> float | None:
        """Seconds until ``weight`` fits (0.0 if now), or None if it never can."""
        self._roll(now)
        if weight > self.limit:
            return None
        if self._used + weight <= self.limit:
            return 0.0
        return max(0.0, self._start + self.window - now)

    def add(self, now: float, weight: int) -> None:
        self._roll(now)
        self._used += weight

    def used(self, now: float) -> int:
        self._roll(now)
        return self._used

    def reset_after(self, now: float) -> float:
        """Seconds until the window ends (0 when nothing is counted in it)."""
        self._roll(now)
        return max(0.0, self._start + self.window - now) if self._used else 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The rate limiter's answer for one request."""

    admitted: bool
    kind: Literal["requests", "tokens"] | None = None
    retry_after: float | None = None
    message: str = ""


class RateLimiter:
    """Requests-per-window and tokens-per-window, checked and recorded atomically.

    Lives on the server's event loop only, so it needs no lock.
    """

    __slots__ = ("_requests", "_say_when", "_send_headers", "_tokens", "_window")

    def __init__(self, config: FakeServerConfig) -> None:
        window = config.window_seconds
        self._window = window
        self._send_headers = config.send_ratelimit_headers
        self._say_when = config.send_retry_after
        kind = _FixedWindowCounter if config.rate_limit_window == "fixed" else _SlidingWindowLog
        rpm, tpm = config.requests_per_minute, config.tokens_per_minute
        self._requests = kind(rpm, window) if rpm is not None else None
        self._tokens = kind(tpm, window) if tpm is not None else None

    def admit(self, now: float, tokens: int, model: str) -> Verdict:
        request_wait = self._requests.wait_time(now, 1) if self._requests else 0.0
        token_wait = self._tokens.wait_time(now, tokens) if self._tokens else 0.0
        if request_wait == 0.0 and token_wait == 0.0:
            if self._requests:
                self._requests.add(now, 1)
            if self._tokens:
                self._tokens.add(now, tokens)
            return Verdict(admitted=True)
        window = format_duration(self._window)
        if token_wait is None:
            assert self._tokens is not None
            return Verdict(
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
        return Verdict(
            admitted=False,
            kind=kind,
            retry_after=retry_after,
            message=(
                f"Rate limit reached for {model} on {kind} per {window}: Limit {log.limit}, "
                f"Used {log.used(now)}, Requested {requested}."
                + (
                    f" Please try again in {format_duration(retry_after)}."
                    if self._say_when
                    else ""
                )
            ),
        )

    def headers(self, now: float) -> tuple[tuple[str, str], ...]:
        """The ``x-ratelimit-*`` headers; a limit that is ``None`` sends none of its three.

        None at all when the config says not to send them.
        """
        headers: list[tuple[str, str]] = []
        if not self._send_headers:
            return ()
        for kind, log in (("requests", self._requests), ("tokens", self._tokens)):
            if log is None:
                continue
            headers += [
                (f"x-ratelimit-limit-{kind}", str(log.limit)),
                (f"x-ratelimit-remaining-{kind}", str(max(0, log.limit - log.used(now)))),
                (f"x-ratelimit-reset-{kind}", format_duration(log.reset_after(now))),
            ]
        return tuple(headers)
