"""A server that answers one user's requests with broken or endless HTTP (issue #10).

The client talks to a real socket server on 127.0.0.1 with its native HTTP/1.1 sender.
Every request carrying the poisoned user's id gets a hostile answer; every other request
gets Courier's 202. The hostile answer must be refused as a protocol error, retried like
a network error and then reported, within bounded memory, while every other user's
messages are delivered. The per-request timeout is long (30 s), so an error that comes
back is the parser's doing, never the timeout's; flush's generous limit only bounds a
failure of this test.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator

import httpx
import pytest

from courier_analytics import Client, RetriesExhaustedError, RetryPolicy

from .fakes import Loopback, Reports

OK = b'HTTP/1.1 202 Accepted\r\nContent-Length: 16\r\n\r\n{"messageId":""}'
MIB = 1024 * 1024
POISONED = b'"userId":"mallory"'


def endless(first: bytes, then: bytes) -> Callable[[], Iterator[bytes]]:
    """An answer that starts with ``first`` and repeats ``then`` for as long as it is read."""
    return lambda: itertools.chain([first], itertools.repeat(then))


def once(answer: bytes) -> Callable[[], Iterator[bytes]]:
    """An answer written at once, after which the server waits for the next request."""
    return lambda: iter([answer])


CHUNKED = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
HOSTILE = {
    "negative-chunk-size": (once(CHUNKED + b"-6\r\n"), "chunk size"),
    "negative-chunk-size-100": (once(CHUNKED + b"-100\r\n"), "chunk size"),
    "huge-content-length": (
        once(b"HTTP/1.1 202 Accepted\r\nContent-Length: 300000000\r\n\r\n"),
        "300000000 bytes",
    ),
    "endless-body-until-close": (
        endless(b"HTTP/1.0 202 Accepted\r\n\r\n", b"x" * 65536),
        "limit",
    ),
    "endless-chunks": (endless(CHUNKED, b"10000\r\n" + b"x" * 65536 + b"\r\n"), "limit"),
    "endless-chunk-size-line": (endless(CHUNKED + b"1", b"0" * 65536), "chunk size line"),
    "endless-chunk-extension": (endless(CHUNKED + b"1;", b"e" * 65536), "chunk size line"),
    "endless-trailers": (endless(CHUNKED + b"0\r\n", b"X-T: t\r\n" * 8192), "trailers"),
    "negative-content-length": (
        once(b"HTTP/1.1 202 Accepted\r\nContent-Length: -5\r\n\r\n{}{}{}"),
        "Content-Length",
    ),
    "conflicting-content-lengths": (
        once(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}}"),
        "Content-Length",
    ),
    "underscore-in-status": (
        once(b"HTTP/1.1 2_02 Accepted\r\nContent-Length: 0\r\n\r\n"),
        "status",
    ),
}


class HostileServer(Loopback):
    """Answers requests carrying ``POISONED`` with ``answer()``, the others with OK."""

    request_queue_size = 256  # the client opens many connections at once

    def __init__(self, answer: Callable[[], Iterable[bytes]]) -> None:
        super().__init__(self._answer)
        self.hostile = answer
        self.hostile_requests = 0
        self.lock = threading.Lock()

    def _answer(self, body: bytes) -> bytes | Iterable[bytes]:
        if POISONED not in body:
            return OK
        with self.lock:
            self.hostile_requests += 1
        return self.hostile()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[], Iterable[bytes]]], HostileServer]]:
    """Start a hostile server on 127.0.0.1; it is shut down after the test."""
    servers: list[HostileServer] = []

    def start(answer: Callable[[], Iterable[bytes]]) -> HostileServer:
        server = HostileServer(answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("answer", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_answer_fails_its_message_and_no_other(
    serve: Callable[[Callable[[], Iterable[bytes]]], HostileServer],
    answer: Callable[[], Iterable[bytes]],
    reason: str,
) -> None:
    """The poisoned message is retried, then reported as a protocol error; others arrive."""
    server = serve(answer)
    reports = Reports()
    client = Client(
        api_key="test-key",
        base_url=server.base_url,
        timeout=30.0,
        retry=RetryPolicy(max_retries=2, initial_wait=0, max_wait=0, max_time=None),
        on_error=reports,
    )
    for n in range(20):
        client.track("Order Completed", {"n": n}, user_id=f"u{n % 4}")
    client.track("Order Completed", user_id="mallory")
    for n in range(20, 40):
        client.track("Order Completed", {"n": n}, user_id=f"u{n % 4}")
    try:
        assert client.flush(120), "the worker is stuck"
    finally:
        client.shutdown(5)
    (error,) = reports.errors
    assert isinstance(error, RetriesExhaustedError)
    assert isinstance(error.__cause__, httpx.RemoteProtocolError)
    assert reason in str(error.__cause__)
    assert server.hostile_requests == 3
    stats = client.stats
    assert (stats.delivered, stats.failed, stats.unaccounted) == (40, 1, 0)
