"""What a run needs from a checkpoint: keys, earlier results, and a sink."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_batchkit._checkpoint import Checkpoint, CheckpointError
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._results import ItemResult
from langchain_batchkit._serialize import dumps_value, safe_repr

__all__ = ["Resume"]


class Resume:
    """A checkpoint seen from one run: how items are keyed, and which already finished.

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

    def check_same_input(self, index: int, stored: Any, given: Any) -> None:
        """With index keys, a stored row must be for the same input: never hand one
        input another's output (a checkpoint reused for a different input list)."""
        if self.key_fn is None and dumps_value(stored) != dumps_value(given):
            raise CheckpointError(
                f"checkpoint {self.checkpoint.path} holds a different input at index {index} "
                f"({_short(stored)} there, {_short(given)} here): it was written for another "
                "input list. Use a new file, or key= to name items by content or id"
            )

    def finished(self, keys: list[str]) -> dict[str, ItemResult[Any, Any]]:
        """Stored results for those of ``keys`` that need no new call."""
        # Failed items count as finished unless the caller asked to run them again.
        return self.checkpoint.finished(keys, include_failed=not self.include_failed)


def _short(value: Any, limit: int = 60) -> str:
    text = safe_repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
