"""What a run needs from a checkpoint: keys, earlier results, and a sink."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from langchain_batchkit._attempts import ItemRun
from langchain_batchkit._checkpoint import Checkpoint, CheckpointError, StoredRow
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._results import ItemResult
from langchain_batchkit._serialize import dumps_value, fingerprint_value, safe_repr

__all__ = ["Resume"]


class Resume:
    """A checkpoint seen from one run: how items are keyed, and which already finished.

    Each item's stored row is matched by key. With index keys (the default) the row
    must also be for the same input, compared by fingerprint, so a file reused for
    another input list is refused instead of mixed in.

    Args:
        checkpoint: the open checkpoint.
        key_fn: each input's key (default: its index).
        include_failed: run items stored as failed again (else they are returned as stored).
    """

    __slots__ = ("checkpoint", "chunk_size", "include_failed", "key_fn")

    def __init__(
        self,
        checkpoint: Checkpoint,
        key_fn: Callable[[Any], str] | None,
        *,
        include_failed: bool,
    ) -> None:
        self.checkpoint = checkpoint
        self.key_fn = key_fn
        self.include_failed = include_failed
        self.chunk_size = checkpoint.chunk_size

    def key_of(self, index: int, value: Any) -> str:
        """The item's checkpoint key."""
        if self.key_fn is None:
            return str(index)
        key = self.key_fn(value)
        if not isinstance(key, str):
            raise ConfigurationError(
                f"key= must return a str; for input #{index} it returned {type(key).__name__}"
            )
        return key

    def match(
        self, items: Sequence[ItemRun[Any, Any]]
    ) -> list[tuple[ItemRun[Any, Any], ItemResult[Any, Any] | None]]:
        """Each item with its stored result when it needs no new call, else ``None``.

        Raises:
            CheckpointError: with index keys, a stored row is for another input.
        """
        stored = self.checkpoint.lookup([item.key or "" for item in items])
        matched: list[tuple[ItemRun[Any, Any], ItemResult[Any, Any] | None]] = []
        for item in items:
            row = stored.get(item.key or "")
            matched.append((item, self._reuse(item, row) if row is not None else None))
        return matched

    def _reuse(self, item: ItemRun[Any, Any], row: StoredRow) -> ItemResult[Any, Any] | None:
        # Failed items count as finished unless the caller asked to run them again.
        if not row.ok and self.include_failed:
            return None
        if self.key_fn is None:
            self.check_same_input(item.index, row, item.value)
        result = row.result()
        if result is None:
            return None
        if self.key_fn is None or result.input is None:
            # The same input (by fingerprint): hand back the caller's own object,
            # not a stored approximation of it (a repr, a list for a tuple).
            return replace(result, index=item.index, input=item.value)
        return replace(result, index=item.index)

    def check_same_input(self, index: int, row: StoredRow, given: Any) -> None:
        """With index keys, a stored row must be for the same input: never hand one
        input another's output (a checkpoint reused for a different input list)."""
        if row.input_fingerprint is not None:
            same = row.input_fingerprint == fingerprint_value(given)
        else:  # a row from layout 1 has no fingerprint: compare the stored text
            same = row.input_text == dumps_value(given)
        if not same:
            raise CheckpointError(
                f"checkpoint {self.checkpoint.path} holds a different input at index {index} "
                f"({_short(row.stored_input())} there, {_short(given)} here): it was written "
                "for another input list. Use a new file, or key= to name items by content or id"
            )


def _short(value: Any, limit: int = 60) -> str:
    text = safe_repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
