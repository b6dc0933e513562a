"""The delivery engine's cycle: one request build per attempt, retries under the adaptive limit."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

import httpx
import pytest

from courier_analytics import Client, RetryPolicy
from courier_analytics._concurrency import Concurrency
from courier_analytics._engine import Engine
from courier_analytics._events import Emitter
from courier_analytics._messages import Message
from courier_analytics._routes import Request, Route
from courier_analytics._transport import NativeSender, OnDone, Response

from .fakes import Answer, FakeCourier, accept, make_client
from .test_fast_path import LoopbackServer


class CountingRoute:
    """A route that counts the requests it builds."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.builds = 0

    def request(self, message: Message) -> Request:
        self.builds += 1
        return self.route.request(message)

    def accepted(self, status: int) -> bool:
        return self.route.accepted(status)


def test_fifty_tracks_on_a_fresh_client_build_fifty_requests() -> None:
    """With no connection open yet, each message's request is built once, not twice."""
    server = LoopbackServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = Client(api_key="k", base_url=server.url, timeout=60)
    engine = client._worker._engine
    counting = CountingRoute(engine._route)
    engine._route = counting
    try:
        for n in range(50):
            client.track("E", user_id=f"u{n}")
        assert client.flush(30)
        assert (client.stats.delivered, counting.builds) == (50, 50)
    finally:
        client.shutdown(5)
        server.shutdown()
        server.server_close()


def test_a_retry_builds_its_request_anew_once() -> None:
    """A message answered 503 then 202 makes two requests and two builds."""

    def first_fails(request: httpx.Request, body: dict[str, Any], attempt: int) -> Answer:
        return httpx.Response(503) if attempt == 1 else accept(request, body, attempt)

    courier = FakeCourier(first_fails)
    with make_client(courier) as client:
        engine = client._worker._engine
        counting = CountingRoute(engine._route)
        engine._route = counting
        client.track("E", user_id="u1")
        assert client.flush(30)
        assert (client.stats.delivered, len(courier.requests), counting.builds) == (1, 2, 2)


class HeldSender:
    """A sender that answers nothing until the test does, through each `on_done`."""

    def __init__(self) -> None:
        self.started: list[OnDone] = []

    def start(self, request: Request, on_done: OnDone) -> None:
        self.started.append(on_done)

    async def aclose(self) -> None:
        pass


class PlainRoute:
    """Every message to one path; 2xx accepted."""

    def request(self, message: Message) -> Request:
        return Request("/inbound/courier", message._data)

    def accepted(self, status: int) -> bool:
        return 200 <= status < 300


def held_engine(queue: deque[Message], max_in_flight: int, max_retries: int) -> Engine:
    """An engine on `queue` with no wait between retries and nothing reported."""
    return Engine(
        queue=queue,
        route=PlainRoute(),
        policy=RetryPolicy(max_retries=max_retries, initial_wait=0, max_wait=0, max_time=None),
        max_queue_size=1000,
        max_queue_bytes=10**9,
        max_in_flight=max_in_flight,
        strict_order=False,
        report=lambda error, message: None,
        origin="127.0.0.1:1",
        events=Emitter(),
        spool=None,
        on_idle=lambda: None,
        wake=lambda: False,
    )


def track(n: int) -> Message:
    body = f'{{"type":"track","messageId":"m-{n}","userId":"u{n}"}}'.encode()
    return Message("track", f"m-{n}", f"u{n}", None, "E", body)


def test_after_a_429_halves_the_limit_retries_stay_within_it() -> None:
    """Retries take places under the adaptive limit as first attempts do, not max_in_flight."""

    async def scenario() -> tuple[int, int, int]:
        queue: deque[Message] = deque(track(n) for n in range(8))
        engine = held_engine(queue, max_in_flight=8, max_retries=3)
        sender = HeldSender()
        engine.begin(sender)
        engine.drain()
        assert (len(sender.started), engine._concurrency.limit) == (8, 8)
        engine._concurrency._since -= 1.0  # the window has lasted long enough to be judged
        for on_done in list(sender.started):
            on_done(Response(429, None, b""), None)
        for _ in range(5):  # the retries' timers (no wait) fire
            await asyncio.sleep(0)
        limit = engine._concurrency.limit
        result = (limit, engine.in_flight, len(sender.started) - 8)
        engine.end("test over")
        return result

    limit, in_flight, retries_started = asyncio.run(scenario())
    assert limit == 4
    assert in_flight == retries_started == 4


class HeldNativeSender(NativeSender):
    """The native pool as the engine sees it, with no idle connection; answers nothing."""

    def __init__(self) -> None:  # no pool: nothing is sent
        self.started: list[OnDone] = []

    @property
    def idle(self) -> int:
        return 0

    def start(self, request: Request, on_done: OnDone) -> None:
        self.started.append(on_done)

    async def aclose(self) -> None:
        pass


def test_the_connection_policy_weighs_messages_waiting_in_a_users_lane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One user's burst: what waits in its lane, past `per_user`, counts in the backlog."""
    asked = Concurrency.may_open
    backlogs: list[int] = []

    def may_open(self: Concurrency, connections: int, waiting: int) -> bool:
        backlogs.append(waiting)
        return asked(self, connections, waiting)

    monkeypatch.setattr(Concurrency, "may_open", may_open)

    async def scenario() -> None:
        body = b'{"type":"track","userId":"u1"}'
        queue = deque(Message("track", f"m-{n}", "u1", None, "E", body) for n in range(500))
        # max_in_flight 64: a lane hands on at most 32 of one user's tracks at once.
        engine = held_engine(queue, max_in_flight=64, max_retries=0)
        engine.begin(HeldNativeSender())
        engine.drain()
        engine.end("test over")

    asyncio.run(scenario())
    assert max(backlogs) >= 500 - 32  # not only the 32 the lane handed on
