"""One rate limit for a whole Ray cluster: a reservation actor, and the limiter workers use.

Every worker paces its model requests through a :class:`RateLimit` whose buckets
live elsewhere: reservations go to one :class:`RateLimitService` actor, which
answers "wait this many seconds" from its own monotonic clock. The cap on requests
in flight (``max_in_flight``) and the adaptive halving of it after a 429 stay in
each worker: they protect that worker's connections, and a cluster-wide cap would
cost an actor round trip at the end of every request too.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._limits import RateLimit, TokenEstimator
from langchain_batchkit.ray._deps import require_ray
from langchain_batchkit.ray._service import ClusterLimiterStats, RateLimitService

__all__ = ["ClusterRateLimit"]


@dataclass(frozen=True, slots=True)
class _Settings:
    """What each worker's limiter is built from (validated once, on the driver)."""

    requests_per_minute: float | None
    tokens_per_minute: float | None
    max_in_flight: int | None
    burst: float
    headroom: float
    adaptive: bool
    cooldown: float
    token_estimator: TokenEstimator | None

    def local(self) -> dict[str, Any]:
        return asdict(self)


class ClusterRateLimit:
    """One requests- and tokens-per-minute budget shared by every Ray worker.

    ``N`` workers each given ``RateLimit(requests_per_minute=500)`` send up to
    ``N x 500`` requests a minute, and dividing the limit by ``N`` wastes it whenever
    a worker idles or the pool resizes. This keeps the budget in **one** Ray actor:
    before each model request a worker reserves a slot there (one small actor call,
    awaited on the worker's loop) and sleeps exactly until its turn, so together the
    workers stay under the provider's limit. A 429 with ``Retry-After`` seen by any
    worker pauses every reservation made after it. The actor takes no CPU slot and
    Ray restarts it if it dies (with full buckets: the first requests after a
    restart are not paced against the ones before).

    Pass it to :func:`run_on_ray` or :class:`BatchKitMapper` (it pickles as the actor
    handle plus its settings; each worker builds its limiter on first use), or use
    :meth:`limiter` in the driver to pace a local :func:`batchkit` run from the same
    budget.

    ``max_in_flight`` is **per worker**: it caps the requests one worker has open,
    and after a 429 that worker halves it (see :class:`RateLimit`'s ``adaptive``).
    Creating one needs Ray (``ray.init()`` first, or Ray starts a local instance).

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
        adaptive: react to 429s and ``x-ratelimit-*`` headers in each worker.
        cooldown: seconds between two halvings of a worker's in-flight cap.
        token_estimator: ``(messages, invocation_params) -> tokens`` (must pickle).
        name: name the actor, so another driver in the same namespace that asks for
            the same name shares this budget (the first one's settings win).
        namespace: the Ray namespace of a named actor.

    Example:
        >>> limit = ClusterRateLimit(requests_per_minute=500, max_in_flight=16)  # doctest: +SKIP
        >>> run_on_ray(make_chain, prompts, rate_limit=limit, concurrency=4)    # doctest: +SKIP
        >>> limit.stats()                                                       # doctest: +SKIP
    """

    __slots__ = ("_local", "_lock", "_service", "_settings")

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_in_flight: int | None = None,
        burst: float = 1.0,
        headroom: float = 0.97,
        adaptive: bool = True,
        cooldown: float = 1.0,
        token_estimator: TokenEstimator | None = None,
        name: str | None = None,
        namespace: str | None = None,
    ) -> None:
        settings = _Settings(
            requests_per_minute,
            tokens_per_minute,
            max_in_flight,
            burst,
            headroom,
            adaptive,
            cooldown,
            token_estimator,
        )
        RateLimit(**settings.local())  # validates every field, naming a bad one
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"name must be a non-empty str or None, got {name!r}")
        require_ray("ClusterRateLimit")
        import ray

        options: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1}
        if name is not None:
            options.update(name=name, namespace=namespace, get_if_exists=True)
        actor_class: Any = ray.remote(RateLimitService)
        self._service: Any = actor_class.options(**options).remote(
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            burst=burst,
            headroom=headroom,
        )
        self._settings = settings
        self._local: RateLimit | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> tuple[Any, _Settings]:
        return self._service, self._settings

    def __setstate__(self, state: tuple[Any, _Settings]) -> None:
        self._service, self._settings = state
        self._local = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        s = self._settings
        return (
            f"ClusterRateLimit(requests_per_minute={s.requests_per_minute}, "
            f"tokens_per_minute={s.tokens_per_minute}, max_in_flight={s.max_in_flight})"
        )

    @property
    def max_in_flight(self) -> int | None:
        """The cap on requests in flight in each worker."""
        return self._settings.max_in_flight

    def limiter(self) -> RateLimit:
        """This process's limiter, built on first use: pass it to ``batchkit(rate_limit=)``.

        Every call in one process returns the same object, so the per-worker
        ``max_in_flight`` covers every block that worker runs.
        """
        with self._lock:
            if self._local is None:
                self._local = _SharedBudgetLimit(self._service, self._settings)
            return self._local

    def stats(self) -> ClusterLimiterStats:
        """What the shared budget has handed out, counted by the actor (all workers)."""
        import ray

        stats: ClusterLimiterStats = ray.get(self._service.stats.remote())
        return stats

    def close(self) -> None:
        """Stop the actor (for every user of a named one). Ray also stops it with the driver."""
        import ray

        ray.kill(self._service)


class _SharedBudgetLimit(RateLimit):
    """A :class:`RateLimit` whose requests and tokens are reserved from a Ray actor.

    The in-flight cap, the adaptive cap and the local pause stay in this process.
    An async model call awaits its reservation on its loop; a sync one (a worker
    thread) blocks on it with ``ray.get`` (the ``_reserve`` override below serves
    both that and LangChain's ``acquire``). Messages the actor need
    not answer (a pause, tokens given back) are sent without waiting, and their
    replies are collected before the next reservation, so a failure there surfaces
    instead of vanishing. If the actor cannot be reached, the model call fails
    (the item's error says why) rather than going out unpaced.
    """

    def __init__(self, service: Any, settings: _Settings) -> None:
        super().__init__(**settings.local())
        self._service = service
        self._unsettled: list[Any] = []
        # Fail closed: LangChain would log a failing callback and send the request
        # anyway, unpaced; a budget that cannot be reached must fail the call instead.
        self.callback.raise_error = True

    # -- the hooks RateLimit leaves for a budget that lives elsewhere ----------------------

    async def _areserve(self, tokens: int) -> float:
        delay = await self._aask(tokens, blocking=True)
        assert delay is not None
        return delay

    def _share_pause(self, seconds: float) -> None:
        self._remember(self._service.pause.remote(seconds))

    def _reserve_again(self, tokens: int) -> float:
        # The actor cannot forget a reservation: one made there stands, and a request
        # re-paced here only waits out this process's pause (it is never booked twice).
        return self._pause_remaining()

    # -- the other paths to the buckets: LangChain's BaseRateLimiter, token corrections --------

    def _reserve(self, tokens: int, *, blocking: bool) -> float | None:
        import ray

        ray.get(self._take_unsettled())
        delay: float | None = ray.get(self._service.reserve.remote(tokens, blocking))
        return self._granted(delay)

    async def aacquire(self, *, blocking: bool = True) -> bool:
        """Reserve one request from the shared budget, sleeping on this loop until it may start."""
        delay = await self._aask(0, blocking=blocking)
        if delay is None:
            return False
        if delay > 0:
            await self._sleep(delay)
        return True

    def exit(
        self,
        run_id: UUID,
        *,
        used_tokens: int | None = None,
        headers: Mapping[str, str] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Finish the request locally, and correct the shared budget by the tokens used."""
        with self._lock:
            call = self._calls.get(run_id)
        super().exit(run_id, used_tokens=used_tokens, headers=headers, error=error)
        if call is not None and used_tokens is not None and self._tokens is not None:
            unused = call.tokens - used_tokens
            if unused:
                self._remember(self._service.give_back.remote(unused))

    # -- internals -----------------------------------------------------------------------------

    async def _aask(self, tokens: int, *, blocking: bool) -> float | None:
        for ref in self._take_unsettled():
            await ref
        delay: float | None = await self._service.reserve.remote(tokens, blocking)
        return self._granted(delay)

    def _granted(self, delay: float | None) -> float | None:
        """The wait for a granted reservation (or a pause begun here), counted in stats."""
        if delay is None:
            return None
        wait = max(delay, self._pause_remaining())
        with self._lock:
            self._n_requests += 1
            if wait > 0:
                self._n_waited += 1
                self._wait_seconds += wait
        return wait

    def _remember(self, ref: Any) -> None:
        with self._lock:
            self._unsettled.append(ref)

    def _take_unsettled(self) -> list[Any]:
        with self._lock:
            refs, self._unsettled = self._unsettled, []
        return refs
