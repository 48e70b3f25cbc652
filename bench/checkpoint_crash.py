"""Work redone after ``kill -9``: checkpoint commits on time vs on count only.

The issue's scenario: a chain at 0.2 s per item, concurrency 5, 400 items, a
checkpoint with ``chunk_size=500``, killed with SIGKILL once about 230 items have
finished, then resumed. With commits on count only (``flush_interval=inf``, the
old behaviour) nothing was committed and all 230 are run again; with the default
``flush_interval=1.0`` at most the items in flight plus about one second of
finished work are.

Each call appends a line to a side file as it starts and as it ends (one write
each, so the lines survive the kill); the parent kills the child once enough
"end" lines are there, then resumes in-process with a counting chain.

Usage: python bench/checkpoint_crash.py [--items 400] [--latency 0.2]
       [--concurrency 5] [--kill-after 230] [--intervals 1.0 inf]
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from langchain_core.runnables import RunnableLambda

from langchain_batchkit import Checkpoint, batchkit


def child(path: str, calls_path: str, interval: float, args: argparse.Namespace) -> None:
    """The batch that gets killed: a slow chain logging each call's start and end."""
    calls = os.open(calls_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def work(x: int) -> str:
        os.write(calls, f"start {x}\n".encode())
        time.sleep(args.latency)
        os.write(calls, f"end {x}\n".encode())
        return f"out-{x}"

    ckpt = Checkpoint(path, chunk_size=500, flush_interval=interval)
    kit = batchkit(RunnableLambda(work, name="work"), checkpoint=ckpt,
                   max_concurrency=args.concurrency, retry=None, progress=False)  # fmt: skip
    kit.run(range(args.items))


def lines(path: Path, kind: str) -> list[int]:
    if not path.exists():
        return []
    return [int(line.split()[1]) for line in path.read_text().splitlines()
            if line.startswith(kind + " ")]  # fmt: skip


def scenario(interval: float, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    path, calls_path = tmp / f"run-{interval}.sqlite", tmp / f"calls-{interval}.txt"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", str(path), str(calls_path), str(interval),
         "--items", str(args.items), "--latency", str(args.latency),
         "--concurrency", str(args.concurrency)],
    )  # fmt: skip
    try:
        while len(lines(calls_path, "end")) < args.kill_after:
            if proc.poll() is not None:
                raise RuntimeError("the batch ended before it was killed")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    started, finished = lines(calls_path, "start"), lines(calls_path, "end")
    committed = Checkpoint(path).counts()[0]

    resumed: list[int] = []

    def work(x: int) -> str:
        resumed.append(x)
        return f"out-{x}"

    results = batchkit(RunnableLambda(work, name="work"), checkpoint=path,
                       max_concurrency=args.concurrency, progress=False).batch(
        list(range(args.items))
    )  # fmt: skip
    assert [r.output for r in results] == [f"out-{i}" for i in range(args.items)]
    redone = set(started) & set(resumed)
    return {
        "finished": len(finished),
        "in_flight": len(started) - len(finished),
        "committed": committed,
        "calls": len(started) + len(resumed),
        "redone": len(redone),
        "redone_finished": len(redone & set(finished)),
    }


def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="batchkit-crash-"))
    print(
        f"\n{args.items} items, {args.latency} s/item, concurrency {args.concurrency}, "
        f"chunk_size 500, SIGKILL after {args.kill_after} finished"
    )
    header = ("flush_interval", "finished", "in flight", "committed", "calls", "redone",
              "redone finished")  # fmt: skip
    print("{:>15} {:>9} {:>9} {:>9} {:>6} {:>7} {:>15}".format(*header))
    for interval in args.intervals:
        row = scenario(interval, args, tmp)
        label = "inf (old)" if math.isinf(interval) else f"{interval:g}"
        print(
            f"{label:>15} {row['finished']:9.0f} {row['in_flight']:9.0f} "
            f"{row['committed']:9.0f} {row['calls']:6.0f} {row['redone']:7.0f} "
            f"{row['redone_finished']:15.0f}"
        )
    print("calls = chain calls in both runs (items + redone); redone = started before "
          "the kill and called again on resume")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--kill-after", type=int, default=230)
    parser.add_argument("--intervals", type=float, nargs="+", default=[1.0, math.inf])
    parser.add_argument("--child", nargs=3, metavar=("PATH", "CALLS", "INTERVAL"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], float(args.child[2]), args)
    else:
        main(args)
