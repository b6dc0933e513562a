"""Threads for blocking work: a synchronous transport starts them as requests need them (#16)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from courier_analytics import Client
from courier_analytics._routes import Request
from courier_analytics._threads import BlockingRunner
from courier_analytics._transport import SYNC_THREADS, make_sender

from .fakes import NO_WAIT

HTTP_THREAD = "courier-analytics-http"


class GatedSyncTransport(httpx.BaseTransport):
    """A synchronous transport whose requests wait for ``gate`` and are counted meanwhile."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.waiting = 0
        self.peak = 0
        self._changed = threading.Condition()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._changed:
            self.waiting += 1
            self.peak = max(self.peak, self.waiting)
            self._changed.notify_all()
        self.gate.wait(60)
        with self._changed:
            self.waiting -= 1
        return httpx.Response(202, json={"messageId": "m"})

    def wait_for(self, count: int) -> bool:
        """Wait (up to a generous minute) until ``count`` requests wait at the gate."""
        with self._changed:
            return self._changed.wait_for(lambda: self.waiting >= count, timeout=60)


def http_threads() -> set[threading.Thread]:
    """The threads that run synchronous transports now."""
    return {thread for thread in threading.enumerate() if thread.name == HTTP_THREAD}


@pytest.fixture
def transport() -> Iterator[GatedSyncTransport]:
    """A gated synchronous transport; the gate opens at the end in any case."""
    transport = GatedSyncTransport()
    yield transport
    transport.gate.set()


def test_one_request_at_a_time_uses_one_thread(transport: GatedSyncTransport) -> None:
    """One user's 50 messages (one request at a time) run on a single thread, not 128."""
    transport.gate.set()
    before = http_threads()
    client = Client(api_key="k", transport=transport, retry=NO_WAIT, ordering="strict")
    for n in range(50):
        client.track("E", {"n": n}, user_id="u1")
    assert client.flush(60)
    assert len(http_threads() - before) == 1
    assert client.stats.delivered == 50
    client.shutdown()


def test_a_thread_starts_for_each_request_that_waits(transport: GatedSyncTransport) -> None:
    """Five requests waiting at once run on five threads."""
    before = http_threads()
    client = Client(api_key="k", transport=transport, retry=NO_WAIT)
    for n in range(5):
        client.track("E", user_id=f"u{n}")
    assert transport.wait_for(5)
    assert len(http_threads() - before) == 5
    transport.gate.set()
    assert client.flush(60)
    client.shutdown()


def test_threads_are_capped_well_below_max_in_flight(transport: GatedSyncTransport) -> None:
    """With 100 requests waiting at once and 128 allowed in flight, 32 threads run them."""
    before = http_threads()
    # The sender, not a client: a client's worker starts with 16 in flight and grows
    # only as answers come, and here none come until the gate opens.
    sender = make_sender("http://127.0.0.1:1", "k", timeout=60, max_connections=128,
                         transport=transport)  # fmt: skip

    async def scenario() -> tuple[bool, int, list[int]]:
        sends = [
            asyncio.ensure_future(sender.send(Request("/inbound/segment", b"{}")))
            for _ in range(100)
        ]
        reached = await asyncio.to_thread(transport.wait_for, SYNC_THREADS)
        threads = len(http_threads() - before)
        transport.gate.set()
        answers = await asyncio.gather(*sends)
        await sender.aclose()
        return reached, threads, [answer.status for answer in answers]

    reached, threads, statuses = asyncio.run(scenario())
    assert reached
    assert threads == SYNC_THREADS == 32
    assert transport.peak == SYNC_THREADS
    assert statuses == [202] * 100


def test_idle_threads_end_but_the_last_one() -> None:
    """After a burst, threads idle for idle_timeout end, one stays, and it still works."""
    release = threading.Event()

    async def scenario() -> int:
        runner = BlockingRunner(8, "test-runner", idle_timeout=0.01)
        burst = [runner.run(lambda: release.wait(60)) for _ in range(4)]
        assert runner.threads == 4
        release.set()
        await asyncio.gather(*burst)
        deadline = asyncio.get_running_loop().time() + 60
        while runner.threads > 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)  # polling a condition, with a generous deadline
        assert runner.threads == 1
        result = await runner.run(lambda: 42)
        runner.close()
        return result

    assert asyncio.run(scenario()) == 42


def test_calls_wait_for_a_running_thread_when_none_can_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At interpreter exit no thread can start: calls then run, in turn, on the running one."""

    async def scenario() -> list[int]:
        runner = BlockingRunner(8, "test-runner")

        def refuse(self: threading.Thread) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

        monkeypatch.setattr(threading.Thread, "start", refuse)
        results = await asyncio.gather(*(runner.run(lambda n=n: n) for n in range(5)))
        assert runner.threads == 1
        runner.close()
        return list(results)

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_a_call_given_up_before_a_thread_takes_it_never_runs() -> None:
    """A queued call whose caller stopped waiting (a deadline) is not sent late."""
    release, ran = threading.Event(), []

    async def scenario() -> None:
        runner = BlockingRunner(1, "test-runner")
        busy = runner.run(lambda: release.wait(60))
        late = runner.run(lambda: ran.append("late"))
        late.cancel()
        release.set()
        await busy
        assert await runner.run(lambda: 42) == 42  # the thread went on, in order
        runner.close()

    asyncio.run(scenario())
    assert ran == []
