"""FakeServerConfig: how a fake OpenAI server behaves, as an immutable, validated value."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from langchain_batchkit._errors import ConfigurationError

__all__ = [
    "BAD_ANSWERS",
    "DEFAULT_MODELS",
    "EPSILON",
    "BadAnswer",
    "FakeServerConfig",
    "LatencyDistribution",
    "RateLimitWindow",
    "ScriptedFault",
    "TokenCounting",
]

LatencyDistribution = Literal["fixed", "lognormal", "pareto"]
"""How per-request latency is drawn; see :attr:`FakeServerConfig.latency`."""

RateLimitWindow = Literal["sliding", "fixed"]
"""How the rate limit counts; see :attr:`FakeServerConfig.rate_limit_window`."""

BadAnswer = Literal["missing_field", "wrong_type", "truncated_json", "text_before_json"]
"""A scripted mistake in a structured answer; see :attr:`FakeServerConfig.structured_answers`."""

BAD_ANSWERS: tuple[BadAnswer, ...] = get_args(BadAnswer)

ScriptedFault = Literal[
    "ok",
    "429",
    "500",
    "502",
    "503",
    "drop",
    "hang",
    "flex_unavailable",
    "missing_field",
    "wrong_type",
    "truncated_json",
    "text_before_json",
]
"""What one attempt of a scripted prompt meets; see :attr:`FakeServerConfig.script`."""

TokenCounting = Literal["chars", "model"]
"""How usage is counted; see :attr:`FakeServerConfig.tokenizer`."""

EPSILON = 1e-9  # float slack so "wait exactly Retry-After" is always enough
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")


def _echo(prompt: str) -> str:
    """The default answer: deterministic and unique per prompt, so tests can match them."""
    return f"echo: {prompt}"


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


def _normalize_strings(name: str, value: object) -> frozenset[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise _bad(name, "a collection of non-empty strings (not a str)", value)
    items = frozenset(value)
    if not all(isinstance(item, str) and item for item in items):
        raise _bad(name, "a collection of non-empty strings", value)
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

    Rate limiting is an **exact sliding-window log** by default: a request is admitted
    when, over the last ``window_seconds`` (half-open, ``(now - window, now]``), fewer
    than ``requests_per_minute`` requests and at most ``tokens_per_minute - cost``
    tokens were admitted. So *no* window of that length ever holds more than the limit
    (a fixed window would allow twice the limit across a boundary), and
    ``Retry-After`` is exact: the time until enough old admissions slide out,
    rounded up to the millisecond. Only admitted requests count; 400s and 429s
    cost nothing. A request costing more tokens than ``tokens_per_minute`` can never
    be admitted and gets a 429 *without* ``Retry-After``. The limiter reads
    ``clock``, so tests drive windows with a fake clock and never wait.

    ``rate_limit_window="fixed"`` with ``send_retry_after=False`` and
    ``send_ratelimit_headers=False`` reproduces a LiteLLM proxy's limiter: a counter
    per fixed window that refuses everything once full, until the window ends, and
    whose 429s say nothing about when that is.

    The ``batch_*`` fields shape the Batch API (``/v1/files``, ``/v1/batches``).
    A batch's lines finish evenly spread over ``batch_completion_delay`` seconds of
    ``clock`` time, in a shuffled order; its status is computed from ``clock`` each
    time it is read, so a test with a :class:`FakeClock` advances time instead of
    waiting. Batch lines skip the rate limiter, latency and the online faults.
    Anthropic's Message Batches (``/v1/messages/batches``) run on the same
    ``batch_*`` timeline (their lines failing with ``api_error``, expiring or being
    canceled), within ``message_batch_max_requests`` and ``message_batch_max_bytes``.

    A chat request with ``"service_tier": "flex"`` models OpenAI's flex processing
    (Batch API prices on ordinary calls): it waits ``flex_latency_factor`` times
    longer, and when flex capacity is short (``flex_unavailable_rate``, or a scripted
    ``"flex_unavailable"`` step) it gets HTTP 429 with code ``resource_unavailable``
    at once, with neither ``Retry-After`` nor ``x-ratelimit-*`` headers and without
    counting against the rate limits (the real API does not charge it either). Every
    completion says which tier served it (``"flex"``, ``"priority"`` or
    ``"default"``), as the real API does; a model in ``flex_unsupported_models``
    refuses flex with a 400.

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
            runs are reproducible when requests arrive in the same order. Each batch
            gets its own RNG derived from it (line order, line errors).
        requests_per_minute: admitted requests per window (OpenAI's RPM when the
            window is 60 s), or ``None`` for no limit.
        tokens_per_minute: admitted tokens per window, or ``None``. A request costs its
            prompt tokens (counted as ``tokenizer`` says) plus
            ``max_tokens``/``max_completion_tokens`` if given, else the answer size.
        window_seconds: the window of both limits, so benches can say "20 requests per
            1-second window".
        rate_limit_window: ``"sliding"`` (the exact log above, as OpenAI limits), or
            ``"fixed"``: windows ``[k * window_seconds, (k + 1) * window_seconds)`` of
            ``clock``, each counted from zero (as a per-minute counter in a proxy), so
            up to twice the limit fits across a boundary, and once a window is full
            every request fails until it ends.
        send_retry_after: send ``Retry-After`` and ``retry-after-ms`` with 429s
            (scripted ones included); ``False`` sends neither, as LiteLLM.
        send_ratelimit_headers: send the ``x-ratelimit-*`` headers on every chat
            response; ``False`` sends none, so a client learns nothing about the
            window from successes either.
        error_rate_5xx: probability that an admitted request gets 500, 502 or 503.
        drop_rate: probability that the connection is closed without any response.
        hang_rate: probability that no answer comes until the client gives up or the
            server stops.
        reject_prompts: substrings; a request whose last user message contains one gets
            HTTP 400 ``invalid_request_error``, every time (a poison item). In a batch,
            that line lands in the error file with status 400.
        script: maps a prompt substring to the faults its successive attempts meet,
            e.g. ``{"flaky-1": ("429", "500", "ok")}``. Attempts are counted per
            distinct prompt (last user text), so every prompt containing the key runs
            the sequence; the first key in mapping order that matches wins. Only
            requests the rate limiter admits consume a step, except that a flex
            request whose next step is ``"flex_unavailable"`` takes it before the
            limiter (it is refused without being admitted); a request that is not
            flex meeting that step is answered normally (the default tier has
            capacity). Once the steps run out the prompt is treated normally (random
            faults included). A scripted ``"429"`` is a synthetic fault with
            ``Retry-After: scripted_retry_after``. The steps ``"missing_field"``,
            ``"wrong_type"``, ``"truncated_json"`` and ``"text_before_json"`` answer a
            structured request (with ``structured_answers``) with that mistake, and
            any other request normally; a re-ask whose feedback names the previous
            answer's mistake is answered validly instead (see ``structured_answers``).
        scripted_retry_after: ``Retry-After`` seconds sent with scripted 429s.
        clock: monotonic seconds for the rate limiter, the admission timestamps and
            the Batch API's timeline (its Unix timestamps move with it).
        response_text: builds the answer from the last user text; the default echoes
            it (``"echo: <text>"``), so each item can be checked to get *its* answer.
        structured_answers: answer a request that forces a tool with a call of that
            tool, and one asking for ``response_format`` ``json_schema`` or
            ``json_object`` with a JSON object: ``response_text(prompt)`` when that is
            a JSON object's text, else an object built from the schema (strings echo
            the prompt, integers are its length). The prompt of a re-ask (a
            conversation ending with an assistant answer, then tool or user
            messages) is the user text before that answer. Off by default: such
            requests get ``response_text`` as plain content. Whatever this says, an
            assistant message with ``tool_calls`` must be followed by a tool message
            per call id (and a tool message must answer one), else HTTP 400, as
            OpenAI rules.
        models: the ids ``GET /v1/models`` lists (chat accepts and echoes any model).
        max_body_bytes: larger request bodies (file uploads included) get HTTP 413.
        flex_latency_factor: a flex request's latency is the drawn latency times this
            (at least 1; ``max_latency`` still caps the product).
        flex_unavailable_rate: probability that a flex request is refused with the
            429 ``resource_unavailable`` (drawn from the seeded RNG, before the
            rate limiter).
        flex_unsupported_models: model ids that refuse ``service_tier="flex"`` with
            HTTP 400 ``invalid_request_error``, every time.
        tokenizer: how prompt and completion tokens are counted. ``"chars"``: about
            4 characters a token, ``3 + sum(4 + ceil(chars / 4))`` over the messages
            and 85 per image. ``"model"``: the model's own tokenizer through
            :func:`langchain_batchkit._tokenize.count_text` (exact for OpenAI models
            when ``bpe-openai`` is installed, else its estimate), 3 tokens a message
            and 3 to prime the reply, ``_tokenize.IMAGE_TOKENS`` per image, as
            :func:`langchain_batchkit._tokenize.count_messages` counts.
            ``max_tokens`` truncation uses the same count.
        cached_prompt_fraction: share of each prompt's tokens reported as served from
            the prompt cache (``usage.prompt_tokens_details.cached_tokens``, rounded
            down); 0 reports none.
        batch_completion_delay: ``clock`` seconds from a batch's creation until it
            ends (``completed``, or ``expired``); 0 finishes it at once.
        batch_cancel_delay: ``clock`` seconds a cancelled batch stays ``cancelling``
            before it is ``cancelled``.
        batch_expired_fraction: fraction of each batch's lines left unfinished when
            its window ends (rounded up); any value above 0 makes every batch end
            ``expired``, its unfinished lines in the error file with code
            ``batch_expired``.
        batch_line_error_rate: probability that a batch line fails with HTTP 500
            (in the error file) instead of being answered.
        batch_line_error_style: how such a failure is written: ``"http"`` as an answer
            with ``status_code`` 500, ``"line"`` as a line with ``response: null``
            and an ``error`` object of code ``server_error`` (as OpenAI also writes).
        batch_max_requests: most lines one batch input file may hold; more makes the
            batch ``failed`` with code ``too_many_tasks`` (OpenAI: 50,000).
        batch_max_file_bytes: largest ``purpose="batch"`` upload; a larger one gets
            HTTP 400 ``file_too_large`` (OpenAI: 200 MB). Uploads above
            ``max_body_bytes`` get 413 first.
        message_batch_max_requests: most requests one Anthropic Message Batch may
            hold; more is refused with HTTP 400 at creation (Anthropic: 100,000).
        message_batch_max_bytes: largest body of a Message Batch creation; a larger
            one gets HTTP 413 ``request_too_large`` (Anthropic: 256 MB). Bodies above
            ``max_body_bytes`` get 413 first.
        batch_max_enqueued_tokens: the organisation's enqueued-token limit per model
            (``None``: none). A batch's tokens are its lines' prompt tokens, counted
            as ``tokenizer`` says (embeddings lines: their inputs'); a batch created
            while the unfinished batches of its model (validating, in progress,
            cancelling) plus its own would exceed the limit ends ``failed``, with one
            error of code ``token_limit_exceeded`` and OpenAI's message ("Enqueued
            token limit reached for <model> in organization org-fake. Limit: N
            enqueued tokens. ..."). Refused batches enqueue nothing;
            ``stats().enqueued_token_refusals`` counts them and
            ``stats().max_enqueued_tokens`` is the most one model's unfinished
            batches held at once (tracked with or without a limit).
        embedding_dimensions: the length of ``/v1/embeddings`` vectors for a request
            that names no ``dimensions`` (``text-embedding-3-small``'s 1536).

    ``POST /v1/embeddings`` meets the same rate limiter (a request costs its inputs'
    tokens, counted as ``tokenizer`` says with no framing), ``reject_prompts``
    (matched against every input), the fault ``script`` (keyed on the inputs joined
    by newlines) and random faults and latency as chat does.

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
    rate_limit_window: RateLimitWindow = "sliding"
    send_retry_after: bool = True
    send_ratelimit_headers: bool = True
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
    structured_answers: bool = False
    models: tuple[str, ...] = DEFAULT_MODELS
    max_body_bytes: int = 32 * 1024 * 1024
    flex_latency_factor: float = 3.0
    flex_unavailable_rate: float = 0.0
    flex_unsupported_models: frozenset[str] = frozenset()
    tokenizer: TokenCounting = "chars"
    cached_prompt_fraction: float = 0.0
    batch_completion_delay: float = 0.0
    batch_cancel_delay: float = 0.0
    batch_expired_fraction: float = 0.0
    batch_line_error_rate: float = 0.0
    batch_line_error_style: Literal["http", "line"] = "http"
    batch_max_requests: int = 50_000
    batch_max_file_bytes: int = 200 * 1024 * 1024
    message_batch_max_requests: int = 100_000
    message_batch_max_bytes: int = 256_000_000
    batch_max_enqueued_tokens: int | None = None
    embedding_dimensions: int = 1536

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
        if self.rate_limit_window not in get_args(RateLimitWindow):
            raise _bad(
                "rate_limit_window", f"one of {get_args(RateLimitWindow)}", self.rate_limit_window
            )
        for name in ("send_retry_after", "send_ratelimit_headers"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, "a bool", getattr(self, name))
        for name in ("error_rate_5xx", "drop_rate", "hang_rate"):
            _check_probability(name, getattr(self, name))
        total = self.error_rate_5xx + self.drop_rate + self.hang_rate
        if total > 1 + EPSILON:
            raise _bad("error_rate_5xx + drop_rate + hang_rate", "at most 1", total)
        object.__setattr__(
            self, "reject_prompts", _normalize_strings("reject_prompts", self.reject_prompts)
        )
        object.__setattr__(self, "script", _normalize_script(self.script))
        _check_real("scripted_retry_after", self.scripted_retry_after)
        if not callable(self.clock):
            raise _bad("clock", "a callable returning seconds", self.clock)
        if not isinstance(self.structured_answers, bool):
            raise _bad("structured_answers", "a bool", self.structured_answers)
        mistakes = sorted({s for steps in self.script.values() for s in steps} & set(BAD_ANSWERS))
        if mistakes and not self.structured_answers:
            raise _bad(
                "structured_answers",
                f"True for the scripted structured mistakes {mistakes}",
                self.structured_answers,
            )
        if not callable(self.response_text):
            raise _bad("response_text", "a callable taking the prompt text", self.response_text)
        if (
            not isinstance(self.models, tuple)
            or not self.models
            or not all(isinstance(m, str) and m for m in self.models)
        ):
            raise _bad("models", "a non-empty tuple of model ids", self.models)
        _check_int("max_body_bytes", self.max_body_bytes)
        if _check_real("flex_latency_factor", self.flex_latency_factor) < 1:
            raise _bad(
                "flex_latency_factor", ">= 1 (flex is never faster)", self.flex_latency_factor
            )
        _check_probability("flex_unavailable_rate", self.flex_unavailable_rate)
        object.__setattr__(
            self,
            "flex_unsupported_models",
            _normalize_strings("flex_unsupported_models", self.flex_unsupported_models),
        )
        if self.tokenizer not in get_args(TokenCounting):
            raise _bad("tokenizer", f"one of {get_args(TokenCounting)}", self.tokenizer)
        _check_probability("cached_prompt_fraction", self.cached_prompt_fraction)
        _check_real("batch_completion_delay", self.batch_completion_delay)
        _check_real("batch_cancel_delay", self.batch_cancel_delay)
        _check_probability("batch_expired_fraction", self.batch_expired_fraction)
        _check_probability("batch_line_error_rate", self.batch_line_error_rate)
        if self.batch_line_error_style not in ("http", "line"):
            raise _bad("batch_line_error_style", "'http' or 'line'", self.batch_line_error_style)
        _check_int("batch_max_requests", self.batch_max_requests)
        _check_int("batch_max_file_bytes", self.batch_max_file_bytes)
        _check_int("message_batch_max_requests", self.message_batch_max_requests)
        _check_int("message_batch_max_bytes", self.message_batch_max_bytes)
        _check_int("batch_max_enqueued_tokens", self.batch_max_enqueued_tokens, optional=True)
        _check_int("embedding_dimensions", self.embedding_dimensions)
