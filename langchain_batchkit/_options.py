"""One frozen value holds a kit's options, validated once.

``batchkit(chain, **options)`` builds it, ``kit.options`` shows it,
``kit.with_options(...)`` returns a new kit with some changed, and every batch
call accepts the same names for that call only (``kit.batch(xs, progress=False)``).
Nothing on a kit is settable after construction, so no setting silently does nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from langchain_batchkit._budget import Budget
from langchain_batchkit._checkpoint import Checkpoint
from langchain_batchkit._clock import Clock
from langchain_batchkit._concurrency import MaxConcurrency, validate_max_concurrency
from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._flex import DEFAULT_FLEX_DEADLINE
from langchain_batchkit._limits import RateLimit
from langchain_batchkit._prices import Price, PriceBook, as_price_book
from langchain_batchkit._progress import ProgressCallback
from langchain_batchkit._reask import Reask
from langchain_batchkit._retry import RetryPolicy
from langchain_batchkit._validate import check_number

__all__ = ["DEFAULT_RETRY", "OPTION_NAMES", "UNSET", "KitOptions", "Unset", "merge_options"]

#: The default retry policy: 3 attempts, exponential backoff with jitter, Retry-After.
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class KitOptions:
    """Everything that decides how a kit runs its chain; an immutable value.

    Attributes:
        max_concurrency: items in flight: an int, ``"auto"`` or a preset name.
        retry: how transient failures are retried per item (``None``: never).
        rate_limit: a shared :class:`RateLimit` pacing every model request.
        checkpoint: a :class:`Checkpoint` (a path is turned into one).
        key: each input's checkpoint key; default its index.
        retry_failed: on resume, run the items stored as failed again.
        progress: ``None`` bar for 10+ items, ``True`` always, ``False`` never.
        on_progress: called with a ``ProgressEvent`` per finished item or retry.
        desc: the bar's label (default: the chain's name).
        clock: the :class:`Clock` for waits; default: the retry policy's clock.
        budget: a shared dollar :class:`Budget`: no model call starts past it.
        prices: your own prices, ``{model name: Price}`` or a ``PriceBook`` (they win
            over the price database, which prices every other model).
        flex: run the chain's OpenAI chat models on the flex tier (Batch-API prices).
        flex_deadline: seconds an item keeps retrying on flex before it falls back to
            the standard tier.
        reask: a :class:`Reask`: an answer that fails to parse is sent back to the
            model with the error (``None``: such an item fails at once).
    """

    max_concurrency: MaxConcurrency = "auto"
    retry: RetryPolicy | None = DEFAULT_RETRY
    rate_limit: RateLimit | None = None
    checkpoint: Checkpoint | None = field(default=None)
    key: Callable[[Any], str] | None = None
    retry_failed: bool = False
    progress: bool | None = None
    on_progress: ProgressCallback | None = None
    desc: str | None = None
    clock: Clock | None = None
    budget: Budget | None = None
    prices: PriceBook | Mapping[str, Price] | None = None
    flex: bool = False
    flex_deadline: float = DEFAULT_FLEX_DEADLINE
    reask: Reask | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_concurrency", validate_max_concurrency(self.max_concurrency))
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {self.retry!r}")
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise ConfigurationError(
                f"rate_limit must be a RateLimit or None, got {self.rate_limit!r}"
            )
        checkpoint: object = self.checkpoint
        if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
            if not isinstance(checkpoint, str | os.PathLike):
                raise ConfigurationError(
                    f"checkpoint must be a path or a Checkpoint, got {type(checkpoint).__name__}"
                )
            object.__setattr__(self, "checkpoint", Checkpoint(checkpoint))
        if self.key is not None and not callable(self.key):
            raise ConfigurationError("key must be a callable returning each input's str key")
        if self.key is not None and self.checkpoint is None:
            raise ConfigurationError("key= names items in a checkpoint: pass checkpoint= too")
        if not isinstance(self.retry_failed, bool):
            raise ConfigurationError(
                f"retry_failed must be True or False, got {self.retry_failed!r}"
            )
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ConfigurationError(f"progress must be True, False or None, got {self.progress!r}")
        if self.on_progress is not None and not callable(self.on_progress):
            raise ConfigurationError("on_progress must be a callable taking a ProgressEvent")
        if self.desc is not None and not isinstance(self.desc, str):
            raise ConfigurationError(f"desc must be a str or None, got {self.desc!r}")
        if self.clock is not None and not isinstance(self.clock, Clock):
            raise ConfigurationError(
                "clock must be a Clock (callable for the time, with sleep and sleep_sync), "
                f"got {self.clock!r}"
            )

        if self.budget is not None and not isinstance(self.budget, Budget):
            raise ConfigurationError(f"budget must be a Budget or None, got {self.budget!r}")
        if self.prices is not None:
            object.__setattr__(self, "prices", as_price_book(self.prices))
        if not isinstance(self.flex, bool):
            raise ConfigurationError(f"flex must be True or False, got {self.flex!r}")
        check_number("flex_deadline", self.flex_deadline, minimum=0.0)
        if self.reask is not None and not isinstance(self.reask, Reask):
            raise ConfigurationError(f"reask must be a Reask or None, got {self.reask!r}")

    @property
    def price_book(self) -> PriceBook:
        """The prices this kit's costs use: the user's own, then the database."""
        return as_price_book(self.prices)

    def replace(self, changes: Mapping[str, Any]) -> KitOptions:
        """A copy with ``changes`` applied and validated; unknown names raise."""
        unknown = set(changes) - OPTION_NAMES
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {', '.join(sorted(unknown))}; options are "
                f"{', '.join(sorted(OPTION_NAMES))}"
            )
        return dataclasses.replace(self, **changes) if changes else self


#: The names ``batchkit()``, ``with_options()`` and every batch call accept as options.
OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(KitOptions))


class Unset(enum.Enum):
    """The type of :data:`UNSET`."""

    UNSET = "UNSET"


#: A keyword that was not given, distinct from an explicit ``None`` (``retry=None``
#: means "never retry", leaving ``retry`` out means "whatever ``options`` says").
UNSET: Final = Unset.UNSET


def merge_options(options: KitOptions | None, keywords: Mapping[str, object]) -> KitOptions:
    """``options`` (default: ``KitOptions()``) with the keywords that were given applied.

    For entry points that take a whole ``options=`` value and, for compatibility,
    some options as keywords too: a keyword left :data:`UNSET` keeps what
    ``options`` says, a given one replaces it. Validated once, by
    :class:`KitOptions`, so a bad value fails with the same error as in ``batchkit()``.

    Example:
        >>> merge_options(KitOptions(progress=False), {"desc": "run", "retry": UNSET}).desc
        'run'
    """
    if options is None:
        options = KitOptions()
    elif not isinstance(options, KitOptions):
        raise ConfigurationError(f"options must be a KitOptions, got {options!r}")
    return options.replace({name: v for name, v in keywords.items() if v is not UNSET})
