"""pytest fixtures that start a :class:`FakeOpenAIServer` and always stop it.

Enable them in a ``conftest.py`` (or a test module)::

    pytest_plugins = ["langchain_batchkit.testing.pytest_plugin"]

This is the only module of the package that imports pytest, so importing
``langchain_batchkit.testing`` never needs it.

Example:
    >>> def test_answers(fake_openai_server):  # doctest: +SKIP
    ...     llm = ChatOpenAI(base_url=fake_openai_server.base_url, api_key="sk-test",
    ...                      model="gpt-4o-mini")
    ...     assert llm.invoke("hi").content == "echo: hi"
    >>> def test_rate_limit(fake_openai_server_factory):  # doctest: +SKIP
    ...     server = fake_openai_server_factory(FakeServerConfig(requests_per_minute=1))
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

import pytest

from langchain_batchkit.testing._fakeserver import FakeOpenAIServer, FakeServerConfig

__all__ = ["FakeServerFactory", "fake_openai_server", "fake_openai_server_factory"]

logger = logging.getLogger(__name__)


class FakeServerFactory(Protocol):
    """The type of the ``fake_openai_server_factory`` fixture, for annotating tests."""

    def __call__(self, config: FakeServerConfig | None = None) -> FakeOpenAIServer:
        """Start a server with ``config`` (default: answer everything at once)."""
        ...


@pytest.fixture
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    """A running fake OpenAI server with the default config, stopped after the test."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def fake_openai_server_factory() -> Iterator[FakeServerFactory]:
    """Start servers with any config; every one of them is stopped at teardown.

    A factory rather than an indirect parametrised fixture, because a test often needs
    a config built from its own objects (a fake clock) or more than one server.
    """
    started: list[FakeOpenAIServer] = []

    def start(config: FakeServerConfig | None = None) -> FakeOpenAIServer:
        server = FakeOpenAIServer(config)
        started.append(server)
        return server.start()

    yield start
    failures: list[Exception] = []
    for server in reversed(started):
        try:
            server.stop()
        except Exception as exc:  # stop the others first, then report
            logger.exception("could not stop %r", server)
            failures.append(exc)
    if failures:
        raise RuntimeError(f"{len(failures)} fake OpenAI server(s) did not stop") from failures[0]
