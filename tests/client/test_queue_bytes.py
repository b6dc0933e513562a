"""`max_queue_bytes`: what the client holds for undelivered messages is bounded in bytes.

The client talks to a real socket server on 127.0.0.1 (the native sender) that
answers every request 503, reading and discarding its body as it comes, so the
server's threads keep no copy. Memory is measured with tracemalloc once every
message is waiting to retry (the retry waits an hour: nothing moves meanwhile), so
no figure depends on the machine's speed.
"""

from __future__ import annotations

import socketserver
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from courier_analytics import Client, ConfigurationError, QueueFullError, RetryPolicy
from courier_analytics._options import DEFAULT_MAX_QUEUE_BYTES

from .fakes import serving

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
