"""A dollar Budget shared by a Ray cluster: the cap lives in the reservation actor."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray")

from langchain_batchkit import Budget, KitOptions, Price, batchkit  # noqa: E402
from langchain_batchkit._limit_settings import RateLimitSettings  # noqa: E402
from langchain_batchkit._reservations import Reservations  # noqa: E402
from langchain_batchkit.errors import ConfigurationError  # noqa: E402
from langchain_batchkit.ray import ClusterRateLimit, run_on_ray  # noqa: E402
from langchain_batchkit.testing import FakeChatModel  # noqa: E402

PRICES = {"fake": Price(input=100.0, output=100.0)}  # worst case ~$0.41 a call


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def test_the_reservation_core_carries_the_cap_as_one_more_bucket() -> None:
    core = Reservations(RateLimitSettings(requests_per_minute=60), usd=1.0)

    assert core.spend("reserve", 0.6) is True
    assert core.spend("reserve", 0.6) is False
    core.spend("settle", 0.6, 0.2)
    assert core.spend("exhausted") is True
    assert core.spend("stats").spent == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no such spending method"):
        core.spend("__init__")
    with pytest.raises(ValueError, match="no dollar cap"):
        Reservations(RateLimitSettings()).spend("stats")


def test_a_local_budget_refuses_to_be_copied_to_another_process() -> None:
    with pytest.raises(ConfigurationError, match="ClusterRateLimit"):
        pickle.dumps(Budget(usd=1.0))


@pytest.mark.usefixtures("ray_cluster")
def test_workers_share_one_cap_through_the_actor() -> None:
    limit = ClusterRateLimit(requests_per_minute=60_000, usd=0.45)
    here = limit.budget()
    there = pickle.loads(ray.cloudpickle.dumps(here))  # as a worker receives it
    assert here is limit.budget() and there is not here

    kits = [
        batchkit(FakeChatModel(), budget=budget, prices=PRICES, max_concurrency=2)
        for budget in (here, there)
    ]
    results = [kit.batch([f"worker {k} item {i}" for i in range(20)], progress=False)
               for k, kit in enumerate(kits)]  # fmt: skip

    stats = here.stats()
    assert stats.spent == pytest.approx(there.stats().spent)  # one cap, read from both
    assert stats.spent <= 0.45 and stats.refused >= 1
    ran = sum(len(r.succeeded) for r in results)
    assert 0 < ran < 40 and sum(r.summary().not_run for r in results) == 40 - ran
    assert there.exhausted and here.exhausted
    limit.close()


@pytest.mark.usefixtures("ray_cluster")
def test_a_cluster_limit_without_usd_has_no_budget() -> None:
    limit = ClusterRateLimit(requests_per_minute=600)
    with pytest.raises(ConfigurationError, match="usd="):
        limit.budget()
    limit.close()


@pytest.mark.usefixtures("ray_cluster")
def test_run_on_ray_takes_the_cluster_budget_and_refuses_a_local_one() -> None:
    with pytest.raises(ConfigurationError, match="ClusterRateLimit"):
        run_on_ray(
            _priced_fake,
            ["a", "b"],
            options=KitOptions(budget=Budget(usd=1.0), prices=PRICES),
            progress=False,
        )
    limit = ClusterRateLimit(requests_per_minute=60_000, usd=0.45)

    rows = run_on_ray(
        _priced_fake,
        [f"item {i}" for i in range(30)],
        batch_size=5,
        concurrency=2,
        options=KitOptions(budget=limit.budget(), prices=PRICES, max_concurrency=2),
        progress=False,
    ).take_all()

    assert len(rows) == 30
    statuses = {row["status"] for row in rows}
    assert "ok" in statuses and statuses - {"ok"}  # the cap stopped both workers
    assert limit.budget().spent <= 0.45
    limit.close()


def _priced_fake() -> FakeChatModel:
    return FakeChatModel()
