"""Prices: the database, the user's own prices, tiers, unknown models, token counts."""

from __future__ import annotations

import math
import warnings
from uuid import uuid4

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from langchain_batchkit._costs import CostMeter, call_start, price_response
from langchain_batchkit._errors import ConfigurationError, CostWarning
from langchain_batchkit._prices import CallUsage, Price, PriceBook, as_price_book
from langchain_batchkit._tokenize import count_messages, count_text, tokenizer_for


def _response(model: str | None, inp: int, out: int, **meta: object) -> LLMResult:
    metadata = dict(meta)
    if model is not None:
        metadata["model_name"] = model
    message = AIMessage(
        "ok",
        response_metadata=metadata,
        usage_metadata={"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out},
    )
    return LLMResult(generations=[[ChatGeneration(message=message)]])


def test_database_prices_input_cached_and_output_tokens() -> None:
    book = PriceBook()
    # gpt-4o-mini: $0.15 in, $0.075 cached in, $0.60 out per million tokens
    cost = book.cost(CallUsage(1000, 500, cache_read=200), "gpt-4o-mini", provider="openai")
    assert cost == pytest.approx((800 * 0.15 + 200 * 0.075 + 500 * 0.60) / 1e6)


def test_dated_model_names_and_the_batch_and_flex_tiers() -> None:
    book = PriceBook()
    usage = CallUsage(1000, 500)
    standard = book.cost(usage, "gpt-5-mini", provider="openai")
    assert standard is not None
    assert book.cost(usage, "gpt-5-mini", provider="openai", tier="flex") == pytest.approx(
        standard / 2
    )
    assert book.cost(usage, "gpt-5-mini", provider="openai", tier="batch") == pytest.approx(
        standard / 2
    )
    dated = book.cost(usage, "gpt-4o-mini-2024-07-18", provider="openai")
    assert dated == book.cost(usage, "gpt-4o-mini", provider="openai")


def test_a_tier_the_database_has_no_price_for_is_half_the_standard_price() -> None:
    book = PriceBook()
    usage = CallUsage(10_000, 1000)
    standard = book.cost(usage, "gpt-4o-mini", provider="openai")
    assert standard is not None
    assert book.cost(usage, "gpt-4o-mini", provider="openai", tier="flex") == pytest.approx(
        standard / 2
    )


def test_anthropic_cache_writes_are_billed_above_input() -> None:
    book = PriceBook()
    plain = book.cost(CallUsage(1000, 0), "claude-haiku-4-5", provider="anthropic")
    written = book.cost(
        CallUsage(1000, 0, cache_write=1000), "claude-haiku-4-5", provider="anthropic"
    )
    assert plain is not None and written is not None and written > plain


def test_unknown_model_costs_none_and_warns_once() -> None:
    book = PriceBook()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert book.cost(CallUsage(10, 10), "my-local-llama", provider="openai") is None
        assert book.cost(CallUsage(10, 10), "my-local-llama", provider="openai") is None
        assert book.cost(CallUsage(10, 10), None) is None
    messages = [str(w.message) for w in seen if issubclass(w.category, CostWarning)]
    assert len(messages) == 2
    assert "my-local-llama" in messages[0] and "prices=" in messages[0]


def test_user_prices_win_and_match_dated_names() -> None:
    book = PriceBook({"gpt-4o-mini": Price(input=1.0, output=2.0), "my-ft": Price(3.0, 4.0)})
    assert book.cost(CallUsage(1_000_000, 0), "gpt-4o-mini-2024-07-18") == pytest.approx(1.0)
    assert book.cost(CallUsage(0, 1_000_000), "MY-FT-v2", tier="batch") == pytest.approx(2.0)
    only_mine = PriceBook({"x": Price(1, 1)}, database=False)
    with pytest.warns(CostWarning):
        assert only_mine.cost(CallUsage(1, 1), "gpt-4o-mini") is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input": -1.0, "output": 1.0}, "input"),
        ({"input": 1.0, "output": math.nan}, "output"),
        ({"input": 1.0, "output": 1.0, "cached_input": True}, "cached_input"),
        ({"input": 1.0, "output": 1.0, "batch": "half"}, "batch"),
    ],
)
def test_bad_prices_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"Price.{field}"):
        Price(**kwargs)  # type: ignore[arg-type]


def test_prices_option_accepts_a_book_or_a_mapping() -> None:
    book = PriceBook()
    assert as_price_book(book) is book
    assert as_price_book(None) is as_price_book(None)
    assert as_price_book({"m": Price(1, 1)}).cost(CallUsage(1_000_000, 0), "m") == 1.0
    with pytest.raises(ConfigurationError, match="prices="):
        as_price_book([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Price"):
        PriceBook({"m": 3.0})  # type: ignore[dict-item]


def test_a_response_is_priced_by_the_model_that_answered() -> None:
    book = PriceBook({"asked": Price(1, 1), "answered": Price(10, 10)})
    start = call_start({"invocation_params": {"model": "asked"}, "metadata": {}})
    assert price_response(_response("answered", 1_000_000, 0), book, start) == pytest.approx(10)
    assert price_response(_response(None, 1_000_000, 0), book, start) == pytest.approx(1)


def test_a_flex_answer_is_priced_at_flex() -> None:
    book = PriceBook({"m": Price(1, 1, flex=0.5)})
    start = call_start({"invocation_params": {"model": "m", "service_tier": "flex"}})
    assert start.tier == "flex"
    assert price_response(_response("m", 1_000_000, 0), book, start) == pytest.approx(0.5)
    # the answer names the tier it actually ran on
    default = _response("m", 1_000_000, 0, service_tier="default")
    assert price_response(default, book, start) == pytest.approx(1.0)


def test_the_meter_sums_calls_and_never_sums_past_an_unknown_one() -> None:
    meter = CostMeter(PriceBook({"m": Price(1, 1)}, database=False))
    first, second, third = uuid4(), uuid4(), uuid4()
    meter.started(first, {"invocation_params": {"model": "m"}})
    meter.ended(first, _response("m", 1_000_000, 0))
    meter.started(second, {"invocation_params": {"model": "m"}})
    meter.ended(second, _response("m", 0, 1_000_000))
    assert meter.cost == pytest.approx(2.0)
    with pytest.warns(CostWarning):
        meter.ended(third, _response("other", 10, 10))
    assert meter.cost is None
    meter.ended(uuid4(), _response("m", 1, 1))
    assert meter.cost is None


def test_counting_tokens_offline() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    exact = count_text(text, "gpt-4o-mini")
    estimated = count_text(text, "claude-haiku-4-5")
    assert estimated.exact is False and estimated.tokens == math.ceil(len(text) / 4)
    if tokenizer_for("gpt-4o-mini") is not None:  # the tokenizer extra is installed
        assert exact.exact and exact.tokens != estimated.tokens
    chat = count_messages([SystemMessage("Be brief."), HumanMessage(text)], "gpt-4o-mini")
    assert chat.tokens == 3 + 4 + count_text("Be brief.", "gpt-4o-mini").tokens + 4 + exact.tokens
    with_image = count_messages(
        [HumanMessage([{"type": "image_url", "image_url": {"url": "data:x"}}])], "gpt-4o-mini"
    )
    assert with_image.exact is False
