"""The asyncio API: aflush, ashutdown, ``async with``, and calls that never block the loop."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import pytest
from client.fakes import FakeCourier, Reports, balanced, make_client

import courier_analytics as analytics
from courier_analytics import Client, NotDeliveredError

from .conftest import KEY


async def ticks_while(work: asyncio.Future[object], period: float = 0.001) -> list[float]:
    """Lateness (seconds) of each wake-up of a ticker that sleeps ``period`` until ``work`` ends."""
    lags = []
    loop = asyncio.get_running_loop()
    while not work.done():
        due = loop.time() + period
        await asyncio.sleep(period)
        lags.append(loop.time() - due)
    return lags


def test_aflush_delivers_every_queued_message() -> None:
    """await aflush() returns True once every message is delivered."""
    courier = FakeCourier()
    client = make_client(courier)

    async def main() -> bool:
        for n in range(50):
            client.track("E", {"n": n}, user_id=f"u{n % 5}")
        return await client.aflush(5)

    assert asyncio.run(main()) is True
    assert client.stats.delivered == 50
    assert balanced(client)
    client.shutdown()


def test_aflush_without_any_message_returns_at_once() -> None:
    """aflush on a client that never started its worker is True without waiting."""
    client = make_client(FakeCourier())
    assert asyncio.run(client.aflush(0)) is True
    client.shutdown()


def test_aflush_gives_up_by_its_timeout_while_the_loop_runs_on() -> None:
    """With a hung server aflush returns False on time, and other tasks run meanwhile."""
    courier = FakeCourier()
    courier.gate.clear()
    client = make_client(courier)

    async def main() -> tuple[bool, int]:
        client.track("E", user_id="u1")
        flushing = asyncio.ensure_future(client.aflush(0.3))
        ticks = await ticks_while(flushing, period=0.01)
        return flushing.result(), len(ticks)

    done, ticks = asyncio.run(main())
    assert done is False
    assert ticks >= 3  # a blocking flush would leave the ticker no turn at all
    assert client.stats.pending == 1
    courier.gate.set()
    client.shutdown(5)


def test_a_cancelled_aflush_leaves_no_waiter_behind() -> None:
    """Cancelling aflush (e.g. by asyncio.wait_for) removes its idle waiter from the worker."""
    courier = FakeCourier()
    courier.gate.clear()
    client = make_client(courier)

    async def main() -> None:
        client.track("E", user_id="u1")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.aflush(30), 0.05)

    asyncio.run(main())
    assert client._worker._idle_events == []
    courier.gate.set()
    client.shutdown(5)


def test_ashutdown_delivers_first_then_drops_later_calls() -> None:
    """await ashutdown() delivers what is queued; a later call is dropped and reported."""
    reports = Reports()
    client = make_client(FakeCourier(), on_error=reports)

    async def main() -> None:
        for n in range(20):
            client.track("E", user_id=f"u{n}")
        await client.ashutdown(5)
        client.track("late", user_id="u1")

    asyncio.run(main())
    assert (client.stats.delivered, client.stats.dropped) == (20, 1)
    assert len(reports.errors) == 1


def test_ashutdown_reports_what_it_could_not_deliver() -> None:
    """ashutdown(timeout) with a hung server fails the pending messages, reported."""
    reports = Reports()
    courier = FakeCourier()
    courier.gate.clear()
    client = make_client(courier, on_error=reports)

    async def main() -> None:
        for n in range(3):
            client.track("E", user_id=f"u{n}")
        await client.ashutdown(0.05)

    asyncio.run(main())
    courier.gate.set()
    assert client.stats.failed == 3
    assert all(isinstance(error, NotDeliveredError) for error in reports.errors)


def test_async_with_shuts_the_client_down_on_exit() -> None:
    """``async with Client(...)`` delivers everything and closes the client on exit."""
    courier = FakeCourier()

    async def main() -> Client:
        async with make_client(courier) as client:
            client.track("E", user_id="u1")
        return client

    client = asyncio.run(main())
    client.track("late", user_id="u1")
    assert (client.stats.delivered, client.stats.dropped) == (1, 1)


def test_module_level_aflush_and_ashutdown_use_the_default_client() -> None:
    """analytics.aflush() delivers the default client's queue; ashutdown() retires it."""
    courier = FakeCourier()
    analytics.configure(api_key="k", transport=courier)

    async def main() -> tuple[bool, int]:
        analytics.track("E", user_id="u1")
        done = await analytics.aflush(5)
        delivered = analytics.default_client().stats.delivered
        await analytics.ashutdown(5)
        return done, delivered

    assert asyncio.run(main()) == (True, 1)
    assert analytics.stats() is None  # the next call builds a new client


def test_module_level_aflush_before_any_call_is_true() -> None:
    """analytics.aflush() with no default client yet has nothing to wait for."""
    assert asyncio.run(analytics.aflush(0)) is True
    asyncio.run(analytics.ashutdown(0))


class GatedCourier(http.server.ThreadingHTTPServer):
    """Answers every request 202 on keep-alive connections, but only once `gate` is open."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _GatedHandler)
        self.gate = threading.Event()
        self.received = 0
        self.answered = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.gate.set()
        self.shutdown()
        self.server_close()


class _GatedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the head and body go out in two writes

    def do_POST(self) -> None:
        server: GatedCourier = self.server  # type: ignore[assignment]
        self.rfile.read(int(self.headers["Content-Length"]))
        with server.lock:
            server.received += 1
        server.gate.wait()
        body = b'{"messageId":""}'
        self.send_response(202)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with server.lock:
            server.answered += 1

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the suite's output is not the place for an access log."""


@pytest.fixture
def gated() -> Iterator[GatedCourier]:
    """A Courier on 127.0.0.1 that holds every answer until its gate is opened."""
    server = GatedCourier()
    yield server
    server.close()


async def track_from_handlers(client: Client, handlers: int = 100, calls: int = 10) -> None:
    """`handlers` tasks, as an app's concurrent requests, each tracking `calls` events."""

    async def handler(n: int) -> None:
        for i in range(calls):
            client.track("Order Completed", {"n": i}, user_id=f"user-{n}")
            await asyncio.sleep(0)

    await asyncio.gather(*(handler(n) for n in range(handlers)))


def test_tracking_from_async_handlers_never_waits_for_an_answer(gated: GatedCourier) -> None:
    """1,000 tracks from 100 handler tasks all return while Courier answers none of them.

    A track that sent on the caller's path, or waited for room that only an answer
    frees, would block the loop until the gate opens, which nothing here does; the
    loop runs on a thread of its own so that such a defect fails the join instead of
    hanging the suite.
    """
    client = Client(api_key=KEY, base_url=gated.url, max_in_flight=8)
    runner = threading.Thread(target=asyncio.run, args=(track_from_handlers(client),))
    runner.start()
    runner.join(60)
    returned = not runner.is_alive()
    answered = gated.answered
    gated.gate.set()
    try:
        assert returned, "track() blocked while Courier held its answers"
        assert answered == 0
        assert client.flush(60)
        assert client.stats.delivered == gated.answered == 1_000
    finally:
        client.shutdown(10)


def test_aflush_lets_the_loop_run_the_task_that_lets_delivery_finish(
    gated: GatedCourier,
) -> None:
    """aflush waits without holding the loop: a task that runs only meanwhile opens the gate.

    Delivery cannot end until another task on the same loop opens Courier's gate,
    so an aflush that blocked the loop could only return False at its timeout.
    """
    client = Client(api_key=KEY, base_url=gated.url, max_in_flight=8)

    async def main() -> tuple[bool, bool]:
        await track_from_handlers(client)
        flushing = asyncio.ensure_future(client.aflush(60))
        await asyncio.sleep(0)  # aflush's task runs up to its first await
        pending_when_opened = not flushing.done()
        gated.gate.set()
        return await flushing, pending_when_opened

    try:
        flushed, pending_when_opened = asyncio.run(main())
        assert pending_when_opened
        assert flushed is True
        assert client.stats.delivered == gated.answered == 1_000
    finally:
        client.shutdown(10)
