"""One batch call, decided before it starts: configs, window, reader, and its lifecycle."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from contextlib import aclosing, closing
from typing import Any, Generic, TypeVar, cast

from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config

from langchain_batchkit._attempts import RunPlan, observed
from langchain_batchkit._callbacks import with_handler
from langchain_batchkit._checkpoint import fingerprint_of
from langchain_batchkit._concurrency import AdaptiveConcurrency
from langchain_batchkit._drivers import Reader, drive_tasks, drive_threads
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._introspect import display_name
from langchain_batchkit._options import KitOptions
from langchain_batchkit._progress import ProgressReporter
from langchain_batchkit._results import ItemResult, RunReport, SummaryCounts
from langchain_batchkit._resume import Resume
from langchain_batchkit._timeline import Timeline
from langchain_batchkit._window import Window

__all__ = ["INDEX_METADATA_KEY", "ItemConfigs", "Run", "Tally", "prepare_config"]

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

#: The metadata key that carries an item's input index into its run's trace.
INDEX_METADATA_KEY = "batchkit_index"

CallConfig = RunnableConfig | Sequence[RunnableConfig] | None


def prepare_config(
    config: RunnableConfig | None,
    handlers: Sequence[BaseCallbackHandler],
    *,
    keep_run_id: bool,
) -> RunnableConfig:
    """The caller's config, with our handlers added to its callbacks in order (nested
    runs inherit them) and, for a batch, without its run id (items cannot share one)."""
    prepared = ensure_config(config).copy()
    if not keep_run_id:
        prepared.pop("run_id", None)
    for handler in handlers:
        prepared = with_handler(prepared, handler)
    return prepared


def is_observed(config: RunnableConfig | None) -> bool:
    """Would any callback handler (given, from the environment, or a tracing context)
    see the kit's own run? Without one, creating it would be wasted work."""
    config = config or {}
    manager = CallbackManager.configure(
        inheritable_callbacks=config.get("callbacks"),
        inheritable_tags=config.get("tags"),
        inheritable_metadata=config.get("metadata"),
    )
    return observed(manager.handlers)


class ItemConfigs:
    """The RunnableConfig of each item: the caller's, plus the item's index in metadata."""

    __slots__ = ("_base", "_per_item", "observed")

    def __init__(
        self,
        config: CallConfig,
        handlers: Sequence[BaseCallbackHandler] = (),
        *,
        keep_run_id: bool = False,
    ) -> None:
        self._base: RunnableConfig | None = None
        self._per_item: list[RunnableConfig] | None = None
        if config is None or isinstance(config, dict):
            self.observed = is_observed(config)
            self._base = prepare_config(config, handlers, keep_run_id=keep_run_id)
        else:
            configs = list(config)
            self.observed = any(is_observed(c) for c in configs)
            self._per_item = [prepare_config(c, handlers, keep_run_id=False) for c in configs]

    @property
    def max_concurrency(self) -> int | None:
        if self._base is not None:
            return self._base.get("max_concurrency")
        return self._per_item[0].get("max_concurrency") if self._per_item else None

    def check_length(self, n_items: int | None) -> None:
        if self._per_item is not None and n_items != len(self._per_item):
            raise ConfigurationError(
                f"got {len(self._per_item)} configs for "
                f"{'an unsized input' if n_items is None else f'{n_items} inputs'}; "
                "pass one config, or one per input"
            )

    def __call__(self, index: int) -> RunnableConfig:
        base = (
            self._base
            if self._base is not None
            else cast(list[RunnableConfig], self._per_item)[index]
        )
        config = base.copy()
        metadata = base.get("metadata")
        config["metadata"] = (
            {**metadata, INDEX_METADATA_KEY: index} if metadata else {INDEX_METADATA_KEY: index}
        )
        return config


class Run(Generic[InputT, OutputT]):
    """Everything one batch call needs; iterate it once, sync or async.

    The bar and the window are created when iteration starts, so a stream that is
    never iterated leaves nothing open.
    """

    __slots__ = (
        "adaptive",
        "bound",
        "concurrency",
        "config",
        "n_items",
        "on_unyielded",
        "options",
        "ordered",
        "plan",
        "reader",
        "reorder_buffer",
        "resume",
        "timeline",
        "window",
    )

    def __init__(
        self,
        bound: Runnable[InputT, OutputT],
        plan: RunPlan[InputT, OutputT],
        reader: Reader[InputT],
        *,
        options: KitOptions,
        config: CallConfig,
        n_items: int | None,
        concurrency: int,
        adaptive: AdaptiveConcurrency | None,
        resume: Resume | None,
        ordered: bool,
        reorder_buffer: int,
    ) -> None:
        self.bound = bound
        self.plan = plan
        self.reader = reader
        self.options = options
        self.config = config
        self.n_items = n_items
        self.concurrency = concurrency
        self.adaptive = adaptive
        self.resume = resume
        self.ordered = ordered
        self.reorder_buffer = reorder_buffer
        self.on_unyielded: Callable[[ItemResult[Any, Any]], None] | None = None
        self.timeline: Timeline | None = None
        self.window: Window[InputT, OutputT] | None = None

    @property
    def stopped_at(self) -> int | None:
        """The first input not read when the run stopped early (a lazy input), else ``None``."""
        return self.window.stopped_at if self.window is not None else None

    def _open(self) -> tuple[Window[InputT, OutputT], ProgressReporter]:
        opts = self.options
        if self.resume is not None:
            checkpoint = self.resume.checkpoint
            checkpoint.open(fingerprint_of(self.bound))
            if opts.budget is not None:  # what the crashed run paid counts against the cap
                opts.budget.resumed(str(checkpoint.path), checkpoint.total_cost())
        reporter = ProgressReporter(
            self.n_items,
            show_bar=opts.progress,
            callback=opts.on_progress,
            desc=opts.desc or display_name(self.bound),
        )
        limit = opts.rate_limit
        self.timeline = Timeline(
            self.plan.clock(),
            cap=self.concurrency,
            limiter_stats=limit.stats if limit is not None else None,
        )
        window = Window(
            self.plan,
            concurrency=self.concurrency,
            adaptive=self.adaptive,
            resume=self.resume,
            reporter=reporter,
            ordered=self.ordered,
            reorder_buffer=self.reorder_buffer,
            timeline=self.timeline,
            drain_when_stopped=self.n_items is not None,
        )
        self.window = window
        return window, reporter

    def _close(self, reporter: ProgressReporter) -> None:
        if self.timeline is not None:
            self.timeline.close(self.plan.clock())
        reporter.close()
        if self.resume is not None:
            self.resume.checkpoint.close()

    def iterate(self) -> Generator[ItemResult[InputT, OutputT], None, None]:
        """Run with worker threads calling the chain's sync path."""
        window, reporter = self._open()
        try:
            with closing(
                drive_threads(window, self.plan, self.reader, self.on_unyielded)
            ) as stream:
                yield from stream
        finally:
            self._close(reporter)

    async def aiterate(self) -> AsyncGenerator[ItemResult[InputT, OutputT], None]:
        """Run with tasks on the running loop calling the chain's async path."""
        window, reporter = self._open()
        try:
            stream = drive_tasks(window, self.plan, self.reader, self.on_unyielded)
            async with aclosing(stream):
                async for result in stream:
                    yield result
        finally:
            self._close(reporter)


class Tally:
    """Counts for :meth:`BatchKit.run`: not every output, just totals and some failures."""

    __slots__ = ("counts", "failures", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.counts = SummaryCounts()
        self.failures: list[ItemResult[Any, Any]] = []

    def add(self, result: ItemResult[Any, Any]) -> None:
        self.counts.add(result)
        if result.error is not None and len(self.failures) < RunReport.MAX_FAILURES:
            self.failures.append(result)

    def report(self, run: Run[Any, Any]) -> RunReport:
        self.counts.flex_saved = run.plan.flex_saved if run.options.flex else None
        self.counts.stopped_at = run.stopped_at
        summary = self.counts.summary(time.perf_counter() - self.started)
        return RunReport(summary, self.failures, run.options.checkpoint, run.timeline)
