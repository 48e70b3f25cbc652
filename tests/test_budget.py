"""The dollar Budget: worst-case reservations, settling, refusals, sharing."""

from __future__ import annotations

import threading
from uuid import uuid4

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from langchain_batchkit._budget import ESTIMATE_MARGIN, Budget, BudgetCallback
from langchain_batchkit._errors import BudgetExceededError, ConfigurationError
from langchain_batchkit._prices import Price, PriceBook

PRICES = PriceBook({"m": Price(input=1.0, output=2.0)}, database=False)  # $ per 1M tokens


def _start(max_tokens: int | None = 1000, model: str = "m") -> dict[str, object]:
    params: dict[str, object] = {"model": model}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return {"invocation_params": params, "metadata": {}}


def _answer(inp: int, out: int) -> LLMResult:
    usage = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
    message = AIMessage("x", response_metadata={"model_name": "m"}, usage_metadata=usage)
    return LLMResult(generations=[[ChatGeneration(message=message)]])


def test_a_call_reserves_its_worst_case_and_settles_at_its_cost() -> None:
    budget = Budget(usd=1.0)
    callback = BudgetCallback(budget, PRICES)
    run = uuid4()
    prompt: list[BaseMessage] = [HumanMessage("x" * 400)]  # 100 tokens estimated, +4 +3 framing
    callback.on_chat_model_start({}, [prompt], run_id=run, **_start(max_tokens=1000))
    worst = (107 * (1 + ESTIMATE_MARGIN) * 1.0 + 1000 * 2.0) / 1e6
    assert budget.stats().reserved == pytest.approx(worst)
    callback.on_llm_end(_answer(100, 10), run_id=run)
    assert budget.stats().reserved == 0
    assert budget.spent == pytest.approx((100 * 1.0 + 10 * 2.0) / 1e6)


def test_a_call_that_would_pass_the_cap_is_refused_before_it_is_sent() -> None:
    budget = Budget(usd=0.005)  # each call's worst case is about $0.002
    callback = BudgetCallback(budget, PRICES)
    runs = [uuid4() for _ in range(3)]
    for run in runs[:2]:
        callback.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run, **_start())
    with pytest.raises(BudgetExceededError) as refused:
        callback.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=runs[2], **_start())
    assert refused.value.cap == 0.005 and refused.value.needed > refused.value.left
    assert budget.exhausted
    assert "not sent" in str(refused.value)
    assert not refused.value.is_retryable
    # in-flight calls still finish and are paid for; spent stays under the cap
    for run in runs[:2]:
        callback.on_llm_end(_answer(10, 500), run_id=run)
    assert budget.spent <= budget.usd
    assert budget.stats().overshoot == 0


def test_an_unanswered_call_gives_its_reservation_back() -> None:
    budget = Budget(usd=1.0)
    callback = BudgetCallback(budget, PRICES)
    run = uuid4()
    callback.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run, **_start())
    callback.on_llm_error(RuntimeError("dropped"), run_id=run)
    assert budget.stats().reserved == 0 and budget.spent == 0


def test_without_max_tokens_the_budget_reserves_max_output_tokens() -> None:
    budget = Budget(usd=1.0, max_output_tokens=100)
    callback = BudgetCallback(budget, PRICES)
    callback.on_chat_model_start({}, [[HumanMessage("")]], run_id=uuid4(), **_start(None))
    assert budget.stats().reserved == pytest.approx((7 * 1.25 * 1.0 + 100 * 2.0) / 1e6)


def test_overshoot_is_bounded_by_what_calls_in_flight_spent_past_their_reservations() -> None:
    budget = Budget(usd=0.0021, max_output_tokens=1000)
    callback = BudgetCallback(budget, PRICES)
    run = uuid4()
    callback.on_chat_model_start({}, [[HumanMessage("")]], run_id=run, **_start(None))
    reserved = budget.stats().reserved
    callback.on_llm_end(_answer(6, 5000), run_id=run)  # wrote more than max_output_tokens
    over = budget.spent - budget.usd
    assert over > 0
    assert over <= budget.spent - reserved  # the bound: cost - reservation of calls in flight
    assert budget.stats().overshoot == pytest.approx(over)


def test_an_unpriced_model_cannot_be_bounded_and_fails_clearly() -> None:
    callback = BudgetCallback(Budget(usd=1.0), PRICES)
    with pytest.raises(ConfigurationError, match="prices="):
        callback.on_chat_model_start(
            {}, [[HumanMessage("hi")]], run_id=uuid4(), **_start(model="mystery")
        )


def test_add_spent_counts_what_an_earlier_run_paid() -> None:
    budget = Budget(usd=20.0)
    budget.add_spent(10.0)
    assert budget.left == pytest.approx(10.0)
    assert "spent=$10.00" in repr(budget)


def test_one_budget_shared_by_threads_never_over_reserves() -> None:
    budget = Budget(usd=1.0)
    granted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(500):
            ok = budget.reserve(0.001)
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 1000
    assert budget.stats().reserved == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"usd": 0}, "usd"),
        ({"usd": float("nan")}, "usd"),
        ({"usd": True}, "usd"),
        ({"usd": 1, "max_output_tokens": 0}, "max_output_tokens"),
        ({"usd": 1, "spent": -1}, "spent"),
    ],
)
def test_bad_budgets_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"Budget.{field}"):
        Budget(**kwargs)  # type: ignore[arg-type]
