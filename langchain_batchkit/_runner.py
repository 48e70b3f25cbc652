"""The wrapper Runnable users hold: :class:`BatchKit`, made by :func:`batchkit`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import aclosing, closing
from typing import Any, Generic, TypeVar, cast

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import BaseModel

from langchain_batchkit._budget import Budget
from langchain_batchkit._calls import Inputs
from langchain_batchkit._checkpoint import Checkpoint
from langchain_batchkit._clock import Clock
from langchain_batchkit._concurrency import MaxConcurrency
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._estimate import CostEstimate, estimate
from langchain_batchkit._flex import DEFAULT_FLEX_DEADLINE
from langchain_batchkit._introspect import display_name, sdk_retrying_models
from langchain_batchkit._limits import RateLimit
from langchain_batchkit._options import DEFAULT_RETRY, OPTION_NAMES, KitOptions
from langchain_batchkit._prices import Price, PriceBook
from langchain_batchkit._progress import ProgressCallback
from langchain_batchkit._reask import Reask, reask_chain
from langchain_batchkit._results import BatchResult, ItemResult
from langchain_batchkit._retry import RetryPolicy
from langchain_batchkit._runs import INDEX_METADATA_KEY, Run
from langchain_batchkit._schema import item_result_schema
from langchain_batchkit._steps import invoke_async, invoke_sync
from langchain_batchkit._streams import StreamingCalls

__all__ = ["INDEX_METADATA_KEY", "BatchKit", "batchkit"]

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


class BatchKit(
    StreamingCalls[InputT, OutputT],
    Runnable[InputT, ItemResult[InputT, OutputT]],
    Generic[InputT, OutputT],
):
    """A Runnable that runs another Runnable safely over many inputs.

    Every input yields an :class:`ItemResult`: one failure never fails the batch.
    ``invoke``/``ainvoke`` return one ItemResult, ``batch``/``abatch`` a
    :class:`BatchResult` (a list), ``batch_as_completed``/``abatch_as_completed``
    ``(index, ItemResult)`` pairs as items finish. It can stand inside a larger
    LCEL chain, where failures flow on as values.

    Sync calls run the chain's own sync path in worker threads, async calls run
    tasks on the caller's loop; neither runs the chain on a private event loop.
    Each item is one run named ``batchkit(<chain>)`` with the chain's run (one
    per attempt) as its child. Every batch call also takes the kit's options
    (``kit.batch(xs, progress=False)``) for that call only; other keywords go to
    the chain.

    Create it with :func:`batchkit`.

    Attributes:
        bound: the wrapped Runnable.
        options: the kit's :class:`KitOptions` (read-only; see :meth:`with_options`).
        last_run: the results of the most recent ``batch``/``abatch`` on this kit,
            set when the run ends, also by KeyboardInterrupt or cancellation
            (then ``last_run.complete`` is False and it holds the finished items).
    """

    bound: Runnable[InputT, OutputT]
    last_run: BatchResult[InputT, OutputT] | None

    def __init__(self, bound: Runnable[InputT, OutputT], options: KitOptions | None = None):
        if not isinstance(bound, Runnable):
            raise ConfigurationError(
                f"batchkit() wraps a Runnable (an LCEL chain, a model, a RunnableLambda); "
                f"got {type(bound).__name__}"
            )
        options = options or KitOptions()
        if not isinstance(options, KitOptions):
            raise ConfigurationError(f"options must be a KitOptions, got {options!r}")
        self.bound = bound
        self._options = options
        self.name = f"batchkit({bound.get_name()})"
        self.last_run = None
        if options.retry is not None and options.retry.max_attempts > 1:
            _warn_about_sdk_retries(bound, options.retry)
        if options.reask is not None:
            reask_chain(bound)  # a chain that cannot be re-asked fails here, not per item

    # -- options (read-only) ---------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if name in OPTION_NAMES:
            raise AttributeError(
                f"kit options are read-only (setting {name} would not reach a running "
                f"engine): use kit = kit.with_options({name}=...), or pass {name}= to the call"
            )
        super().__setattr__(name, value)

    @property
    def options(self) -> KitOptions:
        """The kit's options, an immutable value."""
        return self._options

    def with_options(self, **changes: Any) -> BatchKit[InputT, OutputT]:
        """A new kit over the same chain with some options changed.

        Example:
            >>> patient = kit.with_options(retry=RetryPolicy(max_attempts=6))  # doctest: +SKIP
        """
        return BatchKit(self.bound, self._options.replace(changes))

    @property
    def max_concurrency(self) -> MaxConcurrency:
        return self._options.max_concurrency

    @property
    def retry(self) -> RetryPolicy | None:
        return self._options.retry

    @property
    def rate_limit(self) -> RateLimit | None:
        return self._options.rate_limit

    @property
    def checkpoint(self) -> Checkpoint | None:
        return self._options.checkpoint

    @property
    def budget(self) -> Budget | None:
        return self._options.budget

    @property
    def desc(self) -> str:
        return self._options.desc or display_name(self.bound)

    def estimate(
        self,
        inputs: Iterable[InputT],
        *,
        total: int | None = None,
        look_at: int = 200,
        sample: int = 0,
    ) -> CostEstimate:
        """What running ``inputs`` will cost and take, before paying for it.

        The prompts of up to ``look_at`` inputs (spread over a list) are built and
        counted without sending anything: each input is stopped at its first model
        call. ``sample=20`` also runs that many inputs for real (it is paid, and its
        cost is shown) to measure output tokens, later model steps and latency; the
        sample's results are kept on the estimate.

        Args:
            inputs: a list (not consumed), or an iterator: then the first inputs are
                read and handed back as ``estimate.inputs`` (them, then the rest).
            total: the number of inputs of an iterator (a list knows its own).
            look_at: the most prompts counted.
            sample: inputs run for real to measure the output (0: none, free).

        Example:
            >>> estimate = kit.estimate(prompts, sample=20)     # doctest: +SKIP
            >>> print(estimate)                                  # doctest: +SKIP
        """
        return estimate(
            self, inputs, total=total, look_at=look_at, sample=sample,
            prices=self._options.price_book,
        )  # fmt: skip

    # -- Runnable plumbing -------------------------------------------------------------

    @property
    def InputType(self) -> Any:
        return self.bound.InputType

    @property
    def OutputType(self) -> Any:
        return ItemResult

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return cast(type[BaseModel], self.bound.get_input_schema(config))

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        name = f"{self.bound.get_name()}ItemResult"
        return item_result_schema(name, self.bound.InputType, self.bound.OutputType)

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return self.bound.config_specs

    def __repr__(self) -> str:
        return f"BatchKit(bound={self.bound.get_name()}, max_concurrency={self.max_concurrency!r})"

    # -- single items --------------------------------------------------------------------

    def invoke(
        self, input: InputT, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ItemResult[InputT, OutputT]:
        """Run one input in this thread; return its ItemResult (never raises for the item)."""
        plan = self._single_plan(config, kwargs)
        return invoke_sync(plan, plan.new_item(0, 0, input, None))

    async def ainvoke(
        self, input: InputT, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ItemResult[InputT, OutputT]:
        """Async twin of :meth:`invoke`."""
        plan = self._single_plan(config, kwargs)
        return await invoke_async(plan, plan.new_item(0, 0, input, None))

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

        Worker threads call the chain's sync path, at most ``max_concurrency`` at
        once, so it works inside a running event loop (a Jupyter cell).
        ``return_exceptions`` is accepted for LCEL compatibility and has no
        effect: errors are always values. Kit options (``progress=False``,
        ``max_concurrency=4``, ...) apply to this call; other keywords go to the chain.
        """
        return self._collect(self._make_run(inputs, config, kwargs, sync=True))

    async def abatch(
        self,
        inputs: Inputs[InputT],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> BatchResult[InputT, OutputT]:
        """Async twin of :meth:`batch`; also accepts iterables and async iterables."""
        return await self._acollect(self._make_run(inputs, config, kwargs, sync=False))

    # -- the shared path -------------------------------------------------------------------

    def _collect(self, run: Run[InputT, OutputT]) -> BatchResult[InputT, OutputT]:
        with _Keeping(self, run) as kept, closing(run.iterate()) as stream:
            for result in stream:
                kept.append(result)
        return kept.result()

    async def _acollect(self, run: Run[InputT, OutputT]) -> BatchResult[InputT, OutputT]:
        with _Keeping(self, run) as kept:
            async with aclosing(run.aiterate()) as stream:
                async for result in stream:
                    kept.append(result)
        return kept.result()

    def _rerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]:
        return self._collect(self._make_run(pairs, config, {}, sync=True, indexed=True))

    async def _arerun(
        self, pairs: Sequence[tuple[int, InputT]], config: RunnableConfig | None
    ) -> BatchResult[InputT, OutputT]:
        return await self._acollect(self._make_run(pairs, config, {}, sync=False, indexed=True))


class _Keeping(Generic[InputT, OutputT]):
    """Collects a batch call's results and keeps them on the kit as ``last_run`` when
    the run ends, however it ends (then ``complete`` says whether it ran to the end);
    items that finished as the run was interrupted are kept too."""

    __slots__ = ("_kit", "_results", "_run", "_started")

    def __init__(self, kit: BatchKit[InputT, OutputT], run: Run[InputT, OutputT]) -> None:
        self._kit, self._run = kit, run
        self._results: list[ItemResult[InputT, OutputT]] = []
        run.on_unyielded = self._results.append

    def __enter__(self) -> _Keeping[InputT, OutputT]:
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        run = self._run
        result = BatchResult(
            self._results,
            wall_time=time.perf_counter() - self._started,
            complete=kind is None,
            rerunner=self._kit,
            config=run.config if isinstance(run.config, dict) else None,
            timeline=run.timeline,
        )
        result.flex_saved = run.plan.flex_saved if run.options.flex else None
        result.stopped_at = run.stopped_at
        self._kit.last_run = result

    def append(self, result: ItemResult[InputT, OutputT]) -> None:
        self._results.append(result)

    def result(self) -> BatchResult[InputT, OutputT]:
        assert self._kit.last_run is not None
        return self._kit.last_run


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
    clock: Clock | None = None,
    budget: Budget | None = None,
    prices: PriceBook | Mapping[str, Price] | None = None,
    flex: bool = False,
    flex_deadline: float = DEFAULT_FLEX_DEADLINE,
    reask: Reask | None = None,
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
        desc: the bar's label (default: the chain's ``run_name``, else its chat
            model's name, else the runnable's name; see :func:`display_name`).
        clock: the :class:`Clock` retry waits are measured on (default: the retry
            policy's clock, the system clock unless one was injected).
        budget: a :class:`Budget` (dollars) shared by reference: every model call
            reserves its worst case first, and once one would pass the cap no new
            item starts; items not run are reported as such (``status="not_run"``).
        prices: your own prices per model (``{"my-ft": Price(input=.., output=..)}``
            or a ``PriceBook``), over the ``genai-prices`` database; each item's
            ``cost`` and the summary's total use them.
        flex: run the chain's OpenAI chat models with ``service_tier="flex"`` (half
            price, slower, sometimes "Resource unavailable"), falling back to the
            standard tier per item after ``flex_deadline`` seconds.
        flex_deadline: seconds from an item's first attempt until its retries run on
            the standard tier.
        reask: a :class:`Reask`: when the model's answer fails to parse or validate
            (``OutputParserException``, pydantic ``ValidationError``), send it back
            with the error and ask again, up to ``Reask.max_attempts`` answers; each
            rejected answer is kept in ``result.history``. The chain needs one chat
            model step followed by its parser (``llm.with_structured_output(...)``),
            else :class:`ConfigurationError` here.

    Returns:
        A :class:`BatchKit`; every option is also accepted per call
        (``kit.batch(xs, progress=False)``) and by :meth:`BatchKit.with_options`.

    Example:
        >>> kit = batchkit(prompt | llm | StrOutputParser())   # doctest: +SKIP
        >>> results = kit.batch(topics)                         # doctest: +SKIP
        >>> print(results.summary()); results.failed            # doctest: +SKIP
    """
    options = KitOptions(
        max_concurrency=max_concurrency,
        retry=retry,
        rate_limit=rate_limit,
        checkpoint=cast(Any, checkpoint),
        key=key,
        retry_failed=retry_failed,
        progress=progress,
        on_progress=on_progress,
        desc=desc,
        clock=clock,
        budget=budget,
        prices=prices,
        flex=flex,
        flex_deadline=flex_deadline,
        reask=reask,
    )
    return BatchKit(runnable, options)
