"""One call on a kit, from its arguments to a :class:`Run`, before anything starts.

Which options apply (the kit's, with the ones passed to this call), which keywords
go to the chain, how many items may be in flight, where the inputs come from and
whether a checkpoint resumes: decided here, once for every entry point of
:class:`BatchKit`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence, Sized
from typing import Any, Generic, TypeVar, cast

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable, RunnableConfig

from langchain_batchkit._attempts import RunPlan
from langchain_batchkit._budget import BudgetCallback
from langchain_batchkit._clock import Clock
from langchain_batchkit._concurrency import (
    AdaptiveConcurrency,
    resolve_max_concurrency,
    validate_max_concurrency,
)
from langchain_batchkit._drivers import Reader
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._flex import with_service_tier
from langchain_batchkit._options import OPTION_NAMES, KitOptions
from langchain_batchkit._resume import Resume
from langchain_batchkit._retry import clock_of
from langchain_batchkit._runs import CallConfig, ItemConfigs, Run
from langchain_batchkit._validate import check_int

__all__ = [
    "AUTO_CEILING_WITH_RATE_LIMIT",
    "Inputs",
    "RunMaker",
    "split_options",
    "window_size",
]

#: How far ``"auto"`` may grow items in flight when a RateLimit paces the requests.
AUTO_CEILING_WITH_RATE_LIMIT = 128

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

Inputs = Iterable[InputT] | AsyncIterable[InputT]


def split_options(options: KitOptions, kwargs: dict[str, Any]) -> tuple[KitOptions, dict[str, Any]]:
    """This call's options (``options``, with the ones passed here) and the chain's kwargs."""
    overrides = {k: v for k, v in kwargs.items() if k in OPTION_NAMES}
    chain_kwargs = {k: v for k, v in kwargs.items() if k not in OPTION_NAMES}
    return options.replace(overrides), chain_kwargs


class RunMaker(Generic[InputT, OutputT]):
    """What every entry point of :class:`BatchKit` starts with: :meth:`_make_run` for a
    batch, :meth:`_single_plan` for one item."""

    __slots__ = ()

    bound: Runnable[InputT, OutputT]
    name: str | None
    _options: KitOptions

    def _single_plan(
        self, config: RunnableConfig | None, kwargs: dict[str, Any]
    ) -> RunPlan[InputT, OutputT]:
        """The plan of an ``invoke``: one item, keeping the caller's run id."""
        opts, chain_kwargs = split_options(self._options, kwargs)
        configs = ItemConfigs(config, _handlers(opts), keep_run_id=True)
        return _plan(self.bound, self._item_name(), opts, configs, chain_kwargs)

    def _item_name(self) -> str:
        """The name of the kit's own run per item."""
        return self.name or self.bound.get_name()

    def _make_run(
        self,
        inputs: Inputs[InputT] | Sequence[tuple[int, InputT]] | None,
        config: CallConfig,
        kwargs: dict[str, Any],
        *,
        sync: bool,
        indexed: bool = False,
        ordered: bool = False,
        reorder_buffer: int = 1000,
    ) -> Run[InputT, OutputT]:
        """The Run of one batch call (not started).

        Args:
            inputs: the inputs, or with ``indexed`` ``(index, input)`` pairs (a re-run).
            config: the call's config, or one per input.
            kwargs: this call's keywords: kit options (overriding the kit's for this
                call), and keywords for the chain.
            sync: the run is driven by worker threads (an async iterable is refused).
            indexed: ``inputs`` are pairs, and items stored as failed run again.
            ordered: results come out in input order.
            reorder_buffer: with ``ordered``, the most finished items held back.

        Raises:
            ConfigurationError: inputs of the wrong kind, or a bad option.
        """
        if inputs is None:
            raise ConfigurationError(
                "batch calls take an iterable of inputs (a list, a generator), got None; "
                "pass [x] for one input, or use invoke(x)"
            )
        if sync and isinstance(inputs, AsyncIterable):
            raise ConfigurationError(
                "an async iterable needs the async entry points: await kit.abatch(...) "
                "or kit.astream_results(...)"
            )
        check_int("reorder_buffer", reorder_buffer)
        opts, chain_kwargs = split_options(self._options, kwargs)
        n_items = len(inputs) if isinstance(inputs, Sized) else None
        configs = ItemConfigs(config, _handlers(opts))
        if not indexed:
            configs.check_length(n_items)
        concurrency, adaptive = window_size(opts, configs, n_items)
        if indexed:
            source: Any = iter(cast(Sequence[tuple[int, InputT]], inputs))
        elif isinstance(inputs, AsyncIterable):
            source = _aenumerate(inputs)
        else:
            source = enumerate(cast(Iterable[InputT], inputs))
        resume = None
        if opts.checkpoint is not None:
            resume = Resume(opts.checkpoint, opts.key, rerun_failed=opts.retry_failed or indexed)
        bound = self.bound
        return Run(
            bound,
            _plan(bound, self._item_name(), opts, configs, chain_kwargs),
            Reader(source),
            options=opts,
            config=config,
            n_items=n_items,
            concurrency=concurrency,
            adaptive=adaptive,
            resume=resume,
            ordered=ordered,
            reorder_buffer=reorder_buffer,
        )


def window_size(
    opts: KitOptions, configs: ItemConfigs, n_items: int | None
) -> tuple[int, AdaptiveConcurrency | None]:
    """Items in flight at the start, and the adaptive limit when ``"auto"`` may move it."""
    setting = opts.max_concurrency
    if isinstance(setting, int):
        return setting, None
    if configs.max_concurrency is not None:
        value = validate_max_concurrency(configs.max_concurrency, "config['max_concurrency']")
        return resolve_max_concurrency(value, n_items), None
    concurrency = resolve_max_concurrency(setting, n_items)
    if setting != "auto":
        return concurrency, None
    # Behind a RateLimit the limiter paces requests, so items may grow past the
    # table value; without one, pushback lowers it and successes restore it.
    ceiling = AUTO_CEILING_WITH_RATE_LIMIT if opts.rate_limit else concurrency
    return concurrency, AdaptiveConcurrency(concurrency, ceiling)


def _handlers(opts: KitOptions) -> list[BaseCallbackHandler]:
    """The kit's own handlers for every model call: the budget first (a refused call
    never waits for the rate limiter), the rate limiter last (it may wait)."""
    handlers: list[BaseCallbackHandler] = []
    if opts.budget is not None:
        handlers.append(BudgetCallback(opts.budget, opts.price_book))
    if opts.rate_limit is not None:
        handlers.append(opts.rate_limit.callback)
    return handlers


def _plan(
    bound: Runnable[InputT, OutputT],
    name: str,
    opts: KitOptions,
    configs: ItemConfigs,
    kwargs: dict[str, Any],
) -> RunPlan[InputT, OutputT]:
    clock: Clock = opts.clock or clock_of(opts.retry)
    return RunPlan(
        bound,
        config_for=configs,
        kwargs=kwargs,
        policy=opts.retry,
        clock=clock,
        name=name,
        observed=configs.observed,
        prices=opts.price_book,
        budget=opts.budget,
        flex=with_service_tier(bound, "flex") if opts.flex else None,
        flex_deadline=opts.flex_deadline,
        reask=opts.reask,
    )


async def _aenumerate(inputs: AsyncIterable[InputT]) -> AsyncIterator[tuple[int, InputT]]:
    i = 0
    async for value in inputs:
        yield i, value
        i += 1
