"""The native HTTP/1.1 client: exact request bytes and every way an answer can come back."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from courier_analytics._http11 import Http11Pool
from courier_analytics._routes import Request
from courier_analytics._transport import (
    USER_AGENT,
    HttpxSender,
    NativeSender,
    environment_proxy,
    make_sender,
)

Script = Callable[[int, bytes], bytes | None]  # (request number, raw request) -> raw answer

OK = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"


class RawServer:
    """A loopback server that records raw requests and answers from a script.

    The script returns the bytes to write, or None to close without answering;
    ``close_after`` closes the connection after answering.
    """

    def __init__(self, script: Script, *, close_after: bool = False) -> None:
        self.script = script
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(
                    line.split(b":")[1] for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ))  # fmt: skip
                raw = head + await reader.readexactly(length)
                self.requests.append(raw)
                answer = self.script(len(self.requests), raw)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def run(server: RawServer, scenario: Callable[[str], Awaitable[Any]]) -> Any:
    """Start ``server`` on 127.0.0.1 and run ``scenario(base_url)`` in one event loop."""

    async def main() -> Any:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            return await scenario(f"http://127.0.0.1:{port}")
        finally:
            listener.close()
            await listener.wait_closed()

    return asyncio.run(main())


def pool(base_url: str, timeout: float = 5.0) -> Http11Pool:
    """A pool with one fixed header, as the client's headers are fixed."""
    return Http11Pool(base_url, [(b"X-Key", b"v")], timeout=timeout, max_idle=4)


Scenario = Callable[[Http11Pool], Awaitable[Any]]


def run_on(event_loop: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """Run `main()` on a new loop of the kind named (asyncio or uvloop)."""
    if event_loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(main())
    return asyncio.run(main())  # type: ignore[arg-type]  # a coroutine, as any awaitable here


def serve(
    server: RawServer,
    scenario: Scenario,
    *,
    event_loop: str = "asyncio",
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
) -> Any:
    """Serve on 127.0.0.1 (over TLS with a server and a client context) and run `scenario`
    with a pool for `host` on the server's port."""

    async def main() -> Any:
        server_context, client_context = tls or (None, None)
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=server_context)
        port = listener.sockets[0].getsockname()[1]
        scheme = "https" if tls else "http"
        pool = Http11Pool(
            f"{scheme}://{host}:{port}",
            [],
            timeout=timeout,
            max_idle=4,
            ssl_context=client_context,
        )
        try:
            return await scenario(pool)
        finally:
            await pool.aclose()
            listener.close()
            await listener.wait_closed()

    return run_on(event_loop, main)


async def post_many(base_url: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
    """POST ``count`` requests one after another and return the answers."""
    p = pool(base_url, timeout)
    try:
        return [await p.send(p.build("/inbound/segment", b'{"n":1}')) for _ in range(count)]
    finally:
        await p.aclose()


def test_native_sender_writes_the_exact_request() -> None:
    """Request line, headers (key, JSON, user agent, idempotency key) and body, byte for byte."""
    server = RawServer(lambda n, raw: OK)

    async def scenario(base_url: str) -> None:
        sender = NativeSender(base_url + "/prefix/", "sk_1", timeout=5, max_connections=2)
        await sender.send(Request("/profiles/u%201", b'{"profile":{}}', idempotency_key="m-1"))
        await sender.aclose()

    run(server, scenario)
    port = server.requests[0].split(b"Host: 127.0.0.1:")[1].split(b"\r\n")[0].decode()
    assert server.requests == [
        b"POST /prefix/profiles/u%201 HTTP/1.1\r\n"
        b"Host: 127.0.0.1:" + port.encode() + b"\r\n"
        b"Authorization: Bearer sk_1\r\n"
        b"Content-Type: application/json\r\n"
        b"Accept: application/json\r\n"
        b"User-Agent: " + USER_AGENT.encode() + b"\r\n"
        b"Idempotency-Key: m-1\r\n"
        b"Content-Length: 14\r\n\r\n"
        b'{"profile":{}}'
    ]


def test_keep_alive_reuses_one_connection() -> None:
    """Consecutive requests share one connection."""
    server = RawServer(lambda n, raw: OK)
    answers = run(server, lambda url: post_many(url, 5))
    assert [a.status for a in answers] == [202] * 5
    assert server.connections == 1


def test_chunked_answers_are_read_whole() -> None:
    """A chunked body with a trailer is joined and the connection stays usable."""
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n")  # fmt: skip
    server = RawServer(lambda n, raw: chunked)
    answers = run(server, lambda url: post_many(url, 2))
    assert [a.body for a in answers] == [b'{"a":1}'] * 2
    assert server.connections == 1


def test_an_answer_delimited_by_close_is_read_until_close() -> None:
    """An HTTP/1.0 answer without Content-Length ends when the server closes."""
    server = RawServer(lambda n, raw: b"HTTP/1.0 200 OK\r\n\r\nall of it", close_after=True)
    (answer,) = run(server, lambda url: post_many(url))
    assert (answer.status, answer.body, answer.keep_alive) == (200, b"all of it", False)


def test_interim_answers_are_skipped() -> None:
    """A 100 Continue before the real answer is skipped."""
    server = RawServer(lambda n, raw: b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    (answer,) = run(server, lambda url: post_many(url))
    assert answer.status == 202


def test_retry_after_header_is_returned() -> None:
    """Retry-After is passed up as text."""
    answer_429 = b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n"
    (answer,) = run(RawServer(lambda n, raw: answer_429), lambda url: post_many(url))
    assert (answer.status, answer.retry_after) == (429, "7")


def test_connection_close_opens_a_new_connection_next_time() -> None:
    """After 'Connection: close' the next request uses a new connection."""
    closing = b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    server = RawServer(lambda n, raw: closing, close_after=True)
    run(server, lambda url: post_many(url, 3))
    assert server.connections == 3


def test_a_keep_alive_connection_closed_while_idle_is_replaced_silently() -> None:
    """If the server closed an idle connection, the request goes out on a new one."""
    server = RawServer(lambda n, raw: OK, close_after=True)  # closes despite keep-alive
    answers = run(server, lambda url: post_many(url, 3))
    assert [a.status for a in answers] == [202] * 3
    assert server.connections == 3


def test_no_answer_within_the_timeout_raises_read_timeout() -> None:
    """A server that never answers gives httpx.ReadTimeout after the timeout."""
    server = RawServer(lambda n, raw: OK if n == 1 else b"")

    async def scenario(base_url: str) -> None:
        p = pool(base_url, timeout=60)
        try:
            await p.send(p.build("/inbound/segment", b"{}"))  # connected, unhurried
            p._timeout = 0.05  # times the answer only: a loaded machine's slow connect cannot
            with pytest.raises(httpx.ReadTimeout):  # the guard only bounds a failure
                await asyncio.wait_for(p.send(p.build("/inbound/segment", b"{}")), 60)
        finally:
            await p.aclose()

    run(server, scenario)


def test_a_close_mid_answer_raises_remote_protocol_error() -> None:
    """A connection closed before the whole body came is a protocol error."""
    partial = b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n{"
    server = RawServer(lambda n, raw: partial, close_after=True)
    with pytest.raises(httpx.RemoteProtocolError):
        run(server, lambda url: post_many(url))


def test_a_malformed_status_line_raises_remote_protocol_error() -> None:
    """Garbage instead of an HTTP status line is a protocol error."""
    server = RawServer(lambda n, raw: b"SMTP ready\r\n\r\n")
    with pytest.raises(httpx.RemoteProtocolError, match="status line"):
        run(server, lambda url: post_many(url))


def test_a_refused_connection_raises_connect_error() -> None:
    """Nothing listening gives httpx.ConnectError."""

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        asyncio.run(post_many(f"http://127.0.0.1:{port}"))


def test_https_verifies_certificates_and_hostnames() -> None:
    """An https pool verifies the server's certificate and name by default."""
    context: ssl.SSLContext = Http11Pool("https://api.courier.com", [], timeout=1, max_idle=1)._ssl  # type: ignore[assignment]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_the_native_sender_is_the_default() -> None:
    """Without a transport or a proxy, the client sends with the native HTTP/1.1 client."""
    sender = make_sender("https://api.courier.com", "k", timeout=1, max_connections=1)
    assert isinstance(sender, NativeSender)


def test_an_environment_proxy_switches_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """With HTTPS_PROXY set, requests go through httpx and that proxy."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert environment_proxy("https://api.courier.com") == "http://proxy.internal:3128"
    sender = make_sender("https://api.courier.com", "k", timeout=1, max_connections=1)
    assert isinstance(sender, HttpxSender)


def test_no_proxy_and_loopback_bypass_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_PROXY hosts and this machine are reached directly."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "api.eu.courier.com")
    assert environment_proxy("https://api.eu.courier.com") is None
    assert environment_proxy("http://127.0.0.1:8787") is None


def test_stray_bytes_after_an_answer_are_never_read_as_the_next_answer() -> None:
    """Extra bytes after a complete answer retire the connection; the next request gets its own."""
    extra = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
    server = RawServer(lambda n, raw: OK + extra)
    answers = run(server, lambda url: post_many(url, 3))
    assert [a.status for a in answers] == [202, 202, 202]
    assert server.connections == 3


def test_host_names_are_resolved_off_the_loop() -> None:
    """A base URL with a host name (localhost) connects through the pool's own resolver."""
    server = RawServer(lambda n, raw: OK)
    answers = run(server, lambda url: post_many(url.replace("127.0.0.1", "localhost"), 2))
    assert [a.status for a in answers] == [202, 202]


class EndlessStream(httpx.AsyncByteStream, httpx.SyncByteStream):
    """A body that never ends, sync or async; counts the bytes handed out."""

    def __init__(self) -> None:
        self.given = 0

    def __iter__(self) -> Iterator[bytes]:
        while True:
            self.given += 65536
            yield b"x" * 65536

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.given += 65536
            yield b"x" * 65536


class SyncOnly(httpx.BaseTransport):
    """A synchronous transport answering every request with ``answer()``."""

    def __init__(self, answer: Callable[[], httpx.Response]) -> None:
        self.answer = answer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.answer()


def send_with(transport: httpx.AsyncBaseTransport | httpx.BaseTransport) -> Any:
    """Send one request through an HttpxSender with ``transport``; return its answer."""

    async def scenario() -> Any:
        sender = HttpxSender("https://api.courier.com", "k", timeout=5, transport=transport)
        try:
            return await sender.send(Request("/inbound/segment", b"{}"))
        finally:
            await sender.aclose()

    return asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_an_httpx_transport_reads_at_most_one_mib_of_an_endless_body(kind: str) -> None:
    """Through httpx too, a body over 1 MiB ends the attempt as a protocol error."""
    stream = EndlessStream()

    def answer(request: httpx.Request | None = None) -> httpx.Response:
        return httpx.Response(202, stream=stream)

    transport = httpx.MockTransport(answer) if kind == "async" else SyncOnly(answer)
    with pytest.raises(httpx.RemoteProtocolError, match="limit"):
        send_with(transport)
    assert stream.given <= 1024 * 1024 + 65536


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_an_httpx_answer_longer_than_one_mib_is_refused_unread(kind: str) -> None:
    """A Content-Length over 1 MiB is refused before a byte of the body is read."""
    stream = EndlessStream()

    def answer(request: httpx.Request | None = None) -> httpx.Response:
        return httpx.Response(202, headers={"Content-Length": "300000000"}, stream=stream)

    transport = httpx.MockTransport(answer) if kind == "async" else SyncOnly(answer)
    with pytest.raises(httpx.RemoteProtocolError, match="300000000 bytes"):
        send_with(transport)
    assert stream.given == 0


def test_an_async_transport_s_connections_close_with_the_sender() -> None:
    """The worker loop's connections are closed at the end; the transport stays usable."""
    server = RawServer(lambda n, raw: OK)

    async def scenario(base_url: str) -> None:
        transport = httpx.AsyncHTTPTransport()
        for _ in range(2):  # a second sender (client) reuses the same transport
            sender = HttpxSender(base_url, "k", timeout=5, transport=transport)
            assert (await sender.send(Request("/inbound/segment", b"{}"))).status == 202
            await sender.aclose()
            assert transport._pool.connections == []

    run(server, scenario)
    assert server.connections == 2


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer with an endless head, one byte at a time, far faster than any read timeout."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 202 Accepted\r\nX-Slow: ")
    try:
        while True:
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.01)
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_an_httpx_answer_trickled_byte_by_byte_ends_at_a_deadline(kind: str) -> None:
    """Through httpx too, a server trickling its answer cannot hold a request past 2 x timeout."""
    transport: httpx.AsyncBaseTransport | httpx.BaseTransport = httpx.AsyncHTTPTransport()
    if kind == "sync":
        transport = httpx.HTTPTransport()

    async def scenario() -> None:
        listener = await asyncio.start_server(trickle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        # A deadline of 2 x 1 s: the test waits it out, so it is short, and 100 times
        # the trickle's pace, so no single read times out first.
        sender = HttpxSender(f"http://127.0.0.1:{port}", "k", timeout=1, transport=transport)
        try:
            # 1 s per read is not reached (a loaded machine may: that is a timeout too);
            # the guard only bounds a failure of this test
            with pytest.raises(httpx.TimeoutException):
                await asyncio.wait_for(sender.send(Request("/inbound/segment", b"{}")), 60)
        finally:
            await sender.aclose()
            listener.close()

    try:
        asyncio.run(scenario())
    finally:
        if isinstance(transport, httpx.BaseTransport):
            transport.close()  # a synchronous transport is the caller's to close


def test_connections_opened_together_share_one_host_name_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight connections opened at once wait for one DNS lookup, not eight in turn on one thread."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def counting(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "localhost":
            lookups.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    server = RawServer(lambda n, raw: OK)

    async def scenario(base_url: str) -> list[Any]:
        p = pool(base_url.replace("127.0.0.1", "localhost"))
        try:
            return await asyncio.gather(*(p.send(p.build("/x", b"{}")) for _ in range(8)))
        finally:
            await p.aclose()

    answers = run(server, scenario)
    assert [a.status for a in answers] == [202] * 8
    assert lookups == ["localhost"]


KEY = "sk_test_SECRET123"
ECHO = b'{"message": "no access with Bearer ' + KEY.encode() + b'"}'


def test_a_key_echoed_in_an_error_body_never_leaves_the_native_sender() -> None:
    """A server (or proxy) echoing the key in an error answer: the body comes back without it."""
    answer = b"HTTP/1.1 401 No\r\nContent-Length: %d\r\n\r\n" % len(ECHO) + ECHO
    server = RawServer(lambda n, raw: answer)

    async def scenario(base_url: str) -> Any:
        sender = NativeSender(base_url, KEY, timeout=5, max_connections=1)
        try:
            return await sender.send(Request("/inbound/courier", b"{}"))
        finally:
            await sender.aclose()

    response = run(server, scenario)
    assert response.status == 401
    assert KEY.encode() not in response.body
    assert b"no access with Bearer ***" in response.body


def test_a_key_echoed_in_an_error_body_never_leaves_an_httpx_sender() -> None:
    """Through httpx too, the key is blanked out of an error answer's body."""
    transport = httpx.MockTransport(lambda request: httpx.Response(401, content=ECHO))

    async def scenario() -> Any:
        sender = HttpxSender("https://api.courier.com", KEY, timeout=5, transport=transport)
        try:
            return await sender.send(Request("/inbound/courier", b"{}"))
        finally:
            await sender.aclose()

    response = asyncio.run(scenario())
    assert KEY.encode() not in response.body
    assert b"no access with Bearer ***" in response.body


def test_a_key_echoed_in_a_malformed_answer_is_not_in_the_error() -> None:
    """A broken answer quoting the key: the protocol error's text quotes none of it."""
    answer = b"HTTP/1.1 202 OK\r\nBearer " + KEY.encode() + b"\r\n\r\n"
    server = RawServer(lambda n, raw: answer)

    async def scenario(base_url: str) -> Any:
        sender = NativeSender(base_url, KEY, timeout=5, max_connections=1)
        try:
            return await sender.send(Request("/inbound/courier", b"{}"))
        finally:
            await sender.aclose()

    with pytest.raises(httpx.RemoteProtocolError, match="malformed header line") as info:
        run(server, scenario)
    assert KEY[:8] not in str(info.value)
    assert "Bearer" not in str(info.value)


def test_a_key_quoted_in_an_httpx_error_is_not_in_the_error() -> None:
    """httpx's (h11's) errors quote a bad line too: the key in it is blanked out."""

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError(f"illegal header line: b'Bearer {KEY}'")

    with pytest.raises(httpx.RemoteProtocolError, match="illegal header line") as info:
        send_with_key(httpx.MockTransport(broken))
    assert KEY not in str(info.value)
    assert "Bearer ***" in str(info.value)


def send_with_key(transport: httpx.AsyncBaseTransport) -> Any:
    """Send one request with ``KEY`` through an HttpxSender with ``transport``."""

    async def scenario() -> Any:
        sender = HttpxSender("https://api.courier.com", KEY, timeout=5, transport=transport)
        try:
            return await sender.send(Request("/inbound/courier", b"{}"))
        finally:
            await sender.aclose()

    return asyncio.run(scenario())
