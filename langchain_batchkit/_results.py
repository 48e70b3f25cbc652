"""Result values: one :class:`ItemResult` per input, gathered in a :class:`BatchResult`.

Every result is keyed by its input index from the moment the engine creates it;
nothing here rebuilds a result list by position. The per-item types live in
``_item.py``, the summaries in ``_summary.py``; both are importable from here.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from langchain_core.runnables import RunnableConfig

from langchain_batchkit._errors import BatchFailedError, dollars, redact_secrets, safe_repr
from langchain_batchkit._item import Attempt, ItemError, ItemResult, TokenUsage
from langchain_batchkit._summary import (
    BatchSummary,
    RunReport,
    SummaryCounts,
    draw,
    inline_plot,
)
from langchain_batchkit._timeline import Timeline

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = [
    "Attempt",
    "BatchResult",
    "BatchSummary",
    "ItemError",
    "ItemResult",
    "RunReport",
    "SummaryCounts",
    "TokenUsage",
]

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


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
    flex_saved: float | None = None
    stopped_at: int | None = None
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
        """The items that ended with an error (not the ones a stopped run did not run)."""
        return [r for r in self if r.error is not None and not r.not_run]

    @property
    def not_run(self) -> list[ItemResult[InputT, OutputT]]:
        """The items the run stopped before finishing (its budget was spent)."""
        return [r for r in self if r.not_run]

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
        failed = [r for r in self if r.error is not None]  # not-run items have no output either
        if failed:
            first = failed[0].error
            cause = first.stand_in() if first else None
            raise BatchFailedError(failed, len(self)) from cause
        return self

    def retry_failed(self, config: RunnableConfig | None = None) -> BatchResult[InputT, OutputT]:
        """Re-run only the failed (and not-run) items and return the merged result.

        Each re-run item keeps its original index; its ``attempts`` add up across
        runs and ``history`` keeps the earlier attempts, oldest first: this result's
        ``history``, then its last attempt, then the re-run's own retries. Items
        that succeeded are not called again.

        Raises:
            RuntimeError: items failed, and this BatchResult was not made by a kit,
                or was unpickled (a pickle does not hold the kit).
        """
        pairs = [(r.index, r.input) for r in self if r.error is not None]
        if not pairs:
            return self
        return self._merge(self._rerunner_or_raise()._rerun(pairs, config or self._config))

    async def aretry_failed(
        self, config: RunnableConfig | None = None
    ) -> BatchResult[InputT, OutputT]:
        """Async twin of :meth:`retry_failed`."""
        pairs = [(r.index, r.input) for r in self if r.error is not None]
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
            "flex_saved": self.flex_saved,
            "stopped_at": self.stopped_at,
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
        copied.flex_saved, copied.stopped_at = self.flex_saved, self.stopped_at
        return copied

    def _merge(self, again: BatchResult[InputT, OutputT]) -> BatchResult[InputT, OutputT]:
        merged = {r.index: r for r in self}
        for new in again:
            old = merged[new.index]
            earlier = (*old.history, _last_attempt(old)) if old.attempts else old.history
            merged[new.index] = replace(
                new,
                attempts=old.attempts + new.attempts,
                history=earlier + new.history,
                cost=_sum_cost(old.cost, new.cost),
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
        counts.flex_saved = self.flex_saved
        counts.stopped_at = self.stopped_at
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
        return draw(timeline, str(self.summary()))

    def __repr__(self) -> str:
        s = self.summary()
        partial = "" if self.complete else ", partial"
        not_run = f", {s.not_run} not run" if s.not_run else ""
        money = f", {dollars(s.cost)}" if s.cost is not None else ""
        return (
            f"BatchResult({s.total} items, {s.succeeded} ok, {s.failed} failed{not_run}, "
            f"{s.wall_time:.2f} s{money}{partial})"
        )

    def _repr_html_(self, max_rows: int = 5) -> str:
        s = self.summary()
        esc = html.escape
        head = (
            f"<b>BatchResult</b>: {s.total} items · "
            f"<span style='color:green'>{s.succeeded} ok</span> · "
            f"<span style='color:{'red' if s.failed else 'inherit'}'>{s.failed} failed</span>"
            f"{f' · {s.not_run} not run' if s.not_run else ''}"
            f" · {s.wall_time:.2f} s · {s.items_per_second:.1f} items/s"
            f" · {s.usage.total_tokens} tokens"
            f"{' · ' + dollars(s.cost) if s.cost is not None else ''}"
            f"{' (flex saved ' + dollars(s.flex_saved) + ')' if s.flex_saved else ''}"
            f"{'' if self.complete else ' · partial'}"
        )
        picture = inline_plot(self.timeline, s)
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


def _last_attempt(result: ItemResult[Any, Any]) -> Attempt:
    """The last attempt of a finished item, as a record for a later run's history.

    An ItemResult's usage, cost and latency cover all the attempts of the run that
    made it, so they are that last attempt's own only when it was the item's
    first; otherwise only its error is known.
    """
    if result.history or result.attempts > 1:
        return Attempt(result.error)
    return Attempt(result.error, usage=result.usage, cost=result.cost, latency=result.latency)


def _sum_cost(old: float | None, new: float | None) -> float | None:
    return new if old is None else old if new is None else old + new


def _by_index(r: ItemResult[Any, Any]) -> int:
    return r.index


def _short(value: object, limit: int = 120) -> str:
    text = redact_secrets(value if isinstance(value, str) else safe_repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"
