"""Money: estimate vs actual cost, the budget's overshoot, and what flex saves.

On the local fake OpenAI server (real ``ChatOpenAI`` over HTTP), with the server
counting tokens with the model's real tokenizer (``tokenizer="model"``) and
answers whose length varies per prompt:

* **estimate**: ``kit.estimate(inputs, sample=20)`` before the run, then the run;
  the expected cost against the measured one, for two prompt shapes (short
  questions, long documents), with the offline tokenizer and without it.
* **budget**: ``Budget(usd=cap)`` on a run that would cost about 3x the cap;
  spent, overshoot (spent - cap), items run and items not run.
* **flex**: ``flex=True`` against the standard tier on the same inputs, with 10% of
  flex requests answered 429 "Resource unavailable": cost, saving, wall time.

Usage: python bench/cost.py [--items 400] [--sample 20]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from langchain_batchkit import Budget, batchkit
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig

_TEXT = (
    "the model reads each document and writes a short summary of what it says about prices "
    "tokens budgets latency retries windows checkpoints and the people who run batch jobs"
)
WORDS = _TEXT.split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _answer(prompt: str) -> str:
    # an answer whose length depends on the prompt: 20-120 words
    rng = random.Random(prompt)
    return _text(rng, 20 + len(prompt) % 100)


SHAPES = {
    "short questions": (lambda rng: f"Question: {_text(rng, rng.randint(5, 25))}?"),
    "long documents": (lambda rng: f"Summarise:\n{_text(rng, rng.randint(300, 900))}"),
}


def _chain(server: FakeOpenAIServer, **model: Any) -> Any:
    llm = ChatOpenAI(
        base_url=server.base_url,
        api_key="sk-bench",  # type: ignore[arg-type]
        model=model.pop("model", "gpt-5-mini"),
        max_retries=0,
        **model,
    )
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "{q}")])
    return prompt | llm | StrOutputParser()


def bench_estimate(items: int, sample: int) -> None:
    print("== estimate vs actual (expected cost from kit.estimate(sample=...))")
    for shape, make in SHAPES.items():
        rng = random.Random(7)
        inputs = [{"q": make(rng)} for _ in range(items)]
        config = FakeServerConfig(tokenizer="model", response_text=_answer)
        with FakeOpenAIServer(config) as server:
            kit = batchkit(_chain(server, max_tokens=400), progress=False)
            estimate = kit.estimate(inputs, sample=sample)
            started = time.perf_counter()
            results = kit.batch(inputs)
            took = time.perf_counter() - started
        actual = results.summary().cost
        assert estimate.usd_expected is not None and actual is not None
        error = estimate.usd_expected / actual - 1
        print(
            f"{shape:16s} items={items} expected=${estimate.usd_expected:.5f} "
            f"[{estimate.usd_low:.5f} .. {estimate.usd_high:.5f}] actual=${actual:.5f} "
            f"error={error:+.1%} sample_cost=${estimate.sample_cost or 0:.5f} "
            f"tokens_exact={estimate.input_tokens_exact} run={took:.1f}s"
        )


def bench_budget(items: int) -> None:
    print("== budget: a cap at about a third of the run's cost")
    rng = random.Random(11)
    inputs = [{"q": SHAPES["long documents"](rng)} for _ in range(items)]
    config = FakeServerConfig(tokenizer="model", response_text=_answer, latency=0.02)
    with FakeOpenAIServer(config) as server:
        full = batchkit(_chain(server, max_tokens=400), progress=False).batch(inputs)
        total = full.summary().cost
        assert total is not None
        for with_max_tokens in (True, False):
            cap = total / 3
            budget = Budget(usd=cap)
            model = {"max_tokens": 400} if with_max_tokens else {}
            kit = batchkit(_chain(server, **model), budget=budget, max_concurrency=16)
            results = kit.batch(inputs, progress=False)
            summary = results.summary()
            print(
                f"max_tokens={'400' if with_max_tokens else 'unset'}: cap=${cap:.5f} "
                f"spent=${budget.spent:.5f} overshoot=${max(0.0, budget.spent - cap):.6f} "
                f"ok={summary.ok} not_run={summary.not_run} failed={summary.failed} "
                f"(full run ${total:.5f})"
            )


def bench_flex(items: int) -> None:
    print("== flex vs standard (10% of flex calls answered 429 resource unavailable)")
    rng = random.Random(5)
    inputs = [{"q": SHAPES["short questions"](rng)} for _ in range(items)]
    rows = []
    for flex in (False, True):
        config = FakeServerConfig(
            tokenizer="model",
            response_text=_answer,
            latency=0.05,
            flex_latency_factor=3.0,
            flex_unavailable_rate=0.1,
        )
        with FakeOpenAIServer(config) as server:
            kit = batchkit(_chain(server), flex=flex, max_concurrency=32, progress=False)
            started = time.perf_counter()
            results = kit.batch(inputs)
            took = time.perf_counter() - started
        summary = results.summary()
        rows.append((flex, summary.cost, summary.flex_saved, summary.ok, took))
    for flex, cost, saved, ok, took in rows:
        print(
            f"flex={flex!s:5s} cost=${cost or 0:.5f} saved=${saved or 0:.5f} ok={ok}/{items} "
            f"wall={took:.2f}s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--sample", type=int, default=20)
    args = parser.parse_args()
    bench_estimate(args.items, args.sample)
    bench_budget(args.items)
    bench_flex(args.items)


if __name__ == "__main__":
    main()
