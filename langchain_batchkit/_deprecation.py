"""Old names and old arguments that keep working for one release, with a DeprecationWarning.

One place writes the warning text, so every deprecation says the same thing: what to
use instead, and that the old spelling goes in the next release.

Example:
    >>> class NewThing: ...
    >>> __getattr__ = deprecated_names(__name__, renamed={"OldThing": NewThing})
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     __getattr__("OldThing") is NewThing
    True
    >>> str(caught[0].message)
    'OldThing is renamed NewThing; the old name goes in the next release'
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["deprecated_names", "warn_deprecated"]


def warn_deprecated(message: str, *, stacklevel: int = 2) -> None:
    """Warn that something goes in the next release; ``stacklevel`` as for ``warnings.warn``,
    counted from the caller of this function."""
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel + 1)


def deprecated_names(
    module: str,
    *,
    renamed: Mapping[str, type[Any]] | None = None,
    moved: Mapping[str, str] | None = None,
) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that still serves old names, with a warning.

    Args:
        module: the module's ``__name__``, for the messages.
        renamed: old name -> the class now spelled differently (the new name is its
            ``__name__``).
        moved: name -> the module it now lives in (imported when first asked for).

    Returns:
        The function to assign to ``__getattr__`` in that module; any other name
        raises ``AttributeError`` as a module without ``__getattr__`` would.
    """
    renamed = dict(renamed or {})
    moved = dict(moved or {})

    def __getattr__(name: str) -> Any:
        if name in renamed:
            new = renamed[name]
            warn_deprecated(
                f"{name} is renamed {new.__name__}; the old name goes in the next release"
            )
            return new
        if name in moved:
            where = moved[name]
            warn_deprecated(
                f"{module}.{name} moved to {where}.{name}; the old import goes in the next release"
            )
            return getattr(importlib.import_module(where), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
