"""Ordering: identify before a user's later messages, tracks together, strict order on request."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import defaultdict
from typing import Any

import httpx
import orjson
import pytest

from courier_analytics import Client, ConfigurationError, NotDeliveredError, RetryPolicy

from .fakes import Reports

NO_WAIT = RetryPolicy(max_retries=3, initial_wait=0, max_wait=0, jitter=0)
SLOW_RETRY = RetryPolicy(max_retries=3, initial_wait=30, max_wait=30, jitter=0)


class Timeline(httpx.AsyncBaseTransport):
    """Answers 202 after a random number of loop turns; logs when each request came and went.

    ``events`` is one list of ``("sent" | "answered", user, message type, n)`` in the
    order they happened, so a test can check what was in flight together.
    ``fail_first`` names messageIds whose first attempt gets a 503.
    """

    def __init__(self, *, seed: int = 0, fail_first: frozenset[str] = frozenset()) -> None:
        self.events: list[tuple[str, str, str, int]] = []
        self.delivered = threading.Event()
        self.expected = -1
        self._random = random.Random(seed)
        self._fail_first = set(fail_first)
        self._lock = threading.Lock()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(await request.aread())
        what = (body["userId"], body["type"], body.get("properties", body.get("traits", {}))["n"])
        with self._lock:
            self.events.append(("sent", *what))
            failing = body["messageId"] in self._fail_first
            self._fail_first.discard(body["messageId"])
        for _ in range(self._random.randrange(30)):
            await asyncio.sleep(0)
        if failing:
            return httpx.Response(503, json={"message": "try later"})
        with self._lock:
            self.events.append(("answered", *what))
            if sum(e[0] == "answered" for e in self.events) == self.expected:
                self.delivered.set()
        return httpx.Response(202, json={"messageId": body["messageId"]})


def workload(client: Client, users: int = 12) -> None:
    """Per user: three tracks, an identify, three tracks, a group, two tracks (``n`` 0-9)."""
    for n in range(10):
        for user in range(users):
            uid = f"u{user}"
            if n == 3:
                client.identify(uid, {"n": n})
            elif n == 7:
                client.group("g1", {"n": n}, user_id=uid)
            else:
                client.track("E", {"n": n}, user_id=uid)


def per_user(events: list[tuple[str, str, str, int]]) -> dict[str, list[tuple[str, int]]]:
    timeline: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for kind, user, _, n in events:
        timeline[user].append((kind, n))
    return timeline


def peak_in_flight(steps: list[tuple[str, int]]) -> int:
    peak = now = 0
    for kind, _ in steps:
        now += 1 if kind == "sent" else -1
        peak = max(peak, now)
    return peak


def test_identify_waits_for_earlier_messages_and_holds_later_ones_under_overlap() -> None:
    """With tracks overlapping, each barrier goes alone: after all before it, before all after."""
    courier = Timeline()
    with Client(
        api_key="k", route="segment", transport=courier, retry=NO_WAIT, max_in_flight=64
    ) as client:
        workload(client)
        assert client.flush(30)
    for user, steps in per_user(courier.events).items():
        for barrier in (3, 7):
            sent = steps.index(("sent", barrier))
            answered = steps.index(("answered", barrier))
            before = {n for kind, n in steps[:sent] if kind == "answered"}
            after = {n for kind, n in steps[answered:] if kind == "sent"}
            assert before == set(range(barrier)), (user, barrier, steps)
            assert after == set(range(barrier + 1, 10)), (user, barrier, steps)


def test_one_users_tracks_are_in_flight_together_by_default() -> None:
    """ordering="identify": tracks of one user between barriers overlap."""
    courier = Timeline()
    with Client(
        api_key="k", route="segment", transport=courier, retry=NO_WAIT, max_in_flight=64
    ) as client:
        for n in range(40):
            client.track("E", {"n": n}, user_id="busy")
        assert client.flush(30)
    assert peak_in_flight(per_user(courier.events)["busy"]) > 1


def test_strict_ordering_keeps_every_users_full_order() -> None:
    """ordering="strict": one message per user in flight, sent in the order made."""
    courier = Timeline()
    options: dict[str, Any] = {"retry": NO_WAIT, "max_in_flight": 64}
    with Client(
        api_key="k", route="segment", transport=courier, ordering="strict", **options
    ) as client:
        workload(client)
        assert client.flush(30)
    timelines = per_user(courier.events)
    assert len(timelines) == 12
    for steps in timelines.values():
        assert peak_in_flight(steps) == 1
        assert [n for kind, n in steps if kind == "sent"] == list(range(10))


def test_a_track_waiting_to_retry_holds_back_nothing_else() -> None:
    """A track in backoff does not hold back its user's later tracks or identify."""
    reports = Reports()
    courier = Timeline(fail_first=frozenset({"first"}))
    client = Client(
        api_key="k", route="segment", transport=courier, retry=SLOW_RETRY, on_error=reports
    )
    counted = threading.Semaphore(0)  # released once the worker has counted a delivery
    client.on("delivered", lambda message: counted.release())
    courier.expected = 2
    client.track("E", {"n": 0}, user_id="u1", message_id="first")  # 503, retry in 30 s
    client.identify("u1", {"n": 1})
    client.track("E", {"n": 2}, user_id="u1")
    assert courier.delivered.wait(10)  # not 30 s: nothing waited for the retry
    assert counted.acquire(timeout=10)
    assert counted.acquire(timeout=10)
    assert [(k, n) for k, _, _, n in courier.events if k == "answered"] == [
        ("answered", 1),
        ("answered", 2),
    ]
    assert client.stats.pending == 1
    client.shutdown(0.1)
    assert [(type(e), m.message_id) for e, m in reports.calls] == [(NotDeliveredError, "first")]


def test_an_identify_waiting_to_retry_holds_back_its_users_later_messages() -> None:
    """An identify in backoff keeps its user's later track waiting; other users go on."""
    courier = Timeline(fail_first=frozenset({"ident"}))
    client = Client(api_key="k", route="segment", transport=courier, retry=SLOW_RETRY)
    courier.expected = 1
    client.identify("u1", {"n": 0}, message_id="ident")  # 503, retry in 30 s
    client.track("E", {"n": 1}, user_id="u1")
    client.track("E", {"n": 2}, user_id="u2")
    assert courier.delivered.wait(10)
    assert client.flush(0.3) is False  # still waiting: the identify's retry is 30 s away
    assert [(k, u, n) for k, u, _, n in courier.events] == [
        ("sent", "u1", 0),
        ("sent", "u2", 2),
        ("answered", "u2", 2),
    ] or [(k, u, n) for k, u, _, n in courier.events] == [
        ("sent", "u2", 2),
        ("sent", "u1", 0),
        ("answered", "u2", 2),
    ]
    client.shutdown(0.1)


@pytest.mark.parametrize("value", ["loose", "", None, 1])
def test_ordering_must_be_identify_or_strict(value: Any) -> None:
    """Any other ordering is refused at construction, naming the option."""
    with pytest.raises(ConfigurationError, match="ordering"):
        Client(api_key="k", ordering=value)
