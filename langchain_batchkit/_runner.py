"""The wrapper Runnable users hold: :class:`BatchKit`, made by :func:`batchkit`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Sequence,
    Sized,
)
from contextlib import aclosing
from typing import Any, Generic, TypeVar, cast

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from pydantic import BaseModel

from langchain_batchkit._callbacks import with_handler
from langchain_batchkit._checkpoint import Checkpoint, fingerprint_of
from langchain_batchkit._concurrency import (
    AdaptiveConcurrency,
    MaxConcurrency,
    resolve_max_concurrency,
    validate_max_concurrency,
)
from langchain_batchkit._engine import Engine, IndexedSource, Resume
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._introspect import sdk_retrying_models
from langchain_batchkit._limits import RateLimit
from langchain_batchkit._progress import ProgressCallback, ProgressReporter
from langchain_batchkit._results import (
    BatchResult,
    BatchSummary,
    ItemResult,
    RunReport,
    TokenUsage,
)
from langchain_batchkit._retry import RetryPolicy
from langchain_batchkit._sync import iterate_sync, run_sync

__all__ = ["BatchKit", "batchkit"]

logger = logging.getLogger(__name__)

#: How far ``"auto"`` may grow items in flight when a RateLimit paces the requests.
AUTO_CEILING_WITH_RATE_LIMIT = 128
#: The default retry policy: 3 attempts, exponential backoff with jitter, Retry-After.
DEFAULT_RETRY = RetryPolicy()

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

#: The metadata key that carries an item's input index into its run's trace.
INDEX_METADATA_KEY = "batchkit_index"

Inputs = Iterable[InputT] | AsyncIterable[InputT]
CallConfig = RunnableConfig | Sequence[RunnableConfig] | None


class _Configs:
    """The RunnableConfig of each item: the caller's, plus the item's index in metadata."""

    __slots__ = ("_base", "_per_item")

    def __init__(self, config: CallConfig, handler: BaseCallbackHandler | None = None) -> None:
        self._base: RunnableConfig | None = None
        self._per_item: list[RunnableConfig] | None = None
        if config is None or isinstance(config, dict):
            self._base = _prepare(config, handler)
        else:
            self._per_item = [_prepare(c, handler) for c in config]

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


def _prepare(config: RunnableConfig | None, handler: BaseCallbackHandler | None) -> RunnableConfig:
    """The caller's config without its run id (several items cannot share one), and
    with our handler added to its callbacks, so nested runs inherit it."""
    prepared = ensure_config(config).copy()
    prepared.pop("run_id", None)
    return prepared if handler is None else with_handler(prepared, handler)


def _size_of(inputs: object) -> int | None:
    return len(inputs) if isinstance(inputs, Sized) else None


async def _aenumerate(inputs: AsyncIterable[InputT]) -> AsyncIterator[tuple[int, InputT]]:
    i = 0
    async for value in inputs:
        yield i, value
        i += 1


def _indexed(inputs: Inputs[InputT]) -> IndexedSource[InputT]:
    if isinstance(inputs, AsyncIterable):
        return _aenumerate(inputs)
    return enumerate(inputs)


class BatchKit(Runnable[InputT, ItemResult[InputT, OutputT]], Generic[InputT, OutputT]):
    """A Runnable that runs another Runnable safely over many inputs.

    Every input yields an :class:`ItemResult`: one failure never fails the batch.
    ``invoke``/``ainvoke`` return one ItemResult, ``batch``/``abatch`` a
    :class:`BatchResult` (a list), ``batch_as_completed``/``abatch_as_completed``
    ``(index, ItemResult)`` pairs as items finish. It can stand inside a larger
    LCEL chain, where failures flow on as values.

    Create it with :func:`batchkit`.

    Attributes:
        bound: the wrapped Runnable.
        last_run: the results of the most recent batch run on this kit, set when
            the run ends, also when it ends by KeyboardInterrupt or cancellation
            (then ``last_run.complete`` is False and it holds the finished items).
    """

    bound: Runnable[InputT, OutputT]
    last_run: BatchResult[InputT, OutputT] | None

    def __init__(
        self,
        bound: Runnable[InputT, OutputT],
        *,
        max_concurrency: MaxConcurrency = "auto",
        retry: RetryPolicy | None = DEFAULT_RETRY,
        rate_limit: RateLimit | None = None,
        checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
        key: Callable[[InputT], str] | None = None,
        retry_failed: bool = False,
        progress: bool | None = None,
        on_progress: ProgressCallback | None = None,
        desc: str | None = None,
    ) -> None:
        if not isinstance(bound, Runnable):
            raise ConfigurationError(
                f"batchkit() wraps a Runnable (an LCEL chain, a model, a RunnableLambda); "
                f"got {type(bound).__name__}"
            )
        if progress is not None and not isinstance(progress, bool):
            raise ConfigurationError(f"progress must be True, False or None, got {progress!r}")
        if on_progress is not None and not callable(on_progress):
            raise ConfigurationError("on_progress must be a callable taking a ProgressEvent")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {retry!r}")
        if retry is not None and retry.max_attempts > 1:
            _warn_about_sdk_retries(bound, retry)
        self.bound = bound
        self.max_concurrency = validate_max_concurrency(max_concurrency)
        self.progress = progress
        self.on_progress = on_progress
        self.desc = desc or bound.get_name()
        self.name = f"batchkit({bound.get_name()})"
        self.last_run = None
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigurationError(f"rate_limit must be a RateLimit or None, got {rate_limit!r}")
        if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
            if not isinstance(checkpoint, str | os.PathLike):
                raise ConfigurationError(
                    f"checkpoint must be a path or a Checkpoint, got {type(checkpoint).__name__}"
                )
            checkpoint = Checkpoint(checkpoint)
        if key is not None and not callable(key):
            raise ConfigurationError("key must be a callable returning each input's str key")
        if key is not None and checkpoint is None:
            raise ConfigurationError("key= names items in a checkpoint: pass checkpoint= too")
        self.retry = retry
        self.rate_limit = rate_limit
        self.checkpoint = checkpoint
        self.key = key
        self.retry_failed = retry_failed
        self._handler = rate_limit.callback if rate_limit is not None else None
        self._engine: Engine[InputT, OutputT] = Engine(bound, retry=retry)

    # -- Runnable plumbing -------------------------------------------------------------

    @property
    def InputType(self) -> Any:
        return self.bound.InputType

    @property
    def OutputType(self) -> Any:
        return ItemResult

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return cast(type[BaseModel], self.bound.get_input_schema(config))

    def __repr__(self) -> str:
        return f"BatchKit(bound={self.bound.get_name()}, max_concurrency={self.max_concurrency!r})"

    # -- single items --------------------------------------------------------------------

    def invoke(
        self, input: InputT, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ItemResult[InputT, OutputT]:
        """Run one input; return its ItemResult (never raises for the item's error)."""
        return run_sync(self.ainvoke(input, config, **kwargs))

    async def ainvoke(
        self, input: InputT, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ItemResult[InputT, OutputT]:
        """Async twin of :meth:`invoke`."""
        return await self._engine.run_item(0, input, _prepare(config, self._handler), kwargs)

    # -- batches -------------------------------------------------------------------------

    def batch(
        self,
        inputs: Iterable[InputT],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> BatchResult[InputT, OutputT]:
        """Run every input; return a BatchResult in input order. Never raises for an item.

        Works inside a running event loop (a Jupyter cell). ``return_exceptions`` is
        accepted for LCEL compatibility and has no effect: errors are always values.
        """
        run = self._plan(inputs, config, kwargs)
        return run_sync(self._collect(run))

    async def abatch(
        self,
        inputs: Inputs[InputT],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> BatchResult[InputT, OutputT]:
        """Async twin of :meth:`batch`; also accepts iterables and async iterables."""
        return await self._collect(self._plan(inputs, config, kwargs))

    def batch_as_completed(  # type: ignore[override]
        self,
        inputs: Iterable[InputT],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> Iterator[tuple[int, ItemResult[InputT, OutputT]]]:
        """Yield ``(index, ItemResult)`` as items finish; leaving early cancels the rest."""
        run = self._plan(inputs, config, kwargs)
        for result in iterate_sync(self._stream(run)):
            yield result.index, result

    async def abatch_as_completed(  # type: ignore[override]
        self,
        inputs: Inputs[InputT],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> AsyncIterator[tuple[int, ItemResult[InputT, OutputT]]]:
        """Async twin of :meth:`batch_as_completed`."""
        async with aclosing(self._stream(self._plan(inputs, config, kwargs))) as stream:
            async for result in stream:
                yield result.index, result

    def stream_results(
        self,
        inputs: Iterable[InputT],
        config: RunnableConfig | None = None,
        *,
        ordered: bool = False,
        reorder_buffer: int = 1000,
        **kwargs: Any,
    ) -> Iterator[ItemResult[InputT, OutputT]]:
        """Yield ItemResults as they complete, reading ``inputs`` lazily.

        Memory stays bounded whatever the input's length: at most the items in
        flight, a read-ahead of one checkpoint chunk, and with ``ordered=True`` at
        most ``reorder_buffer`` finished items held back to restore input order
        (new items wait while it is full).
        """
        run = self._plan(inputs, config, kwargs, ordered=ordered, reorder_buffer=reorder_buffer)
        yield from iterate_sync(self._stream(run))

    async def astream_results(
        self,
        inputs: Inputs[InputT],
        config: RunnableConfig | None = None,
        *,
        ordered: bool = False,
        reorder_buffer: int = 1000,
        **kwargs: Any,
    ) -> AsyncIterator[ItemResult[InputT, OutputT]]:
        """Async twin of :meth:`stream_results`; also accepts async iterables."""
        run = self._plan(inputs, config, kwargs, ordered=ordered, reorder_buffer=reorder_buffer)
        async with aclosing(self._stream(run)) as stream:
            async for result in stream:
                yield result

    def run(self, inputs: Iterable[InputT], config: RunnableConfig | None = None) -> RunReport:
        """Run every input and keep only counts (and failures): for inputs too big for a list.

        Results go to the checkpoint (if any) as they finish; read them back with
        ``kit.checkpoint.iter_results()`` / ``to_jsonl()``. Memory does not grow with
        the number of inputs (beyond failed items, of which the first 1,000 are kept).
        """
        run = self._plan(inputs, config, {})
        return run_sync(self._report(run))

    async def arun(self, inputs: Inputs[InputT], config: RunnableConfig | None = None) -> RunReport:
        """Async twin of :meth:`run`."""
        return await self._report(self._plan(inputs, config, {}))

    # -- the shared path -------------------------------------------------------------------

    def _plan(
        self,
        inputs: Inputs[InputT] | Sequence[tuple[int, InputT]],
        config: CallConfig,
        kwargs: dict[str, Any],
        *,
        indexed: bool = False,
        ordered: bool = False,
        reorder_buffer: int = 1000,
    ) -> _Run[InputT]:
        if type(reorder_buffer) is not int or reorder_buffer < 1:
            raise ConfigurationError(f"reorder_buffer must be an int >= 1, got {reorder_buffer!r}")
        n_items = _size_of(inputs)
        configs = _Configs(config, self._handler)
        if not indexed:
            configs.check_length(n_items)
        adaptive = None
        if isinstance(self.max_concurrency, int):
            concurrency = self.max_concurrency
        elif configs.max_concurrency is not None:
            value = validate_max_concurrency(configs.max_concurrency, "config['max_concurrency']")
            concurrency = resolve_max_concurrency(value, n_items)
        else:
            concurrency = resolve_max_concurrency(self.max_concurrency, n_items)
            if self.max_concurrency == "auto":
                # Behind a RateLimit the limiter paces requests, so items may grow past
                # the table value; without one, pushback lowers it and successes restore it.
                ceiling = AUTO_CEILING_WITH_RATE_LIMIT if self.rate_limit else concurrency
                adaptive = AdaptiveConcurrency(concurrency, ceiling)
        source = (
            iter(cast(Sequence[tuple[int, InputT]], inputs))
            if indexed
            else _indexed(cast(Inputs[InputT], inputs))
        )
        resume = (
            Resume(self.checkpoint, self.key, include_failed=self.retry_failed or indexed)
            if self.checkpoint is not None
            else None
        )
        run = _Run(source, configs, config, n_items, concurrency, kwargs, adaptive)
        run.resume, run.ordered, run.reorder_buffer = resume, ordered, reorder_buffer
        return run

    async def _stream(self, run: _Run[InputT]) -> AsyncGenerator[ItemResult[InputT, OutputT], None]:
        reporter = ProgressReporter(
            run.n_items, show_bar=self.progress, callback=self.on_progress, desc=self.desc
        )
        stream = self._engine.stream(
            run.source,
            concurrency=run.concurrency,
            config_for=run.configs,
            reporter=reporter,
            kwargs=run.kwargs,
            adaptive=run.adaptive,
            resume=run.resume,
            ordered=run.ordered,
            reorder_buffer=run.reorder_buffer,
            on_unyielded=run.on_unyielded,
        )
        if run.resume is not None:
            run.resume.checkpoint.open(fingerprint_of(self.bound))
        try:
            async with aclosing(stream):
                async for result in stream:
                    yield result
        finally:
            reporter.close()
            if run.resume is not None:
                run.resume.checkpoint.close()

    async def _collect(self, run: _Run[InputT]) -> BatchResult[InputT, OutputT]:
        started = time.perf_counter()
        collected: list[ItemResult[InputT, OutputT]] = []
        complete = False
        run.on_unyielded = collected.append  # finished as the run was interrupted: kept
        try:
            async with aclosing(self._stream(run)) as stream:
                async for result in stream:
                    collected.append(result)
            complete = True
        finally:
            self.last_run = BatchResult(
                collected,
                wall_time=time.perf_counter() - started,
                complete=complete,
                rerunner=self,
                config=run.config if isinstance(run.config, dict) else None,
            )
        return self.last_run

    async def _report(self, run: _Run[InputT]) -> RunReport:
        started = time.perf_counter()
        ok = failed = attempts = 0
        usage = TokenUsage()
        failures: list[ItemResult[Any, Any]] = []
        async with aclosing(self._stream(run)) as stream:
            async for result in stream:
                if result.error is None:
                    ok += 1
                else:
                    failed += 1
                    if len(failures) < RunReport.MAX_FAILURES:
                        failures.append(result)
                attempts += result.attempts
                if result.usage is not None:
                    usage = usage + result.usage
        wall = time.perf_counter() - started
        total = ok + failed
        summary = BatchSummary(
            total, ok, failed, wall, total / wall if wall > 0 else 0.0, attempts, usage
        )
        return RunReport(summary, failures, self.checkpoint)

    def _rerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]:
        run = self._plan(pairs, config, {}, indexed=True)
        return run_sync(self._collect(run))

    async def _arerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]:
        return await self._collect(self._plan(pairs, config, {}, indexed=True))


class _Run(Generic[InputT]):
    """Everything one batch run needs, decided before it starts."""

    __slots__ = (
        "adaptive",
        "concurrency",
        "config",
        "configs",
        "kwargs",
        "n_items",
        "on_unyielded",
        "ordered",
        "reorder_buffer",
        "resume",
        "source",
    )

    def __init__(
        self,
        source: IndexedSource[InputT],
        configs: _Configs,
        config: CallConfig,
        n_items: int | None,
        concurrency: int,
        kwargs: dict[str, Any],
        adaptive: AdaptiveConcurrency | None = None,
    ) -> None:
        self.source = source
        self.configs = configs
        self.config = config
        self.n_items = n_items
        self.concurrency = concurrency
        self.kwargs = kwargs
        self.adaptive = adaptive
        self.resume: Resume | None = None
        self.on_unyielded: Callable[[ItemResult[Any, Any]], None] | None = None
        self.ordered = False
        self.reorder_buffer = 1000


def _warn_about_sdk_retries(bound: Runnable[Any, Any], retry: RetryPolicy) -> None:
    for name, sdk in sdk_retrying_models(bound):
        logger.warning(
            "%s retries inside the openai SDK (max_retries=%d) and batchkit retries each item "
            "(max_attempts=%d): one item may be sent up to %d times. Use "
            "%s(max_retries=0) to let batchkit alone decide (it honours Retry-After too and "
            "keeps each attempt's error), or batchkit(..., retry=None) to leave it to the SDK.",
            name,
            sdk,
            retry.max_attempts,
            (sdk + 1) * retry.max_attempts,
            name,
        )


def batchkit(
    runnable: Runnable[InputT, OutputT],
    *,
    max_concurrency: MaxConcurrency = "auto",
    retry: RetryPolicy | None = DEFAULT_RETRY,
    rate_limit: RateLimit | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
    key: Callable[[InputT], str] | None = None,
    retry_failed: bool = False,
    progress: bool | None = None,
    on_progress: ProgressCallback | None = None,
    desc: str | None = None,
) -> BatchKit[InputT, OutputT]:
    """Wrap ``runnable`` so it runs safely over many inputs.

    Args:
        runnable: any Runnable: ``prompt | llm | parser``, a model, a RunnableLambda.
        max_concurrency: items in flight at once: an int (always wins), ``"auto"``
            (size-based, see :func:`concurrency_for_size`), or a preset name from
            :data:`PRESETS`. A ``max_concurrency`` in the call's config is used when
            this is not an int.
        retry: how to retry transient failures (429, timeouts, dropped connections,
            5xx) per item; ``None`` never retries. The default makes 3 attempts with
            exponential backoff and jitter, honouring ``Retry-After``. If the chain's
            ``ChatOpenAI`` keeps the SDK's own retries on (its default), a warning
            explains how the two multiply; ``ChatOpenAI(max_retries=0)`` avoids it.
        rate_limit: a :class:`RateLimit` pacing every model request the chain makes
            (requests and tokens per minute, requests in flight), shared with every
            kit it is given to.
        checkpoint: a SQLite file path or :class:`Checkpoint`: every finished item is
            committed there, and a run with the same checkpoint skips the items it
            already holds (returning them as they were), so a crashed run resumes.
        key: each input's checkpoint key (an id field, a content hash) so a changed or
            reordered input still resumes right; default: the input's index.
        retry_failed: on resume, run the items the checkpoint holds as failed again
            (by default they are returned as failed, not called).
        progress: ``None`` shows a ``tqdm.auto`` bar for 10+ items (or unknown
            length), ``True`` always, ``False`` never.
        on_progress: called with a :class:`ProgressEvent` per finished item.
        desc: the bar's label (default: the runnable's name).

    Returns:
        A :class:`BatchKit`.

    Example:
        >>> kit = batchkit(prompt | llm | StrOutputParser())   # doctest: +SKIP
        >>> results = kit.batch(topics)                         # doctest: +SKIP
        >>> print(results.summary()); results.failed            # doctest: +SKIP
    """
    return BatchKit(
        runnable,
        max_concurrency=max_concurrency,
        retry=retry,
        rate_limit=rate_limit,
        checkpoint=checkpoint,
        key=key,
        retry_failed=retry_failed,
        progress=progress,
        on_progress=on_progress,
        desc=desc,
    )
