"""The public surface is what each public module's __all__ lists; both directions are checked.

Every public name a module defines or re-exports is in its ``__all__`` (nothing
leaks out unlisted), and everything in ``__all__`` exists, is public and has a
docstring (classes and functions) or is named in the module's docs (constants).
"""

from __future__ import annotations

import importlib
import inspect
import types
import warnings

import pytest

import langchain_batchkit

PUBLIC_MODULES = [
    "langchain_batchkit",
    "langchain_batchkit.sizing",
    "langchain_batchkit.errors",
    "langchain_batchkit.costs",
    "langchain_batchkit.testing",
    "langchain_batchkit.multimodal",
    "langchain_batchkit.ray",
]


def _isort_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_every_listed_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    names = list(module.__all__)
    assert names == sorted(names, key=_isort_key)  # ruff's RUF022 order
    for public in names:
        assert hasattr(module, public), public


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_name_is_listed(name: str) -> None:
    module = importlib.import_module(name)
    leaked = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, types.ModuleType)
        and attr not in {"annotations", "Any"}
    }
    assert leaked <= set(module.__all__), sorted(leaked - set(module.__all__))


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_everything_listed_is_documented(name: str) -> None:
    module = importlib.import_module(name)
    for public in module.__all__:
        if public.startswith("__"):
            continue
        value = getattr(module, public)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{public} has no docstring"


def test_the_top_level_is_small() -> None:
    assert set(langchain_batchkit.__all__) == {
        "INDEX_METADATA_KEY",
        "Attempt",
        "BatchAPIOptions",
        "BatchAPIRunner",
        "BatchEmbeddings",
        "BatchFailedError",
        "BatchKit",
        "BatchKitError",
        "BatchResult",
        "BatchSummary",
        "Budget",
        "Checkpoint",
        "CheckpointError",
        "Clock",
        "ConfigurationError",
        "EmbedLimits",
        "EmbedReport",
        "EmbeddingStore",
        "EventLoopMismatchError",
        "InputSourceError",
        "ItemError",
        "ItemResult",
        "KitOptions",
        "LimiterStats",
        "MicroBatcher",
        "PacedEmbeddings",
        "Price",
        "ProgressEvent",
        "RateLimit",
        "RateLimitSettings",
        "Reask",
        "RetryPolicy",
        "RootRunCounter",
        "RunReport",
        "TokenUsage",
        "__version__",
        "aembed_texts",
        "batchkit",
        "embed_texts",
        "paced_embeddings",
    }


@pytest.mark.parametrize(
    ("old", "module"),
    [
        ("PRESETS", "langchain_batchkit.sizing"),
        ("concurrency_for_rate_limit", "langchain_batchkit.sizing"),
        ("estimate_tokens", "langchain_batchkit.sizing"),
        ("BatchStateError", "langchain_batchkit.errors"),
        ("BatcherStoppedError", "langchain_batchkit.errors"),
    ],
)
def test_moved_names_still_import_with_a_deprecation_warning(old: str, module: str) -> None:
    with pytest.warns(DeprecationWarning, match=module):
        value = getattr(langchain_batchkit, old)
    assert value is getattr(importlib.import_module(module), old)


def test_the_old_spelling_of_the_base_error_still_works() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert langchain_batchkit.BatchkitError is langchain_batchkit.BatchKitError  # type: ignore[attr-defined]
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_package_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("langchain_batchkit").joinpath("py.typed").is_file()
