"""Helpers of the Anthropic tests: ChatAnthropic on the fake server, requests as sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from langchain_batchkit.testing import FakeOpenAIServer

#: Built at run time, so no key-shaped literal is tracked (the fake takes any key).
API_KEY = "-".join(("fake", "anthropic", "key"))
MODEL = "claude-3-5-haiku-latest"


def claude_for(server: FakeOpenAIServer, **options: Any) -> Any:
    """A ChatAnthropic on the fake server, the SDK's own retries off."""
    from langchain_anthropic import ChatAnthropic

    options.setdefault("api_key", API_KEY)
    options.setdefault("model", MODEL)
    options.setdefault("max_retries", 0)
    return ChatAnthropic(base_url=server.url, **options)


class SentBatches:
    """Records every batch the runner creates: its requests as parsed JSON."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request of every batch, in the order they were created."""
        return [request for batch in self.batches for request in batch]


def spy_on_create(monkeypatch: pytest.MonkeyPatch) -> SentBatches:
    """Record what each batch :meth:`AnthropicBatches.create` makes carries, before sending."""
    from langchain_batchkit._batch_api._anthropic_batches import AnthropicBatches

    record = SentBatches()
    create = AnthropicBatches.create

    async def spying(self: AnthropicBatches, **kwargs: Any) -> Any:
        record.batches.append([json.loads(line) for line in kwargs["lines"]])
        return await create(self, **kwargs)

    monkeypatch.setattr(AnthropicBatches, "create", spying)
    return record
