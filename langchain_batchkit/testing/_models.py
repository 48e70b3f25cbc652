"""Fake chat models for tests, demos and notebooks: no API key, no network."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

__all__ = ["FakeChatModel", "FakeModelError"]


class FakeModelError(RuntimeError):
    """The failure a :class:`FakeChatModel` injects (stands in for a provider error)."""


class FakeChatModel(BaseChatModel):
    """A chat model that answers ``"echo: <last message text>"`` after a set latency.

    It reports ``usage_metadata`` like a real model (about 4 characters a token),
    can fail on purpose, and counts calls and the most calls it saw at once, so
    tests can check concurrency caps. Labelled fake in every answer's metadata.

    Args:
        latency: seconds each call takes (``asyncio.sleep`` in async calls).
        jitter: extra latency drawn uniformly from ``[0, jitter]``.
        error_rate: probability that a call raises :class:`FakeModelError`
            (drawn per call, so a retry may succeed).
        fail_if_contains: prompts containing any of these always fail.
        seed: seed of the random draws.
        model_name: the model name it reports (in its invocation parameters, so
            prices and a Budget can look it up, and in each answer's metadata).

    Example:
        >>> llm = FakeChatModel(latency=0.05, error_rate=0.02)   # doctest: +SKIP
    """

    model_name: str = "fake"
    latency: float = 0.0
    jitter: float = 0.0
    error_rate: float = 0.0
    fail_if_contains: Sequence[str] = Field(default_factory=tuple)
    seed: int | None = None

    _rng: random.Random = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: int = PrivateAttr(default=0)
    _in_flight: int = PrivateAttr(default=0)
    _max_in_flight: int = PrivateAttr(default=0)

    def model_post_init(self, context: Any, /) -> None:
        self._rng = random.Random(self.seed)
        for name in ("latency", "jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.error_rate <= 1:
            raise ValueError("error_rate must be in [0, 1]")

    @property
    def _llm_type(self) -> str:
        return "batchkit-fake-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    @property
    def calls(self) -> int:
        """Calls made so far."""
        return self._calls

    @property
    def max_in_flight(self) -> int:
        """The most calls that were running at the same time."""
        return self._max_in_flight

    def _enter(self, messages: list[BaseMessage]) -> tuple[float, str, bool]:
        text = messages[-1].text if messages else ""
        with self._lock:
            self._calls += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            delay = self.latency + (self._rng.uniform(0, self.jitter) if self.jitter else 0.0)
            fail = any(s in text for s in self.fail_if_contains) or (
                self.error_rate > 0 and self._rng.random() < self.error_rate
            )
        return delay, text, fail

    def _exit(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _answer(self, text: str, fail: bool) -> ChatResult:
        if fail:
            raise FakeModelError(f"fake model refused the prompt {text[:60]!r}")
        answer = f"echo: {text}"
        inp, out = max(1, len(text) // 4), max(1, len(answer) // 4)
        message = AIMessage(
            content=answer,
            usage_metadata={"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out},
            response_metadata={"model_name": self.model_name, "fake": True},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        delay, text, fail = self._enter(messages)
        try:
            if delay:
                time.sleep(delay)
            return self._answer(text, fail)
        finally:
            self._exit()

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        delay, text, fail = self._enter(messages)
        try:
            if delay:
                await asyncio.sleep(delay)
            return self._answer(text, fail)
        finally:
            self._exit()
