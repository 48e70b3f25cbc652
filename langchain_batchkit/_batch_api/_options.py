"""BatchAPIOptions: job limits, polling and resubmission, as an immutable validated value."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from langchain_batchkit._clock import SYSTEM_CLOCK, Clock, as_clock
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._prices import Price, PriceBook, as_price_book
from langchain_batchkit._validate import check_int, check_number

__all__ = ["BatchAPIOptions"]

#: Metadata keys the runner adds to every job (OpenAI allows 16 pairs in all).
RESERVED_METADATA = ("batchkit_run", "batchkit_job")
_MAX_USER_METADATA = 16 - len(RESERVED_METADATA)


def _metadata(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping) or len(value) > _MAX_USER_METADATA:
        raise ConfigurationError(
            f"BatchAPIOptions.metadata must be a mapping of at most {_MAX_USER_METADATA} "
            f"string pairs, got {value!r}"
        )
    for key, val in value.items():
        if not (
            isinstance(key, str) and isinstance(val, str) and len(key) <= 64 and len(val) <= 512
        ):
            raise ConfigurationError(
                "BatchAPIOptions.metadata keys must be strings of at most 64 characters and "
                f"values strings of at most 512, got {key!r}: {val!r}"
            )
        if key in RESERVED_METADATA:
            raise ConfigurationError(f"BatchAPIOptions.metadata key {key!r} is reserved")
    return MappingProxyType(dict(value))


def _enqueued_tokens(value: object) -> int | Mapping[str, int] | None:
    name = "BatchAPIOptions.max_enqueued_tokens"
    if value is None or not isinstance(value, Mapping):
        return None if value is None else check_int(name, value)
    for model, tokens in value.items():
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"{name} must be keyed by model names, got {model!r}")
        check_int(f"{name}[{model!r}]", tokens)
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchAPIOptions:
    """How :class:`BatchAPIRunner` splits, submits, polls and resubmits jobs.

    Every field is checked on construction; a bad one raises
    :class:`~langchain_batchkit.ConfigurationError` naming it, so a typo fails
    before anything is uploaded (and paid for).

    Attributes:
        max_requests_per_job: most requests in one job; more inputs are split into
            several jobs. ``None``: the provider's limit (OpenAI 50,000, Azure OpenAI
            100,000, Anthropic 100,000).
        max_bytes_per_job: largest job, in bytes of its requests. ``None``: the
            provider's limit (OpenAI and Azure 200 MB, Anthropic 256 MB). A single
            request larger than this fails as that item's error.
        poll_initial_wait: seconds before the second status check of a job (the
            first is right after creation).
        poll_max_wait: the longest wait between checks; waits grow from
            ``poll_initial_wait`` by ``poll_multiplier`` up to it.
        poll_multiplier: growth of the wait per check (>= 1).
        max_resubmits: how many times an item whose request failed for a reason worth
            another try (5xx, 429, an expired job) is sent again in a new job.
        completion_window: the provider's completion window (OpenAI: only ``"24h"``).
        metadata: extra string pairs set on every job (at most 14; the runner adds
            ``batchkit_run`` and ``batchkit_job``).
        local_concurrency: items in flight at once for the steps that run locally
            (prompt building before the model, parsers after it).
        clock: the :class:`~langchain_batchkit.Clock` for waits between checks, wall
            time and latencies (inject a ``FakeClock`` in tests; a bare ``now``
            function is accepted too, with ``sleep``).
        sleep: the async sleep for the waits between checks, when it is not the
            clock's own (with a bare ``now`` function as ``clock``, or to watch or
            interrupt the waits in a test); by default the clock's.
        prices: your own prices per model (``{name: Price}`` or a ``PriceBook``), over
            the price database; each item's ``cost`` is at the Batch API's discount.
        max_enqueued_tokens: the provider's cap on prompt tokens enqueued across the
            organisation's open jobs of a model (OpenAI's "enqueued token limit" of
            your tier): an int for every model, or ``{model: int}`` keyed by the model
            named in the requests (for Azure OpenAI, the deployment). Jobs are planned
            within it and sent only while the open jobs leave room; the others wait
            for them to end. ``None`` (or a model not in the mapping): learned from
            the provider's first refusal. A refused job is sent again later, except a
            single request larger than the cap, which fails with code
            ``token_limit_exceeded``.
        queue_path: a SQLite file holding the queue of enqueued tokens (``~`` is
            expanded, missing folders are made). Runners given the same file (other
            processes too) share one queue and stay under the cap together. ``None``:
            the run's state file, or without one a temporary file for the run.

    Example:
        >>> BatchAPIOptions(max_requests_per_job=10_000, poll_max_wait=120).poll_wait(10)
        120.0
    """

    max_requests_per_job: int | None = None
    max_bytes_per_job: int | None = None
    poll_initial_wait: float = 30.0
    poll_max_wait: float = 600.0
    poll_multiplier: float = 2.0
    max_resubmits: int = 2
    completion_window: str = "24h"
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    local_concurrency: int = 16
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    clock: Clock | Callable[[], float] = field(default=SYSTEM_CLOCK, compare=False)
    prices: PriceBook | Mapping[str, Price] | None = field(default=None, compare=False)
    max_enqueued_tokens: int | Mapping[str, int] | None = None
    queue_path: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if self.max_requests_per_job is not None:
            check_int("BatchAPIOptions.max_requests_per_job", self.max_requests_per_job)
        if self.max_bytes_per_job is not None:
            check_int("BatchAPIOptions.max_bytes_per_job", self.max_bytes_per_job)
        check_number("BatchAPIOptions.poll_initial_wait", self.poll_initial_wait)
        check_number("BatchAPIOptions.poll_max_wait", self.poll_max_wait)
        check_number("BatchAPIOptions.poll_multiplier", self.poll_multiplier, minimum=1.0)
        if self.poll_max_wait < self.poll_initial_wait:
            raise ConfigurationError(
                f"BatchAPIOptions.poll_max_wait ({self.poll_max_wait}) must be >= "
                f"poll_initial_wait ({self.poll_initial_wait})"
            )
        check_int("BatchAPIOptions.max_resubmits", self.max_resubmits, minimum=0)
        if self.completion_window != "24h":
            raise ConfigurationError(
                f"BatchAPIOptions.completion_window must be '24h' (the only window OpenAI "
                f"offers), got {self.completion_window!r}"
            )
        object.__setattr__(self, "metadata", _metadata(self.metadata))
        check_int("BatchAPIOptions.local_concurrency", self.local_concurrency)
        if not callable(self.sleep):
            raise ConfigurationError("BatchAPIOptions.sleep must be an async callable")
        if not callable(self.clock):
            raise ConfigurationError("BatchAPIOptions.clock must be a callable returning seconds")
        object.__setattr__(self, "timer", as_clock(self.clock, self.sleep))
        object.__setattr__(self, "prices", as_price_book(self.prices))
        object.__setattr__(self, "max_enqueued_tokens", _enqueued_tokens(self.max_enqueued_tokens))
        if self.queue_path is not None:
            if not isinstance(self.queue_path, str | os.PathLike) or not os.fspath(self.queue_path):
                raise ConfigurationError(
                    f"BatchAPIOptions.queue_path must be a file path or None, "
                    f"got {self.queue_path!r}"
                )
            object.__setattr__(self, "queue_path", os.path.expanduser(self.queue_path))

    timer: Clock = field(init=False, repr=False, compare=False)
    """The one :class:`Clock` made of ``clock`` and ``sleep``."""

    def poll_wait(self, checks: int) -> float:
        """Seconds to wait after the ``checks``-th status check with no job finished."""
        try:
            wait = self.poll_initial_wait * self.poll_multiplier ** max(0, checks - 1)
        except OverflowError:
            return float(self.poll_max_wait)
        return float(min(self.poll_max_wait, wait))

    def enqueued_cap(self, model: str) -> int | None:
        """The ``max_enqueued_tokens`` set for ``model`` (``None``: to be learned).

        Example:
            >>> BatchAPIOptions(max_enqueued_tokens={"gpt-4o": 90_000}).enqueued_cap("gpt-4o")
            90000
        """
        cap = self.max_enqueued_tokens
        return cap.get(model) if isinstance(cap, Mapping) else cap
