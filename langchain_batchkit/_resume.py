"""What a run needs from a checkpoint: keys, earlier results, and a sink."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from langchain_batchkit._attempts import ItemRun
from langchain_batchkit._checkpoint import Checkpoint, CheckpointError, StoredRow
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._results import ItemError, ItemResult
from langchain_batchkit._serialize import dumps_value, fingerprint_value, safe_repr

__all__ = ["Resume"]


class Resume:
    """A checkpoint seen from one run: how items are keyed, and which already finished.

    Each item's stored row is matched by key. With index keys (the default) the row
    must also be for the same input, compared by fingerprint, so a file reused for
    another input list is refused instead of mixed in. With a ``key=`` function
    each input of a run needs its own key: a repeat is found through SQLite (rows
    this run wrote or resumed) and the keys still in flight, never a set of every
    key, so memory stays flat at millions of inputs.

    Args:
        checkpoint: the open checkpoint.
        key_fn: each input's key (default: its index).
        rerun_failed: call the chain again for items stored as failed (else they are
            handed back as stored). Not to be confused with
            ``Checkpoint.finished(include_failed=)``, which says whether failed rows
            are returned at all.
    """

    __slots__ = ("checkpoint", "chunk_size", "key_fn", "rerun_failed")

    def __init__(
        self,
        checkpoint: Checkpoint,
        key_fn: Callable[[Any], str] | None,
        *,
        rerun_failed: bool,
    ) -> None:
        self.checkpoint = checkpoint
        self.key_fn = key_fn
        self.rerun_failed = rerun_failed
        self.chunk_size = checkpoint.chunk_size

    def key_of(self, index: int, value: Any) -> str | ItemError:
        """The item's checkpoint key, or, when the ``key=`` function raised, the
        item's error (that item fails alone, and is not checkpointed).

        Raises:
            ConfigurationError: the function returned something other than a str (it
                is wrong for every input, not just this one).
        """
        if self.key_fn is None:
            return str(index)
        try:
            key = self.key_fn(value)
        except Exception as exc:
            error = ItemError.from_exception(exc)
            message = f"key= raised for input #{index}: {error.type}: {error.message}"
            return replace(error, message=message)
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
            ConfigurationError: two inputs of this run share a ``key=`` key.
            CheckpointError: with index keys, a stored row is for another input.
        """
        checkpoint = self.checkpoint
        keyed = self.key_fn is not None
        keys = [item.key or "" for item in items]
        if keyed:
            checkpoint.flush()  # rows this run buffered must be visible below
            for item, key in zip(items, keys, strict=True):
                earlier = checkpoint.stage(key, item.index)
                if earlier is not None:
                    raise _duplicate(key, earlier, item.index)
        stored = checkpoint.lookup(keys)
        matched: list[tuple[ItemRun[Any, Any], ItemResult[Any, Any] | None]] = []
        resumed: list[tuple[str, int]] = []
        for item, key in zip(items, keys, strict=True):
            row = stored.get(key)
            result = None
            if row is not None:
                if keyed and row.this_run:
                    raise _duplicate(key, row.index, item.index)
                result = self._reuse(item, row)
            if result is not None and keyed:
                checkpoint.unstage(key)
                resumed.append((key, item.index))
            matched.append((item, result))
        checkpoint.claim(resumed)
        return matched

    def _reuse(self, item: ItemRun[Any, Any], row: StoredRow) -> ItemResult[Any, Any] | None:
        # Failed items count as finished unless the caller asked to run them again.
        if not row.ok and self.rerun_failed:
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


def _duplicate(key: str, earlier: int, index: int) -> ConfigurationError:
    return ConfigurationError(
        f"key= gave inputs #{earlier} and #{index} the same key {_short(key)}: each input "
        "needs its own key, or the later one would be handed the earlier one's stored "
        "result. Make the key unique (add a field, or hash the whole input)"
    )


def _short(value: Any, limit: int = 60) -> str:
    text = safe_repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
