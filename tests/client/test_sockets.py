"""The pool's connections read and write their sockets themselves, plain and TLS (`_sockets`)."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import weakref
from typing import Any

import httpx
import pytest
import trustme

from courier_analytics._http11 import Http11Pool, _Connection
from courier_analytics._sockets import SocketTransport

from .test_http11 import OK, RawServer, serve


@pytest.fixture(scope="module")
def certificate() -> Any:
    """A certificate for 127.0.0.1 from a throwaway CA (a `trustme.LeafCert`)."""
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1")
    certificate.ca = ca
    return certificate


def server_context(certificate: Any) -> ssl.SSLContext:
    """A server context for `certificate`, with TLS session ticket keys of its own."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certificate.configure_cert(context)
    return context


@pytest.fixture(scope="module")
def contexts(certificate: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with the certificate, and a client context trusting its CA."""
    client = ssl.create_default_context()
    certificate.ca.configure_trust(client)
    return server_context(certificate), client


def test_a_new_tls_connection_resumes_an_earlier_ones_session(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A second connection offers the first one's TLS session, and the server resumes it."""
    server = RawServer(lambda n, raw: OK)

    async def scenario(pool: Http11Pool) -> list[bool]:
        data = pool.build("/x", b"{}")
        await pool.send(data)  # one connection, a full handshake
        await asyncio.gather(pool.send(data), pool.send(data))  # the idle one, and a new one
        return [
            connection.transport.resumed  # type: ignore[union-attr]
            for connection in pool._idle
        ]

    hits_before = contexts[0].session_stats()["hits"]
    resumed = serve(server, scenario, tls=contexts)
    assert server.connections == 2
    assert sorted(resumed) == [False, True]
    assert contexts[0].session_stats()["hits"] == hits_before + 1


def test_an_answer_of_many_tls_records_is_read_whole(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """An answer of several 16 KiB TLS records, written at once, is read to its end."""
    body = bytes(range(256)) * 400  # 100 KiB: seven records
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = RawServer(lambda n, raw: answer)

    async def scenario(pool: Http11Pool) -> list[bytes]:
        data = pool.build("/x", b"{}")
        return [(await pool.send(data)).body for _ in range(2)]

    assert serve(server, scenario, tls=contexts) == [body, body]
    assert server.connections == 1


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_request_larger_than_the_socket_takes_at_once_is_written_whole(
    tls: bool, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """A write the socket cannot take at once goes out whole once it can, then the answer comes."""
    body = b"x" * (16 * 1024 * 1024)  # beyond any loopback send buffer
    server = RawServer(lambda n, raw: OK)

    async def scenario(pool: Http11Pool) -> int:
        return (await pool.send(pool.build("/x", body))).status

    assert serve(server, scenario, tls=contexts if tls else None) == 202
    [request] = server.requests
    assert request.endswith(b"\r\n\r\n" + body)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_connection_the_server_closes_after_its_answer_is_not_reused(
    tls: bool, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """A server that closes after answering (over TLS, saying goodbye): the next one opens anew."""
    server = RawServer(lambda n, raw: OK, close_after=True)

    async def scenario(pool: Http11Pool) -> list[int]:
        data = pool.build("/x", b"{}")
        return [(await pool.send(data)).status for _ in range(3)]

    assert serve(server, scenario, tls=contexts if tls else None) == [202, 202, 202]
    assert server.connections == 3


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_connection_cut_mid_answer_fails_its_request(
    tls: bool, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Half an answer, then the connection ends: the request fails as a protocol error."""
    server = RawServer(lambda n, raw: OK[:20], close_after=True)

    async def scenario(pool: Http11Pool) -> BaseException | None:
        try:
            await pool.send(pool.build("/x", b"{}"))
        except httpx.TransportError as exc:
            return exc
        return None

    error = serve(server, scenario, tls=contexts if tls else None)
    assert isinstance(error, httpx.RemoteProtocolError)


def test_a_closed_transport_takes_no_more_writes_and_tells_its_protocol_once(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """`abort` closes the socket; the protocol hears of it once, from the loop, not from `abort`."""
    server = RawServer(lambda n, raw: OK)

    async def scenario(pool: Http11Pool) -> tuple[bool, list[Exception | None], bool]:
        await pool.send(pool.build("/x", b"{}"))
        (connection,) = pool._idle
        transport = connection.transport
        assert isinstance(transport, SocketTransport)
        lost: list[Exception | None] = []
        connection.connection_lost = lost.append  # type: ignore[method-assign]
        transport.abort()
        heard_at_once = bool(lost)
        transport.abort()
        transport.write(b"more")
        await asyncio.sleep(0)
        return heard_at_once, lost, transport.is_closing()

    heard_at_once, lost, closing = serve(server, scenario, tls=contexts)
    assert (heard_at_once, lost, closing) == (False, [None], True)


def test_a_session_the_server_refuses_is_replaced_by_the_next_one(
    certificate: Any, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """The held session is kept while it resumes, and replaced once the server refuses it."""
    server = RawServer(lambda n, raw: OK)

    async def main() -> list[Any]:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=contexts[0])
        port = listener.sockets[0].getsockname()[1]
        pool = Http11Pool(
            f"https://127.0.0.1:{port}", [], timeout=30, max_idle=4, ssl_context=contexts[1]
        )
        data = pool.build("/x", b"{}")

        async def on_a_new_connection() -> bool:
            for connection in list(pool._idle):
                pool.discard(connection)
            pool._idle.clear()
            await pool.send(data)
            (connection,) = pool._idle
            return connection.transport.resumed  # type: ignore[union-attr, no-any-return]

        try:
            seen: list[Any] = [await on_a_new_connection()]  # a full handshake
            held = pool._session
            seen += [await on_a_new_connection(), pool._session is held]  # resumed: kept
            for connection in list(pool._idle):  # wait_closed() waits for them (3.12+)
                pool.discard(connection)
            pool._idle.clear()
            listener.close()
            await listener.wait_closed()
            listener = await asyncio.start_server(  # the same port, other ticket keys
                server.handle, "127.0.0.1", port, ssl=server_context(certificate)
            )
            seen += [await on_a_new_connection(), pool._session is held]  # refused: replaced
            seen += [await on_a_new_connection()]  # the new session resumes
            return seen
        finally:
            await pool.aclose()
            listener.close()
            await listener.wait_closed()

    assert asyncio.run(main()) == [False, True, True, False, False, True]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_closed_connection_is_freed_without_the_cyclic_collector(
    tls: bool, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """A discarded connection and its buffer are freed at once, with no reference cycle left."""
    server = RawServer(lambda n, raw: OK)

    async def scenario(pool: Http11Pool) -> bool:
        await pool.send(pool.build("/x", b"{}"))
        connection = pool._idle.pop()
        freed = weakref.ref(connection)
        pool.discard(connection)
        del connection
        await asyncio.sleep(0)  # the transport tells its protocol from the loop
        return freed() is None

    gc.disable()
    try:
        assert serve(server, scenario, tls=contexts if tls else None)
    finally:
        gc.enable()


def test_a_write_that_fails_tells_of_it_from_the_loop_not_from_within_start() -> None:
    """A write on a connection that cannot take one: `on_answer` runs after `start` returned."""
    server = RawServer(lambda n, raw: OK)

    async def scenario(pool: Http11Pool) -> list[str]:
        await pool.send(pool.build("/x", b"{}"))
        (connection,) = pool._idle
        transport = connection.transport
        assert isinstance(transport, SocketTransport)
        transport._sock.shutdown(socket.SHUT_WR)  # the next send fails (EPIPE)
        events: list[str] = []
        connection.start(b"POST / HTTP/1.1\r\n\r\n", 5, lambda *_: events.append("on_answer"))
        events.append("start returned")
        await asyncio.sleep(0)
        return events

    assert serve(server, scenario, tls=None) == ["start returned", "on_answer"]


def test_a_protocol_that_fails_to_read_ends_its_connection_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception from the protocol's read ends the connection and its request, not at timeout."""
    server = RawServer(lambda n, raw: OK)
    errors: list[BaseException] = []

    def failing(self: _Connection, data: bytes) -> None:
        raise RuntimeError("a defect in the protocol")

    monkeypatch.setattr(_Connection, "data_received", failing)

    async def scenario(pool: Http11Pool) -> BaseException | None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: errors.append(context["exception"]))
        pool._timeout = 5  # a request left waiting fails as ReadTimeout
        try:
            await pool.send(pool.build("/x", b"{}"))
        except httpx.TransportError as exc:
            return exc
        return None

    assert isinstance(serve(server, scenario, tls=None), httpx.RemoteProtocolError)
    assert [str(e) for e in errors] == ["a defect in the protocol"]


def test_a_connection_made_as_the_pool_closes_is_closed_and_its_request_fails(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A connect that ends in the loop turn the pool closes in sends nothing and is closed."""
    server = RawServer(lambda n, raw: OK)
    made: list[_Connection] = []

    async def scenario(pool: Http11Pool) -> Any:
        connect = pool._connect

        async def connect_as_the_pool_closes(connection: _Connection) -> None:
            await connect(connection)
            made.append(connection)
            pool._closing = True  # aclose() began in this very turn

        pool._connect = connect_as_the_pool_closes  # type: ignore[method-assign]
        try:
            await pool.send(pool.build("/x", b"{}"))
        except httpx.ConnectError as exc:
            return str(exc), pool._open
        return None

    assert serve(server, scenario, tls=contexts) == ("the connection pool was closed", set())
    assert made[0].closed
    assert server.requests == []


def test_a_server_that_resumes_nothing_stops_the_pool_reading_sessions(
    certificate: Any, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """After two refused offers in a row the pool reads no session (each read copies one)."""
    refusing = server_context(certificate)
    refusing.num_tickets = 0  # TLS 1.3 without tickets: nothing to resume
    server = RawServer(lambda n, raw: OK)
    reads = 0
    session = SocketTransport.session

    def counted(transport: SocketTransport) -> ssl.SSLSession | None:
        nonlocal reads
        reads += 1
        return session.fget(transport)  # type: ignore[attr-defined, no-any-return]

    async def scenario(pool: Http11Pool) -> list[int]:
        statuses = []
        for _ in range(6):
            statuses.append((await pool.send(pool.build("/x", b"{}"))).status)
            pool.discard(pool._idle.pop())
        return statuses

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SocketTransport, "session", property(counted))
        assert serve(server, scenario, tls=(refusing, contexts[1])) == [202] * 6
    assert reads == 2
