"""Test helpers users can use too: fake chat models (and, soon, a fake OpenAI server).

Nothing here needs an API key or the network.
"""

from langchain_batchkit.testing._clock import FakeClock
from langchain_batchkit.testing._models import FakeChatModel, FakeModelError

__all__ = ["FakeChatModel", "FakeClock", "FakeModelError"]
