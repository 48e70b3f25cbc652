"""Which fault an admitted online request meets, and how long it waits: seeded, no I/O."""

from __future__ import annotations

import math
import random
from collections import Counter

from langchain_batchkit.testing._fakeserver._config import FakeServerConfig, ScriptedFault

__all__ = ["SERVER_ERRORS", "FaultPlan"]

SERVER_ERRORS: tuple[ScriptedFault, ...] = ("500", "502", "503")


class FaultPlan:
    """Script steps per prompt, then random faults and latency from one seeded RNG.

    Lives on the server's event loop only, so it needs no lock. Draws happen in
    request order, so a run is reproducible when requests arrive in the same order.
    """

    __slots__ = ("_attempts", "_config", "_rng")

    def __init__(self, config: FakeServerConfig) -> None:
        self._config = config
        self._rng = random.Random(config.seed)
        self._attempts: Counter[tuple[str, str]] = Counter()

    def flex_unavailable(self, prompt: str) -> bool:
        """Whether a flex request finds no flex capacity, decided before the rate limiter.

        Takes the prompt's next script step only if it is ``"flex_unavailable"``
        (any other step waits for :meth:`next_fault`), else draws
        ``flex_unavailable_rate``; the RNG is untouched while that rate is 0.
        """
        step = self._script_step(prompt, only="flex_unavailable")
        if step is not None:
            return True
        rate = self._config.flex_unavailable_rate
        return rate > 0 and self._rng.random() < rate

    def next_fault(self, prompt: str) -> ScriptedFault:
        """The prompt's next script step if it has one left, else a random draw."""
        config = self._config
        step = self._script_step(prompt)
        if step is not None:
            return step
        if config.error_rate_5xx == config.drop_rate == config.hang_rate == 0:
            return "ok"
        draw = self._rng.random()
        if draw < config.error_rate_5xx:
            return self._rng.choice(SERVER_ERRORS)
        if draw < config.error_rate_5xx + config.drop_rate:
            return "drop"
        if draw < config.error_rate_5xx + config.drop_rate + config.hang_rate:
            return "hang"
        return "ok"

    def _script_step(self, prompt: str, only: ScriptedFault | None = None) -> ScriptedFault | None:
        """Take the prompt's next script step (if it is ``only``, when given)."""
        for key, steps in self._config.script.items():
            if key in prompt:
                attempt = self._attempts[(key, prompt)]
                if attempt < len(steps) and only in (None, steps[attempt]):
                    self._attempts[(key, prompt)] = attempt + 1
                    return steps[attempt]
                return None
        return None

    def sample_latency(self, factor: float = 1.0) -> float:
        """Seconds to wait before answering, drawn from ``latency_distribution``.

        ``factor`` stretches the draw (flex requests), and ``max_latency`` caps the
        result.
        """
        config = self._config
        if config.latency_distribution == "lognormal":
            delay = self._rng.lognormvariate(math.log(config.latency), config.latency_sigma)
        elif config.latency_distribution == "pareto":
            delay = config.latency * self._rng.paretovariate(config.latency_alpha)
        else:
            delay = config.latency
        delay *= factor
        return delay if config.max_latency is None else min(delay, config.max_latency)
