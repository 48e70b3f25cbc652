"""A real chain over HTTP: batchkit vs plain ``chain.batch``/``abatch``, side by side, one run.

``prompt | ChatOpenAI | StrOutputParser()`` sends every item to the local fake OpenAI
server, which answers after a fixed latency. Both sides run the same chain object
(so the same cached HTTP clients) at the same ``max_concurrency``: plain
``chain.batch(xs, config={"max_concurrency": C})`` / ``await chain.abatch(...)``
against ``batchkit(chain, max_concurrency=C, progress=False)`` with
``kit.batch(xs)`` / ``await kit.abatch(xs)``. ``ChatOpenAI(max_retries=0)`` on both.

Rounds alternate the sides (the order flips every round, the garbage collector runs
before each timing) and each side's median is compared, because this 2-core
machine is noisy. ``range`` is the lowest and highest per-round ratio, ``cpu`` the
ratio of the client process's CPU time (which another process's load barely moves).
With C items in flight the best wall time is ``ceil(N/C) x latency``; each side's
ratio to it is printed too. Target from the issue: the kit at most 1.05x plain (reported, not
asserted). Every answer is checked to be its own prompt's echo.

The server runs in a child process by default, as a real API would not share our
interpreter or its GIL (``--server thread`` runs it in-process).

Usage: python bench/real_model.py [--items 500] [--concurrency 50] [--latency 0.05]
                                  [--rounds 7] [--server process|thread]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import langchain_core
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig
from langchain_openai import ChatOpenAI

from langchain_batchkit import batchkit
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig

# Runs in the child process: serve until the parent closes our stdin (or dies).
_SERVER_CHILD = """
import sys
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig
with FakeOpenAIServer(FakeServerConfig(latency=float(sys.argv[1]))) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()
"""

Side = Callable[[], Any]  # returns the outputs, or an awaitable of them


@contextlib.contextmanager
def fake_server(latency: float, where: str) -> Iterator[str]:
    """The base URL of a fake OpenAI server with a fixed latency, in a child process or here."""
    if where == "thread":
        with FakeOpenAIServer(FakeServerConfig(latency=latency)) as server:
            yield server.base_url
        return
    child = subprocess.Popen(
        [sys.executable, "-c", _SERVER_CHILD, str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        yield child.stdout.readline().strip()
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def _outputs(result: Any) -> list[Any]:
    """The outputs of a plain result list or of a BatchResult (which must hold no failure)."""
    if hasattr(result, "failed"):
        assert not result.failed, result.failed[0].error
        return list(result.outputs)
    return list(result)


async def _call(side: Side) -> Any:
    result = side()
    return await result if inspect.isawaitable(result) else result


Times = dict[str, tuple[list[float], list[float]]]  # side -> (wall times, CPU times)


async def measure(sides: dict[str, Side], expected: list[str], rounds: int) -> Times:
    """Warm every side up (and check each answer), then time alternating rounds.

    The client process's CPU time (all threads; the server is not in it when it runs
    in a child process) is kept beside the wall time: it tells noise from cost.
    """
    times: Times = {}
    for name, side in sides.items():
        outputs = _outputs(await _call(side))
        assert outputs == expected, f"{name}: an item got another item's answer, or none"
        times[name] = ([], [])
    names = list(sides)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            gc.collect()
            cpu, start = time.process_time(), time.perf_counter()
            await _call(sides[name])
            times[name][0].append(time.perf_counter() - start)
            times[name][1].append(time.process_time() - cpu)
    return times


async def main(args: argparse.Namespace) -> None:
    n, c, latency = args.items, args.concurrency, args.latency
    inputs = [{"topic": f"item {i}"} for i in range(n)]
    expected = [f"echo: Say {x['topic']}" for x in inputs]
    ideal = math.ceil(n / c) * latency
    config: RunnableConfig = {"max_concurrency": c}

    with fake_server(latency, args.server) as base_url:
        llm = ChatOpenAI(
            max_retries=0,
            base_url=base_url,
            api_key="sk-fake",  # type: ignore[arg-type]
            model="gpt-4o-mini",
        )
        chain = ChatPromptTemplate.from_template("Say {topic}") | llm | StrOutputParser()
        kit = batchkit(chain, max_concurrency=c, progress=False)
        groups: dict[str, dict[str, Side]] = {
            "sync (worker threads)": {
                "plain chain.batch": lambda: chain.batch(inputs, config=config),
                "batchkit batch": lambda: kit.batch(inputs),
            },
            "async (tasks on this loop)": {
                "plain chain.abatch": lambda: chain.abatch(inputs, config=config),
                "batchkit abatch": lambda: kit.abatch(inputs),
            },
        }
        results = {
            title: await measure(sides, expected, args.rounds) for title, sides in groups.items()
        }

    print(
        f"\nprompt | ChatOpenAI | StrOutputParser over HTTP, {n} items, latency "
        f"{latency * 1000:g} ms, max_concurrency {c}, server in a {args.server}; "
        f"ideal ceil(N/C) x latency {ideal:.3f} s"
    )
    print(
        f"langchain-core {langchain_core.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; median of {args.rounds} alternating rounds\n"
        "range: lowest-highest per-round wall ratio to plain; cpu: ratio of the client "
        "process's CPU time"
    )
    print(
        f"{'':30} {'median s':>9} {'items/s':>8} {'vs plain':>8} {'range':>10} {'cpu':>7} "
        f"{'cpu ms/item':>11} {'vs ideal':>8}"
    )
    for title, times in results.items():
        print(title)
        plain_times, plain_cpus = next(iter(times.values()))
        plain_wall, plain_cpu = statistics.median(plain_times), statistics.median(plain_cpus)
        for i, (name, (walls, cpus)) in enumerate(times.items()):
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            ratios = [t / p for t, p in zip(walls, plain_times, strict=True)]
            cells = [
                f"{name:28}",
                f"{wall:9.3f}",
                f"{n / wall:8.0f}",
                f"{wall / plain_wall:7.3f}x",
                f"{min(ratios):.2f}-{max(ratios):.2f}" if i else "",
                f"{cpu / plain_cpu:6.3f}x",
                f"{cpu / n * 1000:11.2f}",
                f"{wall / ideal:7.3f}x",
            ]
            widths = (28, 9, 8, 8, 10, 7, 11, 8)
            print("  " + " ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500, help="items per run (500)")
    parser.add_argument("--concurrency", type=int, default=50, help="max_concurrency, both (50)")
    parser.add_argument("--latency", type=float, default=0.05, help="server latency, s (0.05)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (7)")
    parser.add_argument(
        "--server", choices=("process", "thread"), default="process", help="where the server runs"
    )
    asyncio.run(main(parser.parse_args()))
