"""The HTTP/1.1 answer parser of the native sender: bytes in, answers out, no I/O.

Answers are parsed strictly (RFC 9112; where it differs from h11, it is stricter,
see tests/client/test_http11_parser.py) and within fixed bounds: a 64 KiB head, a
1 MiB body (a larger Content-Length is refused before reading), a 4 KiB chunk size
line, 64 KiB of trailers. An answer that breaks either raises
`httpx.RemoteProtocolError`, and its connection is closed (`_http11.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, NoReturn

if TYPE_CHECKING:
    import httpx
else:
    from courier_analytics._lazy import httpx

__all__ = ["MAX_BODY", "RawResponse", "Reader", "parse_head"]

_MAX_HEAD = 64 * 1024  # status line and headers; trailers likewise
MAX_BODY = 1024 * 1024  # bytes of an answer's body: Courier's are a few hundred
_MAX_CHUNK_LINE = 4 * 1024  # a chunk's size line, extensions included

# The grammar of RFC 9112, as strict as h11's except where noted in
# tests/client/test_http11_parser.py: lines end in CRLF only, no obs-fold.
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: .*)?", re.DOTALL)
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*")
_FIELDS_READ = {b"content-length", b"transfer-encoding", b"connection", b"retry-after"}

# The usual head, checked whole by one match (see parse_head): the status
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


def parse_head(raw: bytes) -> _Head:
    """The head's status and framing; refused unless it is well formed and within bounds.

    Most answers match `_USUAL_HEAD`, which checks the whole head in one C call and
    picks out the fields read; any other head (a repeated field, both framings, any
    fault) is split into lines and fields and checked one by one, which gives the
    verdict and its reason. Either way, what the fields mean is worked out below, once.
    """
    match = _USUAL_HEAD.fullmatch(raw)
    if match is not None and (match[3] is None or match[6] is None):
        version, code, length, connection, retry_after, chunked = match.groups()
        http_1_1 = version == b"1"
        status = int(code)
        size = None if length is None else int(length)
        connections: Sequence[bytes] = () if connection is None else (connection,)
        retry = None if retry_after is None else retry_after.strip(b" \t")
        is_chunked = chunked is not None
    else:
        http_1_1, status, size, connections, retry, is_chunked = _split_head(raw)
    if status < 100 or status == 101:  # 101: we never asked to switch protocols
        _refuse(f"unexpected status {status}")
    keep_alive = http_1_1
    if connections:  # `close` in any Connection field wins (RFC 9112, 9.6)
        tokens = {
            token.strip(b" \t").lower() for value in connections for token in value.split(b",")
        }
        keep_alive = b"close" not in tokens and (http_1_1 or b"keep-alive" in tokens)
    if is_chunked and not http_1_1:  # faulty framing: read it, then close (RFC 9112, 6.1)
        keep_alive = False
    if status < 200 or status == 204 or status == 304:
        size, is_chunked = 0, False
    elif size is None and not is_chunked:  # delimited by the server closing the connection
        keep_alive = False
    if size is not None and size > MAX_BODY:
        _refuse(f"an answer of {size} bytes, over the {MAX_BODY}-byte limit")
    retry_text = None if retry is None else retry.decode("latin-1")
    return _new(_Head, (status, retry_text, keep_alive, size, is_chunked))


def _split_head(raw: bytes) -> tuple[bool, int, int | None, list[bytes], bytes | None, bool]:
    """A head of any kind, line by line: HTTP/1.1 or not, status, and the fields read."""
    lines = _lines(raw)
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        _refuse(f"malformed status line ({len(lines[0])} bytes)")
    fields = _fields(lines[1:])
    retry_after = fields.get(b"retry-after")
    length = None
    if b"content-length" in fields:
        length = _content_length(fields[b"content-length"])
    chunked = b"transfer-encoding" in fields
    if chunked and [v.lower() for v in fields[b"transfer-encoding"]] != [b"chunked"]:
        _refuse("a Transfer-Encoding other than chunked")
    return (
        status_line[1] == b"1",
        int(status_line[2]),
        length,
        fields.get(b"connection", []),
        retry_after[0] if retry_after else None,
        chunked,
    )


class Reader:
    """Reads one answer from a connection's bytes as they come, within fixed bounds.

    `feed` returns the answer once it is complete; `end` is called when the
    server closes the connection. Either raises `httpx.RemoteProtocolError` for
    an answer that breaks HTTP/1.1 or a bound (head, body, chunk line, trailers):
    the connection is then closed, and what was read so far is dropped.

    Every answer is read the same way: `feed` reads on from where the answer
    stands (its head, then its body as the head frames it) through the bytes it
    has, and keeps what it has not used, and where it stands, only when the
    answer is not yet whole. An answer that comes whole in one read is the
    shortest trip through it: the reader keeps nothing, and stays as new.
    """

    head: _Head | None = None  # the answer's, once read (kept while its body comes)
    _searched = 0  # bytes at the buffer's start searched in vain for the next line end
    _interim = 0  # bytes of interim answers (100 Continue) skipped
    _chunk = -1  # chunked: the size of the chunk being read; -1: its size line
    _body: bytearray  # of a chunked answer, as its chunks come
    _reading_on = False  # within _read_on: an interim answer returns to its loop
    _more = False  # an interim answer was read within _read_on: read on

    def __init__(self) -> None:
        self.buffer = bytearray()  # bytes kept unread from earlier reads

    def feed(self, data: bytes) -> RawResponse | None:
        """Add bytes; the answer if it is now complete."""
        buffer = self.buffer
        searched = 0
        if buffer:  # read on from the bytes kept, in place
            buffer += data
            data, searched = buffer, self._searched  # type: ignore[assignment]
        head = kept = self.head
        at = interim = 0
        if head is None:
            interim = self._interim
            end = data.find(b"\r\n\r\n", searched) if searched else data.find(b"\r\n\r\n")
            if end < 0 or end > _MAX_HEAD - interim:
                self._wait_for(b"\r\n\r\n", _MAX_HEAD - interim, "the answer's head", data, end)
                return None
            head = parse_head(data[:end] if data is not buffer else bytes(data[:end]))
            at = end + 4
        status, retry_after, keep_alive, length, chunked = head
        if status < 200:  # an interim answer (100 Continue): read on to the real one
            self._interim += at
            self._keep(None, data, at)
            if self._reading_on:  # within _read_on's loop, which reads on
                self._more = True
                return None
            return self._read_on()
        if length == len(data) - at:  # the usual: Content-Length, the rest of the bytes
            body = data[at:]
        elif length is not None:  # 0 for an answer without a body
            end = at + length
            if len(data) < end:
                self._keep(head, data, at)
                return None
            keep_alive = False  # stray bytes after it: never reuse
            body = data[at:end]
        elif chunked:
            read = self._read_chunks(head, data, at)
            if read is None:
                return None
            body, end = read
            if len(data) != end:
                keep_alive = False
        else:  # delimited by the server closing the connection: see `end`
            if len(data) - at > MAX_BODY:
                _refuse(f"an answer over the {MAX_BODY}-byte limit")
            self._keep(head, data, at)
            return None
        if kept is not None or data is buffer or interim:  # as new for the next answer
            body = bytes(body)
            self._reset()
        return _new(RawResponse, (status, retry_after, body, keep_alive))

    def end(self) -> RawResponse:
        """The answer, when the server closed the connection after it."""
        head = self.head
        if head is None or head.length is not None or head.chunked:
            _refuse("the server closed the connection without a full answer")
        body = bytes(self.buffer)
        self._reset()
        return _new(RawResponse, (head.status, head.retry_after, body, head.keep_alive))

    def _read_chunks(self, head: _Head, data: bytes, at: int) -> tuple[bytes, int] | None:
        """A chunked body from `at`, and where it ends; None: wait for more bytes.

        The chunks (each a size line, its bytes, CRLF), the last chunk, then trailers.
        """
        if self.head is None:  # its head was just read
            size, searched, body = -1, 0, bytearray()
        else:
            size, searched, body = self._chunk, self._searched, self._body
        while True:
            if size < 0:  # a chunk size line
                end = data.find(b"\r\n", at + searched)
                if end < 0 or end - at > _MAX_CHUNK_LINE:
                    break
                line = _CHUNK_LINE.fullmatch(data, at, end)
                if line is None:  # also a negative size
                    _refuse(f"malformed chunk size line ({end - at} bytes)")
                size = int(line[1], 16)
                if size > MAX_BODY - len(body):
                    _refuse(f"an answer over the {MAX_BODY}-byte limit")
                at, searched = end + 2, 0
            elif size:  # a chunk, then CRLF
                end = at + size
                if len(data) < end + 2:
                    break
                if data[end : end + 2] != b"\r\n":
                    _refuse("a chunk not followed by CRLF")
                body += data[at:end]
                at, size = end + 2, -1
            elif data[at : at + 2] == b"\r\n":  # the last chunk, and no trailers
                return bytes(body), at + 2
            else:  # trailers, checked, then ignored
                end = data.find(b"\r\n\r\n", at + searched)
                if end < 0 or end - at > _MAX_HEAD:
                    break
                _fields(_lines(bytes(data[at:end])))
                return bytes(body), end + 4
        self._chunk, self._body = size, body
        if size < 0:
            self._wait_for(b"\r\n", _MAX_CHUNK_LINE, "a chunk size line", data, end, at, head)
        elif size:
            self._keep(head, data, at)
        else:
            self._wait_for(b"\r\n\r\n", _MAX_HEAD, "the answer's trailers", data, end, at, head)
        return None

    def _wait_for(
        self,
        separator: bytes,
        limit: int,
        what: str,
        data: bytes,
        end: int,
        at: int = 0,
        head: _Head | None = None,
    ) -> None:
        """No `separator` within `limit` bytes from `at`: refuse, or wait for more bytes.

        `end` is where the separator was found past the limit, or -1.
        """
        if end >= 0 or len(data) - at > limit:
            _refuse(f"{what} over the {limit}-byte limit")
        self._keep(head, data, at, max(0, len(data) - at - len(separator) + 1))

    def _keep(self, head: _Head | None, data: bytes, at: int, searched: int = 0) -> None:
        """Wait for more bytes: keep where the answer stands, and the bytes from `at` on."""
        self.head, self._searched = head, searched
        buffer = self.buffer
        if data is buffer:
            del buffer[:at]
        else:  # the buffer was empty
            buffer += memoryview(data)[at:]

    def _read_on(self) -> RawResponse | None:
        """Read on past interim answers in a loop, not by recursion: within the bound on
        their bytes, a server can send thousands of them in one read."""
        self._reading_on = True
        try:
            while True:
                self._more = False
                answer = self.feed(b"")
                if not self._more:
                    return answer
        finally:
            self._reading_on = False

    def _reset(self) -> None:
        """As new: ready for the connection's next answer."""
        self.head = None
        self._interim = self._searched = 0
        self._chunk = -1
        self.buffer.clear()
        self._body = bytearray()  # a chunked answer's body is not kept with the connection
