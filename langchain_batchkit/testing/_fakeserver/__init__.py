"""An OpenAI-compatible fake HTTP server for tests, benchmarks and demos.

Batch runners are only as good as their behaviour against a real service: rate
limits with ``Retry-After``, transient 5xx, dropped connections, requests that
never return, one bad prompt in a thousand, and Batch API jobs that fail, expire or
are cancelled. :class:`FakeOpenAIServer` reproduces those over real HTTP/1.1 on
``127.0.0.1``, so the genuine ``openai`` and ``langchain_openai`` clients
(connection pools, retries, timeouts, header parsing, multipart uploads) are
exercised end to end, with no network and no API key.

HTTP is aiohttp's web server (the ``testing`` extra, ``pip install
'langchain-batchkit[testing]'``), imported only when a server is built: one daemon
thread runs the server's own asyncio event loop. Everything else here is pure and
needs nothing beyond the standard library.

Modules, one concern each:

- ``_config``: :class:`FakeServerConfig`, the validated behaviour knobs;
- ``_stats``: counters and the :class:`ServerStats` snapshot;
- ``_ratelimit``: the exact sliding-window limiter (or fixed windows) and its headers;
- ``_faults``: scripted and random faults (flex capacity included), latency draws;
- ``_exchange``: the handler contract (request, outcomes, routes, OpenAI errors);
- ``_chat`` / ``_images``: what a chat request means, how it is answered and how its
  tokens are counted (``chars`` or the model's tokenizer);
- ``_embeddings``: what an embeddings request means, its deterministic vectors;
- ``_online``: ``/v1/chat/completions``, ``/v1/embeddings`` and ``/v1/models``;
- ``_files``, ``_pages``: stored files, list pages;
- ``_batch_input``, ``_batch_exec``, ``_batches``, ``_batch_api``: the Batch API;
- ``_azure``, ``_azure_answers``: Azure OpenAI's routes (``api-version``, ``api-key``,
  deployments) over the same endpoints;
- ``_anthropic_messages``, ``_anthropic_batches``, ``_anthropic_api``: Anthropic's
  ``/v1/messages`` and Message Batches, answered with the same logic;
- ``_web``: the route table on aiohttp (the only module importing it), connection
  counting, drops, hangs, server-sent events;
- ``_server``: :class:`FakeOpenAIServer`, its thread and loop.

Example:
    >>> from openai import OpenAI
    >>> config = FakeServerConfig(script={"flaky": ("500", "ok")})
    >>> with FakeOpenAIServer(config) as server:  # doctest: +SKIP
    ...     client = OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=1)
    ...     reply = client.chat.completions.create(
    ...         model="gpt-4o-mini", messages=[{"role": "user", "content": "flaky"}]
    ...     )
    ...     reply.choices[0].message.content, server.stats().responses_by_status
    ('echo: flaky', mappingproxy({500: 1, 200: 1}))
"""

from langchain_batchkit.testing._fakeserver._config import (
    FakeServerConfig,
    LatencyDistribution,
    ScriptedFault,
    TokenCounting,
)
from langchain_batchkit.testing._fakeserver._server import FakeOpenAIServer
from langchain_batchkit.testing._fakeserver._stats import ServerStats

__all__ = [
    "FakeOpenAIServer",
    "FakeServerConfig",
    "LatencyDistribution",
    "ScriptedFault",
    "ServerStats",
    "TokenCounting",
]
