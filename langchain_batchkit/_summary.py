"""Counts over many items: :class:`BatchSummary`, how it is accumulated
(:class:`SummaryCounts`), and what ``kit.run()`` returns (:class:`RunReport`).

Also the figure helpers a result's ``plot()`` and HTML repr share.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_batchkit._errors import describe_exception
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
    """Counts, timing and token totals of a batch; ``str()`` gives one readable line."""

    total: int
    succeeded: int
    failed: int
    wall_time: float
    items_per_second: float
    attempts: int
    usage: TokenUsage

    def __str__(self) -> str:
        return (
            f"{self.total} items: {self.succeeded} ok, {self.failed} failed "
            f"in {self.wall_time:.2f} s ({self.items_per_second:.1f} items/s, "
            f"{self.attempts} calls, {self.usage.total_tokens} tokens)"
        )


class SummaryCounts:
    """The one way a summary is accumulated: per result, or per block of counts.

    ``BatchResult.summary()``, ``kit.run()``'s report and the Ray driver all add
    into one of these, so their numbers mean the same thing.
    """

    __slots__ = ("attempts", "failed", "succeeded", "usage")

    def __init__(self) -> None:
        self.succeeded = self.failed = self.attempts = 0
        self.usage = TokenUsage()

    @property
    def total(self) -> int:
        return self.succeeded + self.failed

    def add(self, result: ItemResult[Any, Any]) -> None:
        """Count one finished item."""
        self.add_counts(int(result.error is None), int(result.error is not None),
                        result.attempts, result.usage)  # fmt: skip

    def add_counts(self, ok: int, failed: int, attempts: int, usage: TokenUsage | None) -> None:
        """Count a block of items at once (e.g. a Ray result block)."""
        self.succeeded += ok
        self.failed += failed
        self.attempts += attempts
        if usage is not None:
            self.usage = self.usage + usage

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
