"""BatchKitMapper: the callable class Ray Data's ``map_batches`` runs in each actor."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable

from langchain_batchkit._concurrency import MaxConcurrency
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._options import UNSET, KitOptions, Unset, merge_options
from langchain_batchkit._retry import RetryPolicy
from langchain_batchkit._runner import BatchKit
from langchain_batchkit._serialize import loads_value
from langchain_batchkit.ray._deps import require_ray
from langchain_batchkit.ray._limiter import ClusterRateLimit
from langchain_batchkit.ray._rows import check_column_names, result_table

if TYPE_CHECKING:
    import pyarrow as pa  # type: ignore[import-untyped]

__all__ = ["BatchKitMapper", "ChainFactory", "check_mapper_options", "worker_options"]

logger = logging.getLogger(__name__)

#: Builds the chain inside each worker: chains and HTTP clients do not always pickle.
ChainFactory = Callable[[], Runnable[Any, Any]]


class BatchKitMapper:
    """Runs a chain over Ray Data blocks with batchkit: one result row per input row.

    Ray Data creates one instance per actor and calls it with each block (as a
    ``pyarrow.Table``). The chain is built **once per actor**, from
    ``chain_factory``, because a chain holding an HTTP client does not always
    pickle and should not be rebuilt per block. Each block goes through batchkit's
    async engine, so an item that fails is a row with ``status="failed"``, its
    error type and message, never a lost block; the block's other items are not
    called again. Rows carry ``id_column`` over from the input so they can be
    joined back (Ray Data does not keep row order).

    The method is a coroutine, so Ray Data overlaps up to 4 batches of a block on
    the actor's event loop, and with ``max_concurrent_calls_per_actor`` (as
    :func:`run_on_ray` sets it) several blocks too: no block's slowest item idles
    the worker. A :class:`ClusterRateLimit` paces every worker from one budget.

    Args:
        chain_factory: a picklable callable returning the Runnable to run.
        input_column: the column holding each item's input; ``None`` passes the
            whole row (a dict, e.g. a prompt template's variables).
        id_column: a column to copy into the result rows, or ``None``.
        rate_limit: the cluster's shared budget (optional).
        options: the worker kits' :class:`KitOptions` (retry policy, items in flight
            per block, clock ...), as ``kit.options`` of a local kit. A ``RateLimit``,
            a checkpoint or ``on_progress`` cannot work across processes and is
            refused; workers never show a bar.
        retry: batchkit's per-item retry policy (``None``: no retries); given, it
            replaces ``options.retry``.
        max_concurrency: items in flight per block (batchkit's rules, ``"auto"``);
            given, it replaces ``options.max_concurrency``.
        decode_input: the input column holds :func:`dumps_value` JSON text (what
            :func:`run_on_ray` writes for a Python list), to be decoded first.

    Example:
        >>> ds.map_batches(                                          # doctest: +SKIP
        ...     BatchKitMapper,
        ...     fn_constructor_kwargs={"chain_factory": make_chain,
        ...                            "input_column": "text", "id_column": "id"},
        ...     batch_format="pyarrow", batch_size=64,
        ...     compute=ray.data.ActorPoolStrategy(size=4, max_concurrent_calls_per_actor=4),
        ... )
    """

    def __init__(
        self,
        chain_factory: ChainFactory,
        *,
        input_column: str | None = "input",
        id_column: str | None = None,
        rate_limit: ClusterRateLimit | None = None,
        options: KitOptions | None = None,
        retry: RetryPolicy | Unset | None = UNSET,
        max_concurrency: MaxConcurrency | Unset = UNSET,
        decode_input: bool = False,
    ) -> None:
        require_ray("BatchKitMapper")
        check_mapper_options(chain_factory, input_column, id_column, rate_limit)
        kit_options = worker_options(
            options, {"retry": retry, "max_concurrency": max_concurrency}
        ).replace(
            {
                "progress": False,
                "rate_limit": rate_limit.limiter() if rate_limit is not None else None,
            }
        )
        self.input_column = input_column
        self.id_column = id_column
        self.decode_input = decode_input
        self.kit: BatchKit[Any, Any] = BatchKit(chain_factory(), kit_options)

    async def __call__(self, batch: pa.Table) -> pa.Table:
        """Run every row of ``batch``; return one result row per input row, same ids."""
        names = batch.column_names
        for role, column in (("input_column", self.input_column), ("id_column", self.id_column)):
            if column is not None and column not in names:
                raise ConfigurationError(
                    f"{role} {column!r} is not a column of the dataset (columns: {names})"
                )
        if self.input_column is None:
            inputs: list[Any] = batch.to_pylist()
        else:
            inputs = batch.column(self.input_column).to_pylist()
            if self.decode_input:
                inputs = [loads_value(text) for text in inputs]
        results = await self.kit.abatch(inputs)
        ids = batch.column(self.id_column) if self.id_column is not None else None
        return result_table(results, ids, self.id_column)


def check_mapper_options(
    chain_factory: object,
    input_column: str | None,
    id_column: str | None,
    rate_limit: object,
) -> None:
    """Reject bad options before any actor starts (an actor that fails to build is retried)."""
    if not callable(chain_factory) or isinstance(chain_factory, Runnable):
        raise ConfigurationError(
            "chain_factory must be a callable that builds the chain inside each worker "
            "(e.g. `lambda: prompt | ChatOpenAI(max_retries=0)`), not the chain itself"
        )
    check_column_names(input_column, id_column)
    if rate_limit is not None and not isinstance(rate_limit, ClusterRateLimit):
        raise ConfigurationError(
            "rate_limit must be a ClusterRateLimit: a RateLimit lives in one process, so "
            "each Ray worker would get its own full budget; ClusterRateLimit(...) shares one"
        )


def worker_options(options: KitOptions | None, keywords: dict[str, object]) -> KitOptions:
    """The options every worker's kit runs with: ``options`` with the given keywords
    applied (see :func:`merge_options`), refusing what cannot work across processes.

    Called on the driver before any actor starts, so a bad option fails there, named.
    """
    merged = merge_options(options, keywords)
    if merged.rate_limit is not None:
        raise ConfigurationError(
            "options.rate_limit must be None on Ray: a RateLimit lives in one process, so "
            "each worker would get its own full budget; pass rate_limit=ClusterRateLimit(...)"
        )
    if merged.checkpoint is not None:
        raise ConfigurationError(
            "options.checkpoint is not supported on Ray: each worker would write its own "
            "SQLite file; write the rows with output_path= instead"
        )
    if merged.on_progress is not None:
        raise ConfigurationError(
            "options.on_progress would be called inside each Ray worker, never here; "
            "run_on_ray shows one bar on the driver (progress=, desc=)"
        )
    if merged.budget is not None and not merged.budget.shared_across_processes:
        raise ConfigurationError(
            "options.budget is a Budget of this process: each worker would get its own "
            "copy of the cap; pass budget=ClusterRateLimit(usd=...).budget()"
        )
    return merged
