"""How many items to run at once: named presets, the ``"auto"`` size rule, and Little's law.

The presets transcribe the two conservative tables of our course material.
They disagree above 100 items: the recipe's scale table says 2-5 for "100+",
while its quick reference says 10-20 for 100-1000 and 2-5 only from 1000 on.

Our rule for ``"auto"`` (without a rate limit to go by) takes, where the tables
disagree, the more conservative one, at the top of its range::

    items        auto   why
    < 20         10     all at once for the smallest batches ("10-20 (default)")
    20 - 99      8      both tables say 5-10
    100 +        5      "100+: 2-5" wins over "100-1000: 10-20": a larger batch sends
                        more requests in total, so it is the one that meets the limit
    unknown      5      a generator of unknown length is treated as large

Too low a value costs time, too high a value costs 429s and lost rows; when the
provider's limit is known, :func:`concurrency_for_rate_limit` gives a better number.
An explicit int always wins over a preset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from langchain_batchkit._aimd import AdaptiveConcurrency
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._validate import check_int, check_number

__all__ = [
    "PRESETS",
    "AdaptiveConcurrency",
    "ConcurrencyPlan",
    "ConcurrencyPreset",
    "MaxConcurrency",
    "concurrency_for_rate_limit",
    "concurrency_for_size",
    "resolve_max_concurrency",
]


@dataclass(frozen=True, slots=True)
class ConcurrencyPreset:
    """One row of the course tables.

    Attributes:
        name: the name accepted by ``max_concurrency=``.
        low: the table's lower bound.
        high: the table's upper bound.
        value: what the preset resolves to (the top of the range).
        scale: the batch sizes the row is meant for.
        method: the LangChain call the table recommends at that scale.
    """

    name: str
    low: int
    high: int
    value: int
    scale: str
    method: str


PRESETS: dict[str, ConcurrencyPreset] = {
    p.name: p
    for p in (
        # Scale table ("Recommended max_concurrency").
        ConcurrencyPreset("small", 10, 20, 10, "< 20 items", ".batch()"),
        ConcurrencyPreset("medium", 5, 10, 8, "20-100 items", ".batch()"),
        ConcurrencyPreset("large", 2, 5, 5, "100+ items", ".batch() / .abatch()"),
        # Quick reference ("Scale / Method / Concurrency").
        ConcurrencyPreset("sequential", 1, 1, 1, "< 10 items", ".invoke() loop"),
        ConcurrencyPreset("batch", 5, 10, 10, "10-100 items", ".batch()"),
        ConcurrencyPreset("abatch", 10, 20, 20, "100-1000 items", ".abatch()"),
        ConcurrencyPreset("abatch_chunked", 2, 5, 5, "1000+ items", ".abatch() + chunking"),
    )
}

MaxConcurrency = int | Literal["auto"] | str
"""An int, ``"auto"``, or a preset name from :data:`PRESETS`."""


def concurrency_for_size(n_items: int | None) -> int:
    """The ``"auto"`` rule: a conservative concurrency for a batch of ``n_items``.

    Args:
        n_items: the batch size, or ``None`` when unknown (a generator).

    Returns:
        10 below 20 items, 8 below 100, 5 from 100 on or when unknown.

    Example:
        >>> concurrency_for_size(50)
        8
    """
    if n_items is None or n_items >= 100:
        return PRESETS["large"].value
    if n_items >= 20:
        return PRESETS["medium"].value
    return PRESETS["small"].value


def validate_max_concurrency(value: object, name: str = "max_concurrency") -> MaxConcurrency:
    """Check a ``max_concurrency`` option at construction; raise a clear error if bad."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigurationError(
            f"{name} must be a positive int, 'auto' or a preset name "
            f"({', '.join(sorted(PRESETS))}), got {value!r}"
        )
    if isinstance(value, int):
        if value < 1:
            raise ConfigurationError(f"{name} must be >= 1, got {value}")
        return value
    if value != "auto" and value not in PRESETS:
        raise ConfigurationError(
            f"unknown {name} preset {value!r}; choose an int, 'auto' or one of "
            f"{', '.join(sorted(PRESETS))}"
        )
    return value


def resolve_max_concurrency(value: MaxConcurrency, n_items: int | None) -> int:
    """Turn a validated option into the number of items to run at once."""
    if isinstance(value, int):
        return value
    if value == "auto":
        return concurrency_for_size(n_items)
    return PRESETS[value].value


@dataclass(frozen=True, slots=True)
class ConcurrencyPlan:
    """What :func:`concurrency_for_rate_limit` derived, with its arithmetic.

    Attributes:
        concurrency: items to run at once (at least 1).
        requests_in_flight: ``concurrency * calls_per_item``, requests a full window keeps open.
        requests_per_minute: the request rate that concurrency produces.
        limit_per_minute: the provider limit it was derived from.
    """

    concurrency: int
    requests_in_flight: int
    requests_per_minute: float
    limit_per_minute: float


def concurrency_for_rate_limit(
    requests_per_minute: float,
    *,
    item_latency: float,
    calls_per_item: int = 1,
    headroom: float = 1.0,
) -> ConcurrencyPlan:
    """Derive concurrency from a requests-per-minute limit with Little's law.

    ``C`` items in flight, each taking ``item_latency`` seconds and making
    ``calls_per_item`` requests, send ``C * calls_per_item * 60 / item_latency``
    requests a minute. The largest ``C`` under ``requests_per_minute * headroom`` is

        ``C = floor(rpm * headroom * item_latency / (60 * calls_per_item))``

    Args:
        requests_per_minute: the provider's limit.
        item_latency: mean seconds one item (the whole chain) takes.
        calls_per_item: model calls one item makes (3 for a research-write-edit chain).
        headroom: fraction of the limit to use (e.g. 0.9 to leave room for others).

    Returns:
        A :class:`ConcurrencyPlan`.

    Example:
        The course example: 60 requests a minute, 3 calls per chain, chains of about
        30 s: 10 chains at once keep about 30 requests active and stay at the limit.

        >>> plan = concurrency_for_rate_limit(60, item_latency=30, calls_per_item=3)
        >>> plan.concurrency, plan.requests_in_flight
        (10, 30)
    """
    check_number("requests_per_minute", requests_per_minute, strict=True)
    check_number("item_latency", item_latency, strict=True)
    check_int("calls_per_item", calls_per_item)
    if not (0 < headroom <= 1):
        raise ConfigurationError(f"headroom must be in (0, 1], got {headroom!r}")
    budget = requests_per_minute * headroom
    c = max(1, math.floor(budget * item_latency / (60 * calls_per_item) + 1e-9))
    return ConcurrencyPlan(
        concurrency=c,
        requests_in_flight=c * calls_per_item,
        requests_per_minute=c * calls_per_item * 60 / item_latency,
        limit_per_minute=float(requests_per_minute),
    )
