"""Writes notebooks/quickstart.ipynb (kept as code so the notebook's source is reviewable)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell(
        "# langchain-batchkit quickstart\n\n"
        "Run any LCEL chain over many inputs: one bad row never kills the batch, a live bar "
        "shows progress, and only the failed rows are re-run.\n\n"
        "**This notebook runs on a FAKE chat model** (no API key, no network) unless "
        "`OPENAI_API_KEY` is set, in which case it uses `gpt-4o-mini`."
    ),
    new_code_cell(
        "import os\n\n"
        "from langchain_core.output_parsers import StrOutputParser\n"
        "from langchain_core.prompts import ChatPromptTemplate\n\n"
        "from langchain_batchkit import RootRunCounter, batchkit\n"
        "from langchain_batchkit.sizing import PRESETS, concurrency_for_rate_limit\n"
        "from langchain_batchkit.testing import FakeChatModel\n\n"
        "if os.environ.get('OPENAI_API_KEY'):\n"
        "    from langchain_openai import ChatOpenAI\n\n"
        "    llm = ChatOpenAI(model='gpt-4o-mini', max_tokens=30)\n"
        "    print('REAL model: gpt-4o-mini')\n"
        "else:\n"
        "    llm = FakeChatModel(latency=0.02, jitter=0.03, fail_if_contains=['#13', '#27'])\n"
        "    print('FAKE chat model: no API key, no network')\n\n"
        "chain = ChatPromptTemplate.from_template('One-line tagline for {topic}.') | llm | "
        "StrOutputParser()\n"
        "topics = [{'topic': f'product #{i}'} for i in range(40)]"
    ),
    new_markdown_cell(
        "`kit.batch` works right in a notebook cell, although Jupyter already runs an event "
        "loop (plain `asyncio.run` would fail here). The bar is a `tqdm.auto` widget: it "
        "ends green when every item succeeded, orange when some failed, and its last line "
        "is printed as text too (a saved notebook does not keep widgets). The result shows "
        "its counts, the failed rows and a small picture of the run."
    ),
    new_code_cell("kit = batchkit(chain, desc='taglines')\nresults = kit.batch(topics)\nresults"),
    new_markdown_cell(
        "The summary, and the failed items: one line each (type, message, attempts); "
        "the full traceback is in `.error.traceback`."
    ),
    new_code_cell("print(results.summary())\nresults.failed"),
    new_markdown_cell(
        "## The run, drawn\n\n"
        "`results.plot()` (needs `pip install 'langchain-batchkit[plot]'`): items finished "
        "against the ideal rate (items in flight divided by the median latency), items in "
        "flight against the cap with 429s and retries marked, the latency histogram with "
        "p50/p95, and the failures by error type."
    ),
    new_code_cell("results.plot()"),
    new_code_cell("results.to_pandas().head()"),
    new_markdown_cell("Re-run only the failed rows; every result stays keyed by its input index."),
    new_code_cell(
        "if not os.environ.get('OPENAI_API_KEY'):\n"
        "    llm.fail_if_contains = []  # the fake outage is over\n"
        "again = results.retry_failed()\n"
        "assert again[13].output is not None and again[13].attempts == 2\n"
        "again"
    ),
    new_markdown_cell("The async twin, awaited directly in the cell:"),
    new_code_cell("aresults = await kit.abatch(topics[:12])\naresults.outputs[:3]"),
    new_markdown_cell(
        "Results as they complete; leaving the loop early cancels what is still running."
    ),
    new_code_cell(
        "for index, item in kit.batch_as_completed(topics):\n"
        "    print(index, item.output)\n"
        "    if index >= 0:\n"
        "        break"
    ),
    new_markdown_cell(
        "## What it costs\n\n"
        "Every item's `cost` (USD) comes from the `genai-prices` database by the model that "
        "answered. The fake model is not in it, so it gets a price here (gpt-4o-mini's); a "
        "real model needs nothing. Before paying, `kit.estimate` counts the prompts without "
        "sending them, and `sample=5` runs five inputs for real to measure the answers."
    ),
    new_code_cell(
        "from langchain_batchkit import Budget, Price\n\n"
        "prices = {'fake': Price(input=0.15, output=0.60)}  # USD per million tokens\n"
        "priced = batchkit(chain, desc='taglines', prices=prices)\n"
        "priced.estimate(topics, sample=5)"
    ),
    new_markdown_cell(
        "During the run the bar shows the dollars spent (`$=`); the summary, the HTML and "
        "the table have them too."
    ),
    new_code_cell(
        "paid = priced.batch(topics)\n"
        "print(paid.summary())\n"
        "paid.to_pandas()[['index', 'status', 'output_tokens', 'cost_usd']].head(3)"
    ),
    new_markdown_cell(
        "A hard cap: `Budget(usd=...)`. Each model call reserves its worst case first "
        "(the prompt plus `max_tokens` of answer, here `max_output_tokens=60`); the call "
        "that would pass the cap is not sent, no new item starts, and the rest are reported "
        "as *not run*: resumed with a larger budget (and a checkpoint), only they run."
    ),
    new_code_cell(
        "budget = Budget(usd=0.0005, max_output_tokens=60)\n"
        "capped = priced.with_options(budget=budget).batch(topics)\n"
        "print(capped.summary())\n"
        "print(budget)\n"
        "capped.not_run[:2]"
    ),
    new_markdown_cell(
        "## Half price: provider Batch API jobs\n\n"
        "`BatchAPIRunner` sends the chain's *model calls* as Batch API jobs (half the "
        "price, answers within 24 h) and runs the other steps here. A chain with two model "
        "steps runs in two rounds; an item that fails in round 1 does not enter round 2. "
        "**This cell always uses the local FAKE OpenAI-compatible server** (no key, no "
        "network), whose batch timeline runs on a fake clock: each job takes an hour of fake "
        "time (the times below are that clock's) and milliseconds of real time. Prompt `#7` "
        "is refused by the fake provider."
    ),
    new_code_cell(
        "from langchain_openai import ChatOpenAI\n\n"
        "from langchain_batchkit import BatchAPIOptions, BatchAPIRunner\n"
        "from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig\n\n"
        "clock = FakeClock()\n"
        "config = FakeServerConfig(clock=clock, batch_completion_delay=3600, "
        "reject_prompts=frozenset({'#7'}))\n"
        "server = FakeOpenAIServer(config).start()\n"
        "print('FAKE OpenAI-compatible server at', server.base_url, '(no key, no network)')\n\n\n"
        "def fake(model):\n"
        "    return ChatOpenAI(model=model, base_url=server.base_url, api_key='fake-key', "
        "max_retries=0)\n\n\n"
        "summarise = ChatPromptTemplate.from_template('Summarise {topic}.')\n"
        "translate = ChatPromptTemplate.from_template('Translate: {summary}')\n"
        "two_steps = (\n"
        "    summarise | fake('gpt-4o-mini') | StrOutputParser() | (lambda s: {'summary': s})\n"
        "    | translate | fake('gpt-4o') | StrOutputParser()\n"
        ")\n"
        "runner = BatchAPIRunner(two_steps, options=BatchAPIOptions(clock=clock, "
        "sleep=clock.sleep))\n"
        "jobs = runner.run(topics[:20])\n"
        "print(jobs.summary())\n"
        "print(jobs[0].output, f'| attempts: {jobs[0].attempts} | cost: ${jobs[0].cost:.6f}')\n"
        "print(server.stats().batches_created, 'jobs, one per round')\n"
        "server.stop()\n"
        "jobs.failed"
    ),
    new_markdown_cell(
        "## How many at once?\n\n`max_concurrency='auto'` follows the course tables "
        "(see README); presets are named rows of those tables; with a known rate limit, "
        "Little's law gives a better number."
    ),
    new_code_cell(
        "for p in PRESETS.values():\n"
        "    print(f'{p.name:15} {p.scale:15} {p.low}-{p.high} -> {p.value}')\n"
        "concurrency_for_rate_limit(60, item_latency=30, calls_per_item=3)"
    ),
    new_markdown_cell(
        "## Progress for plain `chain.batch`\n\nA naive `on_chain_end` counter counts every "
        "nested run; `RootRunCounter` counts inputs."
    ),
    new_code_cell(
        "counter = RootRunCounter(total=10)\n"
        "_ = chain.batch(topics[:10], config={'callbacks': [counter]}, return_exceptions=True)\n"
        "counter.completed"
    ),
]

kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb = new_notebook(cells=cells, metadata={"kernelspec": kernelspec})
nbformat.write(nb, Path(__file__).with_name("quickstart.ipynb"))
