"""Against the real OpenAI service: runs only when OPENAI_API_KEY is set."""

from __future__ import annotations

import os

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_openai import ChatOpenAI

from langchain_batchkit import RateLimit, batchkit

pytestmark = pytest.mark.skipif(
    not os.environ.get("OPENAI_API_KEY"), reason="needs OPENAI_API_KEY (the real service)"
)


async def test_a_small_batch_against_the_real_service() -> None:
    llm = ChatOpenAI(model="gpt-4o-mini", max_retries=0, max_completion_tokens=5)
    kit = batchkit(llm | StrOutputParser(), rate_limit=RateLimit(requests_per_minute=60))
    results = await kit.abatch(["Say ok.", "Say yes.", "Say hi."])
    assert all(r.ok for r in results), [str(r.error) for r in results.failed]
    assert results.summary().usage.total_tokens > 0
    assert os.environ["OPENAI_API_KEY"] not in repr(results.to_records())
