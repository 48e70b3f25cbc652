"""Reading a checkpoint out: every stored result to JSON lines or a DataFrame, streaming."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from langchain_batchkit._results import ItemResult
from langchain_batchkit._serialize import json_text, to_jsonable

__all__ = ["to_frame", "write_jsonl"]


def write_jsonl(results: Iterable[ItemResult[Any, Any]], path: str | os.PathLike[str]) -> int:
    """Write one JSON object per result (:meth:`ItemResult.to_record`); return how many."""
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for result in results:
            record = result.to_record()
            record["input"] = to_jsonable(record["input"])
            record["output"] = to_jsonable(record["output"])
            out.write(json_text(record) + "\n")
            n += 1
    return n


def to_frame(results: Iterable[ItemResult[Any, Any]], chunk_rows: int) -> Any:
    """A DataFrame of the results, built ``chunk_rows`` at a time (needs the pandas extra)."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(
            "to_pandas() needs pandas: pip install 'langchain-batchkit[pandas]'"
        ) from exc
    frames, rows = [], []
    for result in results:
        rows.append(result.to_record())
        if len(rows) >= chunk_rows:
            frames.append(pd.DataFrame.from_records(rows))
            rows = []
    frames.append(pd.DataFrame.from_records(rows))
    return pd.concat(frames, ignore_index=True)
