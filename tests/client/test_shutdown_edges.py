"""Edges of the worker: shutdown reports every message once; a retry waiting for room gets it."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from courier_analytics import Client, NotDeliveredError, RetryPolicy
from courier_analytics._worker import State

from .fakes import Answer, FakeCourier, Reports, accept, make_client


def test_a_message_released_just_as_the_worker_stops_is_reported() -> None:
    """A message handed to a delivery task in the worker's last round is reported, not lost."""
    courier = FakeCourier()
    courier.gate.clear()  # nothing is answered
    reports = Reports()
    client = make_client(courier, on_error=reports)
    worker = client._worker
    engine = worker._engine
    drain = engine.drain

    def drain_then_stop() -> None:
        drain()
        if worker.held:
            worker._state = State.STOPPING  # as `stop()` from another thread, right now

    engine.drain = drain_then_stop  # type: ignore[method-assign]
    client.track("E", user_id="u1")
    thread = worker._thread
    assert thread is not None
    thread.join(30)
    courier.gate.set()
    assert [type(error) for error in reports.errors] == [NotDeliveredError]
    assert client.stats.unaccounted == 0
    client.shutdown(5)


def test_a_request_unanswered_when_the_worker_stops_is_reported_once_not_retried() -> None:
    """A request in flight at shutdown is reported as not delivered, and not retried."""
    courier = FakeCourier(lambda request, body, attempt: httpx.Response(503))
    courier.gate.clear()  # nothing is answered until the worker has ended
    reports = Reports()
    client = make_client(courier, on_error=reports)
    client.track("E", user_id="u1")
    client.shutdown(0.05)
    courier.gate.set()
    stats = client.stats
    assert (stats.failed, stats.retried, stats.unaccounted) == (1, 0, 0)
    assert [type(error) for error in reports.errors] == [NotDeliveredError]


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


def courier_down(reports: Reports, *, retry_wait: float, messages: int) -> Client:
    """A client whose Courier refuses every connection, holding `messages` tracks that retry."""
    courier = FakeCourier(lambda request, body, attempt: httpx.ConnectError("refused"))
    policy = RetryPolicy(
        max_retries=1_000_000, initial_wait=retry_wait, max_wait=retry_wait, max_time=None
    )
    client = make_client(courier, on_error=reports, retry=policy)
    for n in range(messages):
        client.track("E", user_id=f"u{n % 100}")
    return client


def test_shutdown_returns_only_after_reporting_everything_it_could_not_deliver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """shutdown() returns with every undelivered message reported and summed up in one line."""
    reports = Reports()
    client = courier_down(reports, retry_wait=30, messages=10_000)
    with caplog.at_level(logging.INFO, logger="courier_analytics"):
        client.shutdown(0.1)
    stats = client.stats
    assert (stats.unaccounted, stats.pending, stats.failed) == (0, 0, 10_000)
    assert len(reports.calls) == 10_000
    assert {type(error) for error in reports.errors} == {NotDeliveredError}
    summaries = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(summaries) == 1
    assert "10000 message(s)" in summaries[0].getMessage()


def test_shutdown_ends_retries_whose_cancellation_was_lost() -> None:
    """Messages retrying every millisecond are all reported by the time shutdown returns."""
    reports = Reports()
    client = courier_down(reports, retry_wait=0.001, messages=200)
    client.shutdown(0.2)
    assert len(reports.calls) == 200
    assert (client.stats.pending, client.stats.unaccounted) == (0, 0)
