"""FakeOpenAIServer: the background thread, its event loop, connections and dispatch.

What the endpoints answer lives elsewhere: :mod:`._online` (chat completions,
models) and :mod:`._batch_api` (files, batches). This module only serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType

from langchain_batchkit.testing._fakeserver._batch_api import BatchApiEndpoints
from langchain_batchkit.testing._fakeserver._config import FakeServerConfig
from langchain_batchkit.testing._fakeserver._http import (
    ApiError,
    HttpError,
    Outcome,
    Request,
    Route,
    Silence,
    encode_response,
    error_response,
    read_request,
    until_disconnected,
)
from langchain_batchkit.testing._fakeserver._online import OnlineEndpoints
from langchain_batchkit.testing._fakeserver._stats import Counters, ServerStats

__all__ = ["HOST", "FakeOpenAIServer"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP/1.1 server on ``127.0.0.1``, in a background thread.

    Endpoints: ``POST /v1/chat/completions`` (JSON, or SSE with ``"stream": true``),
    ``GET /v1/models`` and ``GET /v1/models/{model}``, and the Batch API:
    ``/v1/files`` (upload, list, retrieve, delete, ``/content``) and ``/v1/batches``
    (create, list, retrieve, ``/cancel``), whose timeline runs on ``config.clock``.
    Routing is a small table; unknown paths get an OpenAI-style 404, wrong methods 405.

    Servers are single-use: ``start()`` once, ``stop()`` as often as you like.
    ``stop()`` cancels every connection (so hung requests end at once and their
    clients see a closed connection), and joins the thread. The Authorization
    header is never logged or echoed.

    Args:
        config: the server's behaviour; the default answers every request at once.

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
        "_connection_tasks",
        "_counters",
        "_ids",
        "_loop",
        "_port",
        "_ready",
        "_routes",
        "_startup_error",
        "_stop_event",
        "_thread",
    )

    def __init__(self, config: FakeServerConfig | None = None) -> None:
        self._config = config if config is not None else FakeServerConfig()
        self._counters = Counters()
        self._ids = itertools.count(1)
        online = OnlineEndpoints(self._config, self._counters, self._ids)
        batch_api = BatchApiEndpoints(self._config, self._counters)
        self._routes: tuple[Route, ...] = online.routes() + batch_api.routes()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._port: int | None = None
        self._connection_tasks: set[asyncio.Task[object]] = set()

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
        server = await asyncio.start_server(self._on_connection, host=HOST, port=0)
        self._port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await stop.wait()
        finally:
            server.close()
            while self._connection_tasks:
                tasks = list(self._connection_tasks)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connection_tasks.add(task)
        self._counters.connection_opened()
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            logger.debug("client connection ended: %r", exc)
        except asyncio.CancelledError:
            # Only stop() cancels these tasks; end them normally, because Python 3.11's
            # StreamReaderProtocol logs a cancelled connection callback as an error.
            if self._stop_event is None or not self._stop_event.is_set():
                raise
            logger.debug("connection closed by stop()")
        finally:
            self._connection_tasks.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; returns whether the connection stays open."""
        try:
            request = await read_request(reader, self._config.max_body_bytes)
        except HttpError as exc:
            self._counters.record_status(exc.status)
            response = error_response(exc.status, exc.message, "invalid_request_error")
            writer.write(encode_response(response, keep_alive=False, request_id="req_invalid"))
            await writer.drain()
            return False
        if request is None:
            return False
        request_id = f"req_fake_{next(self._ids)}"
        self._counters.request_started()
        try:
            outcome = await self._dispatch(request)
            logger.debug(
                "%s %s -> %s",
                request.method,
                request.path,
                outcome.value if isinstance(outcome, Silence) else outcome.status,
            )
            if outcome is Silence.DROP:
                self._counters.record_drop()
                return False
            if outcome is Silence.HANG:
                self._counters.record_hang()
                await until_disconnected(reader)
                return False
            self._counters.record_status(outcome.status)
            payload = encode_response(outcome, keep_alive=request.keep_alive, request_id=request_id)
        finally:
            # Before the write: once the bytes leave, the client may read the stats or
            # send its next request, and must find every counter of this one settled.
            self._counters.request_finished()
        if writer.is_closing():
            return False
        writer.write(payload)
        await writer.drain()
        return request.keep_alive

    async def _dispatch(self, request: Request) -> Outcome:
        allowed: list[str] = []
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method == request.method:
                return await self._call_handler(route, request, match.groupdict())
            allowed.append(route.method)
        if allowed:
            return error_response(
                405,
                f"Method {request.method} not allowed for {request.path}.",
                "invalid_request_error",
                headers=(("allow", ", ".join(allowed)),),
            )
        return error_response(
            404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error"
        )

    @staticmethod
    async def _call_handler(route: Route, request: Request, params: Mapping[str, str]) -> Outcome:
        """Run a handler; a bug in it (or in ``response_text``) becomes a logged 500."""
        try:
            return await route.handler(request, params)
        except ApiError as exc:
            return exc.response()
        except Exception:
            logger.exception("fake server handler for %s %s raised", request.method, request.path)
            return error_response(
                500, "The fake server's handler raised an exception; see its log.", "server_error"
            )
