"""Helpers of the Batch API tests: models and options on the fake server and clock."""

from __future__ import annotations

from typing import Any

from langchain_openai import ChatOpenAI

from langchain_batchkit import BatchAPIOptions
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer

#: Not key-shaped (the fake server takes any key).
API_KEY = "sk-test"


def llm_for(server: FakeOpenAIServer, **options: Any) -> ChatOpenAI:
    """A ChatOpenAI on the fake server, the SDK's own retries off."""
    options.setdefault("api_key", API_KEY)
    options.setdefault("model", "gpt-4o-mini")
    return ChatOpenAI(base_url=server.base_url, max_retries=0, **options)


def options_on(clock: FakeClock, **options: Any) -> BatchAPIOptions:
    """Options whose waits and times run on ``clock``."""
    options.setdefault("poll_initial_wait", 10.0)
    return BatchAPIOptions(sleep=clock.sleep, clock=clock, **options)


def prompts(n: int) -> list[str]:
    return [f"prompt {i}" for i in range(n)]
