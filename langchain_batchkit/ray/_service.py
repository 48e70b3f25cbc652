"""The one budget a whole Ray cluster reserves from: the reservation core, run as an actor.

The actor is :class:`~langchain_batchkit._reservations.Reservations` itself, the
very class an in-process :class:`~langchain_batchkit.RateLimit` holds, wrapped by
``ray.remote`` and nothing else. An actor runs one call at a time, so the core needs
no lock there, and every reservation is computed on the actor's own monotonic
clock: a worker is told how long to wait from the moment the actor answered, never
a time of day, so worker clocks never need to agree.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from langchain_batchkit._limit_settings import RateLimitSettings
from langchain_batchkit._reservations import Reservations

__all__ = ["start_service"]


def start_service(
    settings: RateLimitSettings,
    *,
    name: str | None,
    namespace: str | None,
    usd: float | None = None,
) -> Any:
    """Start the cluster's reservation actor (or join the one of that ``name``).

    It takes no CPU slot and Ray restarts it if it dies (with full buckets and a
    fresh pace: the requests after a restart are not paced against the ones before;
    a dollar cap restarts with nothing spent, so a restart loses what was counted).
    The token estimator stays with the workers: the actor is handed counts only.
    """
    import ray

    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1}
    if usd is not None:  # a restarted cap would forget what was spent: fail closed instead
        options.update(max_restarts=0, max_task_retries=0)
    if name is not None:
        options.update(name=name, namespace=namespace, get_if_exists=True)
    actor_class: Any = ray.remote(Reservations)
    return actor_class.options(**options).remote(replace(settings, token_estimator=None), usd=usd)
