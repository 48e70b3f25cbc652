"""Wrapper overhead: batchkit vs langchain-core's own ``batch``/``abatch``, side by side, one run.

Each group runs the same N items through the same chain at the same concurrency,
once raw (``chain.batch(xs, config={"max_concurrency": C})`` or ``chain.abatch``)
and once through ``batchkit(chain, max_concurrency=C, progress=False)``. Rounds
alternate the sides (the order flips every round, and the garbage collector runs
before each timing), and each side's median is compared, because this 2-core
machine is noisy. ``range`` is the lowest and highest per-round ratio; the ``cpu``
ratio and ``+cpu µs`` per item come from the process's CPU time, which another
process's load barely moves.

Groups (the targets come from the issue; the script reports, it does not assert):

* ``sync``: zero-latency sync ``RunnableLambda``, 5,000 items, C=10 (target: kit
  at most 1.10x raw ``batch``; the checkpoint row writes every item to SQLite).
* ``sleep``: a sync function sleeping 10 ms, 2,000 items, C=50 (target 1.10x), with
  the ideal ``ceil(N/C) x latency`` and each side's ratio to it.
* ``async``: zero-latency async ``RunnableLambda``, 10,000 items, C=10 and C=100
  (target 1.10x raw ``abatch``; with a fresh SQLite checkpoint: 1.5x).
* ``tracer``: the zero-latency chains again, 5,000 items, with a tracer on both
  sides (a ``BaseTracer`` whose ``_persist_run`` does nothing, inline like
  LangChain's own tracer): the added cost per item, in microseconds, is the number.

At high concurrency a large share of the CPU time is the garbage collector's full
collections, and how many of them land in a run varies; ``--freeze-gc`` shows the
gap without the imported heap in them (not what users get by default).

Usage: python bench/overhead.py [--rounds 7] [--scale 1.0] [--only sync sleep async tracer]
                                [--freeze-gc]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import langchain_core
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

from langchain_batchkit import batchkit

GROUPS = ("sync", "sleep", "async", "tracer")

Side = Callable[[], Any]  # returns the outputs, or an awaitable of them


class NullTracer(BaseTracer):
    """A tracer that builds every run tree and then drops it, as cheap as tracing gets."""

    run_inline = True  # as LangChainTracer: no executor hop per event on the async path

    def _persist_run(self, run: Run) -> None:
        pass


def _echo_sync(x: int) -> int:
    return x


async def _echo_async(x: int) -> int:
    return x


@dataclass
class Group:
    """One side-by-side comparison: the first side is the reference ("raw")."""

    title: str
    items: int
    sides: dict[str, Side]
    ideal: float | None = None
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)


def _outputs(result: Any) -> list[Any]:
    """The outputs of a raw result list or of a BatchResult (which must hold no failure)."""
    if hasattr(result, "failed"):
        assert not result.failed, result.failed[0].error
        return list(result.outputs)
    return list(result)


async def _call(side: Side) -> Any:
    result = side()
    return await result if inspect.isawaitable(result) else result


async def measure(group: Group, rounds: int, *, freeze_gc: bool = False) -> None:
    """Warm every side up (and check its outputs), then time alternating rounds.

    Wall time is the measure; the process's CPU time (all threads) is kept too: it
    barely moves when another process takes a core, so it tells noise from cost.
    With ``freeze_gc`` everything alive after the warm-up moves to the collector's
    permanent generation, so full collections during the rounds skip it.
    """
    expected = list(range(group.items))
    for name, side in group.sides.items():
        assert _outputs(await _call(side)) == expected, f"{name}: wrong outputs"
        group.wall[name], group.cpu[name] = [], []
    if freeze_gc:
        gc.collect()
        gc.freeze()
    names = list(group.sides)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            gc.collect()
            cpu, start = time.process_time(), time.perf_counter()
            await _call(group.sides[name])
            group.wall[name].append(time.perf_counter() - start)
            group.cpu[name].append(time.process_time() - cpu)


def print_table(groups: Sequence[Group], rounds: int) -> None:
    print(
        f"\nlangchain-core {langchain_core.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; median of {rounds} alternating rounds\n"
        "range: lowest-highest per-round wall ratio to raw; cpu: ratio of process CPU time "
        "(all threads)"
    )
    print(
        f"{'':34} {'median s':>9} {'items/s':>8} {'vs raw':>7} {'range':>10} {'cpu':>7} "
        f"{'+µs/item':>9} {'+cpu µs':>8} {'vs ideal':>8}"
    )
    for group in groups:
        ideal = f", ideal {group.ideal:.3f} s" if group.ideal is not None else ""
        print(f"{group.title}{ideal}")
        raw_name = next(iter(group.wall))
        raw_wall = statistics.median(group.wall[raw_name])
        raw_cpu = statistics.median(group.cpu[raw_name])
        for i, name in enumerate(group.wall):
            wall, cpu = statistics.median(group.wall[name]), statistics.median(group.cpu[name])
            ratios = [t / r for t, r in zip(group.wall[name], group.wall[raw_name], strict=True)]
            cells = [
                f"{name:32}",
                f"{wall:9.3f}",
                f"{group.items / wall:8.0f}",
                f"{wall / raw_wall:6.3f}x",
                f"{min(ratios):.2f}-{max(ratios):.2f}" if i else "",
                f"{cpu / raw_cpu:6.3f}x",
                f"{(wall - raw_wall) / group.items * 1e6:9.1f}" if i else "",
                f"{(cpu - raw_cpu) / group.items * 1e6:8.1f}" if i else "",
                f"{wall / group.ideal:7.3f}x" if group.ideal is not None else "",
            ]
            widths = (32, 9, 8, 7, 10, 7, 9, 8, 8)
            print("  " + " ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))


class Checkpoints:
    """A fresh SQLite file per call, so every round really writes every item."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def next_path(self) -> str:
        self.count += 1
        return str(self.folder / f"run-{self.count}.sqlite")


def zero_latency_sync(n: int, c: int, checkpoints: Checkpoints) -> Group:
    chain = RunnableLambda(_echo_sync)
    inputs = list(range(n))
    config: RunnableConfig = {"max_concurrency": c}
    kit = batchkit(chain, max_concurrency=c, progress=False)

    def with_checkpoint() -> Any:
        path = checkpoints.next_path()
        return batchkit(chain, max_concurrency=c, progress=False, checkpoint=path).batch(inputs)

    sides: dict[str, Side] = {
        "raw Runnable.batch": lambda: chain.batch(inputs, config=config),
        "batchkit batch": lambda: kit.batch(inputs),
        "batchkit batch + checkpoint": with_checkpoint,
    }
    return Group(f"sync, zero latency, {n} items, C={c}", n, sides)


def sleeping_sync(n: int, c: int, latency: float) -> Group:
    def nap(x: int) -> int:
        time.sleep(latency)
        return x

    chain = RunnableLambda(nap)
    inputs = list(range(n))
    config: RunnableConfig = {"max_concurrency": c}
    kit = batchkit(chain, max_concurrency=c, progress=False)
    sides: dict[str, Side] = {
        "raw Runnable.batch": lambda: chain.batch(inputs, config=config),
        "batchkit batch": lambda: kit.batch(inputs),
    }
    title = f"sync, {latency * 1000:g} ms sleep, {n} items, C={c}"
    return Group(title, n, sides, ideal=math.ceil(n / c) * latency)


def zero_latency_async(n: int, c: int, checkpoints: Checkpoints) -> Group:
    chain = RunnableLambda(_echo_async)
    inputs = list(range(n))
    config: RunnableConfig = {"max_concurrency": c}
    kit = batchkit(chain, max_concurrency=c, progress=False)
    kit_bar = batchkit(chain, max_concurrency=c, progress=True)

    def with_checkpoint() -> Any:
        path = checkpoints.next_path()
        return batchkit(chain, max_concurrency=c, progress=False, checkpoint=path).abatch(inputs)

    sides: dict[str, Side] = {
        "raw Runnable.abatch": lambda: chain.abatch(inputs, config=config),
        "batchkit abatch": lambda: kit.abatch(inputs),
        "batchkit abatch + bar": lambda: kit_bar.abatch(inputs),
        "batchkit abatch + checkpoint": with_checkpoint,
    }
    return Group(f"async, zero latency, {n} items, C={c}", n, sides)


def traced(n: int, c: int, *, sync: bool) -> Group:
    """Both sides get the same tracer in their config; the kit's C comes from the kit."""
    chain = RunnableLambda(_echo_sync) if sync else RunnableLambda(_echo_async)
    inputs = list(range(n))
    tracer = NullTracer()
    config: RunnableConfig = {"max_concurrency": c, "callbacks": [tracer]}
    kit_config: RunnableConfig = {"callbacks": [tracer]}
    kit = batchkit(chain, max_concurrency=c, progress=False)
    if sync:
        sides: dict[str, Side] = {
            "raw Runnable.batch + tracer": lambda: chain.batch(inputs, config),
            "batchkit batch + tracer": lambda: kit.batch(inputs, kit_config),
        }
    else:
        sides = {
            "raw Runnable.abatch + tracer": lambda: chain.abatch(inputs, config),
            "batchkit abatch + tracer": lambda: kit.abatch(inputs, kit_config),
        }
    return Group(f"tracer, {'sync' if sync else 'async'}, zero latency, {n} items, C={c}", n, sides)


def groups_for(args: argparse.Namespace, tmp: Path) -> list[Group]:
    scale: float = args.scale

    def scaled(n: int) -> int:
        return max(1, round(n * scale))

    checkpoints = Checkpoints(tmp)
    groups: list[Group] = []
    if "sync" in args.only:
        groups.append(
            zero_latency_sync(scaled(args.sync_items), args.sync_concurrency, checkpoints)
        )
    if "sleep" in args.only:
        n = scaled(args.sleep_items)
        groups.append(sleeping_sync(n, args.sleep_concurrency, args.latency))
    if "async" in args.only:
        n = scaled(args.async_items)
        groups.extend(zero_latency_async(n, c, checkpoints) for c in args.async_concurrency)
    if "tracer" in args.only:
        n, c = scaled(args.tracer_items), args.sync_concurrency
        groups.extend([traced(n, c, sync=True), traced(n, c, sync=False)])
    return groups


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="batchkit-bench-") as tmp:
        groups = groups_for(args, Path(tmp))
        for group in groups:
            await measure(group, args.rounds, freeze_gc=args.freeze_gc)
    print_table(groups, args.rounds)
    if args.freeze_gc:
        print("gc.freeze() after each warm-up: full collections skipped the imported heap")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (7)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every item count")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--sync-items", type=int, default=5_000)
    parser.add_argument("--sync-concurrency", type=int, default=10)
    parser.add_argument("--sleep-items", type=int, default=2_000)
    parser.add_argument("--sleep-concurrency", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.01, help="sleep per item, s (0.01)")
    parser.add_argument("--async-items", type=int, default=10_000)
    parser.add_argument("--async-concurrency", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--tracer-items", type=int, default=5_000)
    parser.add_argument(
        "--freeze-gc",
        action="store_true",
        help="gc.freeze() after warming up, to see how much of a gap is full collections",
    )
    asyncio.run(main(parser.parse_args()))
