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

    def next_fault(self, prompt: str) -> ScriptedFault:
        """The prompt's next script step if it has one left, else a random draw."""
        config = self._config
        for key, steps in config.script.items():
            if key in prompt:
                attempt = self._attempts[(key, prompt)]
                self._attempts[(key, prompt)] = attempt + 1
                if attempt < len(steps):
                    return steps[attempt]
                break
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

    def sample_latency(self) -> float:
        """Seconds to wait before answering, drawn from ``latency_distribution``."""
        config = self._config
        if config.latency_distribution == "lognormal":
            delay = self._rng.lognormvariate(math.log(config.latency), config.latency_sigma)
        elif config.latency_distribution == "pareto":
            delay = config.latency * self._rng.paretovariate(config.latency_alpha)
        else:
            delay = config.latency
        return delay if config.max_latency is None else min(delay, config.max_latency)
