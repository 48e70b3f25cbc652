"""Caption results as flat records, and their CSV / JSON Lines export.

Both exports write atomically: rows stream into a temporary file beside the target,
which replaces it only once complete, so a crash or Ctrl-C never leaves half a file.
Both keep file names that are not UTF-8 recoverable (see :func:`to_csv`, :func:`to_jsonl`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from langchain_batchkit._results import ItemResult
from langchain_batchkit.multimodal._sources import describe_source

__all__ = ["CAPTION_COLUMNS", "CaptionRecord", "captions_to_records", "to_csv", "to_jsonl"]

#: The columns of every caption export, in order.
CAPTION_COLUMNS = ("index", "source", "caption", "ok", "error_type", "error_message", "attempts")

# Lone surrogates that surrogateescape cannot turn back into a byte (only U+DC80..U+DCFF
# stand for bytes): they come from no file name, but may from a broken caption.
_NOT_A_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


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
    """Write one CSV row per result (columns :data:`CAPTION_COLUMNS`), streaming, atomically.

    Rows are written as the results are iterated, so a generator such as
    ``kit.stream_results(...)`` is exported as it runs, into a temporary file beside
    ``path`` that replaces it only once every row is written: a crash or Ctrl-C
    leaves the previous file (or none), never half of one. Missing values are empty
    cells; captions with commas, quotes or newlines are quoted by ``csv``.

    The text is UTF-8, except a file name that is not (``os.listdir`` gives it with
    lone surrogates, ``"caf\\udce9.jpg"``): it is written as its original bytes
    (``errors="surrogateescape"``). Read the file with ``open(path, newline="",
    encoding="utf-8", errors="surrogateescape")`` to get that ``str`` back, and
    ``os.fsencode(name)`` gives its bytes. A lone surrogate that stands for no byte
    (a broken caption, say) is written as the text ``\\ud83d``.

    Returns:
        The path written.

    Example:
        >>> to_csv(caption_images("photos/", llm=llm), "captions.csv")  # doctest: +SKIP
        PosixPath('captions.csv')
    """
    target = Path(path)
    with _replacing(target, errors="surrogateescape", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CAPTION_COLUMNS)
        for record in _records(results):
            writer.writerow([_csv_cell(v) for v in record.as_dict().values()])
    return target


def to_jsonl(results: Iterable[ItemResult[Any, Any]], path: str | os.PathLike[str]) -> Path:
    """Write one JSON object per line per result (keys :data:`CAPTION_COLUMNS`), atomically.

    Lines stream into a temporary file beside ``path``, which replaces it only once
    complete (see :func:`to_csv`). Missing values are ``null``; text is written as
    UTF-8, not escaped, except lone surrogates. A file name that is not UTF-8 comes
    from ``os.listdir`` with one (the bytes ``caf\\xe9.jpg`` give ``"caf\\udce9.jpg"``),
    and it is written with JSON's escape for that character, the six characters
    ``\\udce9``: the file stays valid UTF-8, ``json.loads`` gives the same ``str``
    back, and ``os.fsencode(record["source"])`` gives the name's bytes.

    Returns:
        The path written.

    Example:
        >>> to_jsonl(results, "captions.jsonl")  # doctest: +SKIP
        PosixPath('captions.jsonl')
    """
    target = Path(path)
    # In JSON text a lone surrogate can only sit inside a string, where the
    # "backslashreplace" spelling (\\udce9) is exactly JSON's escape for it.
    with _replacing(target, errors="backslashreplace") as f:
        for record in _records(results):
            f.write(json.dumps(record.as_dict(), ensure_ascii=False))
            f.write("\n")
    return target


def _csv_cell(value: str | int | bool | None) -> str | int | bool:
    if value is None:
        return ""
    if isinstance(value, str):
        return _NOT_A_BYTE.sub(lambda m: f"\\u{ord(m[0]):04x}", value)
    return value


@contextlib.contextmanager
def _replacing(target: Path, *, errors: str, newline: str | None = None) -> Iterator[TextIO]:
    """A UTF-8 text file that becomes ``target`` only once it is complete.

    It is written beside ``target`` (same directory, so the same file system, where
    ``os.replace`` is atomic), synced to disk, then renamed over it. On any error,
    KeyboardInterrupt included, it is removed and ``target`` is left as it was.
    """
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with temp.open("x", encoding="utf-8", errors=errors, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
