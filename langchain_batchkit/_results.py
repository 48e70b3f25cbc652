"""Result values: one :class:`ItemResult` per input, gathered in a :class:`BatchResult`.

Every result is keyed by its input index from the moment the engine creates it;
nothing here rebuilds a result list by position.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from langchain_core.runnables import RunnableConfig

from langchain_batchkit._errors import (
    BatchFailedError,
    RedactedError,
    describe_exception,
    exception_message,
    exception_traceback,
    redact_secrets,
    safe_repr,
)
from langchain_batchkit._timeline import Timeline

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = [
    "BatchResult",
    "BatchSummary",
    "ItemError",
    "ItemResult",
    "RunReport",
    "SummaryCounts",
    "TokenUsage",
]

logger = logging.getLogger(__name__)

#: The largest inline plot a BatchResult's HTML repr embeds (bytes of PNG).
MAX_INLINE_PLOT_BYTES = 120_000

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True, slots=True)
class ItemError:
    """What went wrong for one item, as text that survives pickling and export.

    Attributes:
        type: the exception's class name, e.g. ``"RateLimitError"``.
        message: ``str(exception)``, with anything resembling an API key redacted.
        traceback: the formatted traceback, redacted likewise.
        module: the module that defines the exception class.
        exception: the live exception when this process captured it; not part of
            equality or the repr, and ``None`` after a round trip through a checkpoint
            or a pickle (its arguments and request headers can carry the API key).
    """

    type: str
    message: str
    traceback: str = ""
    module: str = ""
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ItemError:
        """Capture ``exc`` as text, redacting secrets.

        The live exception is kept, but its traceback frames are released once
        formatted, so a million failed items do not pin a million stacks in memory.
        """
        tb = exception_traceback(exc)  # neither raises, whatever __str__ does
        message = exception_message(exc)
        exc.__traceback__ = None
        return cls(
            type=type(exc).__name__,
            message=message,
            traceback=tb,
            module=type(exc).__module__,
            exception=exc,
        )

    def to_dict(self) -> dict[str, str]:
        """The error as text fields (the live exception is not kept), for stores and exports."""
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "module": self.module,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ItemError:
        """Read back what :meth:`to_dict` wrote (missing fields are empty)."""
        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
            module=str(data.get("module", "")),
        )

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type

    def __repr__(self) -> str:
        # One line: the traceback is on request (``.traceback``), not in every printout.
        return f"ItemError(type={self.type!r}, message={_one_line(self.message, 160)!r})"

    def __reduce__(self) -> tuple[Callable[..., ItemError], tuple[str, str, str, str]]:
        # Text only: the live exception (an openai error holds its request, and the
        # request its ``authorization`` header) never reaches a pickle.
        return ItemError, (self.type, self.message, self.traceback, self.module)

    def stand_in(self) -> RedactedError:
        """An exception of this error's type name and redacted message, to chain or raise."""
        return RedactedError.named(self.type, self.module, self.message, self.traceback)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts reported by the model for one item (or summed over many)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_output(cls, output: object) -> TokenUsage | None:
        """Read ``usage_metadata`` from an ``AIMessage``-like output, if it has one."""
        meta = getattr(output, "usage_metadata", None)
        if not isinstance(meta, Mapping):
            return None
        inp = int(meta.get("input_tokens", 0) or 0)
        out = int(meta.get("output_tokens", 0) or 0)
        return cls(inp, out, int(meta.get("total_tokens", inp + out) or 0))

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
        )


@dataclass(frozen=True, slots=True, repr=False)
class ItemResult(Generic[InputT, OutputT]):
    """The outcome of one input: its output or its error, never both.

    Attributes:
        index: the input's position in the batch (stable across retries and resumes).
        input: the input as given.
        output: the chain's output, or ``None`` when the item failed.
        error: what went wrong, or ``None`` when the item succeeded.
        attempts: how many times the chain was called for this item.
        latency: seconds from the item's first start to its end.
        usage: token counts when the output carries ``usage_metadata``.
        history: errors of earlier attempts that were retried, oldest first.
        key: the item's checkpoint key (``str(index)`` unless a ``key=`` function
            was given), when the run used a checkpoint.
    """

    index: int
    input: InputT
    output: OutputT | None = None
    error: ItemError | None = None
    attempts: int = 1
    latency: float = 0.0
    usage: TokenUsage | None = None
    history: tuple[ItemError, ...] = ()
    key: str | None = None

    @property
    def ok(self) -> bool:
        """True when the item produced an output."""
        return self.error is None

    def __repr__(self) -> str:
        # One line, whatever the input and output: each is cut short, redacted, and
        # shown as a placeholder if its repr raises; the error's traceback is on
        # request (``result.error.traceback``).
        state = "ok" if self.error is None else "failed"
        head = f"#{self.index} {state}, attempts={self.attempts}, {self.latency:.2f} s"
        if self.key is not None and self.key != str(self.index):
            head += f", key={_one_line(self.key, 40)!r}"
        shown = f"input={_one_line(safe_repr(self.input), 60)}"
        if self.error is None:
            shown += f", output={_one_line(safe_repr(self.output), 80)}"
        else:
            shown += f", error={_one_line(str(self.error), 120)}"
        return f"{type(self).__qualname__}({head}, {shown})"

    def to_record(self) -> dict[str, Any]:
        """A flat dict for tables and JSON export."""
        usage = self.usage
        return {
            "index": self.index,
            "ok": self.ok,
            "input": self.input,
            "output": self.output,
            "error_type": self.error.type if self.error else None,
            "error_message": self.error.message if self.error else None,
            "attempts": self.attempts,
            "latency_s": self.latency,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "total_tokens": usage.total_tokens if usage else None,
        }


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
        return _draw(timeline, str(self.summary))

    def _repr_html_(self) -> str:
        picture = _inline_plot(self.timeline, self.summary)
        return f"<div>{html.escape(str(self.summary))}{picture}</div>"


class Rerunner(Protocol[InputT, OutputT]):
    """What a BatchResult needs to re-run some of its items (the kit that made it)."""

    def _rerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]: ...

    async def _arerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]: ...


class BatchResult(list[ItemResult[InputT, OutputT]]):
    """The results of a batch: a list of :class:`ItemResult`, one per input, in input order.

    It is a ``list`` so it flows through LCEL like any ``.batch`` output, and adds
    the views a batch user needs. For a complete run, ``results[i].index == i``;
    after an interrupt it holds only the items that finished (``complete`` is
    False), still sorted by index: use :meth:`by_index` there.

    It pickles as its results alone: not the kit that made it (the chain, its HTTP
    clients, their API key) nor the live exceptions, so an unpickled BatchResult
    cannot :meth:`retry_failed`.

    Example:
        >>> results = kit.batch(inputs)               # doctest: +SKIP
        >>> results.failed[0].error                   # doctest: +SKIP
        >>> results = results.retry_failed()          # doctest: +SKIP
    """

    wall_time: float
    complete: bool
    timeline: Timeline | None = None  # also for results pickled before timelines existed
    _rerunner: Rerunner[InputT, OutputT] | None
    _config: RunnableConfig | None
    _unpickled: bool = False

    def __init__(
        self,
        items: Iterable[ItemResult[InputT, OutputT]] = (),
        *,
        wall_time: float = 0.0,
        complete: bool = True,
        rerunner: Rerunner[InputT, OutputT] | None = None,
        config: RunnableConfig | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        super().__init__(sorted(items, key=_by_index))
        self.wall_time = wall_time
        self.complete = complete
        self.timeline = timeline
        self._rerunner = rerunner
        self._config = config

    @property
    def outputs(self) -> list[OutputT | None]:
        """Outputs in input order, ``None`` where the item failed."""
        return [r.output for r in self]

    @property
    def succeeded(self) -> list[ItemResult[InputT, OutputT]]:
        """The items that produced an output."""
        return [r for r in self if r.error is None]

    @property
    def failed(self) -> list[ItemResult[InputT, OutputT]]:
        """The items that ended with an error."""
        return [r for r in self if r.error is not None]

    def by_index(self, index: int) -> ItemResult[InputT, OutputT]:
        """The result for input ``index`` (works on partial results too)."""
        if 0 <= index < len(self) and self[index].index == index:
            return self[index]
        for r in self:
            if r.index == index:
                return r
        raise KeyError(f"no result for input index {index}")

    def raise_for_errors(self) -> BatchResult[InputT, OutputT]:
        """Raise one :class:`BatchFailedError` naming every failed index, or return self.

        Its ``__cause__`` is the first failed item's error as a :class:`RedactedError`
        (same type name, redacted message), not the live exception, which may carry
        the API key into a printed traceback; ``.failed`` has every ItemResult.
        """
        failed = self.failed
        if failed:
            first = failed[0].error
            cause = first.stand_in() if first else None
            raise BatchFailedError(failed, len(self)) from cause
        return self

    def retry_failed(self, config: RunnableConfig | None = None) -> BatchResult[InputT, OutputT]:
        """Re-run only the failed items and return the merged result.

        Each re-run item keeps its original index; its ``attempts`` add up across
        runs and ``history`` keeps the earlier errors. Items that succeeded are
        not called again.

        Raises:
            RuntimeError: items failed, and this BatchResult was not made by a kit,
                or was unpickled (a pickle does not hold the kit).
        """
        pairs = [(r.index, r.input) for r in self.failed]
        if not pairs:
            return self
        return self._merge(self._rerunner_or_raise()._rerun(pairs, config or self._config))

    async def aretry_failed(
        self, config: RunnableConfig | None = None
    ) -> BatchResult[InputT, OutputT]:
        """Async twin of :meth:`retry_failed`."""
        pairs = [(r.index, r.input) for r in self.failed]
        if not pairs:
            return self
        rerunner = self._rerunner_or_raise()
        return self._merge(await rerunner._arerun(pairs, config or self._config))

    def _rerunner_or_raise(self) -> Rerunner[InputT, OutputT]:
        if self._rerunner is not None:
            return self._rerunner
        if self._unpickled:
            raise RuntimeError(
                "this BatchResult was unpickled, and a pickle keeps the results but not the "
                "kit (its chain, clients and API key), so it cannot retry_failed(); run the "
                "failed inputs with a kit: kit.batch([r.input for r in results.failed])"
            )
        raise RuntimeError("this BatchResult was not made by a batchkit runner")

    def __reduce__(self) -> tuple[Any, ...]:
        # The results only: the kit holds the chain, its HTTP clients and their key
        # (and often cannot be pickled at all); the config may hold callbacks.
        state = {
            "wall_time": self.wall_time,
            "complete": self.complete,
            "timeline": self.timeline,  # counts and error type names: nothing secret
            "_rerunner": None,
            "_config": None,
            "_unpickled": True,
        }
        return type(self), (list(self),), state

    def __copy__(self) -> BatchResult[InputT, OutputT]:
        # A copy in this process may keep the kit: only a pickle must drop it.
        copied = type(self)(
            self,
            wall_time=self.wall_time,
            complete=self.complete,
            rerunner=self._rerunner,
            config=self._config,
            timeline=self.timeline,
        )
        copied._unpickled = self._unpickled
        return copied

    def _merge(self, again: BatchResult[InputT, OutputT]) -> BatchResult[InputT, OutputT]:
        merged = {r.index: r for r in self}
        for new in again:
            old = merged[new.index]
            earlier = (*old.history, old.error) if old.error else old.history
            merged[new.index] = replace(
                new, attempts=old.attempts + new.attempts, history=earlier + new.history
            )
        timeline = self.timeline
        if timeline is not None and again.timeline is not None:
            timeline = timeline.then(again.timeline)
        return type(self)(
            merged.values(),
            wall_time=self.wall_time + again.wall_time,
            complete=self.complete and again.complete,
            rerunner=self._rerunner,
            config=self._config,
            timeline=timeline or again.timeline,
        )

    def summary(self) -> BatchSummary:
        """Counts, wall time, items per second and token totals."""
        counts = SummaryCounts()
        for r in self:
            counts.add(r)
        return counts.summary(self.wall_time)

    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per item (see :meth:`ItemResult.to_record`)."""
        return [r.to_record() for r in self]

    def to_pandas(self) -> pandas.DataFrame:
        """A DataFrame with one row per item; needs ``pip install langchain-batchkit[pandas]``."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "to_pandas() needs pandas: pip install 'langchain-batchkit[pandas]'"
            ) from exc
        frame: pandas.DataFrame = pd.DataFrame.from_records(self.to_records())
        return frame

    def plot(self) -> Figure:
        """The run as a matplotlib figure with four panels.

        *Items finished* over time against the ideal rate (the cap divided by the
        median latency), *In flight* against the window's cap with 429s, retries
        and rate-limiter pauses marked, *Latency* (a histogram, p50 and p95), and
        *Failures by error type*. Needs ``pip install 'langchain-batchkit[plot]'``.
        A result without a recorded timeline (built by hand) still shows latency
        and failures.

        Example:
            >>> results = kit.batch(inputs)                     # doctest: +SKIP
            >>> results.plot()                                  # doctest: +SKIP
            >>> results.plot().savefig("run.png")               # doctest: +SKIP
        """
        timeline = self.timeline or Timeline.from_results(self)
        return _draw(timeline, str(self.summary()))

    def __repr__(self) -> str:
        s = self.summary()
        partial = "" if self.complete else ", partial"
        return (
            f"BatchResult({s.total} items, {s.succeeded} ok, {s.failed} failed, "
            f"{s.wall_time:.2f} s{partial})"
        )

    def _repr_html_(self, max_rows: int = 5) -> str:
        s = self.summary()
        esc = html.escape
        head = (
            f"<b>BatchResult</b>: {s.total} items · "
            f"<span style='color:green'>{s.succeeded} ok</span> · "
            f"<span style='color:{'red' if s.failed else 'inherit'}'>{s.failed} failed</span>"
            f" · {s.wall_time:.2f} s · {s.items_per_second:.1f} items/s"
            f" · {s.usage.total_tokens} tokens{'' if self.complete else ' · partial'}"
        )
        picture = _inline_plot(self.timeline, s)
        failed = self.failed
        if not failed:
            return f"<div>{head}{picture}</div>"
        rows = "".join(
            f"<tr><td>{r.index}</td><td>{esc(_short(r.input))}</td>"
            f"<td>{esc(r.error.type if r.error else '')}</td>"
            f"<td>{esc(_short(r.error.message if r.error else ''))}</td>"
            f"<td>{r.attempts}</td></tr>"
            for r in failed[:max_rows]
        )
        more = (
            f"<tr><td colspan=5>… {len(failed) - max_rows} more failed</td></tr>"
            if len(failed) > max_rows
            else ""
        )
        return (
            f"<div>{head}<table><thead><tr><th>index</th><th>input</th><th>error</th>"
            f"<th>message</th><th>attempts</th></tr></thead><tbody>{rows}{more}</tbody>"
            f"</table>{picture}</div>"
        )


def _by_index(r: ItemResult[Any, Any]) -> int:
    return r.index


def _short(value: object, limit: int = 120) -> str:
    text = redact_secrets(value if isinstance(value, str) else safe_repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str, limit: int) -> str:
    """``text`` redacted, on one line, cut to ``limit`` characters."""
    flat = " ".join(redact_secrets(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _plotting() -> Any:
    """The plotting module, or a clear error naming the extra to install."""
    try:
        from langchain_batchkit import _plot
    except ImportError as exc:
        raise ImportError(
            "plot() needs matplotlib: pip install 'langchain-batchkit[plot]'"
        ) from exc
    return _plot


def _draw(timeline: Timeline, title: str) -> Figure:
    figure: Figure = _plotting().plot_run(timeline, title=title)
    return figure


def _inline_plot(timeline: Timeline | None, summary: BatchSummary) -> str:
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
