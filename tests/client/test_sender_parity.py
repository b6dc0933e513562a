"""The httpx sender (`transport=`) as the default one: same answers, same outcomes.

Served for real on 127.0.0.1 by a scripted HTTP/1.1 server, so both senders read
the same bytes.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from courier_analytics import Client, RetryPolicy, Stats

from .fakes import Reports

OK = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"

#: A 202 whose body says gzip and is not: httpx cannot decode it.
GZIP_202 = (
    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
    b"Content-Encoding: gzip\r\nContent-Length: 16\r\n\r\n"
    b'{"messageId":""}'
)
GZIP_503 = GZIP_202.replace(b"202 Accepted", b"503 Service Unavailable")


class Scripted(socketserver.ThreadingTCPServer):
    """Answers the n-th request (from 1) with ``answer(n, body)``'s bytes."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, answer: Callable[[int, bytes], bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.lock = threading.Lock()
        self.bodies: list[bytes] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Scripted = self.server  # type: ignore[assignment]
        stream = self.request.makefile("rb")
        try:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = stream.readline(65536)
                    if not line:
                        return
                    head += line
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = stream.read(length)
                with server.lock:
                    server.bodies.append(body)
                    n = len(server.bodies)
                self.request.sendall(server.answer(n, body))
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)


Serve = Callable[[Callable[[int, bytes], bytes]], Scripted]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Starts scripted servers, and stops them after the test."""
    servers: list[Scripted] = []

    def start(answer: Callable[[int, bytes], bytes]) -> Scripted:
        servers.append(Scripted(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def track_one(
    serve: Serve, sender: str, answer: Callable[[int, bytes], bytes]
) -> tuple[Stats, list[BaseException], Scripted]:
    """Track one event through ``sender`` (``native``, the default, or ``httpx``) to a server
    answering with ``answer``; its client's stats once flushed, the errors reported, the server.
    """
    server = serve(answer)
    reports = Reports()
    client = Client(
        api_key="pk_test_parity",
        base_url=server.base_url,
        transport=httpx.AsyncHTTPTransport() if sender == "httpx" else None,
        on_error=reports,
        retry=RetryPolicy(max_retries=3, initial_wait=0, max_wait=0, max_time=None),
    )
    try:
        client.track("Order Completed", user_id="u1")
        assert client.flush(10)
        return client.stats, reports.errors, server
    finally:
        client.shutdown(5)


@pytest.mark.parametrize("sender", ["native", "httpx"])
def test_a_202_whose_body_does_not_decode_counts_as_delivered(serve: Serve, sender: str) -> None:
    """Courier's 202 is delivery whatever its Content-Encoding says, with either sender."""
    stats, errors, _ = track_one(serve, sender, lambda n, body: GZIP_202)
    assert (stats.delivered, stats.retried, errors) == (1, 0, [])


@pytest.mark.parametrize("sender", ["native", "httpx"])
def test_a_503_whose_body_does_not_decode_is_retried(serve: Serve, sender: str) -> None:
    """A 503 is retried by its status, whatever its Content-Encoding says, with either sender."""
    stats, errors, _ = track_one(serve, sender, lambda n, body: GZIP_503 if n == 1 else OK)
    assert (stats.delivered, stats.retried, errors) == (1, 1, [])


@pytest.mark.parametrize("sender", ["native", "httpx"])
def test_of_two_retry_after_headers_the_first_counts(serve: Serve, sender: str) -> None:
    """Two Retry-After headers: both senders honour the first (here too long to wait)."""
    answer = (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7200\r\nRetry-After: 0\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    stats, errors, server = track_one(serve, sender, lambda n, body: answer if n == 1 else OK)
    assert (stats.failed, len(server.bodies)) == (1, 1)
    [error] = errors
    assert str(error).endswith(
        "Courier asked to wait 7200s (Retry-After), more than the 3600s a retry waits at most"
    )
