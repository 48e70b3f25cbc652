"""Peak memory: 1,000,000 lazy inputs into a checkpoint vs raw abatch on 100,000.

Each side runs in its own child process (so each peak is its own) and reports
its resident-set high-water mark (VmHWM) and wall time; the parent prints both.
batchkit reads a generator lazily through ``kit.run()`` (counts only, every
result committed to SQLite); raw ``Runnable.abatch`` needs a list and builds a
coroutine per input up front.

Usage: python bench/memory.py [--ours 1000000] [--raw 100000] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _echo(x: int) -> int:
    return x


def child(kind: str, n: int, concurrency: int) -> None:
    from langchain_core.runnables import RunnableLambda

    from langchain_batchkit import batchkit

    chain = RunnableLambda(_echo)
    start = time.perf_counter()
    if kind == "ours":
        with tempfile.TemporaryDirectory() as tmp:
            kit = batchkit(
                chain,
                max_concurrency=concurrency,
                progress=False,
                checkpoint=Path(tmp) / "run.sqlite",
            )
            report = kit.run(i for i in range(n))  # a generator: never materialised
            ok = report.summary.succeeded
            size = (Path(tmp) / "run.sqlite").stat().st_size
    else:
        outs = asyncio.run(chain.abatch(list(range(n)), config={"max_concurrency": concurrency}))
        ok, size = len(outs), 0
    wall = time.perf_counter() - start
    print(json.dumps({"ok": ok, "wall": wall, "peak_mb": _peak_rss_mb(), "file_mb": size / 2**20}))


def run_child(kind: str, n: int, concurrency: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--n",
            str(n),
            "--concurrency",
            str(concurrency),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main(ours: int, raw: int, concurrency: int) -> None:
    print(f"\nzero-latency runnable, concurrency {concurrency}, each side in its own process")
    print(f"{'':44} {'items':>9} {'wall s':>8} {'peak RSS MB':>12}")
    a = run_child("ours", ours, concurrency)
    print(
        f"{'batchkit run(generator) + SQLite checkpoint':44} {int(a['ok']):9d} {a['wall']:8.1f} "
        f"{a['peak_mb']:12.1f}   (checkpoint file {a['file_mb']:.0f} MB)"
    )
    b = run_child("raw", raw, concurrency)
    print(
        f"{'raw Runnable.abatch(list)':44} {int(b['ok']):9d} {b['wall']:8.1f} {b['peak_mb']:12.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", type=int, default=1_000_000)
    parser.add_argument("--raw", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--child", choices=["ours", "raw"])
    parser.add_argument("--n", type=int, default=0)
    a = parser.parse_args()
    if a.child:
        child(a.child, a.n, a.concurrency)
    else:
        main(a.ours, a.raw, a.concurrency)
