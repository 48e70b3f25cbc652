"""What a Batch API run keeps between its rounds: round ids, each item's spending, and a
watch for models that run online inside local steps."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage

from langchain_batchkit._batch_api._state import ItemState
from langchain_batchkit._item import Attempt, ItemError, TokenUsage
from langchain_batchkit._progress import BAR_THRESHOLD, ProgressReporter

__all__ = ["REASK_STRIDE", "CountsBar", "OnlineModelWatch", "Spent", "round_id"]

logger = logging.getLogger(__name__)

#: Rounds of one model step's re-asks are numbered apart: step + REASK_STRIDE * attempt.
REASK_STRIDE = 1000


def round_id(step: int, attempt: int) -> int:
    """The round of a model step's ``attempt`` (0: its first answers; n: the n-th re-ask).

    Example:
        >>> round_id(0, 0), round_id(1, 0), round_id(1, 2)
        (0, 1, 2001)
    """
    return step + REASK_STRIDE * attempt


class OnlineModelWatch(BaseCallbackHandler):
    """Warns, once per run, that a model ran inside a local step: it was called online.

    A model called from inside a function (``RunnableLambda(lambda x: llm.invoke(x))``)
    cannot be seen when the chain is cut into rounds; it runs at the full price when
    its step runs, and this says so instead of letting it pass unnoticed.
    """

    run_inline = True  # a flag and a log line: no need for the callback thread pool

    def __init__(self) -> None:
        self.seen = False

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self._warn(serialized)

    def on_llm_start(self, serialized: Any, prompts: Any, **kwargs: Any) -> None:
        self._warn(serialized)

    def _warn(self, serialized: Any) -> None:
        if self.seen:
            return
        self.seen = True
        name = (serialized or {}).get("name") if isinstance(serialized, dict) else None
        logger.warning(
            "a model (%s) ran inside a local step of the chain, online at the full price: "
            "the Batch API runner sends only the model steps of the sequence itself; "
            "put the model in the sequence (or use batchkit(chain, flex=True))",
            name or "unnamed",
        )


@dataclass(slots=True)
class Spent:
    """What one item used over the rounds it took part in."""

    submissions: int = 0
    history: list[Attempt] = field(default_factory=list)
    usage: TokenUsage | None = None
    cost: float | None = 0.0
    finished_at: float | None = None
    answer: AIMessage | None = None  # the latest answer paid for

    def add(self, state: ItemState, message: AIMessage | None, cost: float | None) -> None:
        self.submissions += state.submissions
        self.history += state.history
        self.finished_at = state.finished_at or self.finished_at
        if message is None:
            return
        self.answer = message
        usage = TokenUsage.from_output(message)
        if usage is not None:
            self.usage = usage if self.usage is None else self.usage + usage
        # a round that could not be priced makes the sum unknown, never too small
        self.cost = None if cost is None or self.cost is None else self.cost + cost

    def rejected(self, error: ItemError, answer: AIMessage, cost: float | None) -> None:
        """An answer that failed to parse and is re-asked: one more attempt in history."""
        usage = TokenUsage.from_output(answer)
        self.history.append(Attempt(error, output=answer, usage=usage, cost=cost))


class CountsBar:
    """A ``tqdm.auto`` bar over a job loop's items, moved by running totals.

    The job loop reports how many items succeeded and failed so far after every
    check (see ``JobLoop``'s ``on_counts``); the bar moves by the difference.

    Args:
        total: the items (requests, texts) the loop settles.
        show: ``None`` shows it from :data:`BAR_THRESHOLD` items on.
        desc: the bar's label.
        unit: what one item is called.
    """

    __slots__ = ("_reporter", "_shown")

    def __init__(self, total: int, show: bool | None, *, desc: str, unit: str) -> None:
        wanted = show is True or (show is None and total >= BAR_THRESHOLD)
        self._reporter = (
            ProgressReporter(total, show_bar=True, callback=None, desc=desc, unit=unit)
            if wanted
            else None
        )
        self._shown = (0, 0)

    @property
    def shown(self) -> bool:
        """A bar is drawn (else the loop need not count for it)."""
        return self._reporter is not None

    def __call__(self, succeeded: int, failed: int) -> None:
        if self._reporter is not None:
            self._reporter.count(succeeded - self._shown[0], failed - self._shown[1])
        self._shown = (succeeded, failed)

    def close(self) -> None:
        if self._reporter is not None:
            self._reporter.close()
