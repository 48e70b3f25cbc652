"""One rate limit for a whole Ray cluster: a reservation actor, and the limiter workers use.

Every worker paces its model requests through a :class:`RateLimit` built from the
same parts as an in-process one (settings, gate, in-flight cap, callback) except
its reservation backend: :class:`ActorReservations` forwards each reservation call
to one actor running the reservation core (:mod:`langchain_batchkit.ray._service`),
which answers "wait this many seconds" from its own monotonic clock. The cap on
requests in flight (``max_in_flight``) and its halving after a 429 stay in each
worker: they protect that worker's connections, and a cluster-wide cap would cost
an actor round trip before every request's end too.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_batchkit._budget import Budget
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._limit_settings import RateLimitKeywords, SettingsView
from langchain_batchkit._limits import (
    LimiterStats,
    RateLimit,
    RateLimitSettings,
)
from langchain_batchkit._reservations import Outcome, Turn
from langchain_batchkit._spending import BudgetStats
from langchain_batchkit.ray._deps import require_ray
from langchain_batchkit.ray._service import start_service

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ActorReservations", "ClusterRateLimit"]


class ClusterRateLimit(SettingsView):
    """One requests- and tokens-per-minute budget shared by every Ray worker.

    ``N`` workers each given ``RateLimit(requests_per_minute=500)`` send up to
    ``N x 500`` requests a minute, and dividing the limit by ``N`` wastes it whenever
    a worker idles or the pool resizes. This keeps the budget in **one** Ray actor:
    before each model request a worker reserves a slot there (one small actor call,
    awaited on the worker's loop) and sleeps exactly until its turn, so together the
    workers stay under the provider's limit. The actor runs the same reservation
    core as an in-process :class:`RateLimit`, so adaptation is cluster-wide too: a
    429 seen by any worker pauses and re-paces every worker's requests, and the
    pace learned from 429s is one for all. Workers report how their requests ended
    without waiting for the actor. The actor takes no CPU slot and Ray restarts it
    if it dies (with full buckets: the first requests after a restart are not paced
    against the ones before).

    Pass it to :func:`run_on_ray` or :class:`BatchKitMapper` (it pickles as the actor
    handle plus its settings; each worker builds its limiter on first use), or use
    :meth:`limiter` in the driver to pace a local :func:`batchkit` run from the same
    budget.

    Its settings read as a :class:`RateLimit`'s do (``settings``, ``max_in_flight``, ...).
    ``max_in_flight`` is **per worker**: it caps the requests one worker has open,
    and after a 429 that worker halves it (see :class:`RateLimit`'s ``adaptive``).
    Creating one needs Ray (``ray.init()`` first, or Ray starts a local instance).

    The budgets are :class:`RateLimit`'s keywords (one list, :class:`RateLimitSettings`),
    applied to the whole cluster:

    Args:
        requests_per_minute: cluster-wide request budget.
        tokens_per_minute: cluster-wide token budget (estimated before each request,
            corrected by the response's usage).
        max_in_flight: requests in flight at once **in each worker**.
        burst: requests that may start back to back (1 = evenly spaced).
        headroom: fraction of the budgets to use: pacing at exactly the limit lets
            jitter (a busy worker's event loop, the actor round trip) put L+1
            requests into the provider's window. 0.97 suits per-minute windows;
            second-scale windows on loaded machines want about 0.9.
        adaptive: react to 429s and ``x-ratelimit-*`` headers: the shared pace and
            pauses, and each worker's in-flight cap.
        cooldown: seconds between two halvings of a worker's in-flight cap.
        max_pause: the longest one answer may pause every worker (see :class:`RateLimit`).
        token_estimator: ``(messages, invocation_params) -> tokens`` (must pickle).
        usd: a dollar cap for every worker together (see :meth:`budget`).
        name: name the actor, so another driver in the same namespace that asks for
            the same name shares this budget (the first one's settings win).
        namespace: the Ray namespace of a named actor.

    Example:
        >>> limit = ClusterRateLimit(requests_per_minute=500, max_in_flight=16)  # doctest: +SKIP
        >>> run_on_ray(make_chain, prompts, rate_limit=limit, concurrency=4)    # doctest: +SKIP
        >>> limit.stats()                                                       # doctest: +SKIP
    """

    __slots__ = ("_budget", "_local", "_lock", "_service", "_settings", "_usd")

    def __init__(
        self,
        *,
        name: str | None = None,
        namespace: str | None = None,
        usd: float | None = None,
        **limits: Unpack[RateLimitKeywords],
    ) -> None:
        settings = RateLimitSettings(**limits)  # validates every field, naming a bad one
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"name must be a non-empty str or None, got {name!r}")
        if usd is not None:
            Budget(usd)  # validates it, naming the field
        require_ray("ClusterRateLimit")
        self._service: Any = start_service(settings, name=name, namespace=namespace, usd=usd)
        self._settings = settings
        self._usd = usd
        self._local: RateLimit | None = None
        self._budget: Budget | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> tuple[Any, RateLimitSettings, float | None]:
        return self._service, self._settings, self._usd

    def __setstate__(self, state: tuple[Any, RateLimitSettings, float | None]) -> None:
        self._service, self._settings, self._usd = state
        self._local = None
        self._budget = None
        self._lock = threading.Lock()

    def budget(self) -> Budget:
        """The cluster's dollar :class:`Budget` (``usd=``): pass it as ``budget=``.

        Every worker's calls reserve from the one cap in the actor, so N workers
        together stay under ``usd``. It pickles as the actor handle.

        Raises:
            ConfigurationError: this limit was made without ``usd=``.
        """
        if self._usd is None:
            raise ConfigurationError("this ClusterRateLimit has no dollar cap: pass usd=...")
        with self._lock:
            if self._budget is None:
                self._budget = Budget(self._usd, backend=ActorSpending(self._service))
            return self._budget

    def limiter(self) -> RateLimit:
        """This process's limiter, built on first use: pass it to ``batchkit(rate_limit=)``.

        Every call in one process returns the same object, so the per-worker
        ``max_in_flight`` covers every block that worker runs.
        """
        with self._lock:
            if self._local is None:
                backend = ActorReservations(self._service)
                self._local = RateLimit.from_settings(self._settings, backend=backend)
            return self._local

    def stats(self) -> LimiterStats:
        """What the shared budget has done, counted by the actor (every worker together).

        There is no cluster-wide cap on requests in flight (each worker caps its
        own), so ``in_flight_cap`` is ``inf``.
        """
        import ray

        stats: LimiterStats = ray.get(self._service.stats.remote())
        return stats

    def close(self) -> None:
        """Stop the actor (for every user of a named one). Ray also stops it with the driver."""
        import ray

        ray.kill(self._service)


class ActorReservations:
    """A reservation backend whose core is the cluster's actor (one call, one actor call).

    A call that answers is awaited on the model call's loop, or blocks a worker
    thread with ``ray.get``. Calls that answer nothing (a request started, ended,
    a pause) are sent without waiting, and their replies are collected before the
    next call that answers, so a failure there surfaces instead of vanishing. If
    the actor cannot be reached, the model call fails (the item's error says why)
    rather than going out unpaced: the limiter's callback raises.

    Example:
        >>> backend = ActorReservations(actor_handle)             # doctest: +SKIP
        >>> limit = RateLimit.from_settings(settings, backend=backend)  # doctest: +SKIP
    """

    __slots__ = ("_actor", "_lock", "_unsettled")

    def __init__(self, actor: Any) -> None:
        self._actor = actor
        self._lock = threading.Lock()
        self._unsettled: list[Any] = []

    def __repr__(self) -> str:
        return f"ActorReservations({self._actor!r})"

    def reserve(self, tokens: int, *, blocking: bool = True) -> Turn | None:
        """Reserve from the actor, blocking this thread for its answer."""
        turn: Turn | None = self._get(self._actor.reserve, tokens, blocking=blocking)
        return turn

    async def areserve(self, tokens: int, *, blocking: bool = True) -> Turn | None:
        """Reserve from the actor, awaiting its answer on this loop."""
        turn: Turn | None = await self._await(self._actor.reserve, tokens, blocking=blocking)
        return turn

    def next_turn(self, turn: Turn, tokens: int) -> Turn:
        """Ask the actor whether ``turn`` still stands, blocking this thread."""
        answer: Turn = self._get(self._actor.next_turn, turn, tokens)
        return answer

    async def anext_turn(self, turn: Turn, tokens: int) -> Turn:
        """Ask the actor whether ``turn`` still stands, awaiting on this loop."""
        answer: Turn = await self._await(self._actor.next_turn, turn, tokens)
        return answer

    def start(self, call_id: UUID, tokens: int, epoch: int) -> None:
        """Tell the actor the request went out (not waiting)."""
        self._remember(self._actor.start.remote(call_id, tokens, epoch))

    def settle(self, call_id: UUID, outcome: Outcome) -> None:
        """Tell the actor how the request ended (not waiting)."""
        self._remember(self._actor.settle.remote(call_id, outcome))

    def pause(self, seconds: float) -> None:
        """Pause every worker's requests (not waiting)."""
        self._remember(self._actor.pause.remote(seconds))

    def stats(self) -> LimiterStats:
        """The actor's counters (every worker's)."""
        stats: LimiterStats = self._get(self._actor.stats)
        return stats

    # -- internals -----------------------------------------------------------------------------

    def _get(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call an actor method and block for its answer, after the earlier replies."""
        import ray

        ray.get(self._take_unsettled())
        return ray.get(method.remote(*args, **kwargs))

    async def _await(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call an actor method and await its answer, after the earlier replies."""
        for earlier in self._take_unsettled():
            await earlier
        return await method.remote(*args, **kwargs)

    def _remember(self, ref: Any) -> None:
        with self._lock:
            self._unsettled.append(ref)

    def _take_unsettled(self) -> list[Any]:
        with self._lock:
            refs, self._unsettled = self._unsettled, []
        return refs


class ActorSpending:
    """A :class:`Budget`'s cap kept in the cluster's actor (its ``spend`` method).

    A reservation waits for the actor's answer (a call must not go out unreserved);
    settling, releasing and bookkeeping are sent without waiting and collected
    before the next reservation, so a failure surfaces there. ``exhausted`` is read
    from the actor at most every :data:`EXHAUSTED_CHECK_SECONDS` (the window asks
    often), and at once after this process had a call refused.
    """

    __slots__ = ("_actor", "_checked", "_exhausted", "_lock", "_unsettled")

    def __init__(self, actor: Any) -> None:
        self._actor = actor
        self._lock = threading.Lock()
        self._unsettled: list[Any] = []
        self._exhausted = False
        self._checked = -math.inf

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return ActorSpending, (self._actor,)

    def reserve(self, usd: float) -> bool:
        ok = bool(self._ask("reserve", usd))
        if not ok:
            self._exhausted = True
        return ok

    def settle(self, reserved: float, cost: float | None) -> None:
        self._tell("settle", reserved, cost)

    def release(self, reserved: float) -> None:
        self._tell("release", reserved)

    def add_spent(self, usd: float) -> None:
        self._tell("add_spent", usd)

    def resumed(self, checkpoint: str, stored: float) -> None:
        self._tell("resumed", checkpoint, stored)

    def recorded(self, checkpoint: str, cost: float | None) -> None:
        self._tell("recorded", checkpoint, cost)

    def exhausted(self) -> bool:
        if self._exhausted:
            return True
        now = time.monotonic()
        if now - self._checked >= EXHAUSTED_CHECK_SECONDS:
            self._checked = now
            self._exhausted = bool(self._ask("exhausted"))
        return self._exhausted

    def stats(self) -> BudgetStats:
        stats: BudgetStats = self._ask("stats")
        return stats

    def _ask(self, method: str, *args: Any) -> Any:
        import ray

        with self._lock:
            refs, self._unsettled = self._unsettled, []
        ray.get(refs)
        return ray.get(self._actor.spend.remote(method, *args))

    def _tell(self, method: str, *args: Any) -> None:
        ref = self._actor.spend.remote(method, *args)
        with self._lock:
            self._unsettled.append(ref)


#: Seconds between two reads of the cluster cap's ``exhausted`` flag by one process.
EXHAUSTED_CHECK_SECONDS = 0.5
