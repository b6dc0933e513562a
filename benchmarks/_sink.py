"""A lean HTTP/1.1 server for the benchmark's sinks: an asyncio protocol on uvloop.

The sinks of `benchmarks.servers` stand for APIs whose CPU is not on the user's
machine, yet here they share its two cores with the client; so the server around
them does as little as HTTP/1.1 allows: no ASGI, no task per request. Each
connection reads whole requests (a request split across reads, or several in one
read), asks the sink for the answer, and writes it after the added latency, timed
by `loop.call_later`; answers on one connection go out in the order their
requests came. What it accepts:

- a request line `METHOD TARGET HTTP/1.1` (or `HTTP/1.0`, which closes unless asked
  to keep alive), header fields, and a body of exactly `Content-Length` bytes;
- `Connection: close`, answered and then closed; `Expect: 100-continue`, answered
  with `100 Continue` while the body is awaited.

What it refuses, answering and then closing (the request's end is unknown):
`Transfer-Encoding` (411 without a length, 400 with one: neither client sends a
chunked body), another expectation (417), a head over `MAX_HEAD` (431), a body
over `MAX_BODY` (413), a malformed request line or field (400), another HTTP
version (505). A connection idle for `KEEP_ALIVE_S` is closed, as uvicorn did.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import ssl
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol

import orjson

#: Longest a hanging request is held (the stalled-server scenario), seconds.
HANG_LIMIT_S = 300.0
#: Seconds a connection may sit idle before the server closes it (uvicorn's default,
#: which served the sinks before: the clients' reconnections stay as they were).
KEEP_ALIVE_S = 5
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
#: Bytes read at once, into the server's buffer: over TLS, a plain protocol has uvloop
#: allocate 256 KiB per read, which cost more than the rest of a request.
READ_SIZE = 64 * 1024
#: The listening socket's backlog (uvicorn's default).
BACKLOG = 2048

#: Status, answer body and the events it counts (counted only when answered).
Answer = tuple[int, bytes, int]
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PHRASES = {int(status): status.phrase.encode() for status in HTTPStatus}
_FIELDS = frozenset({b"content-length", b"transfer-encoding", b"authorization", b"connection"})


class Sink(Protocol):
    """What a sink answers; the server reads `latency_s` and `hang` per request."""

    latency_s: float
    hang: bool

    def answer(
        self, method: bytes, path: bytes, authorization: bytes | None, body: bytes
    ) -> Answer:
        """Status, body and events for a request (`ValueError`: its body is not valid)."""
        ...


class Counter:
    """Events received, and when the count reached its target (thread-safe enough:
    only the server's event loop writes; the control thread reads)."""

    def __init__(self) -> None:
        self.open_now: Callable[[], int] = lambda: 0  # connections open (the server's)
        self.reset(0)

    def reset(self, target: int) -> None:
        self.peak = 0
        self.count = 0
        self.requests = 0
        self.clients: set[Any] = set()
        self.target = target
        self.reached_at: float | None = None
        self.reached = threading.Event()

    def add(self, events: int, client: Any) -> None:
        self.requests += 1
        self.clients.add(client)
        self.peak = max(self.peak, self.open_now())
        self.count += events
        if self.reached_at is None and self.count >= self.target > 0:
            self.reached_at = time.monotonic()
            self.reached.set()


def head(status: int, length: int, close: bool = False) -> bytes:
    """An answer's head, field names in lower case as uvicorn wrote them (the floor
    client of `benchmarks.client` looks for `content-length:` as is)."""
    phrase = _PHRASES[status]
    connection = b"connection: close\r\n" if close else b""
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n" % (
        status,
        phrase,
        connection,
        length,
    )


class Refused(Exception):
    """A request the server will not read: answered with `status`, then the connection closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = rb"[^\r\n]*"
# The usual head, read by one match: an HTTP/1.1 request line, then fields each a
# token, a colon and a value, with at most one Content-Length (digits), Authorization
# and Connection, and no Transfer-Encoding or Expect. `(?(N)(?!))` fails once group N
# is set: a repeat. Any other head is read line by line (Request._read_any).
_USUAL_HEAD = re.compile(
    rb"([A-Z]+) ([^ \r\n]+) HTTP/1\.1"
    rb"(?:\r\n(?:"
    rb"(?i:content-length):(?(3)(?!))[ \t]*([0-9]{1,18})[ \t]*"
    rb"|(?i:authorization):(?(4)(?!))[ \t]*(" + _VALUE + rb")"
    rb"|(?i:connection):(?(5)(?!))(" + _VALUE + rb")"
    rb"|(?!(?i:content-length|authorization|connection|transfer-encoding|expect):)"
    + _TOKEN
    + rb":"
    + _VALUE
    + rb"))*"
)


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip(b" \t") for token in value.lower().split(b",")]


class Request:
    """What the server reads of a request's head."""

    __slots__ = ("authorization", "close", "expect", "length", "method", "path")
    authorization: bytes | None
    close: bool
    expect: bool
    length: int
    method: bytes
    path: bytes

    def __init__(self, data: bytes, start: int, end: int) -> None:
        """Parse `data[start:end]`, a head without its final blank line (`Refused`)."""
        usual = _USUAL_HEAD.fullmatch(data, start, end)
        if usual is None:
            self._read_any(data[start:end].split(b"\r\n"))
            return
        method, target, length, authorization, connection = usual.groups()
        self.method = method
        self.path = target.partition(b"?")[0]
        self.length = int(length) if length else 0
        if self.length > MAX_BODY:
            raise Refused(413, "the body is too large")
        self.authorization = authorization.rstrip(b" \t") if authorization else authorization
        self.close = connection is not None and b"close" in _tokens(connection)
        self.expect = False

    def _read_any(self, lines: list[bytes]) -> None:
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise Refused(400, "a malformed request line")
        method, target, version = parts
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            if version.startswith(b"HTTP/"):
                raise Refused(505, "only HTTP/1.1 and HTTP/1.0")
            raise Refused(400, "a malformed request line")
        length: int | None = None
        chunked = self.expect = False
        self.authorization = None
        tokens: list[bytes] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip(b" \t") or not name.isascii():
                raise Refused(400, "a malformed header field")
            name = name.lower()
            if name == b"expect":
                if value.strip(b" \t").lower() != b"100-continue":
                    raise Refused(417, "the only expectation met is 100-continue")
                self.expect = True
            elif name in _FIELDS:
                value = value.strip(b" \t")
                if name == b"content-length":
                    if not value.isdigit() or length not in (None, int(value)):
                        raise Refused(400, "an invalid Content-Length")
                    length = int(value)
                elif name == b"authorization":
                    self.authorization = value
                elif name == b"connection":
                    tokens += _tokens(value)
                else:
                    chunked = True
        if chunked:  # the body's end is unknown: neither client sends one
            raise Refused(411 if length is None else 400, "a body needs a Content-Length")
        if length is not None and length > MAX_BODY:
            raise Refused(413, "the body is too large")
        self.method = method
        self.path = target.partition(b"?")[0]
        self.length = length or 0
        self.close = b"close" in tokens or (version == b"HTTP/1.0" and b"keep-alive" not in tokens)


class Connection(asyncio.BufferedProtocol):
    """One client connection: whole requests in, answers out in order."""

    def __init__(self, server: SinkServer) -> None:
        self.server = server
        self.transport: Any = None
        self.client: Any = None
        self.buffer = bytearray()  # the start of a request not yet whole
        self.wanted = 0  # bytes the buffered request needs (0: its head's end is unknown)
        # Answers in request order: [ready, data, events, close]; a hanging request's
        # entry is never ready.
        self.pending: collections.deque[list[Any]] = collections.deque()
        self.closing = False  # a request closes the connection: read no more
        self.lost = False
        self.active = True  # since the server's last look (see SinkServer.sweep)
        self.idle = 0  # looks in a row that found it idle
        self.hang_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.client = transport.get_extra_info("peername")
        self.server.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)
        self.lost = self.closing = True
        self.pending.clear()
        if self.hang_timer is not None:
            self.hang_timer.cancel()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.received(bytes(self.server.read_buffer[:nbytes]))

    def received(self, data: bytes) -> None:
        self.active = True
        if self.closing:
            return
        if self.buffer:
            self.buffer += data
            if len(self.buffer) < self.wanted:
                return
            data = bytes(self.buffer)
            self.buffer.clear()
        try:
            self.read(data)
        except Refused as refused:
            self.buffer.clear()
            self.closing = True
            message = orjson.dumps({"message": refused.reason})
            self.queue(True, head(refused.status, len(message), close=True) + message, 0, True)

    def read(self, data: bytes) -> None:
        """Serve the whole requests in `data`; keep the start of an unfinished one."""
        start, size = 0, len(data)
        while start < size and not self.closing:
            while data.startswith(b"\r\n", start):  # blank lines before a request (RFC 9112 2.2)
                start += 2
            end = data.find(b"\r\n\r\n", start, start + MAX_HEAD + 4)
            if end < 0:
                if size - start > MAX_HEAD:
                    raise Refused(431, "the head is too large")
                self.keep(data, start, 0)
                return
            request = Request(data, start, end)
            stop = end + 4 + request.length
            if stop > size:
                self.keep(data, start, stop - start)
                if request.expect:  # the body comes once the client has this
                    self.queue(True, _CONTINUE, 0, False)
                return
            self.serve(request, data[end + 4 : stop])
            start = stop

    def keep(self, data: bytes, start: int, wanted: int) -> None:
        self.buffer += memoryview(data)[start:]
        self.wanted = wanted

    def serve(self, request: Request, body: bytes) -> None:
        sink = self.server.sink
        if request.close:
            self.closing = True
        if sink.hang:  # held until the client goes away, or the limit
            self.pending.append([False, b"", 0, False])
            if self.hang_timer is None:
                self.hang_timer = self.server.loop.call_later(HANG_LIMIT_S, self.transport.close)
            return
        try:
            status, answer, events = sink.answer(
                request.method, request.path, request.authorization, body
            )
        except ValueError:  # orjson's JSONDecodeError is one
            status, answer, events = 400, b'{"message":"the body is not a JSON object"}', 0
        data = head(status, len(answer), request.close) + answer
        latency = sink.latency_s
        if latency:
            entry = [False, data, events, request.close]
            self.pending.append(entry)
            self.server.loop.call_later(latency, self.ready, entry)
        else:
            self.queue(True, data, events, request.close)

    def queue(self, ready: bool, data: bytes, events: int, close: bool) -> None:
        """Add an answer behind those pending, and write what is ready."""
        self.pending.append([ready, data, events, close])
        self.flush()

    def ready(self, entry: list[Any]) -> None:
        """The added latency is over: the answer may go once those before it have."""
        if not self.lost:
            entry[0] = True
            self.flush()

    def flush(self) -> None:
        """Write the answers that are ready, in request order; count their events."""
        pending, counter = self.pending, self.server.counter
        while pending and pending[0][0]:
            _, data, events, close = pending.popleft()
            self.transport.write(data)
            if events:
                counter.add(events, self.client)
            if close:
                pending.clear()
                self.transport.close()
                return


class SinkServer:
    """A sink served on a listening socket, from an event loop in its own thread."""

    def __init__(self, sink: Sink, counter: Counter) -> None:
        self.sink = sink
        self.counter = counter
        self.open: set[Connection] = set()
        self.listener: asyncio.AbstractServer | None = None
        # One buffer for every connection's reads: each is copied out at once, on the
        # one thread of the loop.
        self.read_buffer = memoryview(bytearray(READ_SIZE))
        self.loop: asyncio.AbstractEventLoop = _new_loop()
        counter.open_now = self.open.__len__

    def start(self, sock: Any, ssl_context: ssl.SSLContext | None, timeout: float = 20) -> None:
        """Serve `sock` (listening) from a daemon thread; return once it accepts."""
        started = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.listener = self.loop.run_until_complete(
                    self.loop.create_server(
                        lambda: Connection(self), sock=sock, ssl=ssl_context, backlog=BACKLOG
                    )
                )
            except BaseException as exc:  # handed to the starting thread
                failed.append(exc)
                started.set()
                return
            self.loop.call_later(1.0, self.sweep)
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="sink", daemon=True)
        self.thread.start()
        if not started.wait(timeout):
            raise RuntimeError(f"the server did not start in {timeout} s")
        if failed:
            raise failed[0]

    def close(self, timeout: float = 10) -> None:
        """Stop serving: close the connections, stop the loop and its thread (the
        benchmark's process exits instead; tests close)."""

        async def stop() -> None:
            if self.listener is not None:
                self.listener.close()
            for connection in list(self.open):
                connection.transport.abort()
            if self.listener is not None:
                await self.listener.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.close()

    def sweep(self) -> None:
        """Close the connections idle for `KEEP_ALIVE_S` (one look a second: no timer
        per request)."""
        for connection in list(self.open):
            if connection.active or connection.pending:
                connection.active, connection.idle = False, 0
            else:
                connection.idle += 1
                if connection.idle >= KEEP_ALIVE_S:
                    connection.transport.close()
        self.loop.call_later(1.0, self.sweep)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The server's TLS context, made as uvicorn made it (so the TLS figures compare
    with runs before this server): TLS server defaults, ciphers `TLSv1`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_ciphers("TLSv1")
    return context


def _new_loop() -> asyncio.AbstractEventLoop:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()  # pragma: no cover - uvloop is a benchmark requirement
