"""A lean HTTP/1.1 client for the worker's event loop.

Courier has no batch endpoint, so every message is one small POST and the cost of
building and parsing requests dominates a busy worker. This client keeps a set of
keep-alive connections to one origin and, per request, writes one prebuilt byte
string and parses one small answer in `data_received`: no per-request header
objects, URL parsing or pool bookkeeping. It measures several times cheaper per
request than `httpx.AsyncHTTPTransport` (see the Performance docs).

Failures are raised as the matching `httpx` exceptions (`ConnectError`,
`ConnectTimeout`, `ReadTimeout`, `RemoteProtocolError`), so callers treat
this client and any httpx transport alike.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx

from courier_analytics._threads import BlockingRunner

__all__ = ["Http11Pool", "RawResponse"]

_MAX_HEAD = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DNS_TTL = 60.0  # seconds a host name's addresses are reused for new connections


class RawResponse(NamedTuple):
    """Status, `Retry-After` header, body, and whether the connection can be reused."""

    status: int
    retry_after: str | None
    body: bytes
    keep_alive: bool


class _Head(NamedTuple):
    status: int
    retry_after: str | None
    keep_alive: bool
    length: int | None  # None: chunked or until close
    chunked: bool


def _parse_head(raw: bytes) -> _Head:
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:60]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise httpx.RemoteProtocolError(f"malformed status {parts[1][:10]!r}") from None
    keep_alive = parts[0] == b"HTTP/1.1"
    retry_after = None
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise httpx.RemoteProtocolError("malformed Content-Length") from None
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.lower()
            if b"close" in token:
                keep_alive = False
            elif b"keep-alive" in token:
                keep_alive = True
        elif name == b"retry-after":
            retry_after = value.decode("latin-1")
    if status in (204, 304) or 100 <= status < 200:
        length, chunked = 0, False
    elif chunked:
        length = None
    elif length is None:  # delimited by the server closing the connection
        keep_alive = False
    return _Head(status, retry_after, keep_alive, length, chunked)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.received_any = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[RawResponse] | None = None
        self._head: _Head | None = None
        self._chunks: list[bytes] = []

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: the connection is out of step; never reuse it.
            self.close()
            return
        try:
            response = self._parse()
        except httpx.RemoteProtocolError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if response is not None:
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        head = self._head
        if head is not None and head.length is None and not head.chunked:
            body = bytes(self._buffer)
            waiter.set_result(RawResponse(head.status, head.retry_after, body, False))
            return
        waiter.set_exception(
            httpx.RemoteProtocolError("the server closed the connection without a full answer")
        )

    # -- use

    async def request(self, data: bytes, timeout: float) -> RawResponse:
        """Write `data` (a whole request) and wait for the whole answer."""
        transport = self.transport
        if transport is None or self.closed:
            raise httpx.RemoteProtocolError("the connection is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[RawResponse] = loop.create_future()
        self._waiter = waiter
        self._head = None
        self._chunks = []
        self.received_any = False
        transport.write(data)
        timer = loop.call_later(timeout, self._time_out, waiter, timeout)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _time_out(self, waiter: asyncio.Future[RawResponse], timeout: float) -> None:
        if not waiter.done():
            waiter.set_exception(httpx.ReadTimeout(f"no answer within {timeout}s"))
            self.close()

    def close(self) -> None:
        """Close now (no graceful TLS shutdown: there is nothing left to say)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- parsing

    def _parse(self) -> RawResponse | None:
        buffer = self._buffer
        while self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("response head too large")
                return None
            head = _parse_head(bytes(buffer[:end]))
            del buffer[: end + 4]
            if not 100 <= head.status < 200:  # skip interim answers
                self._head = head
        head = self._head
        if head.chunked:
            return self._parse_chunks(head)
        if head.length is None:
            return None  # until the server closes
        if len(buffer) < head.length:
            return None
        body = bytes(buffer[: head.length])
        del buffer[: head.length]
        return RawResponse(head.status, head.retry_after, body, self._reusable(head))

    def _reusable(self, head: _Head) -> bool:
        """Keep-alive, and nothing beyond the answer: stray bytes would be misread later."""
        return head.keep_alive and not self._buffer

    def _parse_chunks(self, head: _Head) -> RawResponse | None:
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                return None
            try:
                size = int(bytes(buffer[:line_end]).split(b";", 1)[0], 16)
            except ValueError:
                raise httpx.RemoteProtocolError("malformed chunk size") from None
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", line_end)  # after any trailers
                if trailer_end < 0:
                    return None
                del buffer[: trailer_end + 4]
                body = b"".join(self._chunks)
                return RawResponse(head.status, head.retry_after, body, self._reusable(head))
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return None
            self._chunks.append(bytes(buffer[start : start + size]))
            del buffer[: start + size + 2]


class Http11Pool:
    """Keep-alive HTTP/1.1 connections to one origin, used from one event loop.

    Args:
        base_url: `http://` or `https://` URL; its path is a prefix of every path.
        headers: Sent with every request (`Host` and `Content-Length` are added).
        timeout: Seconds allowed to connect, and to get a whole answer.
        max_idle: Idle connections kept open for reuse.
        ssl_context: For `https://`; default: httpx's (certifi, verification on).
    """

    def __init__(
        self,
        base_url: str,
        headers: Sequence[tuple[bytes, bytes]],
        *,
        timeout: float,
        max_idle: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in _DEFAULT_PORTS or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or _DEFAULT_PORTS[url.scheme]
        self._ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self._ssl = ssl_context or httpx.create_ssl_context()
        host = f"[{self._host}]" if ":" in self._host else self._host
        if url.port and url.port != _DEFAULT_PORTS[url.scheme]:
            host = f"{host}:{url.port}"
        self._prefix = url.path.rstrip("/").encode("ascii")
        lines = [(b"Host", host.encode("idna")), *headers]
        self._fixed = b"".join(name + b": " + value + b"\r\n" for name, value in lines)
        self._timeout = timeout
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._resolved: list[str] = []
        self._resolved_at = 0.0
        self._resolver: BlockingRunner | None = None
        try:
            self._resolved = [str(ipaddress.ip_address(self._host))]
        except ValueError:  # a host name: resolved on a thread started now, see _addresses
            self._resolver = BlockingRunner(1, "courier-analytics-dns")

    def build(self, path: str, body: bytes, extra_headers: bytes = b"") -> bytes:
        """The whole request: request line, headers and body, as one byte string."""
        return b"".join((
            b"POST ", self._prefix, path.encode("ascii"), b" HTTP/1.1\r\n", self._fixed,
            extra_headers, b"Content-Length: ", b"%d" % len(body), b"\r\n\r\n", body,
        ))  # fmt: skip

    async def send(self, data: bytes) -> RawResponse:
        """Send a request made by `build` and return the answer.

        A request that fails on a reused connection before any byte of answer came
        (the server closed it while idle) is tried once more on a new connection.
        """
        for fresh_only in (False, True):
            connection, reused = await self._acquire(fresh_only)
            try:
                response = await connection.request(data, self._timeout)
            except httpx.RemoteProtocolError:
                self._discard(connection)
                if reused and not connection.received_any and not fresh_only:
                    continue
                raise
            except BaseException:
                self._discard(connection)
                raise
            if response.keep_alive and not connection.closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
            else:
                self._discard(connection)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acquire(self, fresh_only: bool) -> tuple[_Connection, bool]:
        while self._idle and not fresh_only:
            connection = self._idle.pop()
            if not connection.closed:
                return connection, True
            self._open.discard(connection)
        connection = _Connection()
        try:
            await asyncio.wait_for(self._connect(connection), self._timeout)
        except asyncio.TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection within {self._timeout}s") from exc
        except (OSError, RuntimeError) as exc:  # refused, unreachable, DNS, TLS verification
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        self._open.add(connection)
        return connection, False

    async def _connect(self, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        for address in await self._addresses():
            try:
                await loop.create_connection(
                    lambda: connection,
                    address,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
            except OSError as exc:
                error = exc
                continue
            return
        raise error or OSError(f"no address for {self._host}")

    async def _addresses(self) -> list[str]:
        """The host's IP addresses, resolved on our own thread and kept for a minute.

        asyncio would resolve on the loop's default executor, which refuses work
        once interpreter shutdown begins, so delivery at exit could not connect. The
        thread is started with the pool, since 3.12+ refuses new threads at exit.
        """
        if self._resolver is None:  # an IP address
            return self._resolved
        now = time.monotonic()
        if self._resolved and now - self._resolved_at < _DNS_TTL:
            return self._resolved
        host, port = self._host, self._port
        infos = await self._resolver.run(
            lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        )
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        self._resolved, self._resolved_at = addresses, now
        return addresses

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def aclose(self) -> None:
        """Close every connection, idle or busy."""
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        if self._resolver is not None:
            self._resolver.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks
