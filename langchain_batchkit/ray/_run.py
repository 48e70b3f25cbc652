"""run_on_ray: a chain over a list or a Ray Dataset, on a pool of Ray actors."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

from langchain_batchkit._concurrency import MaxConcurrency
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._options import UNSET, KitOptions, Unset
from langchain_batchkit._results import BatchResult, BatchSummary
from langchain_batchkit._retry import RetryPolicy
from langchain_batchkit._serialize import dumps_value
from langchain_batchkit._validate import check_int, check_number
from langchain_batchkit.ray._deps import require_ray
from langchain_batchkit.ray._limiter import ClusterRateLimit
from langchain_batchkit.ray._mapper import (
    BatchKitMapper,
    ChainFactory,
    check_mapper_options,
    worker_options,
)
from langchain_batchkit.ray._progress import BlockBar
from langchain_batchkit.ray._rows import Tally, result_table
from langchain_batchkit.ray._sinks import Sink, format_for, open_sink

if TYPE_CHECKING:
    import pyarrow as pa  # type: ignore[import-untyped]
    from ray.data import Dataset
    from ray.data.dataset import MaterializedDataset
    from typing_extensions import Unpack  # for **kwargs in 3.11; typing's from 3.12

__all__ = ["run_on_ray"]

logger = logging.getLogger(__name__)

#: Blocks one worker runs at once (its event loop overlaps them, so a block's slowest
#: item never idles the worker; Ray Data also overlaps up to 4 batches of one block).
BLOCKS_PER_WORKER = 4

#: The column holding each list item, encoded with ``dumps_value`` (exact round trip).
_LIST_INPUT = "input"


#: The driver's bar label unless ``desc`` (or ``options.desc``) names one.
_DEFAULT_DESC = "batchkit on ray"


class _RunKeywords(TypedDict, total=False):
    """The keywords both shapes of :func:`run_on_ray` take, for its two overloads."""

    input_column: str | None
    id_column: str | None
    batch_size: int
    concurrency: int
    num_cpus: float
    rate_limit: ClusterRateLimit | None
    options: KitOptions | None
    retry: RetryPolicy | None
    max_concurrency: MaxConcurrency
    progress: bool | None
    desc: str


@overload
def run_on_ray(
    chain_factory: ChainFactory,
    data: Dataset | Iterable[Any],
    *,
    output_path: None = ...,
    format: None = ...,
    **keywords: Unpack[_RunKeywords],
) -> MaterializedDataset[Any]: ...


@overload
def run_on_ray(
    chain_factory: ChainFactory,
    data: Dataset | Iterable[Any],
    *,
    output_path: str | os.PathLike[str],
    format: Literal["jsonl", "parquet"] | None = ...,
    **keywords: Unpack[_RunKeywords],
) -> BatchSummary: ...


def run_on_ray(
    chain_factory: ChainFactory,
    data: Dataset | Iterable[Any],
    *,
    input_column: str | None = "input",
    id_column: str | None = "id",
    batch_size: int = 64,
    concurrency: int = 2,
    num_cpus: float = 0.5,
    rate_limit: ClusterRateLimit | None = None,
    options: KitOptions | None = None,
    retry: RetryPolicy | Unset | None = UNSET,
    max_concurrency: MaxConcurrency | Unset = UNSET,
    output_path: str | os.PathLike[str] | None = None,
    format: Literal["jsonl", "parquet"] | None = None,
    progress: bool | Unset | None = UNSET,
    desc: str | Unset = UNSET,
) -> MaterializedDataset[Any] | BatchSummary:
    """Run a chain over many inputs on a pool of Ray actors; one result row per input.

    Beyond one machine (or one process's CPU for parsing and post-processing),
    this runs :class:`BatchKitMapper` over the data with Ray Data: each of
    ``concurrency`` actors builds the chain once from ``chain_factory`` and runs
    blocks of ``batch_size`` items through batchkit's engine. Failed items are rows
    (``status="failed"`` with the error), never dropped. An actor that dies has its
    block retried by Ray on a restarted actor; the rows of a retried block replace
    the lost attempt's, so none is missing or duplicated (its calls are paid again).

    The driver shows one bar over all items (``ok=``/``failed=``) instead of Ray
    Data's per-operator bars, and reads each result block once to count it.

    Args:
        chain_factory: a picklable callable that builds the chain in each worker.
        data: a Python list / iterable of inputs (each item is one chain input,
            stored exactly via :func:`dumps_value`; ids are the positions), or a
            Ray ``Dataset`` (read with ``ray.data.read_*``: the way for inputs too
            big for the driver).
        input_column: for a Dataset, the column holding the chain's input;
            ``None`` passes each whole row as a dict.
        id_column: the column carried into the results to join them back (for a
            list, the name of the position column); ``None`` for none.
        batch_size: rows per block handed to an actor.
        concurrency: the number of actors (workers).
        num_cpus: CPUs reserved per actor; calls are I/O-bound, so less than one.
        rate_limit: one budget shared by every worker (:class:`ClusterRateLimit`).
        options: the :class:`KitOptions` every worker's kit runs with (e.g. a local
            kit's ``kit.options``): retry policy, items in flight per block, clock;
            ``progress`` and ``desc`` are the driver's bar. A ``RateLimit``, a
            checkpoint or ``on_progress`` cannot work across processes and is refused.
            Default: batchkit's defaults.
        retry: per-item retry policy; ``None`` never retries. ``retry``,
            ``max_concurrency``, ``progress`` and ``desc``, when given, replace the
            same field of ``options``.
        max_concurrency: items in flight per block (batchkit's rules).
        output_path: write the rows to this file (``.jsonl`` / ``.parquet``, or
            ``format=``) as they arrive, instead of returning a Dataset. The file
            appears only when the run finishes (``<name>.partial`` until then).
        format: ``"jsonl"`` or ``"parquet"``; default: from ``output_path``'s suffix.
        progress: ``None`` shows the bar for 10+ items (or an unknown count).
        desc: the bar's label (default ``"batchkit on ray"``).

    Returns:
        A materialised Ray ``Dataset`` of result rows (in completion order: sort or
        join by ``id_column``), or with ``output_path`` the run's
        :class:`BatchSummary`. Columns: ``id_column`` (when set), then
        :data:`RESULT_COLUMNS`; ``output`` is JSON text (``json.loads`` it).

    Example:
        >>> limit = ClusterRateLimit(requests_per_minute=500)              # doctest: +SKIP
        >>> rows = run_on_ray(lambda: prompt | ChatOpenAI(max_retries=0),
        ...                   topics, concurrency=4, rate_limit=limit)        # doctest: +SKIP
        >>> rows.filter(lambda r: r["status"] == "failed").take(5)  # doctest: +SKIP
    """
    check_mapper_options(chain_factory, input_column, id_column, rate_limit)
    check_int("batch_size", batch_size)
    check_int("concurrency", concurrency)
    check_number("num_cpus", num_cpus)
    kit_options = worker_options(
        options,
        {"retry": retry, "max_concurrency": max_concurrency, "progress": progress, "desc": desc},
    )
    if output_path is None and format is not None:
        raise ConfigurationError("format= applies to output_path=; pass both, or neither")
    output_format = format_for(output_path, format) if output_path is not None else None
    require_ray("run_on_ray()")
    import ray
    import ray.data

    actors = concurrency
    if isinstance(data, ray.data.Dataset):
        dataset, total, decode = data, _known_count(data), False
    else:
        if isinstance(data, str | bytes):
            raise ConfigurationError("data must be a list of inputs or a Dataset, not a str")
        if id_column == _LIST_INPUT:
            raise ConfigurationError(f"id_column cannot be {_LIST_INPUT!r} for a list input")
        dataset, total = _list_dataset(list(data), id_column, batch_size)
        input_column, decode = _LIST_INPUT, True
        actors = max(1, min(concurrency, math.ceil(total / batch_size)))

    mapped = dataset.map_batches(
        BatchKitMapper,
        fn_constructor_kwargs={
            "chain_factory": chain_factory,
            "input_column": input_column,
            "id_column": id_column,
            "rate_limit": rate_limit,
            "options": kit_options,
            "decode_input": decode,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(
            size=actors, max_concurrent_calls_per_actor=BLOCKS_PER_WORKER
        ),
        num_cpus=num_cpus,
    )
    sink = (
        open_sink(output_path, output_format, _empty_rows(id_column))
        if output_path is not None and output_format is not None
        else None
    )
    desc_shown = _DEFAULT_DESC if kit_options.desc is None else kit_options.desc
    bar = BlockBar(total, show=kit_options.progress, desc=desc_shown)
    # A derived Dataset shares its parent's context object: switch Ray Data's bars
    # off for this run only, and give the caller's Dataset its setting back.
    context = mapped.context
    ray_bars = context.enable_progress_bars
    context.enable_progress_bars = ray_bars and not bar.shown
    started = time.perf_counter()
    try:
        tally, refs = _collect(mapped, bar, sink)
    finally:
        context.enable_progress_bars = ray_bars
    summary = tally.summary(time.perf_counter() - started)
    logger.info("run_on_ray: %s", summary)
    if sink is not None:
        return summary
    if not refs:
        return ray.data.from_arrow(_empty_rows(id_column))
    return ray.data.from_arrow_refs(refs)


def _collect(mapped: Dataset, bar: BlockBar, sink: Sink | None) -> tuple[Tally, list[Any]]:
    """Stream result blocks to the driver: count each, then write it or keep its ref."""
    import ray

    tally = Tally()
    refs: list[Any] = []
    try:
        for bundle in mapped.iter_internal_ref_bundles():
            for ref in bundle.block_refs:
                table: pa.Table = ray.get(ref)
                ok, failed = tally.add_block(table)
                bar.add(table.num_rows, ok=ok, failed=failed)
                if sink is not None:
                    sink.write(table)
                else:
                    refs.append(ref)
        if sink is not None:
            sink.commit()
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        bar.close()
    return tally, refs


def _list_dataset(items: list[Any], id_column: str | None, batch_size: int) -> tuple[Dataset, int]:
    import ray.data

    rows = [
        {id_column: i, _LIST_INPUT: dumps_value(x)} if id_column else {_LIST_INPUT: dumps_value(x)}
        for i, x in enumerate(items)
    ]
    blocks = max(1, math.ceil(len(rows) / batch_size))
    return ray.data.from_items(rows, override_num_blocks=blocks), len(rows)


def _known_count(dataset: Dataset) -> int | None:
    """The row count when it is free (a materialised Dataset), else ``None``."""
    from ray.data.dataset import MaterializedDataset

    return dataset.count() if isinstance(dataset, MaterializedDataset) else None


def _empty_rows(id_column: str | None) -> pa.Table:
    import pyarrow as pa  # type: ignore[import-untyped]

    table = result_table(BatchResult([]))
    return table if id_column is None else table.add_column(0, id_column, pa.array([], pa.int64()))
