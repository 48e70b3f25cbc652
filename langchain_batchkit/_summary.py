"""Counts over many items: :class:`BatchSummary`, how it is accumulated
(:class:`SummaryCounts`), and what ``kit.run()`` returns (:class:`RunReport`).

Also the figure helpers a result's ``plot()`` and HTML repr share.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_batchkit._errors import describe_exception, dollars
from langchain_batchkit._item import ItemResult, TokenUsage
from langchain_batchkit._timeline import Timeline

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MAX_INLINE_PLOT_BYTES",
    "BatchSummary",
    "RunReport",
    "SummaryCounts",
    "draw",
    "inline_plot",
]

logger = logging.getLogger(__name__)

#: The largest inline plot a BatchResult's HTML repr embeds (bytes of PNG).
MAX_INLINE_PLOT_BYTES = 120_000


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """Counts, timing, token and dollar totals of a batch; ``str()`` gives one line.

    Attributes:
        total: items counted (``succeeded + failed + not_run``).
        succeeded, failed: items that ended with an output, or with an error.
        wall_time, items_per_second: the run's duration and throughput.
        attempts: chain calls made.
        usage: token totals.
        not_run: items not run to the end because the run stopped (a spent budget).
        cost: dollars spent (``None``: no item was priced). Items whose price is
            unknown add nothing: ``unpriced`` counts them.
        unpriced: finished items that made model calls but have no cost.
        flex_saved: dollars the flex tier saved against the standard tier.
        stopped_at: for a lazy input, the index of the first input not read when
            the run stopped (``None``: it did not stop early).
    """

    total: int
    succeeded: int
    failed: int
    wall_time: float
    items_per_second: float
    attempts: int
    usage: TokenUsage
    not_run: int = 0
    cost: float | None = None
    unpriced: int = 0
    flex_saved: float | None = None
    stopped_at: int | None = None

    @property
    def ok(self) -> int:
        """The items that succeeded (the same as ``succeeded``)."""
        return self.succeeded

    def __str__(self) -> str:
        not_run = f", {self.not_run} not run" if self.not_run else ""
        money = f", {dollars(self.cost)}" if self.cost is not None else ""
        if self.flex_saved:
            money += f" (flex saved {dollars(self.flex_saved)})"
        stopped = f"; stopped at input #{self.stopped_at}" if self.stopped_at is not None else ""
        return (
            f"{self.total} items: {self.succeeded} ok, {self.failed} failed{not_run} "
            f"in {self.wall_time:.2f} s ({self.items_per_second:.1f} items/s, "
            f"{self.attempts} calls, {self.usage.total_tokens} tokens{money}){stopped}"
        )


class SummaryCounts:
    """The one way a summary is accumulated: per result, or per block of counts.

    ``BatchResult.summary()``, ``kit.run()``'s report and the Ray driver all add
    into one of these, so their numbers mean the same thing.
    """

    __slots__ = (
        "attempts",
        "cost",
        "failed",
        "flex_saved",
        "not_run",
        "stopped_at",
        "succeeded",
        "unpriced",
        "usage",
    )

    def __init__(self) -> None:
        self.succeeded = self.failed = self.attempts = self.not_run = self.unpriced = 0
        self.usage = TokenUsage()
        self.cost: float | None = None
        self.flex_saved: float | None = None
        self.stopped_at: int | None = None

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.not_run

    def add(self, result: ItemResult[Any, Any]) -> None:
        """Count one finished item."""
        if result.not_run:
            self.not_run += 1
            self.attempts += result.attempts
            self.add_cost(result.cost, priced=True)
            return
        self.add_counts(int(result.error is None), int(result.error is not None),
                        result.attempts, result.usage)  # fmt: skip
        self.add_cost(result.cost, priced=result.usage is None or result.cost is not None)

    def add_counts(self, ok: int, failed: int, attempts: int, usage: TokenUsage | None) -> None:
        """Count a block of items at once (e.g. a Ray result block)."""
        self.succeeded += ok
        self.failed += failed
        self.attempts += attempts
        if usage is not None:
            self.usage = self.usage + usage

    def add_cost(self, cost: float | None, *, priced: bool = True) -> None:
        """Add dollars spent (``priced=False``: an item that made calls no price covers)."""
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost
        elif not priced:
            self.unpriced += 1

    def summary(self, wall_time: float) -> BatchSummary:
        """The :class:`BatchSummary` of what was counted, over ``wall_time`` seconds."""
        total = self.total
        return BatchSummary(
            total=total,
            succeeded=self.succeeded,
            failed=self.failed,
            wall_time=wall_time,
            items_per_second=total / wall_time if wall_time > 0 else 0.0,
            attempts=self.attempts,
            usage=self.usage,
            not_run=self.not_run,
            cost=self.cost,
            unpriced=self.unpriced,
            flex_saved=self.flex_saved,
            stopped_at=self.stopped_at,
        )


@dataclass(frozen=True, slots=True)
class RunReport:
    """What :meth:`BatchKit.run` returns: counts and failures, not every output.

    Attributes:
        summary: counts, wall time, throughput, calls and tokens.
        failures: the failed items (the first ``MAX_FAILURES`` of them).
        checkpoint: where every result went, if the kit had a checkpoint.
    """

    MAX_FAILURES: ClassVar[int] = 1000

    summary: BatchSummary
    failures: list[ItemResult[Any, Any]]
    checkpoint: Any = None
    timeline: Timeline | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return str(self.summary)

    def plot(self) -> Figure:
        """The run as a figure (see :meth:`BatchResult.plot`); needs matplotlib."""
        timeline = self.timeline or Timeline.from_results(self.failures)
        return draw(timeline, str(self.summary))

    def _repr_html_(self) -> str:
        picture = inline_plot(self.timeline, self.summary)
        return f"<div>{html.escape(str(self.summary))}{picture}</div>"


def _plotting() -> Any:
    """The plotting module, or a clear error naming the extra to install."""
    try:
        from langchain_batchkit import _plot
    except ImportError as exc:
        raise ImportError(
            "plot() needs matplotlib: pip install 'langchain-batchkit[plot]'"
        ) from exc
    return _plot


def draw(timeline: Timeline, title: str) -> Figure:
    """The run's four-panel figure (see :meth:`BatchResult.plot`); needs matplotlib."""
    figure: Figure = _plotting().plot_run(timeline, title=title)
    return figure


def inline_plot(timeline: Timeline | None, summary: BatchSummary) -> str:
    """A small PNG of the run for an HTML repr, or ``""`` (no timeline, no matplotlib,
    or a picture over :data:`MAX_INLINE_PLOT_BYTES`)."""
    if timeline is None or not timeline.n_bins:
        return ""
    try:
        plotting = _plotting()
    except ImportError:
        return ""
    try:
        figure = plotting.plot_run(timeline, compact=True)
        url: str = plotting.png_data_url(figure)
    except Exception as exc:  # a repr must show the counts whatever the plot does
        logger.warning("could not draw the run's plot: %s", describe_exception(exc))
        return ""
    if len(url) > MAX_INLINE_PLOT_BYTES * 4 // 3:
        return ""
    return f"<br><img alt='the run over time' src='{url}'>"
