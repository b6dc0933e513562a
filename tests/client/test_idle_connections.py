"""Idle connections are closed once unused for `IDLE_S`, answers coming or not."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest

from courier_analytics import Client, _http11
from courier_analytics._http11 import Http11Pool, _Connection

from .fakes import NO_WAIT, Loopback, serving

OK = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"


def _idle_for(seconds: float) -> _Connection:
    connection = _Connection()
    connection.idle_since = time.monotonic() - seconds
    return connection


def test_close_idle_closes_only_the_connections_idle_too_long() -> None:
    """`close_idle` closes those idle over `IDLE_S` (the oldest) and keeps the others."""
    pool = Http11Pool("http://127.0.0.1:9", [], timeout=5, max_idle=8)
    stale, fresh = _idle_for(_http11.IDLE_S + 1), _idle_for(0)
    pool._idle.extend([stale, fresh])
    pool._open.update([stale, fresh])
    pool.close_idle()
    assert (stale.closed, fresh.closed, pool.idle) == (True, False, 1)


class _Counting(Loopback):
    """A `Loopback` that tells when every connection it accepted was closed again."""

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.open = self.opened = 0
        self.lock = threading.Lock()
        self.all_closed = threading.Event()
        self.three_in_flight = threading.Barrier(3)

    def _answer(self, body: bytes) -> bytes:
        # The three requests are answered together: the client needs three connections.
        with contextlib.suppress(threading.BrokenBarrierError):
            self.three_in_flight.wait(10)
        return OK

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.open += 1
            self.opened += 1
        try:
            super().finish_request(request, client_address)
        finally:
            with self.lock:
                self.open -= 1
                if not self.open:
                    self.all_closed.set()


def test_a_bursts_connections_close_once_idle_with_no_more_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a burst, with no traffic after it, its idle connections are closed."""
    monkeypatch.setattr(_http11, "IDLE_S", 0.05)
    server = _Counting()
    with serving(server):
        client = Client(api_key="k", base_url=server.base_url, retry=NO_WAIT, flush_at_exit=False)
        try:
            for n in range(3):
                client.track("Order Completed", user_id=f"user-{n}")
            assert client.flush(20)
            assert server.opened >= 3
            assert server.all_closed.wait(20), f"{server.open} connection(s) still open"
        finally:
            client.shutdown(10)
