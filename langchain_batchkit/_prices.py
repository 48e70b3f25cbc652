"""What a model call costs, in US dollars, from a maintained price database.

Prices come from ``genai-prices`` (the pydantic project's price data, updated
monthly; the wheel carries an offline snapshot, and we never ask it to fetch a
newer one, so nothing downloads at run time). A user's own :class:`Price` for a
model (fine-tuned, self-hosted, negotiated) wins over the database.

A call is priced from the usage the provider reported (input tokens, the cached
share of them, cache writes, output tokens; images are billed as input tokens by
OpenAI and Anthropic, and arrive counted in them) and the tier it ran on: the
Batch API and OpenAI's flex tier are billed at their own rates. An unknown model
costs ``None``, with one :class:`~langchain_batchkit.errors.CostWarning` per
model, never a guess.

Money is a ``float`` of US dollars: tables, JSON and pandas take it as is, and
summing a million calls of a fraction of a cent drifts by less than 1e-9 $.
The database's ``Decimal`` prices are converted once per model.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from langchain_batchkit._errors import ConfigurationError, CostWarning
from langchain_batchkit._validate import check_number

__all__ = ["CallUsage", "Price", "PriceBook", "Tier", "as_price_book"]

#: The tier a call ran on: plain calls, OpenAI's flex tier, or a provider's Batch API.
Tier = Literal["standard", "flex", "batch"]

_PER = 1_000_000.0
#: The token units :class:`Price` covers; a database entry pricing anything else per
#: token (audio, tiers by prompt length) is priced by the database itself, per call.
_TOKEN_KEYS = {"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"}


@dataclass(frozen=True, slots=True)
class CallUsage:
    """The billed tokens of one model call.

    Attributes:
        input_tokens: every input token, the cached ones included (as providers report).
        output_tokens: output tokens, reasoning tokens included.
        cache_read: input tokens read from the provider's prompt cache.
        cache_write: input tokens written to it (Anthropic bills them above input).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @classmethod
    def from_metadata(cls, meta: object) -> CallUsage | None:
        """Read LangChain's ``usage_metadata`` (a message's), if it is one."""
        if not isinstance(meta, Mapping):
            return None
        details = meta.get("input_token_details")
        details = details if isinstance(details, Mapping) else {}
        return cls(
            _count(meta.get("input_tokens")),
            _count(meta.get("output_tokens")),
            _count(details.get("cache_read")),
            _count(details.get("cache_creation")),
        )


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price in US dollars per million tokens.

    Args:
        input: per million input tokens.
        output: per million output tokens.
        cached_input: per million input tokens read from the prompt cache
            (``None``: billed as ``input``).
        cache_write: per million input tokens written to the cache
            (``None``: billed as ``input``).
        batch: what the Batch API charges, as a share of these prices.
        flex: what OpenAI's flex tier charges, as a share of these prices.

    Example:
        >>> price = Price(input=0.15, output=0.60, cached_input=0.075)
        >>> round(price.cost(CallUsage(input_tokens=1000, output_tokens=500)), 6)
        0.00045
        >>> round(price.cost(CallUsage(input_tokens=1000, output_tokens=500), "batch"), 6)
        0.000225
    """

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    batch: float = 0.5
    flex: float = 0.5

    def __post_init__(self) -> None:
        for name in ("input", "output", "batch", "flex"):
            check_number(f"Price.{name}", getattr(self, name))
        for name in ("cached_input", "cache_write"):
            if getattr(self, name) is not None:
                check_number(f"Price.{name}", getattr(self, name), or_none=True)

    def cost(self, usage: CallUsage, tier: Tier = "standard") -> float:
        """The dollars ``usage`` costs at this price on ``tier``."""
        cached = min(usage.cache_read, usage.input_tokens)
        written = min(usage.cache_write, usage.input_tokens - cached)
        plain = usage.input_tokens - cached - written
        dollars = (
            plain * self.input
            + cached * (self.input if self.cached_input is None else self.cached_input)
            + written * (self.input if self.cache_write is None else self.cache_write)
            + usage.output_tokens * self.output
        ) / _PER
        if tier == "batch":
            return dollars * self.batch
        if tier == "flex":
            return dollars * self.flex
        return dollars


class PriceBook:
    """Prices by model name: the user's own first, then the price database.

    Args:
        prices: ``{model name: Price}``. A name matches the model exactly or as the
            start of a dated or suffixed name (``"gpt-4o-mini"`` prices
            ``"gpt-4o-mini-2024-07-18"``), case-insensitively; the longest match wins.
        database: look models up in ``genai-prices`` too (``False``: only ``prices``).

    A model found nowhere costs ``None`` and warns once per model and book.
    """

    __slots__ = ("_cache", "_database", "_lock", "_prices", "_warned")

    def __init__(self, prices: Mapping[str, Price] | None = None, *, database: bool = True) -> None:
        own: dict[str, Price] = {}
        for name, price in (prices or {}).items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"prices= keys must be model names, got {name!r}")
            if not isinstance(price, Price):
                raise ConfigurationError(
                    f"prices[{name!r}] must be a Price(input=..., output=...), got "
                    f"{type(price).__name__}"
                )
            own[name.lower()] = price
        self._prices = own
        self._database = database
        self._cache: dict[tuple[str, str | None, Tier], _Resolved | None] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PriceBook(models={sorted(self._prices)}, database={self._database})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to Ray workers with a kit's options: the prices travel, the cache does not.
        return PriceBook, (self._prices,), {"database": self._database}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._database = state["database"]

    def cost(
        self,
        usage: CallUsage,
        model: str | None,
        *,
        provider: str | None = None,
        tier: Tier = "standard",
    ) -> float | None:
        """Dollars for one call of ``model``, or ``None`` when its price is unknown."""
        resolved = self._resolve(model, provider, tier)
        return None if resolved is None else resolved.cost(usage, tier)

    def price(
        self, model: str | None, *, provider: str | None = None, warn: bool = True
    ) -> Price | None:
        """The per-token price of ``model`` (for estimates), or ``None`` when unknown."""
        if warn:
            resolved = self._resolve(model, provider, "standard")
        else:
            resolved = self._lookup(model, provider, "standard")
        return None if resolved is None else resolved.unit

    def known(self, model: str | None, *, provider: str | None = None) -> bool:
        """Whether ``model`` has a price (no warning either way)."""
        return self._lookup(model, provider, "standard") is not None

    def _resolve(self, model: str | None, provider: str | None, tier: Tier) -> _Resolved | None:
        found = self._lookup(model, provider, tier)
        if found is None:
            self._warn(model)
        return found

    def _lookup(self, model: str | None, provider: str | None, tier: Tier) -> _Resolved | None:
        if not model:
            return None
        key = (model.lower(), provider, tier)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        own = self._own(key[0])
        resolved: _Resolved | None
        if own is not None:
            resolved = _Resolved(own, None)
        elif self._database:
            resolved = _from_database(model, provider, tier)
        else:
            resolved = None
        with self._lock:
            self._cache[key] = resolved
        return resolved

    def _own(self, name: str) -> Price | None:
        best = ""
        for known in self._prices:
            if (name == known or name.startswith(known + "-")) and len(known) > len(best):
                best = known
        return self._prices.get(best) if best else None

    def _warn(self, model: str | None) -> None:
        shown = model or "<no model name>"
        with self._lock:
            if shown in self._warned:
                return
            self._warned.add(shown)
        warnings.warn(
            f"no price known for model {shown!r}: its calls cost None. Pass "
            f"prices={{{shown!r}: Price(input=..., output=...)}} to price it.",
            CostWarning,
            stacklevel=2,
        )


def as_price_book(prices: PriceBook | Mapping[str, Price] | None) -> PriceBook:
    """The book for a ``prices=`` option: a book as is, a mapping on top of the database."""
    if isinstance(prices, PriceBook):
        return prices
    if prices is None:
        return _default_book()
    if isinstance(prices, Mapping):
        return PriceBook(prices)
    raise ConfigurationError(
        f"prices= must be a PriceBook or a {{model name: Price}} mapping, got "
        f"{type(prices).__name__}"
    )


_DEFAULT: PriceBook | None = None
_DEFAULT_LOCK = threading.Lock()


def _default_book() -> PriceBook:
    """One database-only book per process, so an unknown model warns once."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = PriceBook()
        return _DEFAULT


@dataclass(frozen=True, slots=True)
class _Resolved:
    """A model's price: token prices we apply (``unit``), or the database's own entry."""

    unit: Price  # exact for plain token prices; base rates otherwise (for estimates)
    database: Any = field(repr=False)  # (model, provider, context): the database prices it

    def cost(self, usage: CallUsage, tier: Tier) -> float:
        if self.database is None:
            return self.unit.cost(usage, tier)
        model, provider, context = self.database
        from genai_prices import Usage

        counts = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
        if usage.cache_read:
            counts["cache_read_tokens"] = usage.cache_read
        if usage.cache_write:
            counts["cache_write_tokens"] = usage.cache_write
        priced = model.calc_price(Usage(**counts), provider, price_context=context)
        dollars = float(priced.total_price)
        if context is None and tier != "standard":
            dollars *= self.unit.batch if tier == "batch" else self.unit.flex
        return dollars


def _from_database(model: str, provider: str | None, tier: Tier) -> _Resolved | None:
    try:
        from genai_prices import data_snapshot
    except ImportError:  # installed without its dependencies: the user's prices only
        return None
    snapshot = data_snapshot.get_snapshot()
    found = None
    for provider_id in (provider, None) if provider else (None,):
        try:
            found = snapshot.find_provider_model(model, None, provider_id, None)
            break
        except LookupError:
            continue
    if found is None:
        return None
    provider_info, model_info = found
    context = _CONTEXTS.get(tier)
    has_variant = context is not None and any(
        dict(variant.when) == context for variant in model_info.price_variants or ()
    )
    # A tier the database has no price for is billed at the default share of the
    # standard price (half, the providers' Batch API and flex discount).
    prices = model_info.get_prices(datetime.now(tz=UTC), context if has_variant else None)
    values = {k: v for k, v in vars(prices).items() if v is not None and not k.startswith("_")}
    token_keys = {k for k in values if k.endswith("_mtok")}
    simple = token_keys <= _TOKEN_KEYS and all(isinstance(values[k], Decimal) for k in token_keys)
    share = {"batch": 1.0, "flex": 1.0} if has_variant else {}
    unit = Price(
        input=_base(values.get("input_mtok")),
        output=_base(values.get("output_mtok")),
        cached_input=_base(values["cache_read_mtok"]) if "cache_read_mtok" in values else None,
        cache_write=_base(values["cache_write_mtok"]) if "cache_write_mtok" in values else None,
        **share,
    )
    if simple:
        return _Resolved(unit, None)
    return _Resolved(unit, (model_info, provider_info, context if has_variant else None))


_CONTEXTS: dict[Tier, dict[str, str]] = {
    "flex": {"service_tier": "flex"},
    "batch": {"processing": "batch"},
}


def _base(value: object) -> float:
    """A database price as a float (a tiered one at its base rate, for estimates)."""
    if isinstance(value, Decimal):
        return float(value)
    base = getattr(value, "base", None)
    return float(base) if isinstance(base, Decimal) else 0.0


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if math.isfinite(value) and value > 0 else 0
