"""Holding a FakeClock still while a model call is in flight to a fake server.

A fake server on the test's clock counts a request at the fake time it arrives. The
openai SDK does some work in a worker thread before its first request (it reads the
platform once), and while the loop waits for a thread or a socket it looks idle to
the clock, which may then jump to the next sleeper's deadline. The server would count
the request later than the client's limiter let it go, and a correct limiter would
meet 429s on a slow or busy machine. Holding time still for the whole call makes the
two agree, whatever the machine's speed.
"""

from __future__ import annotations

from typing import Any

from langchain_openai import OpenAIEmbeddings

from langchain_batchkit.testing import FakeClock


def held(embeddings: OpenAIEmbeddings, clock: FakeClock) -> OpenAIEmbeddings:
    """``embeddings`` whose async calls hold ``clock`` still until they return."""
    call = embeddings.aembed_documents

    async def aembed_documents(texts: list[str], *args: Any, **kwargs: Any) -> list[list[float]]:
        with clock.busy():
            return await call(texts, *args, **kwargs)

    object.__setattr__(embeddings, "aembed_documents", aembed_documents)
    return embeddings
