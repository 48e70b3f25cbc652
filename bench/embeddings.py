"""Embeddings at scale against the fake OpenAI server: TPM use, 429s, and flat memory.

``pace``: N short texts through real ``OpenAIEmbeddings`` over HTTP, against a
server admitting at most TPM tokens in any sliding window: ``embed_texts`` with a
``RateLimit`` at that TPM, then raw ``OpenAIEmbeddings.embed_documents`` (the SDK's
own retries, two by default) under the same limit. Reports the share of the limit
used (tokens answered / (TPM x elapsed windows)) and the share of requests answered 429.
The fake server's 429s carry the exact ``Retry-After``, which the SDK honours; with
``--raw-without-retry-after`` the raw side also runs against proxy-like 429s without
one, where the SDK falls back to its own short backoff.

The limiter paces per minute, so keep ``--window 60``: against a shorter window its
token burst (a share of a minute's budget) overfills the first window.

``memory``: peak RSS of one process embedding N texts from a lazy generator into
a checkpoint (64-dimension vectors, no rate limit); run it for 100,000 and
1,000,000 texts and compare.

Usage: python bench/embeddings.py pace [--texts 100000] [--tpm 200000] [--window 60]
                                       [--raw-without-retry-after]
       python bench/embeddings.py memory --texts 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from langchain_openai import OpenAIEmbeddings

from langchain_batchkit import RateLimit, embed_texts
from langchain_batchkit.embeddings import EmbedLimits
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig


def _model(server: FakeOpenAIServer, max_retries: int, dims: int = 64) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        base_url=server.base_url,
        api_key="sk-bench",  # type: ignore[arg-type]
        model="text-embedding-3-small",
        check_embedding_ctx_length=False,
        max_retries=max_retries,
        dimensions=dims,
        chunk_size=256,
    )


def _corpus(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"chunk {i} of the corpus"


def _line(
    name: str, server: FakeOpenAIServer, tpm: int, window: float, wall: float, ok: str
) -> None:
    stats = server.stats()
    requests = stats.embedding_requests
    used = stats.embedding_tokens / (tpm * wall / window)
    share = stats.rate_limited / requests if requests else 0.0
    print(
        f"{name:34} {ok:>16} {wall:7.1f} {used:8.1%} {requests:6d} {stats.rate_limited:5d} "
        f"{share:6.1%}"
    )


def pace(texts: int, tpm: int, window: float, raw_without_retry_after: bool) -> None:
    print(f"\n{texts} texts, {tpm} tokens per {window:g} s window (sliding), 256 texts/request")
    print(f"{'':34} {'ok':>16} {'wall s':>7} {'of TPM':>8} {'reqs':>6} {'429s':>5} {'429 %':>6}")
    config = FakeServerConfig(tokenizer="model", tokens_per_minute=tpm, window_seconds=window)
    with FakeOpenAIServer(config) as server:
        limit = RateLimit(tokens_per_minute=tpm * 60 / window)
        started = time.monotonic()
        report = embed_texts(
            _model(server, 0),
            _corpus(texts),
            rate_limit=limit,
            limits=EmbedLimits(max_inputs=256),
            progress=False,
        )
        wall = time.monotonic() - started
        _line("embed_texts + RateLimit", server, tpm, window, wall, f"{report.embedded}/{texts}")
    _raw("raw embed_documents (SDK retries)", config, texts, tpm, window)
    if raw_without_retry_after:
        proxy = dataclasses.replace(config, send_retry_after=False)
        _raw("raw, 429s without Retry-After", proxy, texts, tpm, window)


def _raw(name: str, config: FakeServerConfig, texts: int, tpm: int, window: float) -> None:
    with FakeOpenAIServer(config) as server:
        started = time.monotonic()
        try:
            vectors = _model(server, 2).embed_documents(list(_corpus(texts)))
            ok = f"{len(vectors)}/{texts}"
        except Exception as exc:
            ok = f"raised {type(exc).__name__}"
        wall = time.monotonic() - started
        _line(name, server, tpm, window, wall, ok)


def memory(texts: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer() as server:
        started = time.monotonic()
        report = embed_texts(
            _model(server, 0),
            _corpus(texts),
            checkpoint=os.path.join(tmp, "embed.sqlite"),
            limits=EmbedLimits(max_inputs=1024),
            progress=False,
        )
        wall = time.monotonic() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size_mb = os.path.getsize(os.path.join(tmp, "embed.sqlite")) / 1e6
        print(
            f"{texts:9d} texts: {report.embedded} embedded in {wall:6.1f} s, peak RSS "
            f"{peak_mb:6.1f} MB, checkpoint {size_mb:6.1f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["pace", "memory", "memory-both"])
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--tpm", type=int, default=200_000)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--raw-without-retry-after", action="store_true")
    args = parser.parse_args()
    if args.what == "pace":
        pace(args.texts, args.tpm, args.window, args.raw_without_retry_after)
    elif args.what == "memory":
        memory(args.texts)
    else:  # one fresh process each, so each peak is its own
        for n in (100_000, 1_000_000):
            subprocess.run([sys.executable, __file__, "memory", "--texts", str(n)], check=True)


if __name__ == "__main__":
    main()
