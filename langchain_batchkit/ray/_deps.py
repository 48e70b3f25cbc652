"""Ray is optional: import it where it is needed, with an error that says how to get it."""

from __future__ import annotations

__all__ = ["INSTALL_HINT", "require_ray"]

#: What to run when Ray (or Ray Data's pyarrow) is missing.
INSTALL_HINT = "pip install 'langchain-batchkit[ray]'"


def require_ray(feature: str) -> None:
    """Check that ``ray`` and Ray Data's ``pyarrow`` import, or explain how to install them.

    Call it first in anything that needs Ray, then ``import ray`` there: the module
    is cached by then, and users without the extra get one clear message instead of
    a bare ``ModuleNotFoundError`` from deep inside.

    Args:
        feature: what needed Ray, for the error message (``"run_on_ray()"``).

    Example:
        >>> require_ray("run_on_ray()")   # doctest: +SKIP
    """
    try:
        import pyarrow  # type: ignore[import-untyped]  # noqa: F401
        import ray  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{feature} needs Ray Data: {INSTALL_HINT}") from exc
