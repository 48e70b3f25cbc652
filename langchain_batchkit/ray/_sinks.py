"""Result files written by the driver as blocks arrive: one JSON Lines or Parquet file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from langchain_batchkit._errors import ConfigurationError

if TYPE_CHECKING:
    import pyarrow as pa  # type: ignore[import-untyped]

__all__ = ["OutputFormat", "Sink", "format_for", "open_sink"]

OutputFormat = Literal["jsonl", "parquet"]

_SUFFIXES: dict[str, OutputFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def format_for(path: str | os.PathLike[str], format: str | None) -> OutputFormat:
    """The output format: ``format`` when given, else from the file's suffix."""
    if format is not None:
        if format not in ("jsonl", "parquet"):
            raise ConfigurationError(f"format must be 'jsonl', 'parquet' or None, got {format!r}")
        return "jsonl" if format == "jsonl" else "parquet"
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ConfigurationError(
            f"cannot tell the output format of {os.fspath(path)!r} from its suffix; "
            f"use one of {', '.join(_SUFFIXES)} or pass format='jsonl' / 'parquet'"
        )
    return _SUFFIXES[suffix]


class Sink(Protocol):
    """Where result blocks go; the file appears (atomically) only on :meth:`commit`."""

    def write(self, table: pa.Table) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class _PartialFile:
    """Writes ``<path>.partial`` and renames it into place on commit, so a crashed
    run never leaves a file that looks complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")

    def publish(self) -> None:
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)


class _JsonLines(_PartialFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._file = self.partial.open("w", encoding="utf-8")

    def write(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            self._file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def commit(self) -> None:
        self._file.close()
        self.publish()

    def abort(self) -> None:
        self._file.close()
        self.discard()


class _Parquet(_PartialFile):
    def __init__(self, path: Path, empty: pa.Table) -> None:
        super().__init__(path)
        self._empty = empty
        self._writer: Any = None

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        if self._writer is None:
            self._writer = pq.ParquetWriter(self.partial, table.schema)
        elif table.schema != self._writer.schema_arrow:
            table = table.cast(self._writer.schema_arrow)
        self._writer.write_table(table)

    def commit(self) -> None:
        if self._writer is None:
            self.write(self._empty)
        self._writer.close()
        self.publish()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.discard()


def open_sink(path: str | os.PathLike[str], format: OutputFormat, empty: pa.Table) -> Sink:
    """A sink writing ``path`` in ``format``; ``empty`` gives the schema of a run with no rows."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return _JsonLines(target) if format == "jsonl" else _Parquet(target, empty)
