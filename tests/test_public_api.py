"""The public surface is what __init__ lists; this test fails when it drifts."""

from __future__ import annotations

import langchain_batchkit
import langchain_batchkit.testing


def _isort_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_exported() -> None:
    for module in (langchain_batchkit, langchain_batchkit.testing):
        names = module.__all__
        # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions
        assert names == sorted(
            names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
        )
        for name in names:
            assert hasattr(module, name), name


def test_public_surface_is_exactly_this() -> None:
    assert set(langchain_batchkit.__all__) == {
        "INDEX_METADATA_KEY",
        "PRESETS",
        "BatchFailedError",
        "BatchAPIError",
        "BatchAPIOptions",
        "BatchAPIRunner",
        "BatchJobUnfinishedError",
        "BatchRequestError",
        "BatchStateError",
        "BatcherStoppedError",
        "BatchOutputMismatchError",
        "MicroBatcher",
        "BatchKit",
        "BatchResult",
        "BatchSummary",
        "BatchkitError",
        "Checkpoint",
        "CheckpointError",
        "ConcurrencyPlan",
        "ConcurrencyPreset",
        "ConfigurationError",
        "InputSourceError",
        "ItemError",
        "ItemResult",
        "LimiterStats",
        "ProgressEvent",
        "RateLimit",
        "RetryPolicy",
        "RunReport",
        "RootRunCounter",
        "TokenUsage",
        "__version__",
        "batchkit",
        "concurrency_for_rate_limit",
        "concurrency_for_size",
        "estimate_tokens",
    }


def test_package_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("langchain_batchkit").joinpath("py.typed").is_file()
