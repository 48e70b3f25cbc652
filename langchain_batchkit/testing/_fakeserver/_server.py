"""FakeOpenAIServer: the background thread and its event loop.

What the endpoints answer lives in :mod:`._online` (chat completions, models) and
:mod:`._batch_api` (files, batches); :mod:`._web` serves them with aiohttp, imported
when a server is built (the ``testing`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from types import ModuleType, TracebackType

from langchain_batchkit.testing._fakeserver._anthropic_api import AnthropicEndpoints
from langchain_batchkit.testing._fakeserver._azure import AzureEndpoints
from langchain_batchkit.testing._fakeserver._batch_api import BatchApiEndpoints
from langchain_batchkit.testing._fakeserver._config import FakeServerConfig
from langchain_batchkit.testing._fakeserver._exchange import Route
from langchain_batchkit.testing._fakeserver._online import OnlineEndpoints
from langchain_batchkit.testing._fakeserver._stats import Counters, ServerStats

__all__ = ["HOST", "FakeOpenAIServer"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP/1.1 server on ``127.0.0.1``, in a background thread.

    Endpoints: ``POST /v1/chat/completions`` (JSON, or SSE with ``"stream": true``),
    ``POST /v1/embeddings`` (deterministic vectors, float or base64),
    ``GET /v1/models`` and ``GET /v1/models/{model}``, and the Batch API:
    ``/v1/files`` (upload, list, retrieve, delete, ``/content``) and ``/v1/batches``
    (create, list, retrieve, ``/cancel``) on ``/v1/chat/completions`` or
    ``/v1/embeddings``, whose timeline runs on ``config.clock``. Azure OpenAI's routes
    too, for ``AzureChatOpenAI(azure_endpoint=server.url, ...)``: ``/openai/files``,
    ``/openai/batches`` (endpoint ``/chat/completions``) and
    ``/openai/deployments/{deployment}/chat/completions``, each requiring an
    ``api-version`` and an ``api-key`` (or a bearer token).
    Routing is a small table; unknown paths get an OpenAI-style 404, wrong methods 405.
    HTTP itself is aiohttp's, so it needs the ``testing`` extra.

    Servers are single-use: ``start()`` once, ``stop()`` as often as you like.
    ``stop()`` closes every connection (so hung requests end at once and their
    clients see a closed connection), and joins the thread. The Authorization
    header is never logged or echoed.

    Args:
        config: the server's behaviour; the default answers every request at once.

    Raises:
        ImportError: if aiohttp is not installed
            (``pip install 'langchain-batchkit[testing]'``).

    Example:
        >>> from langchain_openai import ChatOpenAI
        >>> with FakeOpenAIServer() as server:  # doctest: +SKIP
        ...     llm = ChatOpenAI(base_url=server.base_url, api_key="sk-test",
        ...                      model="gpt-4o-mini")
        ...     llm.invoke("hello").content
        'echo: hello'
    """

    __slots__ = (
        "_config",
        "_counters",
        "_ids",
        "_loop",
        "_port",
        "_ready",
        "_routes",
        "_startup_error",
        "_stop_event",
        "_thread",
        "_web",
    )

    def __init__(self, config: FakeServerConfig | None = None) -> None:
        self._web = _import_web()
        self._config = config if config is not None else FakeServerConfig()
        self._counters = Counters()
        self._ids = itertools.count(1)
        online = OnlineEndpoints(self._config, self._counters, self._ids)
        batch_api = BatchApiEndpoints(self._config, self._counters)
        azure = AzureEndpoints(self._config, online, batch_api)
        anthropic = AnthropicEndpoints(self._config, self._counters, self._ids)
        self._routes: tuple[Route, ...] = (
            online.routes() + batch_api.routes() + azure.routes() + anthropic.routes()
        )
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = f" at {self.url}" if self._port is not None else ""
        return f"<FakeOpenAIServer {state}{where}>"

    # ------------------------------------------------------------------ lifecycle

    @property
    def config(self) -> FakeServerConfig:
        """The configuration this server was built with."""
        return self._config

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int:
        """The TCP port the OS picked; raises RuntimeError before ``start()``."""
        if self._port is None:
            raise RuntimeError("FakeOpenAIServer is not started; call start() or use `with`")
        return self._port

    @property
    def url(self) -> str:
        """The server root, like ``http://127.0.0.1:54321``."""
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` to OpenAI clients: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def start(self, timeout: float = 10.0) -> FakeOpenAIServer:
        """Bind a free port and serve in a daemon thread; returns self once listening.

        Raises:
            RuntimeError: if already started, or if the server could not start.
        """
        if self._thread is not None:
            raise RuntimeError("FakeOpenAIServer is single-use and was already started")
        self._thread = threading.Thread(target=self._run, name="FakeOpenAIServer", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"FakeOpenAIServer did not start within {timeout}s")
        if self._startup_error is not None:
            raise RuntimeError("FakeOpenAIServer failed to start") from self._startup_error
        logger.info("fake OpenAI server listening on %s", self.base_url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (releasing hung requests) and end the thread.

        Idempotent; a no-op before ``start()``.

        Raises:
            RuntimeError: if called from the server's own thread, or if the thread
                does not end within ``timeout`` seconds.
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        if threading.current_thread() is thread:
            raise RuntimeError("FakeOpenAIServer.stop() cannot be called from its own thread")
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed on its own
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"FakeOpenAIServer thread did not stop within {timeout}s")
        logger.info("fake OpenAI server on port %s stopped", self._port)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ counters

    def stats(self) -> ServerStats:
        """A consistent snapshot of the counters; safe from any thread."""
        return self._counters.snapshot()

    def reset(self) -> None:
        """Zero the counters (e.g. after a warm-up).

        The rate limiter's window and the script positions are server state, not
        counters, and are kept; ``max_in_flight`` restarts from the current
        ``in_flight``.
        """
        self._counters.reset()

    def wait_for_stats(
        self, predicate: Callable[[ServerStats], bool], timeout: float = 5.0
    ) -> ServerStats:
        """Block until ``predicate(stats)`` holds, woken by each change (no polling).

        Lets a test wait for "the request is now hanging" instead of sleeping.

        Raises:
            TimeoutError: if the predicate is still false after ``timeout`` seconds.
        """
        return self._counters.wait_for(predicate, timeout)

    # ------------------------------------------------------------------ event loop

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:
            if self._ready.is_set():
                logger.exception("fake OpenAI server crashed")
            self._startup_error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        stop = self._stop_event = asyncio.Event()
        listener = self._web.WebListener(
            self._routes, self._counters, self._ids, stop, self._config.max_body_bytes
        )
        try:
            self._port = await listener.start(HOST)
            self._ready.set()
            await stop.wait()
        finally:
            await listener.close()


def _import_web() -> ModuleType:
    """The aiohttp glue, imported on first use so the rest of the package never needs it."""
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "FakeOpenAIServer needs aiohttp, which the 'testing' extra installs: "
            "pip install 'langchain-batchkit[testing]'"
        ) from exc
    from langchain_batchkit.testing._fakeserver import _web

    return _web
