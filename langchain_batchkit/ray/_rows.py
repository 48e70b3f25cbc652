"""One Arrow row per item: status, JSON output, error, attempts, latency, tokens, id."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._results import BatchResult, SummaryCounts, TokenUsage
from langchain_batchkit._serialize import to_jsonable

if TYPE_CHECKING:
    import pyarrow as pa  # type: ignore[import-untyped]

__all__ = [
    "RESULT_COLUMNS",
    "STATUS_FAILED",
    "STATUS_OK",
    "Tally",
    "check_column_names",
    "result_table",
]

STATUS_OK = "ok"
STATUS_FAILED = "failed"

#: The columns every result row has, after the id column (when there is one).
RESULT_COLUMNS = (
    "status",
    "output",
    "error_type",
    "error_message",
    "attempts",
    "latency_s",
    "input_tokens",
    "output_tokens",
    "total_tokens",
)


def check_column_names(input_column: str | None, id_column: str | None) -> None:
    """Reject column names that are not strings or that a result column would shadow."""
    for name, value in (("input_column", input_column), ("id_column", id_column)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError(f"{name} must be a non-empty str or None, got {value!r}")
    if id_column in RESULT_COLUMNS:
        raise ConfigurationError(
            f"id_column {id_column!r} would collide with a result column; rename it "
            f"(result columns: {', '.join(RESULT_COLUMNS)})"
        )


def _schema() -> pa.Schema:
    import pyarrow as pa  # type: ignore[import-untyped]

    return pa.schema(
        [
            ("status", pa.string()),
            ("output", pa.string()),
            ("error_type", pa.string()),
            ("error_message", pa.string()),
            ("attempts", pa.int64()),
            ("latency_s", pa.float64()),
            ("input_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("total_tokens", pa.int64()),
        ]
    )


def result_table(
    results: BatchResult[Any, Any], ids: Any | None = None, id_column: str | None = None
) -> pa.Table:
    """The rows of one block: row ``i`` is the item of input index ``i``.

    The schema is fixed (a block where nothing failed still has string error
    columns), so blocks concatenate and write to one Parquet file. Outputs are JSON
    text (``to_jsonable`` then ``json.dumps``): LangChain messages, pydantic models
    and anything else survive Arrow, and ``json.loads`` reads them back.

    Args:
        results: a complete batch result (one item per input index).
        ids: the block's id column (an Arrow array), carried over as it is.
        id_column: the id column's name.
    """
    import pyarrow as pa  # type: ignore[import-untyped]

    columns: dict[str, list[Any]] = {name: [] for name in RESULT_COLUMNS}
    for index in range(len(results)):
        item = results.by_index(index)
        error, usage = item.error, item.usage
        columns["status"].append(STATUS_OK if error is None else STATUS_FAILED)
        columns["output"].append(
            json.dumps(to_jsonable(item.output), ensure_ascii=False) if error is None else None
        )
        columns["error_type"].append(error.type if error else None)
        columns["error_message"].append(error.message if error else None)
        columns["attempts"].append(item.attempts)
        columns["latency_s"].append(item.latency)
        columns["input_tokens"].append(usage.input_tokens if usage else None)
        columns["output_tokens"].append(usage.output_tokens if usage else None)
        columns["total_tokens"].append(usage.total_tokens if usage else None)
    table = pa.Table.from_pydict(columns, schema=_schema())
    if ids is not None and id_column is not None:
        table = table.add_column(0, id_column, ids)
    return table


class Tally(SummaryCounts):
    """Running counts over result blocks: the bar's postfix and the final summary."""

    __slots__ = ()

    def add_block(self, table: pa.Table) -> tuple[int, int]:
        """Count one block; return its ``(ok, failed)`` rows."""
        import pyarrow.compute as pc  # type: ignore[import-untyped]

        ok = int(pc.sum(pc.equal(table["status"], STATUS_OK)).as_py() or 0)
        failed = table.num_rows - ok
        usage = TokenUsage(*(int(pc.sum(table[c]).as_py() or 0) for c in RESULT_COLUMNS[-3:]))
        self.add_counts(ok, failed, int(pc.sum(table["attempts"]).as_py() or 0), usage)
        return ok, failed
