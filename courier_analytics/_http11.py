"""A lean HTTP/1.1 client for the worker's event loop.

Courier has no batch endpoint, so every message is one small POST and the cost of
building and parsing requests dominates a busy worker. This client keeps a set of
keep-alive connections to one origin and, per request, writes one prebuilt byte
string and parses one small answer in `data_received`: no per-request header
objects, URL parsing or pool bookkeeping. It measures several times cheaper per
request than `httpx.AsyncHTTPTransport` (see the Performance docs).

A request goes out on an idle connection, or on one opened for it
(`_open_connection`), and its answer comes back by callback. Answers are parsed
strictly and within fixed bounds by `_http11_parser.py`; an answer that breaks
either closes its connection.

Failures are raised as the matching `httpx` exceptions (`ConnectError`,
`ConnectTimeout`, `ReadTimeout`, `RemoteProtocolError`), so callers treat
this client and any httpx transport alike.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from courier_analytics._concurrency import IDLE_S
from courier_analytics._http11_parser import MAX_BODY, RawResponse, Reader
from courier_analytics._sockets import READ_SIZE, SocketTransport, connect_tcp, open_socket
from courier_analytics._threads import BlockingRunner

if TYPE_CHECKING:
    import httpx
else:
    from courier_analytics._lazy import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}
_DNS_TTL = 60.0  # seconds a host name's addresses are reused for new connections
_FAILED_S = 60.0  # seconds an address that failed to connect is tried after the others
_RESUME_PAUSE_S = 300.0  # seconds without sessions after a server refused two in a row
_HEADS_KEPT = 64  # request heads kept for reuse, by path (tracks all share one)

__all__ = [
    "MAX_BODY",
    "Http11Pool",
    "OnAnswer",
    "OnResult",
    "RawResponse",
    "default_tls_context",
    "until_done",
]


def default_tls_context() -> ssl.SSLContext:
    """The TLS context httpx makes by default, made without importing httpx.

    Verification on, trusting `SSL_CERT_FILE` or `SSL_CERT_DIR` if set, else
    certifi's bundle (as `httpx.create_ssl_context()`), so the native sender and an
    httpx transport trust the same certificates.
    """
    if os.environ.get("SSL_CERT_FILE"):
        context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    elif os.environ.get("SSL_CERT_DIR"):
        context = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    else:
        import certifi  # httpx's own dependency: installed with it

        context = ssl.create_default_context(cafile=certifi.where())
    # No TLS 1.2 renegotiation: Courier asks for none, and a connection's socket is
    # read and written from the loop (`_sockets`), where it would need both at once.
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


#: Called once per request with its connection and answer, or the error that ended it.
OnAnswer = Callable[["_Connection", "RawResponse | None", "httpx.TransportError | None"], None]
#: Called once with the answer to a request started with `Http11Pool.start`, or the error:
#: an `httpx.TransportError`, or (a bug) any other exception.
OnResult = Callable[["RawResponse | None", "BaseException | None"], None]


_Item = TypeVar("_Item")
_Made = TypeVar("_Made")
_Answer = TypeVar("_Answer")


async def until_done(
    start: Callable[[_Item, Callable[[_Answer | None, BaseException | None], None]], None],
    item: _Item,
) -> _Answer:
    """Call `start(item, on_done)`; the answer `on_done` is given, or raise its error."""
    waiter: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()

    def on_done(answer: _Answer | None, error: BaseException | None) -> None:
        if waiter.done():  # cancelled meanwhile
            return
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(answer)  # type: ignore[arg-type]  # given when error is not

    start(item, on_done)
    return await waiter


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; one request at a time.

    A buffered protocol: its transport (`_sockets.SocketTransport`, or the loop's
    own on uvloop) reads into this connection's small buffer, where a plain
    protocol has asyncio allocate 256 KiB for every read (then shrink it).

    A request is started with `start`, which writes it and returns at once; its
    callback runs from `data_received` (or `connection_lost`) once the answer is
    complete, with no future or task in between: on a busy worker, most answers
    are followed by the next request on the same connection from that callback.
    The deadline is one timer per connection, re-armed only when it fires while a
    later request is still running, not a timer per request.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.received_any = False
        self.idle_since = 0.0  # when its last answer was read (see Http11Pool._request_ended)
        self._on_answer: OnAnswer | None = None
        self._reader = Reader()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline = 0.0
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = memoryview(bytearray(READ_SIZE))

    # -- asyncio callbacks

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._buffer[:nbytes]))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        on_answer = self._on_answer
        if on_answer is None:
            # Bytes nobody asked for: the connection is out of step; never reuse it.
            self.close()
            return
        try:
            response = self._reader.feed(data)
        except httpx.RemoteProtocolError as exc:
            self._on_answer = None
            self.close()
            on_answer(self, None, exc)
            return
        if response is not None:
            self._on_answer = None
            on_answer(self, response, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        on_answer, self._on_answer = self._on_answer, None
        if on_answer is None:
            return
        try:
            response = self._reader.end()
        except httpx.RemoteProtocolError as error:
            on_answer(self, None, error)
        else:
            on_answer(self, response, None)

    # -- use

    def start(self, data: bytes, timeout: float, on_answer: OnAnswer) -> None:
        """Write `data` (a whole request); `on_answer` gets the whole answer, or the error.

        `on_answer` runs once, from the event loop, never from within `start`, and
        never if `start` raises.

        Raises:
            httpx.RemoteProtocolError: the connection is closed (nothing was written).
        """
        transport, loop = self.transport, self._loop
        if transport is None or loop is None or self.closed:
            raise httpx.RemoteProtocolError("the connection is closed")
        transport.write(data)  # first: should it raise, no answer is awaited
        self._on_answer = on_answer
        self.received_any = False
        self._deadline = loop.time() + timeout
        self._timeout = timeout
        timer = self._timer
        if timer is None or timer.when() > self._deadline:  # none, or armed for later
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(self._deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        on_answer, loop = self._on_answer, self._loop
        if on_answer is None or loop is None:
            return  # idle: the next request arms a new timer
        if loop.time() < self._deadline:  # a later request than the one it was armed for
            self._timer = loop.call_at(self._deadline, self._check_deadline)
            return
        self._on_answer = None
        self.close()
        on_answer(self, None, httpx.ReadTimeout(f"no answer within {self._timeout}s"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Close now (no graceful TLS shutdown: there is nothing left to say)."""
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()


class Http11Pool:
    """Keep-alive HTTP/1.1 connections to one origin, used from one event loop.

    Args:
        base_url: `http://` or `https://` URL; its path is a prefix of every path.
        headers: Sent with every request (`Host` and `Content-Length` are added).
        timeout: Seconds allowed to connect, and to get a whole answer.
        max_idle: Idle connections kept open for reuse.
        ssl_context: For `https://`; default: `default_tls_context()`.
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
            self._ssl = ssl_context or default_tls_context()
        host = f"[{self._host}]" if ":" in self._host else self._host
        if url.port and url.port != _DEFAULT_PORTS[url.scheme]:
            host = f"{host}:{url.port}"
        self._prefix = url.path.rstrip("/").encode("ascii")
        # An ASCII host is its own IDNA form; the codec (and unicodedata) only for others.
        lines = [(b"Host", host.encode("ascii" if host.isascii() else "idna")), *headers]
        self._fixed = b"".join(name + b": " + value + b"\r\n" for name, value in lines)
        self._timeout = timeout
        self._max_idle = max_idle
        self._heads: dict[tuple[str, bytes], bytes] = {}  # request heads by path, to reuse
        self._connecting: set[asyncio.Task[None]] = set()  # see _open_connection
        self._closing = False
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._resolved: list[str] = []
        self._failed: dict[str, float] = {}  # address -> until when it is tried last
        self._session: ssl.SSLSession | None = None  # offered to new TLS connections
        self._refused = 0  # offers of the session held that the server refused, in a row
        self._resume_after = 0.0  # no session is read before this time.monotonic()
        self._resolved_at = 0.0
        self._resolver: BlockingRunner | None = None
        self._lookup: asyncio.Future[list[str]] | None = None  # the one under way
        try:
            self._resolved = [str(ipaddress.ip_address(self._host))]
        except ValueError:  # a host name: resolved on a thread started now, see _addresses
            self._resolver = BlockingRunner(1, "courier-analytics-dns")

    def build(self, path: str, body: bytes, extra_headers: bytes = b"") -> bytes:
        """The whole request: request line, headers and body, as one byte string."""
        head = self._heads.get((path, extra_headers))
        if head is None:
            line = b"POST %s%s HTTP/1.1\r\n" % (self._prefix, path.encode("ascii"))
            head = line + self._fixed + extra_headers + b"Content-Length: "
            if len(self._heads) < _HEADS_KEPT:  # per-user paths (/profiles/{id}) fill it
                self._heads[(path, extra_headers)] = head
        return b"%s%d\r\n\r\n%s" % (head, len(body), body)

    @property
    def idle(self) -> int:
        """Idle connections kept for reuse."""
        return len(self._idle)

    def start(self, data: bytes, on_answer: OnResult) -> None:
        """Send a request made by `build`: on an idle connection, else on a new one.

        `on_answer` gets the answer, or the error, once, from the event loop, never
        from within `start`. A request that fails on a reused connection before any
        byte of answer came (the server closed it while it was idle) goes once more
        on a new connection.
        """
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection.closed:
                connection.start(
                    data, self._timeout, partial(self._request_ended, data, on_answer, True)
                )
                return
            self._open.discard(connection)
        self._open_connection(data, on_answer)

    def _open_connection(self, data: bytes, on_answer: OnResult) -> None:
        """No connection is idle: open one, and send the request on it once open."""
        task = asyncio.ensure_future(self._connect_and_start(data, on_answer))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_and_start(self, data: bytes, on_answer: OnResult) -> None:
        """Open a connection and send the request on it; `on_answer` runs once, whatever
        happens (this task's exception would be retrieved by no one)."""
        connection = _Connection()
        error: BaseException | None
        try:
            error = await self._connected(connection)
            if error is None:
                self._open.add(connection)
                connection.start(
                    data, self._timeout, partial(self._request_ended, data, on_answer, False)
                )
                return
        except Exception as exc:  # a bug: its request fails (unretried), never silently
            error = exc
        self.discard(connection)
        on_answer(None, error)

    async def _connected(self, connection: _Connection) -> httpx.TransportError | None:
        """Connect `connection`: `None` once it can take its first request, else why not."""
        error: httpx.TransportError
        try:
            await asyncio.wait_for(self._connect(connection), self._timeout)
        except asyncio.TimeoutError:  # Python < 3.12: it may have connected as time ran out
            return httpx.ConnectTimeout(f"no connection within {self._timeout}s")
        except (OSError, RuntimeError) as exc:  # refused, unreachable, DNS, TLS verification
            error = httpx.ConnectError(f"{type(exc).__name__}: {exc}")
            error.__cause__ = exc
            return error
        except asyncio.CancelledError:  # the pool closed
            return httpx.ConnectError("the connection pool was closed")
        if self._closing:  # Python < 3.12: connected in the turn the pool closed
            return httpx.ConnectError("the connection pool was closed")
        transport = connection.transport
        if connection.closed or transport is None or transport.is_closing():
            # On uvloop, a server that closes at once can be heard before this turn.
            return httpx.RemoteProtocolError("the server closed the connection at once")
        return None

    def _request_ended(
        self,
        data: bytes,
        on_answer: OnResult,
        reused: bool,
        connection: _Connection,
        raw: RawResponse | None,
        error: httpx.TransportError | None,
    ) -> None:
        """A request's end: its connection kept for reuse or closed, then `on_answer`."""
        if raw is not None:
            transport = connection.transport
            if not reused and self._ssl is not None and isinstance(transport, SocketTransport):
                self._keep_session(transport)
            self.release(connection, raw.keep_alive)
            on_answer(raw, None)
            return
        self.discard(connection)
        if (
            reused
            and isinstance(error, httpx.RemoteProtocolError)
            and not connection.received_any
            and not self._closing
        ):  # the server closed the idle connection: once more on a new one
            self._open_connection(data, on_answer)
            return
        on_answer(None, error)

    def _keep_session(self, transport: SocketTransport) -> None:
        """After a new TLS connection's first answer, keep its session for the next ones.

        Its session is resumable by now (TLS 1.3 sends tickets after the handshake).
        Reading it copies it (with the server's certificates), so a session is taken
        only when none is held, when the server refused the one held (it was offered
        and not resumed), or when the one held is half way to its expiry; after two
        refusals in a row (a server that resumes nothing), none for `_RESUME_PAUSE_S`.
        A session never leaves its pool, which serves one origin: OpenSSL does not
        check the host name again when it resumes.
        """
        held = self._session
        if transport.offered is held and held is not None:
            if transport.resumed:
                self._refused = 0
            else:
                self._refused += 1
        if self._refused >= 2:  # the server resumes nothing: stop reading sessions a while
            self._session, self._refused = None, 0
            self._resume_after = time.monotonic() + _RESUME_PAUSE_S
            return
        if time.monotonic() < self._resume_after:
            return
        if (
            held is None
            or (transport.offered is held and not transport.resumed)
            or time.time() > held.time + held.timeout / 2
        ):
            self._session = transport.session

    def release(self, connection: _Connection, keep_alive: bool) -> None:
        """A connection's answer is read: keep it for reuse if it can be, else close it.

        Idle connections are reused last in, first out, so the one at the bottom is
        spare: closed once it has been idle for `IDLE_S`, and the connections held
        follow the rate.
        """
        if keep_alive and not connection.closed and len(self._idle) < self._max_idle:
            idle, connection.idle_since = self._idle, time.monotonic()
            idle.append(connection)
            if connection.idle_since - idle[0].idle_since > IDLE_S:
                self.discard(idle.pop(0))
        else:
            self.discard(connection)

    async def send(self, data: bytes) -> RawResponse:
        """`start`, awaited: the whole answer (raises `httpx.TransportError`)."""
        return await until_done(self.start, data)

    async def _connect(self, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout  # as the caller's `wait_for`
        addresses = await self._addresses()
        port, ssl_context = self._port, self._ssl
        # On asyncio's selector loops the connection reads and writes its socket itself
        # (see `_sockets`); other loops have transports of their own (uvloop's in C,
        # and Windows' proactor reads no socket from callbacks).
        if isinstance(loop, asyncio.SelectorEventLoop):
            sock = await self._dial(addresses, deadline, partial(connect_tcp, loop, port=port))
            tls = None if ssl_context is None else (ssl_context, self._host, self._session)
            await open_socket(loop, connection, sock, tls)
            return
        server_hostname = self._host if ssl_context else None
        if len(addresses) == 1:
            await loop.create_connection(
                lambda: connection,
                addresses[0],
                port,
                ssl=ssl_context,
                server_hostname=server_hostname,
            )
            return

        async def connect(address: str) -> asyncio.Transport:
            transport, _ = await loop.create_connection(lambda: connection, address, port)
            return transport

        # The TCP connect alone is given a share of the time: TLS starts once it is made.
        transport = await self._dial(addresses, deadline, connect)
        if ssl_context is not None:
            connection.transport = await loop.start_tls(
                transport, connection, ssl_context, server_hostname=server_hostname
            )

    async def _dial(
        self, addresses: list[str], deadline: float, connect: Callable[[str], Awaitable[_Made]]
    ) -> _Made:
        """`connect` to the first of `addresses` that takes a TCP connection.

        With several, each attempt has an equal share of the time left to `deadline`
        (the last one all of it), so an address that drops the connect costs a share,
        not the whole timeout, as Go's dialer does; one that failed is tried last for
        `_FAILED_S`, so the connections after it do not pay for it again. One address
        costs nothing more: the caller's timeout bounds it.
        """
        if len(addresses) == 1:
            return await connect(addresses[0])
        failed = self._failed
        if failed:
            now = time.monotonic()
            addresses = sorted(addresses, key=lambda address: failed.get(address, 0.0) > now)
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        for left, address in zip(range(len(addresses), 0, -1), addresses, strict=True):
            try:
                if left == 1:
                    made = await connect(address)
                else:
                    share = (deadline - loop.time()) / left
                    made = await asyncio.wait_for(connect(address), share)
            except (OSError, asyncio.TimeoutError) as exc:  # the one subclasses the other on 3.11+
                now = time.monotonic()
                for stale in [stale for stale, until in failed.items() if until <= now]:
                    del failed[stale]
                failed[address] = now + _FAILED_S
                error = exc if isinstance(exc, OSError) else TimeoutError()  # Python 3.10
                continue
            failed.pop(address, None)
            return made
        raise error or OSError(f"no address for {self._host}")

    async def _addresses(self) -> list[str]:
        """The host's IP addresses, resolved on our own thread and kept for a minute.

        asyncio would resolve on the loop's default executor, which refuses work
        once interpreter shutdown begins, so delivery at exit could not connect. The
        thread is started with the pool, since 3.12+ refuses new threads at exit.
        Connections opened together share one lookup: on the one thread, a lookup
        each would run in turn, and the last ones could time out waiting.
        """
        if self._resolver is None:  # an IP address
            return self._resolved
        if self._resolved and time.monotonic() - self._resolved_at < _DNS_TTL:
            return self._resolved
        if self._lookup is None or self._lookup.done():
            self._lookup = asyncio.ensure_future(self._resolve(self._resolver))
        return await asyncio.shield(self._lookup)  # one connect timing out ends no other's

    async def _resolve(self, resolver: BlockingRunner) -> list[str]:
        now = time.monotonic()
        host, port = self._host, self._port
        infos = await resolver.run(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        self._resolved, self._resolved_at = addresses, now
        return addresses

    def close_idle(self) -> None:
        """Close the connections idle for over `IDLE_S`.

        `release` closes one as answers come; once none come (the traffic stopped),
        the worker calls this as it wakes, so a burst's connections do not stay
        open until the server closes them.
        """
        idle, now = self._idle, time.monotonic()
        while idle and now - idle[0].idle_since > IDLE_S:
            self.discard(idle.pop(0))

    def discard(self, connection: _Connection) -> None:
        """Close a connection whose request failed."""
        connection.close()
        self._open.discard(connection)

    async def aclose(self) -> None:
        """Close every connection, idle or busy; a request started and not answered fails."""
        self._closing = True
        connecting = list(self._connecting)
        for task in connecting:
            task.cancel()
        # Each reports its request as failed and closes its socket before the loop ends.
        await asyncio.gather(*connecting, return_exceptions=True)
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        if self._lookup is not None:
            self._lookup.cancel()
        if self._resolver is not None:
            self._resolver.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks
