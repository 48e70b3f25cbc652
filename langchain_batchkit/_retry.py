"""Per-item retries on tenacity: what is transient, how long to wait, when to stop.

The decision ("retry this error? wait how long? stop?") is pure: it reads the
exception and the attempt number and does no I/O, so it is tested without
waiting. Each item has its own attempt budget and is retried as soon as it
fails (no rounds, no shared counter), and an error that is not transient ends
that item at once without touching any other.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from langchain_batchkit._clock import SYSTEM_CLOCK, Clock, as_clock
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._validate import check_int, check_number

__all__ = [
    "RetryPolicy",
    "clock_of",
    "is_rate_limit",
    "is_transient",
    "parse_reset",
    "reset_seconds",
    "retry_after_seconds",
    "status_code_of",
]

logger = logging.getLogger(__name__)

#: HTTP statuses worth retrying: timeout, conflict, rate limit, and any 5xx.
TRANSIENT_STATUS = frozenset({408, 409, 429})


def status_code_of(exc: BaseException) -> int | None:
    """The HTTP status an SDK exception carries (openai, anthropic, httpx), if any."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for name in ("httpx", "httpx2"):  # openai 3.x moved to httpx2; other SDKs use httpx
        try:
            mod = importlib.import_module(name)
        except ImportError:  # pragma: no cover - depends on the installed SDKs
            continue
        types += [mod.TimeoutException, mod.NetworkError, mod.RemoteProtocolError]
    try:
        import openai

        types += [openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError]
    except ImportError:  # pragma: no cover - openai comes with langchain-openai
        pass
    try:  # the anthropic extra; its status errors carry their status_code
        import anthropic

        types.append(anthropic.APIConnectionError)
    except ImportError:  # pragma: no cover - depends on the installed extras
        pass
    return tuple(types)


_TRANSIENT_TYPES = _transient_types()


def is_transient(exc: BaseException) -> bool:
    """True for errors that may pass on a later attempt.

    LangChain's provider-neutral model errors say so themselves (``is_retryable``:
    rate limit, 5xx, connection, timeout). Otherwise: rate limits (429),
    timeouts, dropped or refused connections, 408/409 and any 5xx, from the openai,
    anthropic and httpx exception types, Python's ``TimeoutError`` and ``ConnectionError``,
    or any exception carrying such a ``status_code``. Everything else (400, 401,
    403, 404, 422, a context overflow, validation errors, a bug in a lambda) is
    permanent.
    """
    if _out_of_quota(exc):
        return False
    retryable = getattr(exc, "is_retryable", None)
    if isinstance(retryable, bool):
        return retryable
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    code = status_code_of(exc)
    return code is not None and (code in TRANSIENT_STATUS or code >= 500)


def _out_of_quota(exc: BaseException) -> bool:
    """OpenAI's 429 ``insufficient_quota``: billing, not pacing; no wait will help."""
    code = getattr(exc, "code", None)
    if code is None:
        body = getattr(exc, "body", None)
        error = body.get("error", body) if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
    return code == "insufficient_quota"


def is_rate_limit(exc: BaseException) -> bool:
    """True when the provider answered "too many requests" (HTTP 429)."""
    return status_code_of(exc) == 429 or type(exc).__name__.endswith("RateLimitError")


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers if isinstance(headers, Mapping) else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset(value: str | None) -> float | None:
    """Seconds in an ``x-ratelimit-reset-*`` value such as ``"1s"``, ``"6m0s"``, ``"250ms"``."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[unit] for n, unit in parts)


def reset_seconds(exc: BaseException) -> float | None:
    """When the exhausted window resets, from ``x-ratelimit-reset-requests/-tokens``."""
    headers = _headers_of(exc)
    if headers is None:
        return None
    resets = [
        parse_reset(headers.get(f"x-ratelimit-reset-{kind}")) for kind in ("requests", "tokens")
    ]
    known = [r for r in resets if r is not None]
    return max(known) if known else None


def retry_after_seconds(exc: BaseException, *, now: float | None = None) -> float | None:
    """The wait the server asked for, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be seconds (``"2"``, ``"0.25"``) or an HTTP date. Returns
    ``None`` when the error carries no such header.
    """
    headers = _headers_of(exc)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How batchkit retries an item; an immutable value, validated on construction.

    Args:
        max_attempts: failed calls per item at most, the first included (1 = no
            retry); 429s do not count (see ``max_rate_limited``). The default, 8,
            lets an overnight batch through a 17% fault rate (5xx, drops, hangs)
            without losing a good row (0.17**8 per item), for a fraction of a cent.
        initial_backoff: seconds before the first retry, without a ``Retry-After``
            (0.25 s: a transient fault clears fast, and the wait holds no slot).
        max_backoff: the longest single wait.
        multiplier: growth of the wait per attempt (exponential backoff).
        jitter: fraction of each wait drawn at random (0 = none, 1 = "full jitter"),
            so items that failed together do not retry together.
        max_total_time: seconds from an item's first call after which no retry starts
            (a retry whose wait would end past it is not made); ``None`` = no limit.
            The default, 10 minutes, outlasts several per-minute windows.
        honor_retry_after: wait what the server's ``Retry-After`` says when present.
        max_retry_after: the longest server-requested wait to accept (capped there).
        max_rate_limit_backoff: the longest wait after a 429 that gives no
            ``Retry-After`` nor ``x-ratelimit-reset-*`` (waits double up to it).
        max_rate_limited: 429s per item at most; with ``max_total_time`` they bound
            how long an item follows a provider that keeps saying "too many".
        retry_on: an extra predicate: errors it returns True for are retried too.
        sleep: the async sleep to wait with (kept for compatibility: pass ``clock=``).
        clock: a :class:`Clock` (or a bare monotonic function) that measures
            ``max_total_time`` and times the waits; inject a
            :class:`~langchain_batchkit.testing.FakeClock` in tests.
        seed: seed for the jitter draws (``None``: random).

    Example:
        >>> kit = batchkit(chain, retry=RetryPolicy(max_attempts=5))   # doctest: +SKIP
    """

    max_attempts: int = 8
    initial_backoff: float = 0.25
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_total_time: float | None = 600.0
    honor_retry_after: bool = True
    max_retry_after: float = 120.0
    max_rate_limit_backoff: float = 60.0
    max_rate_limited: int = 30
    retry_on: Callable[[BaseException], bool] | None = None
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    clock: Clock | Callable[[], float] = field(default=SYSTEM_CLOCK, compare=False)
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _retrying: Retrying = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_int("max_attempts", self.max_attempts)
        for name in ("initial_backoff", "max_backoff", "max_retry_after", "max_rate_limit_backoff"):
            check_number(name, getattr(self, name), minimum=0.0)
        check_int("max_rate_limited", self.max_rate_limited, minimum=0)
        check_number("multiplier", self.multiplier, minimum=1.0)
        check_number("jitter", self.jitter, minimum=0.0, maximum=1.0)
        if self.max_backoff < self.initial_backoff:
            raise ConfigurationError(
                f"max_backoff ({self.max_backoff}) must be >= initial_backoff "
                f"({self.initial_backoff})"
            )
        if self.max_total_time is not None:
            check_number("max_total_time", self.max_total_time, minimum=0.0, strict=True)
        if self.retry_on is not None and not callable(self.retry_on):
            raise ConfigurationError("retry_on must be a callable taking an exception")
        object.__setattr__(self, "_rng", random.Random(self.seed))
        retrying = Retrying(
            stop=_StopOnAttempts(self) | _StopOnBudget(self),
            wait=_PolicyWait(self),
            # Cancellation and Ctrl-C are never retried, whatever retry_on says.
            retry=retry_if_exception(lambda e: isinstance(e, Exception) and self.should_retry(e)),
            reraise=True,
        )
        object.__setattr__(self, "_retrying", retrying)

    def should_retry(self, exc: BaseException) -> bool:
        """Is this error worth another attempt?

        A ``retry_on`` predicate that raises counts as "no" (logged): a bug in the
        user's predicate must not abort the batch.
        """
        if is_transient(exc):
            return True
        if self.retry_on is None:
            return False
        try:
            return bool(self.retry_on(exc))
        except Exception:
            logger.warning(
                "retry_on raised for a %s; not retrying that error", type(exc).__name__,
                exc_info=True,
            )  # fmt: skip
            return False

    def new_state(self, now: float) -> RetryCallState:
        """The retry state of one item whose first attempt starts at ``now``."""
        state = ItemRetryState(self._retrying, None, (), {})
        state.start_time = now
        return state

    def decide(self, state: RetryCallState, exc: Exception, now: float) -> float | None:
        """After a failed attempt: seconds to wait before the next one, or ``None`` to stop.

        Pure: tenacity's retry, wait and stop strategies read the error, the attempt
        number and the item's elapsed time on ``now``; nothing sleeps here. The
        state keeps the failed outcome (for ``on_retry`` handlers) until the next
        attempt calls ``state.prepare_for_next_attempt()``.
        """
        state.set_exception((type(exc), exc, exc.__traceback__))
        state.outcome_timestamp = now
        if isinstance(state, ItemRetryState) and is_rate_limit(exc):
            state.rate_limited += 1
        retrying = self._retrying
        if not retrying.retry(state):
            return None
        state.upcoming_sleep = retrying.wait(state)
        if retrying.stop(state):
            return None
        state.idle_for += state.upcoming_sleep
        return state.upcoming_sleep

    def delay(
        self, attempt: int, exc: BaseException | None = None, *, rate_limited: int = 0
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        * A server's ``Retry-After`` / ``retry-after-ms`` wins (capped at
          ``max_retry_after``, plus up to 10% jitter so items told the same time do
          not return at the same instant).
        * A 429 without one: the ``x-ratelimit-reset-*`` time when given, else a wait
          that doubles with each 429 of the item (``rate_limited``), up to
          ``max_rate_limit_backoff`` (60 s: long enough to cross a per-minute
          window, as a LiteLLM proxy's 429s need).
        * Anything else: ``initial_backoff * multiplier**(attempt-1)``, capped at
          ``max_backoff``, minus up to ``jitter`` of it.
        """
        if exc is not None and self.honor_retry_after:
            server = retry_after_seconds(exc)
            if server is None and is_rate_limit(exc):
                server = reset_seconds(exc)
            if server is not None:
                wait = min(server, self.max_retry_after)
                return wait * (1 + 0.1 * self._rng.random())
        if exc is not None and is_rate_limit(exc):
            step = max(1, rate_limited)
            start = max(self.initial_backoff, 1.0)
            base = min(self.max_rate_limit_backoff, start * self.multiplier ** (step - 1))
        else:
            base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return base * (1 - self.jitter * self._rng.random())

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)


def clock_of(policy: RetryPolicy | None) -> Clock:
    """The clock a policy measures time on, as a full :class:`Clock`."""
    if policy is None:
        return SYSTEM_CLOCK
    return as_clock(policy.clock, policy.sleep)


class ItemRetryState(RetryCallState):
    """Tenacity's per-call state, plus how many of the item's failures were 429s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rate_limited = 0


class _StopOnAttempts(stop_base):
    """Stop after ``max_attempts`` failures, or ``max_rate_limited`` 429s.

    A 429 is the provider asking to wait, not the item failing: 429s do not use up
    ``max_attempts``; the item's time budget and ``max_rate_limited`` bound them.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, retry_state: RetryCallState) -> bool:
        limited = retry_state.rate_limited if isinstance(retry_state, ItemRetryState) else 0
        failures = retry_state.attempt_number - limited
        return failures >= self._policy.max_attempts or limited > self._policy.max_rate_limited


class _StopOnBudget(stop_base):
    """Stop when the next wait would end past the item's ``max_total_time``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, retry_state: RetryCallState) -> bool:
        budget = self._policy.max_total_time
        if budget is None:
            return False
        elapsed = (retry_state.outcome_timestamp or retry_state.start_time) - retry_state.start_time
        return elapsed + retry_state.upcoming_sleep > budget


class _PolicyWait(wait_base):
    """The policy's delay for the attempt that just failed (Retry-After aware)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        limited = retry_state.rate_limited if isinstance(retry_state, ItemRetryState) else 0
        return self._policy.delay(retry_state.attempt_number, exc, rate_limited=limited)
