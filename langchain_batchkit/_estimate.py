"""What a run will cost and how long it will take, before paying for it.

:func:`estimate` looks at the prompts without sending them: it calls the chain on
up to ``look_at`` inputs with a callback that stops each one at its first model
call, where LangChain hands over the exact messages and parameters. Steps before
that call run (a prompt template, a formatter); nothing reaches a model and
nothing is paid. Prompt tokens are counted with the model's offline tokenizer
where there is one, else estimated (:mod:`~langchain_batchkit._tokenize`).

Output tokens cannot be counted before the model writes them. They are taken
from the request's ``max_tokens`` (the most it may write: an upper bound), or
measured by a small paid sample run (``sample=20``), which also measures model
steps after the first, latency, and so the wall time. The sample's results are
kept on the estimate, so those items need not be paid for twice.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage

from langchain_batchkit._callbacks import quiet_callback_errors
from langchain_batchkit._concurrency import resolve_max_concurrency
from langchain_batchkit._errors import ConfigurationError, dollars, safe_repr
from langchain_batchkit._prices import PriceBook, Tier
from langchain_batchkit._tokenize import CHARS_PER_TOKEN, count_messages

if TYPE_CHECKING:
    from langchain_batchkit._results import BatchResult
    from langchain_batchkit._runner import BatchKit

__all__ = ["CostEstimate", "estimate"]

#: How far an estimated (not tokenizer-counted) prompt count may be off, either way.
ESTIMATED_TOKENS_MARGIN = 0.25


@dataclass(frozen=True, slots=True, repr=False)
class CostEstimate:
    """A run's expected size, cost and time, with the assumptions they rest on.

    Attributes:
        items: the inputs to run (``None``: an iterator of unknown length, no ``total=``).
        looked_at: inputs whose prompts were counted.
        input_tokens: prompt tokens of the whole run (counted ones scaled to ``items``).
        input_tokens_exact: every counted prompt was counted by a tokenizer.
        output_tokens: expected output tokens of the whole run (``None``: unknown).
        output_from: ``"sample"``, ``"max_tokens"`` or ``"unknown"``.
        usd_low, usd_expected, usd_high: the dollar range (``None``: a price is unknown).
        seconds: expected wall time at the kit's concurrency and rate limit (``None``:
            unknown without a sample).
        sample_cost: what the paid sample run cost (``None``: no sample, or unpriced).
        sample: the sample run's results (run them again? no: merge them instead).
        models: the models the prompts go to.
        notes: what the figures assume, in words.
        inputs: for an iterator, the inputs to run: the ones read here, then the rest
            (``None`` for a sequence, which was not consumed).
    """

    items: int | None
    looked_at: int
    input_tokens: int | None
    input_tokens_exact: bool
    output_tokens: int | None
    output_from: str
    usd_low: float | None
    usd_expected: float | None
    usd_high: float | None
    seconds: float | None
    sample_cost: float | None = None
    sample: BatchResult[Any, Any] | None = field(default=None, repr=False)
    models: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    inputs: Iterable[Any] | None = field(default=None, repr=False)

    def __str__(self) -> str:
        lines = [
            f"items: {_num(self.items)} (prompts counted on {self.looked_at})",
            f"input tokens: {_num(self.input_tokens)}"
            + ("" if self.input_tokens_exact else " (estimated)"),
            f"output tokens: {_num(self.output_tokens)} (from {self.output_from})",
            f"cost: {_usd(self.usd_low)} .. {_usd(self.usd_expected)} .. {_usd(self.usd_high)}"
            " (low .. expected .. high)",
            f"time: {_duration(self.seconds)}",
        ]
        if self.sample_cost is not None:
            lines.append(f"sample run cost: {_usd(self.sample_cost)}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "CostEstimate(\n  " + str(self).replace("\n", "\n  ") + "\n)"

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
            for k, _, v in (line.partition(": ") for line in str(self).splitlines())
        )
        return f"<table><caption>cost estimate</caption>{rows}</table>"


@dataclass(slots=True)
class _Call:
    tokens: int
    exact: bool
    max_tokens: int | None
    model: str | None
    provider: str | None
    tier: Tier


class _StopBeforeModel(Exception):
    """Raised by the look-ahead callback as a model call starts: nothing is sent."""


class _Capture(BaseCallbackHandler):
    """Records the first model call an input leads to, and stops it there."""

    raise_error = True
    run_inline = True

    def __init__(self) -> None:
        self.calls: list[_Call] = []

    def on_chat_model_start(
        self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self._record([m for group in messages for m in group], kwargs)

    def on_llm_start(self, serialized: Any, prompts: list[str], **kwargs: Any) -> None:
        self._record([HumanMessage(p) for p in prompts], kwargs)

    def _record(self, messages: list[BaseMessage], kwargs: Mapping[str, Any]) -> None:
        params = kwargs.get("invocation_params") or {}
        metadata = kwargs.get("metadata") or {}
        model = params.get("model") or params.get("model_name") or metadata.get("ls_model_name")
        model = model if isinstance(model, str) else None
        count = count_messages(messages, model)
        limit = params.get("max_completion_tokens") or params.get("max_tokens")
        tier: Tier = "flex" if params.get("service_tier") == "flex" else "standard"
        provider = metadata.get("ls_provider")
        self.calls.append(
            _Call(
                count.tokens,
                count.exact,
                int(limit) if isinstance(limit, int) and limit > 0 else None,
                model,
                provider if isinstance(provider, str) else None,
                tier,
            )
        )
        raise _StopBeforeModel


def estimate(
    kit: BatchKit[Any, Any],
    inputs: Iterable[Any],
    *,
    total: int | None = None,
    look_at: int = 200,
    sample: int = 0,
    prices: PriceBook,
) -> CostEstimate:
    """See :meth:`BatchKit.estimate`."""
    for name, value, least in (("look_at", look_at, 1), ("sample", sample, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigurationError(f"{name} must be an int >= {least}, got {value!r}")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise ConfigurationError(f"total must be an int >= 0 or None, got {total!r}")
    notes: list[str] = []
    looked, items, rest = _look(inputs, total, max(look_at, sample), notes)
    calls = [_first_call(kit, value, notes) for value in looked]
    counted = [c for c in calls if c is not None]
    models = tuple(sorted({c.model for c in counted if c.model}))
    if len(counted) < len(looked):
        notes.append(f"{len(looked) - len(counted)} inputs made no model call before failing")
    mean_in = statistics.fmean(c.tokens for c in counted) if counted else 0.0
    exact = all(c.exact for c in counted)
    if not exact:
        notes.append(
            f"prompt tokens estimated at {CHARS_PER_TOKEN:g} characters a token (±"
            f"{ESTIMATED_TOKENS_MARGIN:.0%}): no offline tokenizer for "
            f"{', '.join(m for m in models) or 'the model'} (pip install "
            "'langchain-batchkit[tokenizer]' counts OpenAI models exactly)"
        )
    in_usd = [_input_cost(c, prices) if c is not None else None for c in calls]
    known_usd = [u for c, u in zip(calls, in_usd, strict=True) if c is not None]
    in_known = all(u is not None for u in known_usd)
    mean_in_usd = statistics.fmean(u or 0.0 for u in known_usd) if known_usd else 0.0
    picks = _spread(len(looked), sample)
    sampled = _sample(kit, [looked[i] for i in picks]) if sample else None
    scale = items
    out = _output(counted, sampled, prices, [in_usd[i] for i in picks], notes)
    input_tokens = round(mean_in * scale) if scale is not None else None
    margin = 0.0 if exact else ESTIMATED_TOKENS_MARGIN
    low = expected = high = None
    if scale is not None and in_known and out.usd is not None:
        base = mean_in_usd * scale
        expected = base + out.usd.expected * scale
        low = base * (1 - margin) + out.usd.low * scale
        high = base * (1 + margin) + out.usd.high * scale
    seconds = _seconds(kit, scale, counted, out.latency, mean_in, out.tokens)
    if rest is not None:
        notes.append(
            f"read {len(looked)} inputs from your iterator: run estimate.inputs (they "
            "come first, then the rest) so none is lost"
        )
    return CostEstimate(
        items=items,
        looked_at=len(looked),
        input_tokens=input_tokens,
        input_tokens_exact=exact,
        output_tokens=round(out.tokens * scale) if scale is not None and out.tokens else None,
        output_from=out.source,
        usd_low=low,
        usd_expected=expected,
        usd_high=high,
        seconds=seconds,
        sample_cost=sampled.cost if sampled is not None else None,
        sample=sampled.results if sampled is not None else None,
        models=models,
        notes=tuple(notes),
        inputs=itertools.chain(looked, rest) if rest is not None else None,
    )


@dataclass(frozen=True, slots=True)
class _Range:
    low: float
    expected: float
    high: float


@dataclass(frozen=True, slots=True)
class _Output:
    source: str
    tokens: float  # per item
    usd: _Range | None  # per item: output, and model steps after the first
    latency: float | None


@dataclass(frozen=True, slots=True)
class _Sampled:
    results: BatchResult[Any, Any]
    cost: float | None


def _spread(n: int, k: int) -> list[int]:
    """``k`` positions spread evenly over ``n`` (a sample should not be just the first few)."""
    if k >= n:
        return list(range(n))
    return [i * n // k for i in range(k)]


def _look(
    inputs: Iterable[Any], total: int | None, count: int, notes: list[str]
) -> tuple[list[Any], int | None, Iterator[Any] | None]:
    """The inputs to count (spread over a sequence), the number of items, the unread rest."""
    if isinstance(inputs, Sequence) and not isinstance(inputs, str | bytes):
        n = len(inputs)
        if total is not None and total != n:
            raise ConfigurationError(f"total={total} but the inputs hold {n}")
        step = max(1, n // count) if n > count else 1
        return [inputs[i] for i in range(0, n, step)][:count], n, None
    iterator = iter(inputs)
    looked = list(itertools.islice(iterator, count))
    if total is None and len(looked) < count:
        total = len(looked)  # the iterator ended here: every input was read
    if total is None:
        notes.append("an iterator of unknown length: pass total= for whole-run figures")
    return looked, total, iterator


quiet_callback_errors("_StopBeforeModel")  # our own stop signal, not an error


def _first_call(kit: BatchKit[Any, Any], value: Any, notes: list[str]) -> _Call | None:
    capture = _Capture()
    try:
        kit.bound.invoke(value, config={"callbacks": [capture]})
    except _StopBeforeModel:
        pass
    except Exception as exc:
        if not capture.calls and len(notes) < 20:
            notes.append(f"an input failed before its model call: {safe_repr(exc)[:120]}")
    return capture.calls[0] if capture.calls else None


def _input_cost(call: _Call, prices: PriceBook) -> float | None:
    price = prices.price(call.model, provider=call.provider)
    if price is None:
        return None
    share = price.flex if call.tier == "flex" else 1.0
    return call.tokens * price.input / 1e6 * share


def _output(
    counted: list[_Call],
    sampled: _Sampled | None,
    prices: PriceBook,
    in_usd: list[float | None],
    notes: list[str],
) -> _Output:
    if sampled is not None and sampled.results:
        ok = [r for r in sampled.results if r.ok]
        tokens = [r.usage.output_tokens for r in ok if r.usage is not None]
        latency = statistics.fmean(r.latency for r in ok) if ok else None
        extra = [
            cost - (in_usd[i] or 0.0)
            for i, r in enumerate(sampled.results)
            if r.ok and (cost := getattr(r, "cost", None)) is not None and i < len(in_usd)
        ]
        usd = None
        if extra:
            mean = statistics.fmean(extra)
            spread = 2 * statistics.stdev(extra) / math.sqrt(len(extra)) if len(extra) > 1 else 0
            usd = _Range(max(0.0, mean - spread), mean, mean + spread)
        notes.append(f"output measured on a paid sample of {len(sampled.results)} inputs")
        return _Output("sample", statistics.fmean(tokens) if tokens else 0.0, usd, latency)
    limits = [c.max_tokens for c in counted]
    if counted and all(limit is not None for limit in limits):
        worst = [
            (limit or 0) * price.output / 1e6 * (price.flex if c.tier == "flex" else 1.0)
            for c, limit in zip(counted, limits, strict=True)
            if (price := prices.price(c.model, provider=c.provider)) is not None
        ]
        notes.append(
            "output taken as max_tokens, the most each answer may be (expected = high); "
            "pass sample=20 to measure it"
        )
        mean_limit = statistics.fmean(limit or 0 for limit in limits)
        if len(worst) < len(counted):
            return _Output("max_tokens", mean_limit, None, None)
        high = statistics.fmean(worst)
        return _Output("max_tokens", mean_limit, _Range(0.0, high, high), None)
    notes.append("no max_tokens set and no sample: output tokens unknown (pass sample=20)")
    return _Output("unknown", 0.0, None, None)


def _sample(kit: BatchKit[Any, Any], values: list[Any]) -> _Sampled:
    results = kit.batch(values, progress=False)
    costs = [getattr(r, "cost", None) for r in results]
    known = [c for c in costs if c is not None]
    return _Sampled(results, sum(known) if known and len(known) == len(costs) else None)


def _seconds(
    kit: BatchKit[Any, Any],
    items: int | None,
    counted: list[_Call],
    latency: float | None,
    mean_in: float,
    mean_out: float,
) -> float | None:
    if items is None:
        return None
    bounds: list[float] = []
    if latency is not None:
        concurrency = resolve_max_concurrency(kit.options.max_concurrency, items)
        bounds.append(math.ceil(items / concurrency) * latency)
    limit = kit.options.rate_limit
    if limit is not None and counted:
        if limit.requests_per_minute:
            bounds.append(items / (limit.requests_per_minute * limit.headroom) * 60)
        if limit.tokens_per_minute:
            per_item = mean_in + mean_out
            bounds.append(items * per_item / (limit.tokens_per_minute * limit.headroom) * 60)
    return max(bounds) if bounds else None


def _num(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _usd(value: float | None) -> str:
    return "unknown" if value is None else dollars(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (pass sample= to measure latency)"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"
