"""Transport: sends one request's bytes to Courier over httpx and reads the answer.

The worker talks to Courier through :class:`HttpxSender`, which works at the level
of an httpx transport (no redirects, cookies or per-request client machinery to
pay for). Any httpx transport can be given, asynchronous (used directly) or
synchronous (run in a small thread pool), which is how proxies, custom TLS and
tests (``httpx.MockTransport``, respx) plug in.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
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
    transport: httpx.BaseTransport | None, request: httpx.Request
) -> tuple[httpx.Response, bytes]:
    if transport is None:  # pragma: no cover - the sender only calls this with one
        raise RuntimeError("no synchronous transport")
    response = transport.handle_request(request)
    try:
        return response, response.read()
    finally:
        response.close()


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
        self._executor: ThreadPoolExecutor | None = None
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
            self._executor = ThreadPoolExecutor(
                max_workers=max_connections, thread_name_prefix="courier-analytics-http"
            )
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
        else:
            loop = asyncio.get_running_loop()
            response, body = await loop.run_in_executor(
                self._executor, _send_sync, self._sync, built
            )
        return Response(response.status_code, response.headers.get("retry-after"), body)

    async def aclose(self) -> None:
        """Close the connection pool (only when this sender made it)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_transport and self._async is not None:
            await self._async.aclose()
