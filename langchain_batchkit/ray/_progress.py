"""One bar on the driver over the whole dataset, advanced by result blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_batchkit._progress import BAR_THRESHOLD

if TYPE_CHECKING:
    from tqdm import tqdm as TqdmBar

__all__ = ["BlockBar"]


class BlockBar:
    """A ``tqdm.auto`` bar counting rows (items) as result blocks reach the driver.

    Ray Data draws a bar per operator, counting blocks and rows of every stage;
    users want one number: how many of *their* items are done, and how many failed.

    Args:
        total: rows expected, or ``None`` when unknown (the bar then shows count and rate).
        show: ``None`` shows a bar for 10+ rows or an unknown total, ``True`` always,
            ``False`` never.
        desc: the bar's label.

    Example:
        >>> bar = BlockBar(100, show=False, desc="rows"); bar.add(64, ok=63, failed=1); bar.close()
    """

    __slots__ = ("_bar", "failed", "succeeded")

    def __init__(self, total: int | None, *, show: bool | None, desc: str) -> None:
        self.succeeded = self.failed = 0
        if show is None:
            show = total is None or total >= BAR_THRESHOLD
        self._bar: TqdmBar[Any] | None = None
        if show:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True)

    @property
    def shown(self) -> bool:
        """Whether a bar is drawn (then Ray Data's own bars are turned off)."""
        return self._bar is not None

    def add(self, rows: int, *, ok: int, failed: int) -> None:
        """Count one result block of ``rows`` rows."""
        self.succeeded += ok
        self.failed += failed
        if self._bar is not None:
            self._bar.set_postfix_str(f"ok={self.succeeded} failed={self.failed}", refresh=False)
            self._bar.update(rows)

    def close(self) -> None:
        """Release the bar (its last state stays on screen)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
