"""Test helpers users can use too: fake chat models, a fake clock, a fake OpenAI server.

Nothing here needs an API key or the network.
"""

from langchain_batchkit.testing._clock import FakeClock
from langchain_batchkit.testing._fakeserver import (
    FakeOpenAIServer,
    FakeServerConfig,
    LatencyDistribution,
    ScriptedFault,
    ServerStats,
)
from langchain_batchkit.testing._models import FakeChatModel, FakeModelError

__all__ = [
    "FakeChatModel",
    "FakeClock",
    "FakeModelError",
    "FakeOpenAIServer",
    "FakeServerConfig",
    "LatencyDistribution",
    "ScriptedFault",
    "ServerStats",
]
