"""A hard dollar cap: :class:`Budget`, a limit like :class:`~langchain_batchkit.RateLimit`.

Every model call reserves its *worst-case* cost before it is sent: its prompt
(counted offline; an estimated count gets :data:`ESTIMATE_MARGIN` more) plus its
``max_tokens`` of output (or ``max_output_tokens`` when the request sets none),
at the model's price. When the answer arrives the reservation is replaced by
what the call really cost, from the usage the provider reported. A call whose
reservation would pass the cap is not sent: it fails with
:class:`~langchain_batchkit.errors.BudgetExceededError` before anything is paid,
and its item is reported as *not run*. From then on no new item starts.

**The overshoot bound.** Calls only start with their worst case reserved, so
``spent`` stays at or under ``usd`` as long as the worst cases hold. Two things
can break one: a call that sets no ``max_tokens`` and writes more than
``max_output_tokens``, and a prompt counted by estimate that is more than
:data:`ESTIMATE_MARGIN` over. The overshoot is then at most what the calls in
flight at the time spent beyond their reservations: ``spent <= usd + sum over
calls in flight of (cost - reserved)``. Set ``max_tokens`` and install the
``tokenizer`` extra (OpenAI models) for ``spent <= usd`` outright.

Share one budget by reference across kits and runs (and threads and loops), as
with a rate limit. A resumed run counts what its checkpoint already spent
(:meth:`Budget.add_spent` is called for you), so ``Budget(usd=20)`` after a
crashed $10 run allows $10 more.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import LLMResult

from langchain_batchkit._callbacks import quiet_callback_errors
from langchain_batchkit._costs import CallStart, call_start, price_response
from langchain_batchkit._errors import BudgetExceededError, ConfigurationError, dollars
from langchain_batchkit._prices import PriceBook
from langchain_batchkit._spending import BudgetStats, SpendingCap
from langchain_batchkit._tokenize import count_messages
from langchain_batchkit._validate import check_int, check_number

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "ESTIMATE_MARGIN",
    "Budget",
    "BudgetCallback",
    "BudgetStats",
    "LocalSpending",
    "SpendingBackend",
]

#: Output tokens reserved for a request that sets no ``max_tokens`` (a bound only as
#: good as the model's answers: set ``max_tokens`` for a hard one).
DEFAULT_MAX_OUTPUT_TOKENS = 4_096
#: Extra share reserved on a prompt whose tokens were estimated, not counted.
ESTIMATE_MARGIN = 0.25


class SpendingBackend(Protocol):
    """Where a :class:`Budget`'s :class:`SpendingCap` lives: this process, or a Ray actor."""

    def reserve(self, usd: float) -> bool: ...
    def settle(self, reserved: float, cost: float | None) -> None: ...
    def release(self, reserved: float) -> None: ...
    def add_spent(self, usd: float) -> None: ...
    def resumed(self, checkpoint: str, stored: float) -> None: ...
    def recorded(self, checkpoint: str, cost: float | None) -> None: ...
    def exhausted(self) -> bool: ...
    def stats(self) -> BudgetStats: ...


class LocalSpending:
    """A :class:`SpendingCap` under a lock: one budget for every thread and loop here.

    It does not pickle: a copy in another process would be a second cap, not the
    same one. On Ray, ``ClusterRateLimit(usd=...).budget()`` is shared by every worker.
    """

    __slots__ = ("_cap", "_lock")

    def __init__(self, cap: SpendingCap) -> None:
        self._cap = cap
        self._lock = threading.Lock()

    def __reduce__(self) -> Any:
        raise ConfigurationError(
            "a Budget is shared within one process and cannot be sent to another (it "
            "would become a second cap); on Ray use ClusterRateLimit(usd=...).budget()"
        )

    def reserve(self, usd: float) -> bool:
        with self._lock:
            return self._cap.reserve(usd)

    def settle(self, reserved: float, cost: float | None) -> None:
        with self._lock:
            self._cap.settle(reserved, cost)

    def release(self, reserved: float) -> None:
        with self._lock:
            self._cap.release(reserved)

    def add_spent(self, usd: float) -> None:
        with self._lock:
            self._cap.add_spent(usd)

    def resumed(self, checkpoint: str, stored: float) -> None:
        with self._lock:
            self._cap.resumed(checkpoint, stored)

    def recorded(self, checkpoint: str, cost: float | None) -> None:
        with self._lock:
            self._cap.recorded(checkpoint, cost)

    def exhausted(self) -> bool:
        with self._lock:
            return self._cap.exhausted()

    def stats(self) -> BudgetStats:
        with self._lock:
            return self._cap.stats()


class Budget:
    """At most ``usd`` dollars of model calls, shared by every kit and run given it.

    Args:
        usd: the cap in US dollars.
        max_output_tokens: output tokens reserved for a request without ``max_tokens``.
        spent: dollars already spent elsewhere, counted against the cap.

    Example:
        >>> budget = Budget(usd=10)
        >>> budget                                          # doctest: +ELLIPSIS
        Budget(usd=$10.00, spent=$0, reserved=$0, left=$10.00)
        >>> kit = batchkit(chain, budget=budget)            # doctest: +SKIP
        >>> kit.batch(prompts); budget.spent                # doctest: +SKIP
    """

    __slots__ = ("_backend", "max_output_tokens", "usd")

    def __init__(
        self,
        usd: float,
        *,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        spent: float = 0.0,
        backend: SpendingBackend | None = None,
    ) -> None:
        check_number("Budget.usd", usd, strict=True)
        check_int("Budget.max_output_tokens", max_output_tokens)
        check_number("Budget.spent", spent)
        self.usd = float(usd)
        self.max_output_tokens = max_output_tokens
        self._backend: SpendingBackend = backend or LocalSpending(SpendingCap(usd, spent))

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"Budget(usd={dollars(s.usd)}, spent={dollars(s.spent)}, "
            f"reserved={dollars(s.reserved)}, left={dollars(s.left)})"
        )

    def __reduce__(self) -> Any:
        # The backend decides: a local cap refuses to be copied, an actor's travels.
        return _rebuild, (self.usd, self.max_output_tokens, self._backend)

    @property
    def shared_across_processes(self) -> bool:
        """True when the cap lives outside this process (a Ray cluster's actor)."""
        return not isinstance(self._backend, LocalSpending)

    @property
    def spent(self) -> float:
        """Dollars spent so far (calls finished, as their usage was priced)."""
        return self.stats().spent

    @property
    def left(self) -> float:
        """Dollars not spent nor reserved by calls in flight."""
        return self.stats().left

    @property
    def exhausted(self) -> bool:
        """True once a call was refused: the runs sharing it start no new item."""
        return self._backend.exhausted()

    def stats(self) -> BudgetStats:
        """A snapshot: spent, reserved, left, refused and overshoot."""
        return self._backend.stats()

    def add_spent(self, usd: float) -> None:
        """Count dollars spent outside this process's calls (a resumed run's stored cost)."""
        self._backend.add_spent(check_number("add_spent's usd", usd))

    def resumed(self, checkpoint: str, stored: float) -> None:
        """A run resumes from ``checkpoint``, whose items cost ``stored`` dollars: count
        what this budget has not counted yet (all of it, in a new process)."""
        self._backend.resumed(checkpoint, stored)

    def recorded(self, checkpoint: str, cost: float | None) -> None:
        """An item this budget paid for was stored in ``checkpoint`` (counted once)."""
        self._backend.recorded(checkpoint, cost)

    def reserve(self, usd: float) -> bool:
        """Reserve a call's worst case; ``False`` (nothing reserved) if it would pass the cap."""
        return self._backend.reserve(usd)

    def settle(self, reserved: float, cost: float | None) -> None:
        """A call ended: its reservation becomes its cost (``None``: the reservation stands)."""
        self._backend.settle(reserved, cost)

    def release(self, reserved: float) -> None:
        """A call failed unanswered (not billed): give its reservation back."""
        self._backend.release(reserved)


def _rebuild(usd: float, max_output_tokens: int, backend: SpendingBackend) -> Budget:
    return Budget(usd, max_output_tokens=max_output_tokens, backend=backend)


@dataclass(frozen=True, slots=True)
class _Held:
    start: CallStart
    usd: float


class BudgetCallback(BaseCallbackHandler):
    """Reserves each model call's worst case from a :class:`Budget`, then settles it.

    ``raise_error``: a refused call raises :class:`BudgetExceededError` in the
    model's start callback, so it is never sent. The same handler serves sync and
    async managers (its events never wait).
    """

    raise_error = True
    run_inline = True

    def __init__(self, budget: Budget, prices: PriceBook) -> None:
        self.budget = budget
        self.prices = prices
        self._held: dict[UUID, _Held] = {}
        self._lock = threading.Lock()

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        """Reserve the call's worst case, or refuse it."""
        self._start(run_id, [m for group in messages for m in group], kwargs)

    def on_llm_start(
        self, serialized: Any, prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Reserve a completion call's worst case, or refuse it."""
        self._start(run_id, [HumanMessage(p) for p in prompts], kwargs)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Replace the reservation by the call's cost."""
        with self._lock:
            held = self._held.pop(run_id, None)
        if held is None:
            return
        try:
            cost = price_response(response, self.prices, held.start)
        except Exception:
            cost = None
        self.budget.settle(held.usd, cost)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """An unanswered call is not billed: give its reservation back."""
        with self._lock:
            held = self._held.pop(run_id, None)
        if held is not None:
            self.budget.release(held.usd)

    def worst_case(self, messages: Sequence[BaseMessage], kwargs: Mapping[str, Any]) -> float:
        """A call's most possible cost in dollars (raises if its model has no price)."""
        start = call_start(kwargs)
        price = self.prices.price(start.model, provider=start.provider, warn=False)
        if price is None:
            raise ConfigurationError(
                f"Budget cannot bound calls to {start.model or 'an unnamed model'!r}: its "
                "price is unknown. Pass prices={model: Price(...)} to the kit."
            )
        count = count_messages(messages, start.model)
        prompt = count.tokens * (1.0 if count.exact else 1.0 + ESTIMATE_MARGIN)
        params = kwargs.get("invocation_params") or {}
        limit = params.get("max_completion_tokens") or params.get("max_tokens")
        output = limit if isinstance(limit, int) and limit > 0 else self.budget.max_output_tokens
        share = price.flex if start.tier == "flex" else 1.0
        per_prompt_token = max(price.input, price.cache_write or 0.0)  # a cache write costs more
        return (prompt * per_prompt_token + output * price.output) / 1e6 * share

    def _start(self, run_id: UUID, messages: list[BaseMessage], kwargs: Mapping[str, Any]) -> None:
        usd = self.worst_case(messages, kwargs)
        if not self.budget.reserve(usd):
            s = self.budget.stats()
            raise BudgetExceededError(usd, s.left, s.usd)
        with self._lock:
            self._held[run_id] = _Held(call_start(kwargs), usd)


# A refused call is the budget working, and the item's result says so: LangChain's
# "Error in callback" warning for it is noise.
quiet_callback_errors("BudgetExceededError")
