"""Transport: sends one request's bytes to Courier over httpx and reads the answer.

The worker talks to Courier through :class:`HttpxSender`, which works at the level
of an httpx transport (no redirects, cookies or per-request client machinery to
pay for). Any httpx transport can be given, asynchronous (used directly) or
synchronous (run in a small thread pool), which is how proxies, custom TLS and
tests (``httpx.MockTransport``, respx) plug in.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import NamedTuple

import httpx

from courier_analytics._routes import Request
from courier_analytics._version import __version__

__all__ = ["USER_AGENT", "AnyTransport", "HttpxSender", "Response"]

USER_AGENT = f"courier-analytics/{__version__} (python; httpx/{httpx.__version__})"

AnyTransport = httpx.AsyncBaseTransport | httpx.BaseTransport


class Response(NamedTuple):
    """What Courier answered: status, ``Retry-After`` header and body."""

    status: int
    retry_after: str | None
    body: bytes


def _send_sync(
    transport: httpx.BaseTransport, request: httpx.Request
) -> tuple[int, str | None, bytes]:
    response = transport.handle_request(request)
    try:
        return response.status_code, response.headers.get("retry-after"), response.read()
    finally:
        response.close()


_Job = tuple[
    Callable[[], tuple[int, str | None, bytes]],
    asyncio.AbstractEventLoop,
    "asyncio.Future[tuple[int, str | None, bytes]]",
]


class _SyncRunner:
    """Daemon threads that run blocking sends for the event loop.

    Not a ``ThreadPoolExecutor``: that one refuses new work once the interpreter
    starts shutting down (before ``atexit`` hooks run) and joins its threads at
    exit, which would stop delivery at exit and hang on a stuck request.
    """

    def __init__(self, size: int) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name="courier-analytics-http", daemon=True)
            for _ in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, job: Callable[[], tuple[int, str | None, bytes]]
    ) -> asyncio.Future[tuple[int, str | None, bytes]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, str | None, bytes]] = loop.create_future()
        self._jobs.put((job, loop, future))
        return future

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, loop, future = item
            try:
                result = job()
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


def _settle(
    future: asyncio.Future[tuple[int, str | None, bytes]],
    result: tuple[int, str | None, bytes] | None,
    error: BaseException | None,
) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    elif result is not None:
        future.set_result(result)


class HttpxSender:
    """Sends requests to one Courier base URL with a fixed set of headers.

    Args:
        base_url: Courier's URL, e.g. ``https://api.courier.com``.
        api_key: Sent as ``Authorization: Bearer <api_key>``; never logged.
        timeout: Seconds allowed for connecting, writing, reading and waiting for a
            pooled connection, each.
        max_connections: Size of the keep-alive connection pool.
        transport: An httpx transport to use instead of the default one. It is not
            closed by :meth:`aclose`: whoever made it owns it.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float,
        max_connections: int,
        transport: AnyTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = [
            (b"Authorization", b"Bearer " + api_key.encode("ascii")),
            (b"Content-Type", b"application/json"),
            (b"Accept", b"application/json"),
            (b"User-Agent", USER_AGENT.encode("ascii")),
        ]
        self._timeout = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        self._owns_transport = transport is None
        self._runner: _SyncRunner | None = None
        self._async: httpx.AsyncBaseTransport | None = None
        self._sync: httpx.BaseTransport | None = None
        if transport is None:
            limits = httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
            self._async = httpx.AsyncHTTPTransport(limits=limits, retries=0)
        elif isinstance(transport, httpx.AsyncBaseTransport):
            self._async = transport
        elif isinstance(transport, httpx.BaseTransport):
            self._sync = transport
            self._runner = _SyncRunner(max_connections)
        else:
            raise TypeError(
                "transport must be an httpx.AsyncBaseTransport or httpx.BaseTransport, "
                f"not {type(transport).__name__}"
            )

    def __repr__(self) -> str:
        return f"<HttpxSender {self._base_url}>"

    def _build(self, request: Request) -> httpx.Request:
        headers = self._headers
        if request.idempotency_key is not None:
            headers = [*headers, (b"Idempotency-Key", request.idempotency_key.encode())]
        return httpx.Request(
            "POST",
            self._base_url + request.path,
            headers=headers,
            content=request.body,
            extensions={"timeout": self._timeout},
        )

    async def send(self, request: Request) -> Response:
        """Send one request and read the whole answer.

        Raises:
            httpx.TransportError: the request could not be sent or its answer read.
        """
        built = self._build(request)
        if self._async is not None:
            response = await self._async.handle_async_request(built)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            return Response(response.status_code, response.headers.get("retry-after"), body)
        transport, runner = self._sync, self._runner
        if transport is None or runner is None:  # pragma: no cover - one of the two is set
            raise RuntimeError("the sender has no transport")
        return Response(*await runner.submit(lambda: _send_sync(transport, built)))

    async def aclose(self) -> None:
        """Close the connection pool (only when this sender made it)."""
        if self._runner is not None:
            self._runner.close()
        if self._owns_transport and self._async is not None:
            await self._async.aclose()
