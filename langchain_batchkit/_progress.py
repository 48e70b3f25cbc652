"""Progress: a tqdm bar over top-level items, an ``on_progress`` hook, and a root-run counter.

The engine counts an item when the item finishes, once, whatever the chain does
inside: a ``prompt | model | parser`` chain ends three runs per item, which is why
counting ``on_chain_end`` callbacks over-counts. For users who keep plain
``chain.batch``, :class:`RootRunCounter` counts only runs that have no parent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from langchain_batchkit._errors import describe_exception, dollars, exception_traceback

if TYPE_CHECKING:
    from tqdm import tqdm as TqdmBar

    from langchain_batchkit._results import ItemError, ItemResult

__all__ = ["ProgressCallback", "ProgressEvent", "ProgressReporter", "RootRunCounter"]

logger = logging.getLogger(__name__)

#: Batches smaller than this get no bar unless ``progress=True``.
BAR_THRESHOLD = 10
#: The bar's final colours (tqdm's ``colour``).
BAR_OK, BAR_SOME_FAILED, BAR_ALL_FAILED = "green", "#ff8c00", "red"


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One thing that happened to one top-level item.

    Attributes:
        kind: ``"done"`` when the item finished (ok or failed), ``"retry"`` when a
            failed attempt will be retried.
        index: the item's input index.
        completed: items finished so far.
        total: the batch size, or ``None`` when the input is a generator.
        succeeded: items finished ok so far.
        failed: items finished with an error so far.
        retrying: items currently waiting for a retry.
        result: the finished item (for ``"done"``).
        error: the attempt's error (for ``"retry"``).
        cost: dollars the finished items cost so far (``None``: nothing priced yet).
        not_run: items the run stopped before finishing (a spent budget).
    """

    kind: Literal["done", "retry"]
    index: int
    completed: int
    total: int | None
    succeeded: int
    failed: int
    retrying: int
    result: ItemResult[Any, Any] | None = None
    error: ItemError | None = None
    cost: float | None = None
    not_run: int = 0


ProgressCallback = Callable[[ProgressEvent], None]


class ProgressReporter:
    """Counts finished items and shows them on a bar and/or a callback.

    It lives inside one run of the engine, on the engine's event loop, so it
    needs no lock. A broken display must not lose the batch: a callback that
    raises an ``Exception`` is logged once (redacted) and then not called again,
    and a bar that cannot draw (a closed terminal) is logged once and dropped.
    ``KeyboardInterrupt`` and other ``BaseException`` propagate: that is Ctrl-C.
    """

    __slots__ = (
        "_bar",
        "_callback",
        "_callback_broken",
        "completed",
        "cost",
        "failed",
        "not_run",
        "retrying",
        "succeeded",
        "total",
    )

    def __init__(
        self,
        total: int | None,
        *,
        show_bar: bool | None,
        callback: ProgressCallback | None,
        desc: str = "batchkit",
        unit: str = "item",
    ) -> None:
        self.total = total
        self.completed = self.succeeded = self.failed = self.retrying = self.not_run = 0
        self.cost: float | None = None
        self._callback = callback
        self._callback_broken = False
        if show_bar is None:
            show_bar = total is None or total >= BAR_THRESHOLD
        self._bar: TqdmBar[Any] | None = None
        if show_bar:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
            except Exception as exc:
                self._drop_bar(exc)

    def item_done(self, result: ItemResult[Any, Any]) -> None:
        """Count one finished top-level item."""
        self.completed += 1
        if result.not_run:
            self.not_run += 1
        elif result.error is None:
            self.succeeded += 1
        else:
            self.failed += 1
        if result.cost is not None:
            self.cost = (self.cost or 0.0) + result.cost
        self._draw(advance=1)
        if self._callback is not None:
            self._emit(
                ProgressEvent(
                    "done",
                    result.index,
                    self.completed,
                    self.total,
                    self.succeeded,
                    self.failed,
                    self.retrying,
                    result=result,
                    cost=self.cost,
                    not_run=self.not_run,
                )
            )

    def count(self, succeeded: int, failed: int, cost: float | None = None) -> None:
        """Count several finished units at once on the bar (no callback event).

        For runs whose units are not items (texts embedded a request at a time).
        """
        self.succeeded += succeeded
        self.failed += failed
        self.completed += succeeded + failed
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost
        self._draw(advance=succeeded + failed)

    def retry_scheduled(self, index: int, error: ItemError) -> None:
        """An attempt failed and will be retried: shown as ``retrying`` until it restarts."""
        self.retrying += 1
        self._draw()
        if self._callback is not None:
            self._emit(
                ProgressEvent(
                    "retry",
                    index,
                    self.completed,
                    self.total,
                    self.succeeded,
                    self.failed,
                    self.retrying,
                    error=error,
                    cost=self.cost,
                    not_run=self.not_run,
                )
            )

    def retry_started(self) -> None:
        """A scheduled retry has started its next attempt."""
        self.retrying -= 1

    def close(self) -> None:
        """Show the final counts in the bar's final colour and release the bar.

        The colour says how the run went: green when every item succeeded, orange
        when some failed, red when all did (a bar that reaches 40/40 is not a
        success if 2 of them failed). A notebook's widget bar is not saved with the
        notebook (a saved one reads ``0/40``), so its final line is also written
        as text.
        """
        bar = self._bar
        if bar is None:
            return
        try:
            bar.set_postfix_str(self._postfix(), refresh=False)
            bar.colour = self.final_colour()
            bar.close()
            if hasattr(bar, "container"):  # tqdm.notebook's widget
                bar.write(bar.format_meter(**{**bar.format_dict, "colour": None}))
        except Exception as exc:
            self._drop_bar(exc)
        self._bar = None

    def final_colour(self) -> str:
        """The bar's colour at the end: green (all ok), orange (some failed), red (all)."""
        if not self.failed and not self.not_run:
            return BAR_OK
        return BAR_ALL_FAILED if not self.succeeded else BAR_SOME_FAILED

    def _postfix(self) -> str:
        text = f"ok={self.succeeded} failed={self.failed}"
        if self.not_run:
            text += f" not_run={self.not_run}"
        if self.retrying:
            text += f" retrying={self.retrying}"
        if self.cost is not None:
            text += f" $={dollars(self.cost)[1:]}"
        return text

    def _draw(self, advance: int = 0) -> None:
        bar = self._bar
        if bar is None:
            return
        try:
            bar.set_postfix_str(self._postfix(), refresh=False)
            if advance:
                bar.update(advance)
        except Exception as exc:
            self._drop_bar(exc)

    def _drop_bar(self, exc: Exception) -> None:
        bar, self._bar = self._bar, None
        logger.warning(
            "the progress bar failed (%s); the batch goes on without it", describe_exception(exc)
        )
        if bar is not None:
            # Its stream is what failed, so closing may fail again; close() marks the
            # bar disabled first, which keeps tqdm's __del__ from trying once more.
            with contextlib.suppress(Exception):
                bar.close()

    def _emit(self, event: ProgressEvent) -> None:
        if self._callback_broken or self._callback is None:
            return
        try:
            self._callback(event)
        except Exception as exc:
            # Logged as redacted text, not exc_info: the hook may re-raise an item's
            # live exception, whose arguments can carry the API key.
            self._callback_broken = True
            logger.error(
                "on_progress callback raised; it will not be called again:\n%s",
                exception_traceback(exc),
            )


class RootRunCounter(BaseCallbackHandler):
    """A callback handler that counts only top-level runs, for plain ``chain.batch``.

    The naive counter (``on_chain_end: count += 1``) counts every nested run: a
    ``prompt | model | parser`` chain ends four runs per input. This handler counts
    a run only when it has no parent, so it counts inputs, however the chain nests
    and whether the callback is passed in the config or bound to the chain.

    Args:
        total: the number of inputs, to size the optional bar.
        show_bar: draw a ``tqdm.auto`` bar that advances once per top-level run.

    Example:
        >>> counter = RootRunCounter(total=len(inputs), show_bar=True)  # doctest: +SKIP
        >>> chain.batch(inputs, config={"callbacks": [counter]})        # doctest: +SKIP
        >>> counter.completed, counter.failed                           # doctest: +SKIP
    """

    run_inline = True
    raise_error = False

    def __init__(self, total: int | None = None, *, show_bar: bool = False) -> None:
        self.total = total
        self.completed = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._bar: TqdmBar[Any] | None = None
        if show_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="runs", unit="item", dynamic_ncols=True)

    def _count(self, parent_run_id: UUID | None, *, error: bool) -> None:
        if parent_run_id is not None:
            return
        with self._lock:
            self.completed += 1
            self.failed += error
            if self._bar is not None:
                self._bar.update(1)

    def close(self) -> None:
        """Close the bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Count a finished top-level chain."""
        self._count(parent_run_id, error=False)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Count a failed top-level chain."""
        self._count(parent_run_id, error=True)

    def on_llm_end(
        self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Count a finished top-level model call (a bare model batched on its own)."""
        self._count(parent_run_id, error=False)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Count a failed top-level model call."""
        self._count(parent_run_id, error=True)
