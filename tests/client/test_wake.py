"""When a track() wakes the worker thread: only when no request is in flight."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx

from .fakes import FakeCourier, make_client


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the signals other threads send it."""

    def __init__(self) -> None:
        super().__init__()
        self.signals = 0

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> asyncio.Handle:
        self.signals += 1
        return super().call_soon_threadsafe(*args, **kwargs)


class Arrivals(FakeCourier):
    """A fake Courier that tells when its `count`-th request arrives (before the gate)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.arrived = threading.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if len(self.requests) + 1 >= self.count:
            self.arrived.set()
        return await super().handle_async_request(request)


def _asleep(loop: asyncio.AbstractEventLoop) -> None:
    """Return once the worker's loop has run what was ready (it then waits)."""
    ran = threading.Event()
    loop.call_soon_threadsafe(loop.call_soon, ran.set)
    assert ran.wait(5)


def test_tracks_made_while_a_request_is_in_flight_send_the_worker_no_signal() -> None:
    """While a request is in flight a track() only queues: no cross-thread wake-up."""
    courier = Arrivals(1)
    courier.gate.clear()
    client = make_client(courier)
    client._worker._new_loop = CountingLoop
    client.track("E", user_id="u0")
    assert courier.arrived.wait(5)
    loop = client._worker._loop
    assert isinstance(loop, CountingLoop)
    try:
        _asleep(loop)
        before = loop.signals
        for n in range(50):
            client.track("E", user_id=f"u{n}")
        assert loop.signals == before
    finally:
        courier.gate.set()
    assert client.flush(5)
    assert client.stats.delivered == 51
    client.shutdown()


def test_a_track_starts_while_the_request_in_flight_gets_no_answer() -> None:
    """A request that hangs holds back no other user's track: the worker's tick starts it."""
    courier = Arrivals(2)
    courier.gate.clear()
    client = make_client(courier, flush_interval=3600)
    client.track("E", user_id="u0")
    client.track("E", user_id="u1")
    try:
        assert courier.arrived.wait(5)
    finally:
        courier.gate.set()
    assert client.flush(5)
    client.shutdown()
