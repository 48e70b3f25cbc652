"""Checking option values, written once: every bad value raises a ConfigurationError naming it.

An int is an ``int`` that is not a ``bool`` (``True`` is an int to Python, never
to us); a number is a finite int or float that is not a ``bool``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from langchain_batchkit._errors import ConfigurationError

T = TypeVar("T")

__all__ = [
    "check_callable",
    "check_int",
    "check_number",
    "check_optional",
    "is_int",
    "is_number",
]


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object, *, finite: bool = True) -> bool:
    """An ``int`` or ``float`` that is not a ``bool`` (and is finite, unless told)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) or (not finite and not math.isnan(value))


def check_int(name: str, value: object, *, minimum: int = 1, or_none: bool = False) -> int:
    """``value`` if it is an int >= ``minimum``, else a ConfigurationError naming ``name``.

    Example:
        >>> check_int("max_attempts", 3)
        3
        >>> check_int("max_attempts", True)
        Traceback (most recent call last):
        ...
        langchain_batchkit._errors.ConfigurationError: max_attempts must be an int >= 1, got True
    """
    if not is_int(value) or value < minimum:  # type: ignore[operator]
        none = " or None" if or_none else ""
        raise ConfigurationError(f"{name} must be an int >= {minimum}{none}, got {value!r}")
    return value  # type: ignore[return-value]


def check_number(
    name: str,
    value: object,
    *,
    minimum: float = 0.0,
    maximum: float = math.inf,
    strict: bool = False,
    allow_inf: bool = False,
    or_none: bool = False,
) -> float:
    """``value`` if it is a number in range (``> minimum`` when ``strict``), else a
    ConfigurationError naming ``name`` and the range."""
    ok = is_number(value, finite=not allow_inf)
    if ok:
        number = float(value)  # type: ignore[arg-type]
        ok = (number > minimum if strict else number >= minimum) and number <= maximum
    if not ok:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        upper = f" and <= {maximum}" if maximum != math.inf else ""
        none = " or None" if or_none else ""
        raise ConfigurationError(f"{name} must be a number {bound}{upper}{none}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_optional(check: Callable[..., T], name: str, value: object, **limits: float) -> T | None:
    """``None``, or ``value`` passed through ``check`` (:func:`check_int` or :func:`check_number`).

    Example:
        >>> check_optional(check_number, "rpm", None, strict=True) is None
        True
        >>> check_optional(check_number, "rpm", 0, strict=True)
        Traceback (most recent call last):
        ...
        langchain_batchkit._errors.ConfigurationError: rpm must be a number > 0.0 or None, got 0
    """
    if value is None:
        return None
    return check(name, value, or_none=True, **limits)


def check_callable(name: str, value: object, signature: str) -> None:
    """A ConfigurationError naming ``name`` unless ``value`` is callable (as ``signature``)."""
    if not callable(value):
        raise ConfigurationError(f"{name} must be a callable {signature}, got {value!r}")
