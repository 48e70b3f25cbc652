"""Money over real HTTP: item costs, the dollar Budget, resume, flex, and estimates.

Real ``ChatOpenAI`` against the local fake server, which counts tokens with the
model's real tokenizer (``tokenizer="model"``) and echoes the tier it served.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from langchain_batchkit import Budget, Price, RateLimit, RetryPolicy, batchkit
from langchain_batchkit.costs import CallUsage, PriceBook
from langchain_batchkit.errors import CostWarning
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

MODEL = "gpt-5-mini"  # in the price database, with a flex price
PRICES = PriceBook()


def chat(server: FakeOpenAIServer, model: str = MODEL, **kw: Any) -> ChatOpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 5.0)
    return ChatOpenAI(base_url=server.base_url, api_key="sk-test", model=model, **kw)  # type: ignore[arg-type]


def _chain(server: FakeOpenAIServer, **kw: Any) -> Any:
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "{q}")])
    return prompt | chat(server, **kw) | StrOutputParser()


def _server(factory: FakeServerFactory, **config: Any) -> FakeOpenAIServer:
    return factory(FakeServerConfig(tokenizer="model", **config))


def _price(inp: int, out: int, tier: Any = "standard") -> float:
    cost = PRICES.cost(CallUsage(inp, out), MODEL, provider="openai", tier=tier)
    assert cost is not None
    return cost


def test_each_item_costs_what_its_usage_costs_and_the_summary_adds_them_up(
    fake_openai_server_factory: FakeServerFactory, tmp_path: Path
) -> None:
    server = _server(fake_openai_server_factory)
    kit = batchkit(_chain(server), checkpoint=tmp_path / "run.db", progress=False)
    seen: list[float | None] = []

    results = kit.batch(
        [{"q": f"question {i} " * (i + 1)} for i in range(12)],
        on_progress=lambda event: seen.append(event.cost),
    )

    assert all(r.ok and r.cost is not None for r in results)
    for r in results:
        assert r.usage is not None
        assert r.cost == pytest.approx(_price(r.usage.input_tokens, r.usage.output_tokens))
    total = sum(r.cost or 0.0 for r in results)
    summary = results.summary()
    assert summary.cost == pytest.approx(total)
    assert "$" in str(summary) and "$" in repr(results) and "$" in results._repr_html_()
    assert seen[-1] == pytest.approx(total)  # the bar and the callback see it live
    assert results.to_records()[0]["cost_usd"] == results[0].cost
    stored = kit.checkpoint
    assert stored is not None and stored.total_cost() == pytest.approx(total)


def test_your_own_prices_win_and_an_unknown_model_costs_none_with_one_warning(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = _server(fake_openai_server_factory)
    mine = batchkit(
        _chain(server, model="my-finetune"),
        prices={"my-finetune": Price(input=1000.0, output=1000.0)},
        progress=False,
    ).batch([{"q": "hello"}, {"q": "there"}])
    assert all(r.cost == pytest.approx(r.usage.total_tokens / 1000) for r in mine if r.usage)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unknown = batchkit(_chain(server, model="local-llama-7b"), progress=False).batch(
            [{"q": "a"}, {"q": "b"}, {"q": "c"}]
        )
    assert [r.cost for r in unknown] == [None, None, None]
    cost_warnings = [w for w in caught if issubclass(w.category, CostWarning)]
    assert len(cost_warnings) == 1 and "local-llama-7b" in str(cost_warnings[0].message)
    assert unknown.summary().cost is None and unknown.summary().unpriced == 3


def test_a_budget_stops_the_run_under_its_cap_and_reports_the_rest_as_not_run(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = _server(fake_openai_server_factory)
    inputs = [{"q": f"document {i}: " + "words " * 200} for i in range(40)]
    full = batchkit(_chain(server, max_tokens=200), progress=False).batch(inputs)
    total = full.summary().cost
    assert total is not None
    server.reset()

    budget = Budget(usd=total / 3)
    kit = batchkit(_chain(server, max_tokens=200), budget=budget, max_concurrency=4)
    results = kit.batch(inputs, progress=False)

    summary = results.summary()
    assert summary.not_run > 0 and summary.failed == 0
    assert summary.succeeded + summary.not_run == len(inputs) == len(results)
    assert budget.spent <= budget.usd  # max_tokens set, tokens counted: no overshoot
    assert budget.stats().overshoot == 0
    assert summary.cost == pytest.approx(budget.spent)
    assert sum(server.stats().answers_per_prompt.values()) == summary.succeeded
    not_run = results.not_run[0]
    assert not_run.status == "not_run" and not not_run.ok and not_run not in results.failed
    assert not_run.error is not None and "budget" in not_run.error.message
    assert "not run" in repr(not_run) and "not run" in str(summary)


def test_a_resumed_run_counts_what_was_spent_and_pays_nothing_twice(
    fake_openai_server_factory: FakeServerFactory, tmp_path: Path
) -> None:
    server = _server(fake_openai_server_factory)
    inputs = [{"q": f"item {i} " + "text " * 100} for i in range(30)]
    path = tmp_path / "money.db"
    probe = batchkit(_chain(server, max_tokens=100), progress=False).batch(inputs[:1])
    per_item = probe[0].cost
    assert per_item is not None
    server.reset()

    first_budget = Budget(usd=per_item * 10.5)
    first = batchkit(_chain(server, max_tokens=100), checkpoint=path, budget=first_budget)
    partial = first.batch(inputs, progress=False)
    paid_first = first_budget.spent
    done_first = len(partial.succeeded)
    assert 0 < done_first < len(inputs) and partial.summary().not_run == len(inputs) - done_first

    # a new process would build a new Budget: it counts what the checkpoint holds
    second_budget = Budget(usd=per_item * 100)
    second = batchkit(_chain(server, max_tokens=100), checkpoint=path, budget=second_budget)
    resumed = second.batch(inputs, progress=False)

    assert all(r.ok for r in resumed)
    answered = server.stats().answers_per_prompt
    assert all(n == 1 for n in answered.values())  # nothing paid twice
    assert second_budget.spent == pytest.approx(resumed.summary().cost or 0.0)
    first_done = {r.index for r in partial.succeeded}
    new = sum(r.cost or 0.0 for r in resumed if r.index not in first_done)
    assert second_budget.spent == pytest.approx(paid_first + new, rel=1e-6)


def test_a_lazy_input_is_not_drained_when_the_budget_runs_out(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = _server(fake_openai_server_factory)
    probe = batchkit(_chain(server, max_tokens=50), progress=False).batch([{"q": "x " * 50}])
    per_item = probe[0].cost
    assert per_item is not None
    source = iter([{"q": f"{i} " + "x " * 50} for i in range(1000)])

    kit = batchkit(_chain(server, max_tokens=50), budget=Budget(usd=per_item * 5.5))
    report = kit.run(source, progress=False, max_concurrency=2)

    assert report.summary.stopped_at is not None and report.summary.stopped_at < 20
    assert "stopped at input #" in str(report.summary)
    assert next(source)["q"].startswith(f"{report.summary.stopped_at} ")  # the rest is unread


def test_one_budget_shared_by_two_kits_caps_them_together(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = _server(fake_openai_server_factory)
    probe = batchkit(_chain(server, max_tokens=50), progress=False).batch([{"q": "y " * 40}])
    per_item = probe[0].cost
    assert per_item is not None
    budget = Budget(usd=per_item * 12)
    kits = [batchkit(_chain(server, max_tokens=50), budget=budget) for _ in range(2)]

    done = [kit.batch([{"q": f"{k}-{i} " + "y " * 40} for i in range(10)], progress=False)
            for k, kit in enumerate(kits)]  # fmt: skip

    assert sum(len(r.succeeded) for r in done) <= 12
    assert sum(r.summary().not_run for r in done) >= 8
    assert budget.spent <= budget.usd


def test_flex_runs_at_flex_prices_and_falls_back_to_standard_after_its_deadline(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = _server(
        fake_openai_server_factory,
        script={"crowded": ("flex_unavailable",) * 50},
    )
    clock = FakeClock()
    limit = RateLimit(requests_per_minute=6000, clock=clock)
    kit = batchkit(
        _chain(server),
        flex=True,
        flex_deadline=30.0,
        rate_limit=limit,
        retry=RetryPolicy(clock=clock, seed=0),
        progress=False,
    )
    inputs = [{"q": f"question {i}"} for i in range(6)] + [{"q": "crowded question"}]

    results = kit.batch(inputs)

    assert all(r.ok for r in results)
    crowded = results[-1]
    assert crowded.attempts > 1
    assert all(a.error and "resource" in a.error.message.lower() for a in crowded.history)
    for r in results[:-1]:
        assert r.usage is not None and r.attempts == 1
        assert r.cost == pytest.approx(_price(r.usage.input_tokens, r.usage.output_tokens, "flex"))
    assert crowded.usage is not None  # its last attempt ran on the standard tier
    standard = _price(crowded.usage.input_tokens, crowded.usage.output_tokens)
    assert crowded.cost == pytest.approx(standard)
    saved = results.summary().flex_saved
    assert saved is not None and saved > 0 and "flex saved" in str(results.summary())
    stats = limit.stats()
    assert stats.rate_limited == 0 and stats.pauses == 0  # capacity is not a rate limit
    assert server.stats().flex_unavailable == crowded.attempts - 1


@pytest.mark.parametrize(
    ("shape", "make"),
    [
        ("short questions", lambda rng: "Question: " + " ".join(["why"] * rng.randint(3, 30))),
        ("long documents", lambda rng: "Summarise: " + " ".join(["text"] * rng.randint(300, 900))),
    ],
)
def test_the_estimate_with_a_sample_is_within_15_percent_of_the_run(
    fake_openai_server_factory: FakeServerFactory, shape: str, make: Any
) -> None:
    def answer(prompt: str) -> str:
        return " ".join(["word"] * (20 + len(prompt) % 80))

    server = _server(fake_openai_server_factory, response_text=answer)
    rng = random.Random(shape)
    inputs = [{"q": make(rng)} for _ in range(120)]
    kit = batchkit(_chain(server, max_tokens=400), progress=False)

    estimate = kit.estimate(inputs, sample=20)
    before = sum(server.stats().answers_per_prompt.values())
    assert before == 20  # only the paid sample was sent
    actual = kit.batch(inputs).summary().cost

    assert estimate.usd_expected is not None and actual is not None
    assert abs(estimate.usd_expected / actual - 1) <= 0.15
    assert estimate.usd_low is not None and estimate.usd_high is not None
    assert estimate.usd_low <= estimate.usd_expected <= estimate.usd_high
    assert estimate.sample is not None and len(estimate.sample) == 20
    assert estimate.input_tokens_exact and estimate.items == 120


def test_an_estimate_without_a_sample_sends_nothing_and_bounds_by_max_tokens(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = _server(fake_openai_server_factory)
    kit = batchkit(_chain(server, max_tokens=100), progress=False)
    inputs = [{"q": f"q{i}"} for i in range(50)]

    estimate = kit.estimate(iter(inputs), total=50, look_at=10)

    assert sum(server.stats().answers_per_prompt.values()) == 0
    assert estimate.output_from == "max_tokens" and estimate.output_tokens == 50 * 100
    assert estimate.usd_expected == estimate.usd_high
    assert estimate.inputs is not None and list(estimate.inputs) == inputs  # nothing lost
    assert "max_tokens" in str(estimate)
