"""`max_queue_bytes`: what the client holds for undelivered messages is bounded in bytes.

The client talks to a real socket server on 127.0.0.1 (the native sender) that
answers every request 503, reading and discarding its body as it comes, so the
server's threads keep no copy. Memory is measured with tracemalloc once every
message is waiting to retry (the retry waits an hour: nothing moves meanwhile), so
no figure depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import socketserver
import threading
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from courier_analytics import Client, ConfigurationError, QueueFullError, RetryPolicy
from courier_analytics._options import DEFAULT_MAX_QUEUE_BYTES
from courier_analytics._worker import WIRE_COPIES

from .fakes import FakeCourier, message_id_of, serving

BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}"
SIZE = 200_000  # bytes of properties per message
#: One retry, an hour after the first attempt: a message stays waiting to retry.
AN_HOUR = RetryPolicy(max_retries=1, initial_wait=3600, max_wait=3600, max_time=None)


class BusyCourier(socketserver.ThreadingTCPServer):
    """Answers every request 503; reads each body in pieces and keeps none of it."""

    request_queue_size = 256
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Busy)

    @property
    def base_url(self) -> str:
        """Where the server listens."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Busy(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            while True:
                length = -1
                while (line := self.rfile.readline(65536)) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length < 0:
                    return
                while length:
                    length -= len(self.rfile.read(min(length, 65536)))
                self.wfile.write(BUSY)
        except OSError:  # the client closed the connection
            pass


@pytest.fixture
def busy() -> Iterator[BusyCourier]:
    """A local Courier that answers 503 to everything."""
    server = BusyCourier()
    with serving(server):
        yield server


class Errors(list[BaseException]):
    """An on_error handler that keeps the errors, not the messages (they would weigh)."""

    def __call__(self, error: BaseException, message: object) -> None:
        self.append(error)


class Waiting:
    """Counts "retry" events; `wait(n)` returns once `n` messages wait to retry."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def __call__(self, exc: BaseException, message: object, attempt: int) -> None:
        with self.changed:
            self.count += 1
            self.changed.notify_all()

    def wait(self, count: int) -> bool:
        """Whether `count` messages came to wait to retry (within a minute)."""
        with self.changed:
            return self.changed.wait_for(lambda: self.count >= count, timeout=60)


def waiting_client(server: BusyCourier, **options: Any) -> tuple[Client, Errors, Waiting]:
    """A client whose messages wait an hour to retry, its reports and its retries."""
    reports, waiting = Errors(), Waiting()
    client = Client(
        api_key="sk_test_bounds",
        base_url=server.base_url,
        retry=AN_HOUR,
        on_error=reports,
        flush_at_exit=False,
        **options,
    )
    client.on("retry", waiting)
    return client, reports, waiting


def stop(client: Client) -> None:
    """Shut down without flushing (messages wait an hour) and wait for the worker's end."""
    thread = client._worker._thread
    client.shutdown(timeout=0)
    if thread is not None:
        thread.join()


def test_a_message_waiting_to_retry_keeps_one_copy_of_its_body(busy: BusyCourier) -> None:
    """Twenty 200 KB messages waiting to retry hold about their own bytes, not twice them."""
    count, blob = 20, "x" * SIZE
    client, _, waiting = waiting_client(busy)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for user in range(count):
            client.track("Big", {"blob": blob}, user_id=f"u{user}")
        assert waiting.wait(count)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        stop(client)
    assert count * SIZE <= held < 1.3 * count * SIZE


def test_held_bytes_count_every_message_waiting_to_retry_once(busy: BusyCourier) -> None:
    """The worker's held bytes are the messages' kept bytes, and nothing once it ends."""
    count = 10
    client, _, waiting = waiting_client(busy)
    try:
        for user in range(count):
            client.track("Big", {"blob": "y" * SIZE}, user_id=f"u{user}")
        assert waiting.wait(count)
        worker = client._worker
        assert worker.held == count
        assert count * SIZE < worker.held_bytes < count * (SIZE + 200)
    finally:
        stop(client)
    assert client._worker.held_bytes == 0


def test_messages_beyond_max_queue_bytes_are_dropped_and_reported(busy: BusyCourier) -> None:
    """Past the byte bound new messages are dropped, counted and passed to on_error."""
    bound = 1_000_000  # room for four 200 KB messages, not five
    client, reports, waiting = waiting_client(busy, max_queue_bytes=bound, max_message_bytes=bound)
    try:
        for user in range(10):
            client.track("Big", {"blob": "z" * SIZE}, user_id=f"u{user}")
        # Fewer than four fit while a request's body in flight counts too
        dropped = client.stats.dropped
        assert 6 <= dropped < 10
        assert waiting.wait(10 - dropped)
        assert client._worker.held_bytes <= bound
    finally:
        stop(client)
    refused = [error for error in reports if isinstance(error, QueueFullError)]
    assert len(refused) == dropped
    assert f"{bound} bytes" in str(refused[0])


def making_peak(blob: str) -> int:
    """Bytes that making one message of `blob` allocates at its peak (orjson's buffer)."""
    probe = Client(send=False)
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    probe.track("Big", {"blob": blob}, user_id="probe")
    return tracemalloc.get_traced_memory()[1] - before


def test_the_byte_bound_caps_memory_while_courier_is_down(busy: BusyCourier) -> None:
    """Offered eight times the bound while Courier fails, the client's peak stays near it."""
    bound, blob = 2_000_000, "w" * SIZE
    client, _, waiting = waiting_client(busy, max_queue_bytes=bound, max_message_bytes=bound)
    tracemalloc.start()
    try:
        making = making_peak(blob)
        client.track("Small", user_id="warm-up")  # the worker starts: its own cost, once
        assert waiting.wait(1)
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        for user in range(80):
            client.track("Big", {"blob": blob}, user_id=f"u{user}")
        assert waiting.wait(1 + 80 - client.stats.dropped)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
        stop(client)
    assert client.stats.dropped >= 80 - 9
    # Past the bound: a message being made (and dropped) and one request going out
    # alone (its body, the request as written, what the socket has not taken yet);
    # unbounded, the 80 messages would hold 16 MB
    assert peak < bound + making + 3 * SIZE


def test_max_queue_bytes_below_max_message_bytes_is_refused() -> None:
    """A bound that the largest message accepted could never fit in is a configuration error."""
    with pytest.raises(ConfigurationError, match="max_queue_bytes"):
        Client(send=False, max_queue_bytes=1_000_000)


def test_max_queue_bytes_is_a_module_setting() -> None:
    """The module setting exists with the client's default."""
    import courier_analytics

    assert courier_analytics.max_queue_bytes == DEFAULT_MAX_QUEUE_BYTES


def test_the_segment_drop_in_takes_max_queue_bytes_in_courier_options() -> None:
    """Segment has no such option: the drop-in passes it through courier_options."""
    from courier_analytics.segment import Client as SegmentClient

    client = SegmentClient("k", send=False, courier_options={"max_queue_bytes": 7_000_000})
    try:
        assert client._engine is not None
        assert client._engine._options.max_queue_bytes == 7_000_000
    finally:
        client.shutdown()


class HoldingRetries(httpx.AsyncBaseTransport):
    """Answers each first attempt 503 and holds each retry until two more are in flight
    beside it, one waits for room, or every message left is held here: the peak of
    held bytes while retries are sent."""

    def __init__(self) -> None:
        self.worker: Any = None
        self.seen: Counter[str] = Counter()
        self.retrying = 0
        self.peak = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(await request.aread())
        key = message_id_of(request, body)
        self.seen[key] += 1
        if self.seen[key] == 1:
            return httpx.Response(503)
        self.retrying += 1
        self.peak = max(self.peak, self.worker.held_bytes)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60  # only should the test fail: never a hang
        worker = self.worker
        while self.retrying < 3 and not worker._engine._ready and worker.held > self.retrying:
            if loop.time() > give_up:
                break
            await asyncio.sleep(0.001)
        self.retrying -= 1
        return httpx.Response(202, json={"messageId": key})


def test_retries_sent_together_stay_within_the_byte_bound() -> None:
    """Retries due at once wait for room in bytes as first attempts do: one goes past the bound."""
    bound, count = 1_500_000, 5  # all queued and one first attempt fit: 1.4 MB
    courier = HoldingRetries()
    soon = RetryPolicy(max_retries=1, initial_wait=0.05, max_wait=0.05, max_time=None)
    client = Client(
        api_key="sk_test_bounds",
        transport=courier,
        retry=soon,
        max_queue_bytes=bound,
        max_message_bytes=bound,
        flush_at_exit=False,
    )
    courier.worker = client._worker
    try:
        for user in range(count):
            client.track("Big", {"blob": "r" * SIZE}, user_id=f"u{user}")
        assert client.flush(timeout=120)
        assert client.stats.delivered == count
    finally:
        client.shutdown(timeout=0)
    one_request = WIRE_COPIES * (SIZE + 1000)
    assert 0 < courier.peak <= bound + one_request


def test_a_first_attempt_goes_as_soon_as_a_retry_gives_back_its_place() -> None:
    """A retry that fails again and backs off lets the next first attempt go at once."""
    third = threading.Event()

    def rule(request: httpx.Request, body: dict[str, Any], attempt: int) -> httpx.Response:
        if body["userId"] == "u3":
            third.set()
        if body["userId"] != "u1":
            return httpx.Response(202, json={})
        if attempt == 1:
            return httpx.Response(503)
        return httpx.Response(503, headers={"Retry-After": "600"})  # backs off 10 minutes

    courier = FakeCourier(rule)
    client = Client(
        api_key="sk_test_bounds",
        transport=courier,
        retry=RetryPolicy(max_retries=2, initial_wait=0, max_wait=0, max_time=None),
        max_in_flight=1,
        flush_interval=3600,  # no periodic wake-up sends it
        flush_at_exit=False,
    )
    try:
        for user in ("u1", "u2", "u3"):
            client.track("Signed Up", {"n": int(user[1])}, user_id=user)
        assert third.wait(timeout=60)
    finally:
        client.shutdown(timeout=0)
