"""The native pool's connect: every request is answered, and a dead address costs a share.

A server may close a connection before its first request, a connect may fail in a way
nobody foresaw, and one of a host's addresses may drop every connect (broken IPv6, a
dead A record). Each must end its request once, and the last must not make every new
connection wait out the whole timeout.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from typing import Any, Literal

import httpx
import pytest
import trustme

from courier_analytics import Client, RetryPolicy
from courier_analytics._http11 import Http11Pool, _Connection

from .fakes import Reports
from .test_http11 import OK, RawServer, Scenario, serve

LOOPS = ["asyncio", "uvloop"]
DEAD = "192.0.2.1"  # TEST-NET-1: never dialled, its connects are faked as dropped
HOST = "courier.test"
TIMEOUT = 20.0  # seconds to connect; see `dropping`
CLOSING = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


async def send(pool: Http11Pool) -> Any:
    """One request through `pool`: its answer, or the error that ended it."""
    try:
        return await asyncio.wait_for(pool.send(pool.build("/x", b"{}")), 3 * TIMEOUT)
    except asyncio.TimeoutError:  # before any other: it is an OSError on 3.11+
        return "never answered"
    except Exception as exc:
        return exc


@pytest.mark.parametrize("event_loop", LOOPS)
def test_a_connection_closed_before_its_first_request_fails_that_request(event_loop: str) -> None:
    """A connection the server closed before the request went (seen on uvloop) is a retryable
    protocol error, not a request left unanswered."""
    server = RawServer(lambda n, raw: OK)

    async def scenario(pool: Http11Pool) -> Any:
        connect = pool._connect

        async def connect_then_lose(connection: _Connection) -> None:
            await connect(connection)
            assert connection.transport is not None
            connection.transport.abort()  # as the server's close, heard before the request
            while not connection.closed:
                await asyncio.sleep(0)

        pool._connect = connect_then_lose  # type: ignore[method-assign]
        return await send(pool), pool._open

    error, still_open = serve(server, scenario, event_loop=event_loop)
    assert isinstance(error, httpx.RemoteProtocolError), error
    assert (still_open, server.requests) == (set(), [])


@pytest.mark.parametrize("event_loop", LOOPS)
def test_an_unforeseen_error_while_connecting_ends_the_request(event_loop: str) -> None:
    """An exception that is no connect error (a bug) is the request's answer, not lost in a task."""
    server = RawServer(lambda n, raw: OK)

    async def scenario(pool: Http11Pool) -> Any:
        async def broken(connection: _Connection) -> None:
            raise ValueError("a bug")

        pool._connect = broken  # type: ignore[method-assign]
        return await send(pool)

    error = serve(server, scenario, event_loop=event_loop)
    assert isinstance(error, ValueError), error
    assert str(error) == "a bug"


@pytest.mark.parametrize("event_loop", LOOPS)
def test_a_server_closing_every_connection_on_accept_fails_each_message(
    event_loop: Literal["asyncio", "uvloop"],
) -> None:
    """Every message sent to a server that closes each connection at once ends failed, reported."""
    pytest.importorskip(event_loop)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)

    def close_each() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # the listener was closed: the test is over
                return
            connection.close()

    threading.Thread(target=close_each, daemon=True).start()
    reports = Reports()
    client = Client(
        api_key="pk_test_connect",
        base_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
        event_loop=event_loop,
        on_error=reports,
        retry=RetryPolicy(max_retries=1, initial_wait=0, max_wait=0, max_time=None),
    )
    try:
        for n in range(20):
            client.track("Order Completed", user_id=f"u{n}")
        assert client.flush(30), f"{client._worker.in_flight} request(s) never answered"
        assert (client.stats.failed, len(reports.errors)) == (20, 20)
    finally:
        client.shutdown(5)
        listener.close()


def resolve_host(monkeypatch: pytest.MonkeyPatch, first: str) -> None:
    """`courier.test` resolves to `first`, then 127.0.0.1 (where the server is)."""
    real_lookup = socket.getaddrinfo

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != HOST:
            return real_lookup(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (first, port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)


@pytest.fixture
def dialled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`courier.test` resolves to a dead address, then 127.0.0.1; the addresses dialled go here
    (by a scenario wrapped in `dropping`)."""
    resolve_host(monkeypatch, DEAD)
    return []


def dropping(dialled: list[str], scenario: Scenario) -> Scenario:
    """`scenario`, on a loop whose connects to the dead address never hear back (as when
    SYNs are dropped), noting each address dialled: nothing leaves the machine.

    Half the timeout passes at once on the loop's clock when the dead address is
    dialled, so the test waits for nothing and the live address has the other half
    (`TIMEOUT` / 2 seconds), however busy the machine.
    """

    async def wrapped(pool: Http11Pool) -> Any:
        loop = asyncio.get_running_loop()
        real_connect, real_time = loop.sock_connect, loop.time
        skipped = 0.0

        async def sock_connect(sock: socket.socket, address: Any) -> None:
            nonlocal skipped
            dialled.append(address[0])
            if address[0] == DEAD:
                skipped += TIMEOUT / 2
                await loop.create_future()
            await real_connect(sock, address)

        loop.sock_connect = sock_connect  # type: ignore[method-assign]  # this loop's alone
        loop.time = lambda: real_time() + skipped  # type: ignore[method-assign]
        return await scenario(pool)

    return wrapped


def test_a_first_address_that_drops_connects_costs_a_share_of_the_timeout(
    dialled: list[str],
) -> None:
    """Of two addresses, the first dropping connects, the request goes through the second
    within the one timeout."""
    server = RawServer(lambda n, raw: OK)
    answer = serve(server, dropping(dialled, send), host=HOST, timeout=TIMEOUT)
    assert getattr(answer, "status", answer) == 202
    assert dialled == [DEAD, "127.0.0.1"]


def test_later_connections_try_an_address_that_failed_last(dialled: list[str]) -> None:
    """After a connect to an address failed, new connections start with the others."""
    server = RawServer(lambda n, raw: CLOSING)  # each request on a new connection

    async def scenario(pool: Http11Pool) -> list[Any]:
        return [await send(pool) for _ in range(3)]

    answers = serve(server, dropping(dialled, scenario), host=HOST, timeout=TIMEOUT)
    assert [getattr(answer, "status", answer) for answer in answers] == [202, 202, 202]
    assert dialled == [DEAD, "127.0.0.1", "127.0.0.1", "127.0.0.1"]


@pytest.mark.parametrize("event_loop", LOOPS)
def test_over_tls_a_refused_first_address_falls_through_and_the_name_is_verified(
    event_loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several addresses, TLS starts on the one that took the connect and checks the
    host name, on either loop."""
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(HOST).configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    resolve_host(monkeypatch, "127.0.0.2")  # where nothing listens: refused at once
    server = RawServer(lambda n, raw: OK)
    answer = serve(
        server,
        send,
        event_loop=event_loop,
        host=HOST,
        tls=(server_context, client_context),
    )
    assert getattr(answer, "status", answer) == 202
    assert server.connections == 1
