"""Caption results as flat records, and their CSV / JSON Lines export."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_batchkit._results import ItemResult
from langchain_batchkit.multimodal._sources import describe_source

__all__ = ["CAPTION_COLUMNS", "CaptionRecord", "captions_to_records", "to_csv", "to_jsonl"]

#: The columns of every caption export, in order.
CAPTION_COLUMNS = ("index", "source", "caption", "ok", "error_type", "error_message", "attempts")


@dataclass(frozen=True, slots=True)
class CaptionRecord:
    """One image's outcome as a flat row: where it came from, and its caption or error.

    ``source`` is the path or URL (``<bytes 1234>`` / ``<PIL image 64x48 RGB>`` for
    in-memory images), so a row can be traced back to its file without dragging the
    image data into the export.

    Example:
        >>> CaptionRecord.from_result(results[0]).caption  # doctest: +SKIP
        'A red circle on a white background.'
    """

    index: int
    source: str
    caption: str | None
    ok: bool
    error_type: str | None
    error_message: str | None
    attempts: int

    @classmethod
    def from_result(cls, result: ItemResult[Any, Any]) -> CaptionRecord:
        """The record of one :class:`ItemResult` of a caption run."""
        error = result.error
        output = result.output
        return cls(
            index=result.index,
            source=_name_of(result.input),
            caption=output if output is None or isinstance(output, str) else str(output),
            ok=error is None,
            error_type=error.type if error else None,
            error_message=error.message if error else None,
            attempts=result.attempts,
        )

    def as_dict(self) -> dict[str, str | int | bool | None]:
        """The record as a dict keyed by :data:`CAPTION_COLUMNS`, in that order."""
        return {name: getattr(self, name) for name in CAPTION_COLUMNS}


def _name_of(source: object) -> str:
    """:func:`describe_source`, or a placeholder when naming the source raises."""
    try:
        return describe_source(source)
    except Exception as exc:  # a user's path-like whose __fspath__ raises
        return f"<{type(source).__name__} object: its name raised {type(exc).__name__}>"


def _records(results: Iterable[ItemResult[Any, Any]]) -> Iterator[CaptionRecord]:
    return (CaptionRecord.from_result(r) for r in results)


def captions_to_records(results: Iterable[ItemResult[Any, Any]]) -> list[CaptionRecord]:
    """One :class:`CaptionRecord` per result, in the order given.

    Example:
        >>> [r.source for r in captions_to_records(results) if not r.ok]  # doctest: +SKIP
        ['photos/missing.jpg']
    """
    return list(_records(results))


def to_csv(results: Iterable[ItemResult[Any, Any]], path: str | os.PathLike[str]) -> Path:
    """Write one CSV row per result (columns :data:`CAPTION_COLUMNS`), streaming.

    Rows are written as the results are iterated, so a generator such as
    ``kit.stream_results(...)`` is exported as it runs. Missing values are empty
    cells; captions with commas, quotes or newlines are quoted by ``csv``.

    Returns:
        The path written.

    Example:
        >>> to_csv(caption_images("photos/", llm=llm), "captions.csv")  # doctest: +SKIP
        PosixPath('captions.csv')
    """
    target = Path(path)
    with target.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CAPTION_COLUMNS)
        for record in _records(results):
            writer.writerow(["" if v is None else v for v in record.as_dict().values()])
    return target


def to_jsonl(results: Iterable[ItemResult[Any, Any]], path: str | os.PathLike[str]) -> Path:
    """Write one JSON object per line per result (keys :data:`CAPTION_COLUMNS`), streaming.

    Missing values are ``null``; text is written as UTF-8, not escaped.

    Returns:
        The path written.

    Example:
        >>> to_jsonl(results, "captions.jsonl")  # doctest: +SKIP
        PosixPath('captions.jsonl')
    """
    target = Path(path)
    with target.open("w", encoding="utf-8") as f:
        for record in _records(results):
            f.write(json.dumps(record.as_dict(), ensure_ascii=False))
            f.write("\n")
    return target
