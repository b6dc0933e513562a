"""A lean HTTP/1.1 client for the worker's event loop.

Courier has no batch endpoint, so every message is one small POST and the cost of
building and parsing requests dominates a busy worker. This client keeps a set of
keep-alive connections to one origin and, per request, writes one prebuilt byte
string and parses one small answer in `data_received`: no per-request header
objects, URL parsing or pool bookkeeping. It measures several times cheaper per
request than `httpx.AsyncHTTPTransport` (see the Performance docs).

Answers are parsed strictly (RFC 9112; where it differs from h11, it is stricter,
see tests/client/test_http11_parser.py) and within fixed bounds: a 64 KiB head, a
1 MiB body (a larger Content-Length is refused before reading), a 4 KiB chunk size
line, 64 KiB of trailers. An answer that breaks either closes its connection.

Failures are raised as the matching `httpx` exceptions (`ConnectError`,
`ConnectTimeout`, `ReadTimeout`, `RemoteProtocolError`), so callers treat
this client and any httpx transport alike.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, NamedTuple, NoReturn
from urllib.parse import urlsplit

from courier_analytics._concurrency import IDLE_S
from courier_analytics._threads import BlockingRunner

if TYPE_CHECKING:
    import httpx
else:
    from courier_analytics._lazy import httpx

__all__ = ["MAX_BODY", "Http11Pool", "OnAnswer", "OnResult", "RawResponse", "default_tls_context"]

_MAX_HEAD = 64 * 1024  # status line and headers; trailers likewise
MAX_BODY = 1024 * 1024  # bytes of an answer's body: Courier's are a few hundred
_MAX_CHUNK_LINE = 4 * 1024  # a chunk's size line, extensions included
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DNS_TTL = 60.0  # seconds a host name's addresses are reused for new connections
_HEADS_KEPT = 64  # request heads kept for reuse, by path (tracks all share one)

# The grammar of RFC 9112, as strict as h11's except where noted in
# tests/client/test_http11_parser.py: lines end in CRLF only, no obs-fold.
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: .*)?", re.DOTALL)
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*")
_FIELDS_READ = {b"content-length", b"transfer-encoding", b"connection", b"retry-after"}

# The usual head, checked whole by one match (see _parse_usual_head): the status
# line as _STATUS_LINE; every line ends in CRLF; no NUL, VT or FF; each field name a
# token; at most one each of Content-Length (plain digits), Connection, Retry-After
# and Transfer-Encoding (chunked). `(?(3)(?!))` fails once group 3 is set: a repeat.
_VALUE = rb"[\x01-\x09\x0e-\xff]*"  # any byte but NUL, LF, VT, FF and CR
_USUAL_HEAD = re.compile(
    rb"HTTP/1\.([01]) ([0-9]{3})(?: " + _VALUE + rb")?"
    rb"(?:\r\n(?:"
    rb"(?i:content-length):(?(3)(?!))[ \t]*([0-9]{1,20})[ \t]*"
    rb"|(?i:connection):(?(4)(?!))(" + _VALUE + rb")"
    rb"|(?i:retry-after):(?(5)(?!))(" + _VALUE + rb")"
    rb"|(?i:transfer-encoding):(?(6)(?!))[ \t]*((?i:chunked))[ \t]*"
    rb"|(?!(?i:content-length|connection|retry-after|transfer-encoding):)"
    rb"[" + re.escape(_TOKEN) + rb"]+:" + _VALUE + rb"))*"
)


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


_new = tuple.__new__  # makes a NamedTuple at half the cost of calling its class


def default_tls_context() -> ssl.SSLContext:
    """The TLS context httpx makes by default, made without importing httpx.

    Verification on, trusting `SSL_CERT_FILE` or `SSL_CERT_DIR` if set, else
    certifi's bundle (as `httpx.create_ssl_context()`), so the native sender and an
    httpx transport trust the same certificates.
    """
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi  # httpx's own dependency: installed with it

    return ssl.create_default_context(cafile=certifi.where())


def _refuse(reason: str) -> NoReturn:
    # A reason never quotes the answer: a server or proxy can echo the API key in
    # it, and a quote cut short would show part of the key where no blanking finds it.
    raise httpx.RemoteProtocolError(reason)


def _lines(raw: bytes) -> list[bytes]:
    """The lines of a head or trailer section, which end in CRLF only.

    Any other byte may appear but NUL, a lone CR or LF, VT and FF: h11's leniency,
    which RFC 9110, 5.5 allows (the values this client reads are checked further).
    """
    lines = raw.split(b"\r\n")
    joined = b"".join(lines)
    if len(joined.translate(None, b"\x00\r\n\x0b\x0c")) != len(joined):
        _refuse("a NUL, VT, FF, or a CR or LF outside CRLF, in the answer's head")
    return lines


def _fields(lines: list[bytes]) -> dict[bytes, list[bytes]]:
    """The values of the fields this client reads, by lower-case name; all are checked."""
    fields: dict[bytes, list[bytes]] = {}
    names = []
    for number, line in enumerate(lines, 1):
        name, colon, value = line.partition(b":")
        if not colon or not name:
            _refuse(f"malformed header line (header {number})")
        names.append(name)
        name = name.lower()
        if name in _FIELDS_READ:
            fields.setdefault(name, []).append(value.strip(b" \t"))
    if b"".join(names).translate(None, _TOKEN):  # a name that is not a token; also obs-fold
        number = next(n for n, name in enumerate(names, 1) if name.translate(None, _TOKEN))
        _refuse(f"malformed header name (header {number})")
    if b"content-length" in fields and b"transfer-encoding" in fields:
        _refuse("both Content-Length and Transfer-Encoding")  # RFC 9112, 6.1: smuggling
    return fields


def _content_length(values: list[bytes]) -> int:
    """One length, strictly digits: repeats ("5, 5") must agree (RFC 9110, 8.6)."""
    if len(values) == 1 and values[0].isdigit() and len(values[0]) <= 20:  # the usual
        return int(values[0])
    lengths = {length.strip(b" \t") for value in values for length in value.split(b",")}
    if len(lengths) != 1:
        _refuse("conflicting Content-Length values")
    (length,) = lengths
    if not (length.isdigit() and len(length) <= 20):  # bytes: ASCII digits only
        _refuse(f"malformed Content-Length ({len(length)} bytes)")
    return int(length)


def _parse_head(raw: bytes) -> _Head:
    """The head's status and framing; refused unless it is well formed and within bounds."""
    return _parse_usual_head(raw) or _parse_any_head(raw)


def _parse_usual_head(raw: bytes) -> _Head | None:
    """The head as `_parse_any_head` reads it, if it is of the usual kind, else None.

    Most answers match `_USUAL_HEAD`, which checks the whole head in one C call and
    picks out the fields read. Anything else (an interim or refused status, a
    repeated field, a length over the limit, any fault) is left to `_parse_any_head`,
    which gives the verdict and its reason: this one never refuses.
    """
    match = _USUAL_HEAD.fullmatch(raw)
    if match is None:
        return None
    version, code, length, connection, retry_after, chunked = match.groups()
    status = int(code)
    if status < 200 or (length is not None and chunked is not None):
        return None
    http_1_1 = version == b"1"
    keep_alive = http_1_1
    if connection is not None:
        tokens = {token.strip(b" \t").lower() for token in connection.split(b",")}
        keep_alive = b"close" not in tokens and (http_1_1 or b"keep-alive" in tokens)
    retry = None if retry_after is None else retry_after.strip(b" \t").decode("latin-1")
    if status == 204 or status == 304:
        keep_alive = keep_alive and (http_1_1 or chunked is None)
        return _new(_Head, (status, retry, keep_alive, 0, False))
    if chunked is not None:  # in HTTP/1.0 faulty framing: read it, then close
        return _new(_Head, (status, retry, keep_alive and http_1_1, None, True))
    if length is None:  # delimited by the server closing the connection
        return _new(_Head, (status, retry, False, None, False))
    size = int(length)
    if size > MAX_BODY:
        return None
    return _new(_Head, (status, retry, keep_alive, size, False))


def _parse_any_head(raw: bytes) -> _Head:
    lines = _lines(raw)
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        _refuse(f"malformed status line ({len(lines[0])} bytes)")
    status = int(status_line[2])
    if status < 100 or status == 101:  # 101: we never asked to switch protocols
        _refuse(f"unexpected status {status}")
    fields = _fields(lines[1:])
    tokens = {
        token.strip(b" \t").lower()
        for value in fields.get(b"connection", ())
        for token in value.split(b",")
    }  # of every Connection field: `close` in any of them wins (RFC 9112, 9.6)
    http_1_1 = status_line[1] == b"1"
    keep_alive = b"close" not in tokens and (http_1_1 or b"keep-alive" in tokens)
    retry_after = fields.get(b"retry-after")
    retry = retry_after[0].decode("latin-1") if retry_after else None
    length = None
    if b"content-length" in fields:
        length = _content_length(fields[b"content-length"])
    chunked = b"transfer-encoding" in fields
    if chunked and [v.lower() for v in fields[b"transfer-encoding"]] != [b"chunked"]:
        _refuse("a Transfer-Encoding other than chunked")
    if chunked and not http_1_1:  # faulty framing: read it, then close (RFC 9112, 6.1)
        keep_alive = False
    if status in (204, 304) or status < 200:
        length, chunked = 0, False
    elif length is None and not chunked:  # delimited by the server closing the connection
        keep_alive = False
    if length is not None and length > MAX_BODY:
        _refuse(f"an answer of {length} bytes, over the {MAX_BODY}-byte limit")
    return _Head(status, retry, keep_alive, length, chunked)


class _Reader:
    """Reads one answer from a connection's bytes as they come, within fixed bounds.

    `feed` returns the answer once it is complete; `end` is called when the
    server closes the connection. Either raises `httpx.RemoteProtocolError` for
    an answer that breaks HTTP/1.1 or a bound (head, body, chunk line, trailers):
    the connection is then closed, and what was read so far is dropped.
    """

    head: _Head | None = None  # the answer's, once read
    _searched = 0  # where the next search for a line end starts
    _interim = 0  # bytes of interim answers (100 Continue) skipped
    _chunk = 0  # size of the chunk (or Content-Length body) being read
    _body: bytearray  # of a chunked answer

    def __init__(self) -> None:
        self.buffer = bytearray()
        self._step: Callable[[], RawResponse | None] = self._read_head

    def feed(self, data: bytes) -> RawResponse | None:
        """Add bytes; the answer if it is now complete."""
        if self.head is None and not self.buffer:  # a head's first bytes: read in place
            end = data.find(b"\r\n\r\n")
            if 0 <= end <= _MAX_HEAD - self._interim:
                raw = data[:end]
                try:
                    head = _parse_head(raw)
                except httpx.RemoteProtocolError:
                    self.buffer += data  # as the steps below would leave it
                    raise
                status, retry_after, keep_alive, length, _ = head
                if status >= 200:
                    start = end + 4
                    if length == len(data) - start:  # the usual: a whole answer, no more
                        # Read without a step: the reader stays as new, so the connection
                        # reads its next answer with it (no reader is fed after an answer).
                        return _new(RawResponse, (status, retry_after, data[start:], keep_alive))
                    self._begin(head)
                    data = data[start:]
        self.buffer += data
        while True:
            step = self._step
            answer = step()
            if answer is not None or self._step == step:
                return answer

    def end(self) -> RawResponse:
        """The answer, when the server closed the connection after it."""
        if self._step == self._read_until_close:
            body = bytes(self.buffer)
            self.buffer.clear()
            return self._answer(body)
        _refuse("the server closed the connection without a full answer")

    def _answer(self, body: bytes) -> RawResponse:
        head = self.head
        assert head is not None  # set before any body is read
        keep_alive = head.keep_alive and not self.buffer  # stray bytes: never reuse
        return RawResponse(head.status, head.retry_after, body, keep_alive)

    def _find(self, separator: bytes, limit: int, what: str) -> int:
        """Where `separator` starts in the buffer, or -1; refuse beyond `limit`."""
        end = self.buffer.find(separator, self._searched)
        if end < 0:
            if len(self.buffer) > limit:
                _refuse(f"{what} over the {limit}-byte limit")
            self._searched = max(0, len(self.buffer) - len(separator) + 1)
        elif end > limit:
            _refuse(f"{what} over the {limit}-byte limit")
        else:
            self._searched = 0
        return end

    def _read_head(self) -> RawResponse | None:
        while True:
            end = self._find(b"\r\n\r\n", _MAX_HEAD - self._interim, "the answer's head")
            if end < 0:
                return None
            head = _parse_head(bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
            if head.status >= 200:
                break
            self._interim += end + 4  # an interim answer (100 Continue): the real one follows
        self._begin(head)
        return None

    def _begin(self, head: _Head) -> None:
        """Read the body `head` announces."""
        self.head = head
        if head.chunked:
            self._body = bytearray()
            self._step = self._read_chunk_line
        elif head.length is None:
            self._step = self._read_until_close
        else:
            self._chunk, self._step = head.length, self._read_length

    def _read_length(self) -> RawResponse | None:
        length = self._chunk  # the whole body, as one chunk
        if len(self.buffer) < length:
            return None
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return self._answer(body)

    def _read_until_close(self) -> RawResponse | None:
        if len(self.buffer) > MAX_BODY:
            _refuse(f"an answer over the {MAX_BODY}-byte limit")
        return None

    def _read_chunk_line(self) -> RawResponse | None:
        end = self._find(b"\r\n", _MAX_CHUNK_LINE, "a chunk size line")
        if end < 0:
            return None
        line = _CHUNK_LINE.fullmatch(self.buffer, 0, end)
        if line is None:  # also a negative size
            _refuse(f"malformed chunk size line ({end} bytes)")
        size = int(line[1], 16)
        del self.buffer[: end + 2]
        if size > MAX_BODY - len(self._body):
            _refuse(f"an answer over the {MAX_BODY}-byte limit")
        self._chunk = size
        self._step = self._read_chunk if size else self._read_trailers
        return None

    def _read_chunk(self) -> RawResponse | None:
        size = self._chunk
        if len(self.buffer) < size + 2:
            return None
        if self.buffer[size : size + 2] != b"\r\n":
            _refuse("a chunk not followed by CRLF")
        self._body += self.buffer[:size]
        del self.buffer[: size + 2]
        self._step = self._read_chunk_line
        return None

    def _read_trailers(self) -> RawResponse | None:
        if self.buffer[:2] == b"\r\n":
            end = 0
        else:
            end = self._find(b"\r\n\r\n", _MAX_HEAD, "the answer's trailers")
            if end < 0:
                return None
            _fields(_lines(bytes(self.buffer[:end])))  # checked, then ignored
            end += 2
        del self.buffer[: end + 2]
        return self._answer(bytes(self._body))


#: Called once per request with its connection and answer, or the error that ended it.
OnAnswer = Callable[["_Connection", "RawResponse | None", "httpx.TransportError | None"], None]
#: Called once with the answer to a request started with `Http11Pool.start`, or the error.
OnResult = Callable[["RawResponse | None", "httpx.TransportError | None"], None]


#: Bytes read from a connection at a time. Courier's answers are a few hundred bytes.
_READ_SIZE = 16 * 1024


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; one request at a time.

    A buffered protocol: asyncio reads into this connection's small buffer, where
    a plain protocol has it allocate 256 KiB for every read (then shrink it), which
    cost more than the rest of reading an answer together.

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
        self.idle_since = 0.0  # when its last answer was read (see Http11Pool.release)
        self._on_answer: OnAnswer | None = None
        self._reader = _Reader()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline = 0.0
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = memoryview(bytearray(_READ_SIZE))

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

        `on_answer` runs once, from the event loop, never from within `start`.

        Raises:
            httpx.RemoteProtocolError: the connection is closed (nothing was written).
        """
        transport, loop = self.transport, self._loop
        if transport is None or loop is None or self.closed:
            raise httpx.RemoteProtocolError("the connection is closed")
        self._on_answer = on_answer
        reader = self._reader
        if reader.head is not None or reader.buffer or reader._interim:  # used: else as new
            self._reader = _Reader()
        self.received_any = False
        self._deadline = loop.time() + timeout
        self._timeout = timeout
        transport.write(data)
        timer = self._timer
        if timer is None or timer.when() > self._deadline:  # none, or armed for later
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(self._deadline, self._check_deadline)

    async def request(self, data: bytes, timeout: float) -> RawResponse:
        """Write `data` (a whole request) and wait for the whole answer."""
        waiter: asyncio.Future[RawResponse] = asyncio.get_running_loop().create_future()

        def on_answer(
            connection: _Connection,
            response: RawResponse | None,
            error: httpx.TransportError | None,
        ) -> None:
            if waiter.done():  # cancelled meanwhile
                return
            if error is not None:
                waiter.set_exception(error)
            else:
                assert response is not None  # one of the two is given
                waiter.set_result(response)

        self.start(data, timeout, on_answer)
        try:
            return await waiter
        finally:
            self._on_answer = None  # cancelled: later bytes are out of step

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


#: asyncio's TLS protocol with a TLS read buffer of 32 KiB, from Python 3.11 (whose
#: SSLProtocol keeps one buffer of `max_size` bytes per connection; 3.10's differs).
if sys.version_info >= (3, 11):
    from asyncio import sslproto

    class _LeanTLS(sslproto.SSLProtocol):
        max_size = 32 * 1024  # a TLS record is at most 16 KiB

    _LEAN_TLS = True
else:  # pragma: no cover - Python 3.10
    _LEAN_TLS = False


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
        self._resending: set[asyncio.Task[None]] = set()  # see _answered
        self._closing = False
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._resolved: list[str] = []
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

    def start(self, data: bytes, on_answer: OnResult) -> _Connection | None:
        """Send a request made by `build` on an idle connection, if one is open.

        `on_answer` gets the answer, or the error, once, from the event loop; the
        connection is then kept or closed as `send` does, and a request that failed
        on it before any byte of answer came goes once more on a new connection.
        Returns the connection; `None` when no idle connection is open (then use
        `send`, which opens one).
        """
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection.closed:
                connection.start(data, self._timeout, partial(self._answered, data, on_answer))
                return connection
            self._open.discard(connection)
        return None

    def _answered(
        self,
        data: bytes,
        on_answer: OnResult,
        connection: _Connection,
        raw: RawResponse | None,
        error: httpx.TransportError | None,
    ) -> None:
        """The end of a request made by `start`: the connection kept or closed, as in `send`."""
        if raw is not None:
            self.release(connection, raw.keep_alive)
            on_answer(raw, None)
            return
        self.discard(connection)
        assert error is not None  # one of the two is given
        if (
            isinstance(error, httpx.RemoteProtocolError)
            and not connection.received_any
            and not self._closing
        ):  # the server closed the idle connection: once more on a new one
            task = asyncio.ensure_future(self._resend(data, on_answer))
            self._resending.add(task)
            task.add_done_callback(self._resending.discard)
            return
        on_answer(None, error)

    async def _resend(self, data: bytes, on_answer: OnResult) -> None:
        try:
            raw = await self.send(data, fresh_only=True)
        except httpx.TransportError as exc:
            on_answer(None, exc)
        except Exception as exc:  # not expected: the request must still get its outcome
            on_answer(None, httpx.TransportError(f"{type(exc).__name__}: {exc}"))
        else:
            on_answer(raw, None)

    def release(self, connection: _Connection, keep_alive: bool) -> None:
        """A connection's answer is read: keep it for reuse if it can be, else close it."""
        if keep_alive and not connection.closed and len(self._idle) < self._max_idle:
            idle, connection.idle_since = self._idle, time.monotonic()
            idle.append(connection)  # reused last in, first out: the oldest is spare
            if connection.idle_since - idle[0].idle_since > IDLE_S:
                self.discard(idle.pop(0))
        else:
            self.discard(connection)

    async def send(self, data: bytes, fresh_only: bool = False) -> RawResponse:
        """Send a request made by `build` and return the answer.

        A request that fails on a reused connection before any byte of answer came
        (the server closed it while idle) is tried once more on a new connection.

        Args:
            data: The whole request.
            fresh_only: Open a new connection rather than reuse an idle one.
        """
        for fresh in (fresh_only, True):
            connection, reused = await self._acquire(fresh)
            try:
                response = await connection.request(data, self._timeout)
            except httpx.RemoteProtocolError:
                self.discard(connection)
                if reused and not connection.received_any and not fresh:
                    continue
                raise
            except BaseException:
                self.discard(connection)
                raise
            self.release(connection, response.keep_alive)
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
                if (
                    self._ssl is not None
                    and _LEAN_TLS
                    and type(loop).__module__.startswith("asyncio")
                ):
                    await self._connect_tls(loop, connection, address, self._ssl)
                else:
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

    async def _connect_tls(
        self,
        loop: asyncio.AbstractEventLoop,
        connection: _Connection,
        address: str,
        context: ssl.SSLContext,
    ) -> None:
        """Open a TLS connection whose TLS layer reads into 32 KiB, not 256 KiB.

        As `loop.create_connection(ssl=...)` does (asyncio's own TLS protocol over a
        plain connection, the handshake awaited), but with `_LeanTLS`: asyncio keeps
        a 256 KiB read buffer per TLS connection, 128 MB for 512 connections, where
        a TLS record is at most 16 KiB.
        """
        handshake: asyncio.Future[None] = loop.create_future()
        protocol = _LeanTLS(  # the handshake's time is bounded by _acquire's wait_for
            loop, connection, context, handshake, server_side=False, server_hostname=self._host
        )
        transport, _ = await loop.create_connection(lambda: protocol, address, self._port)
        try:
            await handshake
        except BaseException:
            transport.close()
            raise

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

    def discard(self, connection: _Connection) -> None:
        """Close a connection whose request failed."""
        connection.close()
        self._open.discard(connection)

    async def aclose(self) -> None:
        """Close every connection, idle or busy; a request started and not answered fails."""
        self._closing = True
        for task in list(self._resending):
            task.cancel()
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        if self._lookup is not None:
            self._lookup.cancel()
        if self._resolver is not None:
            self._resolver.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks
