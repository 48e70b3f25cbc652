"""Pictures of a run, drawn from its :class:`~langchain_batchkit._timeline.Timeline`.

Needs matplotlib (``pip install 'langchain-batchkit[plot]'``); this module imports
it at the top, so import the module only where a picture is asked for. Figures are
built with ``matplotlib.figure.Figure``, not pyplot: no global figure list, no
backend to choose, nothing shown twice in a notebook. A :class:`RunFigure` shows
itself as a PNG wherever IPython displays it, inline backend or not.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from langchain_batchkit._timeline import Timeline
from langchain_batchkit._timeline_latency import LATENCY_FLOOR

__all__ = ["PANELS", "RunFigure", "plot_limiter_stats", "plot_run", "png_bytes", "png_data_url"]

#: The panel titles of a full plot, in order.
PANELS = ("Items finished", "In flight", "Latency", "Failures by error type")

_OK, _FAILED, _IDEAL = "#2e7d32", "#c62828", "#9e9e9e"
_CAP, _RETRY, _LIMITED, _PAUSE = "#1565c0", "#ef6c00", "#c62828", "#6a1b9a"


class RunFigure(Figure):
    """A matplotlib ``Figure`` that displays as a PNG in any notebook front end."""

    def _repr_png_(self) -> bytes:
        return png_bytes(self)


def png_bytes(figure: Figure, *, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (Agg, whatever backend is active)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi or figure.dpi, facecolor="white")
    return buffer.getvalue()


def png_data_url(figure: Figure, *, dpi: float | None = None) -> str:
    """The figure as a ``data:image/png;base64,...`` URL, for an ``<img>`` tag."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(figure, dpi=dpi)).decode()


def plot_run(
    timeline: Timeline,
    *,
    title: str | None = None,
    compact: bool = False,
) -> RunFigure:
    """Draw a run: items finished vs the ideal rate, in flight vs the cap (429s,
    retries and pauses marked), the latency histogram (p50/p95), failures by type.

    Args:
        timeline: the run's timeline.
        title: a line above the panels (the run's summary).
        compact: three small panels in a row (no failures panel), for a repr.

    Returns:
        A :class:`RunFigure` whose axes are titled as :data:`PANELS`.
    """
    if compact:
        figure = RunFigure(figsize=(10.5, 2.4), dpi=64, layout="constrained")
        axes = figure.subplots(1, 3)
    else:
        figure = RunFigure(figsize=(11, 7), dpi=100, layout="constrained")
        axes = figure.subplots(2, 2).ravel()
    _finished(axes[0], timeline, legend=not compact)
    _in_flight(axes[1], timeline, legend=not compact)
    _latency(axes[2], timeline, legend=not compact)
    if not compact:
        _failures(axes[3], timeline)
    if title:
        figure.suptitle(title, fontsize=10 if compact else 12)
    return figure


def plot_limiter_stats(stats: Any) -> RunFigure:
    """What a RateLimit did, in two panels: what happened to its requests (let
    through, waited, 429s, pauses, re-paced), and how far it backed off (requests
    open vs the cap, pace vs its ceiling).

    Args:
        stats: a :class:`~langchain_batchkit.LimiterStats`.
    """
    figure = RunFigure(figsize=(9, 3), dpi=100, layout="constrained")
    left, right = figure.subplots(1, 2)
    names = ["let through", "waited", "429s", "pauses", "re-paced"]
    values = [stats.requests, stats.waited, stats.rate_limited, stats.pauses, stats.repaced]
    colours = [_OK, _CAP, _LIMITED, _PAUSE, _RETRY]
    left.barh(names[::-1], values[::-1], color=colours[::-1])
    left.set_title("Requests")
    for y, value in enumerate(values[::-1]):
        left.annotate(f"{value:,}", (value, y), xytext=(3, 0), textcoords="offset points",
                      va="center", fontsize=8)  # fmt: skip
    cap = stats.in_flight_cap if math.isfinite(stats.in_flight_cap) else None
    gauges = ["most open", "cap now", "lowest cap"]
    levels = [float(stats.max_in_flight), cap or 0.0, stats.lowest_in_flight_cap
              if math.isfinite(stats.lowest_in_flight_cap) else 0.0]  # fmt: skip
    right.bar(gauges, levels, color=[_OK, _CAP, _RETRY])
    right.set_title("Back-off")
    right.set_xlabel(
        f"pace {stats.pace:.0%} (ceiling {stats.pace_ceiling:.0%}), "
        f"paused {getattr(stats, 'paused_seconds', 0.0):.3g} s of wall time"
    )
    if cap is None:
        right.annotate("no cap", (1, 0), ha="center", va="bottom", fontsize=8)
    figure.suptitle(_short(str(stats), 140), fontsize=9)
    return figure


def _no_time_axis(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no timeline recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _finished(ax: Axes, timeline: Timeline, *, legend: bool) -> None:
    ax.set_title(PANELS[0])
    bins = timeline.bins()
    if not bins:
        _no_time_axis(ax)
        return
    done = failed = 0
    xs, ys, fails = [0.0], [0], [0]
    for b in bins:
        done += b.succeeded + b.failed
        failed += b.failed
        xs.append(min(b.start + b.width, timeline.duration))
        ys.append(done)
        fails.append(failed)
    ax.plot(xs, ys, color=_OK, lw=2, label=f"finished ({done})")
    if failed:
        ax.plot(xs, fails, color=_FAILED, lw=1.5, label=f"failed ({failed})")
    p50 = timeline.latency_quantile(0.5)
    if p50 is not None and p50 > LATENCY_FLOOR and done:
        rate = timeline.first_cap / p50
        reach = done / rate
        ax.plot(
            [0, reach, max(reach, xs[-1])],
            [0, done, done],
            color=_IDEAL,
            ls="--",
            lw=1,
            label=f"ideal: {timeline.first_cap} in flight / p50 {_seconds(p50)} = {rate:.3g}/s",
        )
    ax.set_xlabel("seconds")
    ax.set_ylabel("items")
    ax.set_xlim(0, max(xs[-1], 1e-9))
    ax.set_ylim(0, max(done, 1) * 1.05)
    if legend:
        _legend_below(ax)


def _in_flight(ax: Axes, timeline: Timeline, *, legend: bool) -> None:
    ax.set_title(PANELS[1])
    bins = timeline.bins()
    if not bins:
        _no_time_axis(ax)
        return
    starts = [b.start for b in bins] + [bins[-1].start + bins[-1].width]
    mean = [b.mean_in_flight for b in bins]
    peak = [b.peak_in_flight for b in bins]
    caps = [b.cap for b in bins]
    ax.stairs(peak, starts, color=_CAP, alpha=0.15, fill=True, label="peak in flight")
    ax.stairs(mean, starts, color=_CAP, lw=1.5, label="mean in flight")
    ax.stairs(caps, starts, color="black", ls="--", lw=1, label="cap")
    top = max(max(peak), max(caps), 1) * 1.25
    ax.set_ylim(0, top)
    marks = ax.get_xaxis_transform()
    mid = [b.start + b.width / 2 for b in bins]
    idle = [(b.start, b.width) for b in bins if b.idle > 0.5 * b.width]
    for k, (start, width) in enumerate(idle):
        ax.axvspan(
            start,
            start + width,
            color="#bdbdbd",
            alpha=0.35,
            lw=0,
            label="nothing in flight" if k == 0 else None,
        )
    for name, counts, color, y, marker in (
        ("retries", [b.retries for b in bins], _RETRY, 0.86, "|"),
        ("429s", [b.rate_limited for b in bins], _LIMITED, 0.94, "v"),
        ("limiter pauses", [b.pauses for b in bins], _PAUSE, 0.78, "s"),
    ):
        xs = [x for x, n in zip(mid, counts, strict=True) if n]
        if xs:
            ax.scatter(
                xs,
                [y] * len(xs),
                transform=marks,
                marker=marker,
                color=color,
                s=28,
                label=f"{name} ({sum(counts)})",
                clip_on=False,
            )
    ax.set_xlabel("seconds")
    ax.set_ylabel("attempts")
    ax.set_xlim(0, max(starts[-1], timeline.duration, 1e-9))
    if legend:
        _legend_below(ax)


def _latency(ax: Axes, timeline: Timeline, *, legend: bool) -> None:
    ax.set_title(PANELS[2])
    histogram = timeline.latency_histogram()
    if not histogram:
        _no_time_axis(ax)
        return
    step = 10 ** (1 / 20)
    for low, high, count in histogram:
        low = low if low > 0 else LATENCY_FLOOR / step
        high = high if math.isfinite(high) else low * step
        ax.bar(low, count, width=high - low, align="edge", color=_CAP, alpha=0.7)
    ax.set_xscale("log")
    in_seconds = FuncFormatter(lambda value, _: _seconds(value))
    ax.xaxis.set_major_formatter(in_seconds)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    for q, color in ((0.5, _OK), (0.95, _RETRY)):
        value = timeline.latency_quantile(q)
        if value is not None:
            value = max(value, LATENCY_FLOOR / step)
            ax.axvline(value, color=color, lw=1.5, label=f"p{round(q * 100)} ≈ {_seconds(value)}")
    ax.set_xlabel("seconds per item (first start to end)")
    ax.set_ylabel("items")
    ax.legend(loc="upper left", fontsize=8 if legend else 6, frameon=legend)


def _failures(ax: Axes, timeline: Timeline) -> None:
    ax.set_title(PANELS[3])
    if not timeline.errors:
        ax.text(
            0.5, 0.5, "no failures", ha="center", va="center", color=_OK, transform=ax.transAxes
        )
        ax.set_xticks([])
        ax.set_yticks([])
        return
    ranked = sorted(timeline.errors.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) > 8:
        ranked = [*ranked[:7], ("other types", sum(n for _, n in ranked[7:]))]
    names = [_short(name, 32) for name, _ in reversed(ranked)]
    counts = [n for _, n in reversed(ranked)]
    bars = ax.barh(names, counts, color=_FAILED, alpha=0.8, height=0.6)
    pad = max(0.0, (3 - len(names)) / 2)  # one or two bars stay bar-sized, centred
    ax.set_ylim(-0.5 - pad, len(names) - 0.5 + pad)
    ax.bar_label(bars, padding=3, fontsize=8)
    ax.set_xlabel("items")
    ax.set_xlim(0, max(counts) * 1.2)


def _legend_below(ax: Axes) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=3, fontsize=8, frameon=False)


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.3g} s"
    return f"{value * 1000:.3g} ms" if value >= 1e-3 else f"{value * 1e6:.3g} µs"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
