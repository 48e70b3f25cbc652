"""Caption 2,000 small images against the fake server: wall time vs ideal, and peak memory.

Images are generated in a temporary folder with Pillow, then ``acaption_images`` sends
them, folder expansion included, through real ``ChatOpenAI`` over HTTP to the local
fake OpenAI server, which answers every request after a fixed latency. With C items in
flight the best possible wall time is ``ceil(N / C) x latency``; the target is at most
1.15x that. Every image must get its own caption (the prompt names the file and the
server echoes it).

The server runs in a child process by default, as a real API would not share our
interpreter (``--server thread`` runs it in-process). For scale, the same requests
are then sent with the messages built in advance through a bare ``batchkit(llm)``:
the client floor, i.e. what ChatOpenAI itself costs on this machine (``--no-floor``
skips it).

Peak memory is the process's RSS high-water mark (VmHWM), read after generating the
images and again after the run: because each image is read inside its own item, the
growth stays bounded by the items in flight, not by the size of the folder (try
``--side 128 --noise``: ~50 KB images, ~100 MB on disk).

Usage: python bench/captions.py [--images 2000] [--concurrency 50] [--latency 0.1]
                                [--side 32] [--noise] [--target 1.15]
                                [--server process|thread] [--no-floor]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from langchain_core.messages import BaseMessage
from langchain_openai import ChatOpenAI
from PIL import Image

from langchain_batchkit import batchkit
from langchain_batchkit.multimodal import acaption_images, image_message
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig

# Runs in the child process: serve until the parent closes our stdin (or dies).
_SERVER_CHILD = """
import sys
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig
with FakeOpenAIServer(FakeServerConfig(latency=float(sys.argv[1]))) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()
"""


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


def chat(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=base_url,
        api_key="sk-bench",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        timeout=30.0,
    )


def peak_rss_mb() -> float:
    """The process's RSS high-water mark in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def make_images(folder: Path, n: int, side: int, noise: bool) -> int:
    """Write ``n`` PNGs (distinct colours, or noise) and return their total size in bytes."""
    total = 0
    for i in range(n):
        path = folder / f"img_{i:05d}.png"
        if noise:
            Image.effect_noise((side, side), 60 + i % 40).convert("RGB").save(path)
        else:
            Image.new("RGB", (side, side), (i % 256, (i * 7) % 256, (i * 13) % 256)).save(path)
        total += path.stat().st_size
    return total


def prebuilt_messages(folder: Path) -> list[list[BaseMessage]]:
    return [image_message(p, f"Caption {p.name}", detail="low") for p in sorted(folder.iterdir())]


async def client_floor(base_url: str, folder: Path, concurrency: int) -> float:
    """Seconds for the same requests, messages built in advance, through bare batchkit(llm)."""
    messages = prebuilt_messages(folder)
    kit = batchkit(chat(base_url), max_concurrency=concurrency, progress=False)
    start = time.perf_counter()
    results = await kit.abatch(messages)
    wall = time.perf_counter() - start
    assert not results.failed
    return wall


async def main(
    images: int,
    concurrency: int,
    latency: float,
    side: int,
    noise: bool,
    target: float,
    server: str,
    floor: bool,
) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-captions-") as tmp:
        folder = Path(tmp)
        on_disk = make_images(folder, images, side, noise)
        rss_before = peak_rss_mb()
        with fake_server(latency, server) as base_url:
            start = time.perf_counter()
            results = await acaption_images(
                str(folder),
                llm=chat(base_url),
                prompt=lambda source: f"Caption {Path(source).name}",
                detail="low",
                max_concurrency=concurrency,
                progress=False,
            )
            wall = time.perf_counter() - start
            rss_after = peak_rss_mb()
            floor_wall = await client_floor(base_url, folder, concurrency) if floor else None
            rss_floor = peak_rss_mb()

    ideal = math.ceil(images / concurrency) * latency
    ratio = wall / ideal
    wrong = [r.index for r in results if r.output != f"echo: Caption {Path(str(r.input)).name}"]
    print(
        f"\n{images} images ({side}x{side} PNG{', noise' if noise else ''}, "
        f"{on_disk / 1e6:.1f} MB on disk), concurrency {concurrency}, "
        f"latency {latency * 1000:.0f} ms, server in a {server}"
    )
    print(f"ideal ceil(N/C) x latency    {ideal:7.2f} s")
    print(f"caption_images               {wall:7.2f} s   {ratio:.3f}x ideal")
    if floor_wall is not None:
        print(
            f"client floor (bare llm)      {floor_wall:7.2f} s   {floor_wall / ideal:.3f}x ideal"
            "   (prebuilt messages, batchkit(ChatOpenAI))"
        )
    print(f"{len(results.succeeded)} ok, {len(results.failed)} failed, {len(wrong)} wrong captions")
    print(
        f"peak RSS (VmHWM): {rss_before:.0f} MB before the run, {rss_after:.0f} MB after "
        f"(+{rss_after - rss_before:.0f} MB)"
    )
    if floor_wall is not None:
        print(
            f"                  {rss_floor:.0f} MB after the floor run, which builds every "
            f"message up front (+{rss_floor - rss_after:.0f} MB more)"
        )
    ok = ratio <= target and not results.failed and not wrong and len(results) == images
    print(f"target <= {target:.2f}x ideal: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="how many images (2000)")
    parser.add_argument("--concurrency", type=int, default=50, help="items in flight (50)")
    parser.add_argument("--latency", type=float, default=0.5, help="server latency, s (0.5)")
    parser.add_argument("--side", type=int, default=32, help="image side in pixels (32)")
    parser.add_argument("--noise", action="store_true", help="noise images (incompressible)")
    parser.add_argument("--target", type=float, default=1.15, help="max wall/ideal (1.15)")
    parser.add_argument(
        "--server", choices=("process", "thread"), default="process", help="where the server runs"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the client-floor run")
    a = parser.parse_args()
    raise SystemExit(
        asyncio.run(
            main(
                a.images,
                a.concurrency,
                a.latency,
                a.side,
                a.noise,
                a.target,
                a.server,
                not a.no_floor,
            )
        )
    )
