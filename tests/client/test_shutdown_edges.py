"""Edges of the worker: shutdown reports every message once; a retry waiting for room gets it."""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import httpx

from courier_analytics import NotDeliveredError
from courier_analytics._messages import Message
from courier_analytics._retry import Outcome

from .fakes import Answer, FakeCourier, Reports, accept, make_client


def test_a_message_released_just_as_the_worker_stops_is_reported() -> None:
    """A message handed to a delivery task in the worker's last round is reported, not lost."""
    courier = FakeCourier()
    courier.gate.clear()  # nothing is answered
    reports = Reports()
    client = make_client(courier, on_error=reports)
    worker = client._worker
    drain = worker._drain

    def drain_then_stop() -> None:
        drain()
        if worker.held:
            worker._stopping = True  # as `stop()` from another thread, right now

    worker._drain = drain_then_stop  # type: ignore[method-assign]
    client.track("E", user_id="u1")
    thread = worker._thread
    assert thread is not None
    thread.join(30)
    courier.gate.set()
    assert [type(error) for error in reports.errors] == [NotDeliveredError]
    assert client.stats.unaccounted == 0
    client.shutdown(5)


def test_a_retryable_answer_while_the_worker_ends_is_reported_not_retried() -> None:
    """A retryable answer that comes while the worker is ending is reported, with no retry task."""
    reports = Reports()
    client = make_client(FakeCourier(), on_error=reports)
    client.track("First", user_id="u1")
    assert client.flush(30)
    worker = client._worker
    message = Message("track", "m-1", "u1", None, "E", b'{"type":"track"}')
    settled: Future[tuple[bool, int]] = Future()

    def settle_while_ending() -> None:  # on the worker's loop, as a callback answer would
        worker._ending = True
        assert worker._lanes is not None
        worker._lanes.add(message)  # released, as a message in flight is
        worker._ready.pop()
        retrying = worker._settle(message, Outcome(503, retry=True), time.monotonic())
        settled.set_result((retrying, len(worker._retrying)))

    worker._call_soon(settle_while_ending)
    assert settled.result(30) == (False, 0)
    assert [(type(error), m.event) for error, m in reports.calls] == [(NotDeliveredError, "E")]
    client.shutdown(5)


def test_a_retry_waiting_for_room_goes_before_later_first_attempts() -> None:
    """At the max_in_flight ceiling a retry takes the next free place before new messages."""

    def first_fails(request: httpx.Request, body: dict[str, Any], attempt: int) -> Answer:
        if body.get("userId") == "a" and attempt == 1:
            return httpx.Response(503)
        return accept(request, body, attempt)

    courier = FakeCourier(first_fails)
    courier.gate.clear()  # the first request waits until every message is queued
    client = make_client(courier, max_in_flight=1)
    client.track("E", user_id="a")
    for n in range(30):
        client.track("E", user_id=f"b{n}")
    courier.gate.set()
    assert client.flush(30)
    users = [body["userId"] for body in courier.bodies]
    assert users.index("a", 1) <= 3  # its retry, right after a request or two
    assert client.stats.unaccounted == 0
    client.shutdown(5)
