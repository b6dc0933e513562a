"""Delivery: retries, ordering, failures, overflow, flush and shutdown."""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import socket
import ssl
import subprocess
import threading
from collections import defaultdict
from typing import Any

import httpx
import pytest

from courier_analytics import (
    AuthenticationError,
    Client,
    ClientClosedError,
    ConfigurationError,
    DeliveryError,
    NotDeliveredError,
    QueueFullError,
    RejectedError,
    RetriesExhaustedError,
    RetryPolicy,
)
from courier_analytics._messages import Message
from courier_analytics._worker import WorkerUnavailable

from .fakes import NO_WAIT, FakeCourier, Reports, accept, balanced, make_client, message_id_of


def status(code: int, **headers: str) -> httpx.Response:
    """A Courier answer with this status and an error body."""
    return httpx.Response(code, json={"message": f"status {code}"}, headers=headers)


def test_flush_delivers_every_queued_message() -> None:
    """flush() returns True once every queued message has been delivered."""
    courier = FakeCourier()
    with make_client(courier) as client:
        ids = [client.track("E", {"n": n}, user_id=f"u{n % 7}") for n in range(200)]
        assert client.flush(10)
        assert client.stats.delivered == 200
        assert balanced(client)
    assert sorted(b["messageId"] for b in courier.bodies) == sorted(ids)


def test_shutdown_delivers_pending_messages_first() -> None:
    """shutdown() delivers what is queued before stopping the worker."""
    courier = FakeCourier()
    client = make_client(courier)
    for n in range(50):
        client.track("E", user_id=f"u{n}")
    client.shutdown(10)
    assert len(courier.requests) == 50
    assert client.stats.pending == 0


def test_per_user_order_is_kept_with_many_requests_in_flight() -> None:
    """strict: each user's messages arrive in the order made, requests run concurrently."""
    courier = FakeCourier(shuffle=True)
    with make_client(courier, max_in_flight=16, ordering="strict") as client:
        for n in range(40):
            for user in range(10):
                client.track("Step", {"n": n}, user_id=f"user-{user}")
        assert client.flush(20)
    seen: dict[str, list[int]] = defaultdict(list)
    for body in courier.bodies:
        seen[body["userId"]].append(body["properties"]["n"])
    assert courier.peak_in_flight > 1
    assert all(steps == list(range(40)) for steps in seen.values())
    assert len(seen) == 10


def test_identify_lands_before_the_track_that_follows_it() -> None:
    """An identify and a track for one user are never reordered."""
    courier = FakeCourier(shuffle=True)
    # Route segment: its bodies name the message type, which is what is checked.
    with make_client(courier, max_in_flight=8, route="segment") as client:
        for user in range(30):
            client.identify(f"u{user}", {"email": f"{user}@example.com"})
            client.track("Welcome", user_id=f"u{user}")
        assert client.flush(10)
    types: dict[str, list[str]] = defaultdict(list)
    for body in courier.bodies:
        types[body["userId"]].append(body["type"])
    assert len(courier.bodies) == 60
    assert types == {f"u{user}": ["identify", "track"] for user in range(30)}


def test_retries_resend_the_same_message_id_and_body() -> None:
    """A 503 is retried with the same messageId and body until it is accepted."""

    def flaky(request: httpx.Request, body: dict[str, Any], attempt: int) -> httpx.Response:
        return status(503) if attempt < 3 else accept(request, body, attempt)

    courier = FakeCourier(flaky)
    with make_client(courier) as client:
        client.track("E", {"a": 1}, user_id="u1")
        client.flush(5)
        stats = client.stats
    assert len({r.content for r in courier.requests}) == 1
    assert len(courier.requests) == 3
    assert (stats.delivered, stats.retried, stats.failed) == (1, 2, 0)


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried(code: int) -> None:
    """408, 429 and 5xx are retried."""

    def once(request: httpx.Request, body: dict[str, Any], attempt: int) -> httpx.Response:
        return status(code) if attempt == 1 else accept(request, body, attempt)

    courier = FakeCourier(once)
    with make_client(courier) as client:
        client.track("E", user_id="u1")
        client.flush(5)
        assert client.stats.delivered == 1
    assert len(courier.requests) == 2


def test_network_errors_are_retried() -> None:
    """A dropped connection is retried like a 5xx."""

    def drops(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        if attempt == 1:
            return httpx.RemoteProtocolError("server disconnected", request=request)
        return accept(request, body, attempt)

    courier = FakeCourier(drops)
    with make_client(courier) as client:
        client.track("E", user_id="u1")
        client.flush(5)
        assert client.stats.delivered == 1


def test_exhausted_retries_are_reported_with_the_cause() -> None:
    """When retries run out, on_error gets RetriesExhaustedError chained to the network error."""
    reports = Reports()

    def refused(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        return httpx.ConnectError("connection refused", request=request)

    courier = FakeCourier(refused)
    with make_client(courier, on_error=reports) as client:
        mid = client.track("E", user_id="u1")
        client.flush(5)
        assert (client.stats.failed, client.stats.retried) == (1, 3)
        assert balanced(client)
    (error, message), = reports.calls  # fmt: skip
    assert isinstance(error, RetriesExhaustedError)
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert (error.message_id, error.attempts, message.message_id) == (mid, 4, mid)


def test_a_rejected_message_fails_alone_without_retry() -> None:
    """A 400 for one message goes to on_error once; the others are delivered."""
    reports = Reports()

    def picky(request: httpx.Request, body: dict[str, Any], attempt: int) -> httpx.Response:
        return status(400) if body["properties"].get("bad") else accept(request, body, attempt)

    courier = FakeCourier(picky)
    with make_client(courier, on_error=reports) as client:
        for n in range(10):
            client.track("E", {"bad": n == 4}, user_id="u1")
        client.flush(5)
        assert (client.stats.delivered, client.stats.failed) == (9, 1)
    assert len(courier.requests) == 10
    (error,) = reports.errors
    assert isinstance(error, RejectedError)
    assert error.status == 400
    assert "status 400" in str(error)  # Courier's own message is kept


def test_unauthorized_is_logged_once_and_every_message_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 401 is not retried, is logged as an error once, and each message reaches on_error."""
    reports = Reports()
    courier = FakeCourier(lambda request, body, attempt: status(401))
    client = make_client(courier, on_error=reports)
    with caplog.at_level(logging.WARNING, "courier_analytics"), client:
        for n in range(20):
            client.track("E", user_id=f"u{n}")
        client.flush(5)
    assert len(courier.requests) == 20
    assert len(reports.errors) == 20
    assert all(isinstance(e, AuthenticationError) for e in reports.errors)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "API key" in errors[0].getMessage()


def test_conflict_on_api_route_counts_as_delivered() -> None:
    """On route api a 409 means Courier already has the messageId: delivered, not failed."""
    reports = Reports()
    courier = FakeCourier(lambda request, body, attempt: status(409))
    with make_client(courier, route="api", on_error=reports) as client:
        client.track("E", user_id="u1")
        client.flush(5)
        assert (client.stats.delivered, client.stats.failed) == (1, 0)
    assert reports.calls == []


def test_conflict_after_a_lost_answer_is_delivered_once() -> None:
    """A timeout whose request was applied, then 409 on the retry: one delivery, no error."""

    def applied_then_lost(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        if attempt == 1:
            return httpx.ReadTimeout("no answer", request=request)
        return status(409)

    courier = FakeCourier(applied_then_lost)
    with make_client(courier, route="api") as client:
        client.track("E", user_id="u1")
        client.flush(5)
        assert (client.stats.delivered, client.stats.retried) == (1, 1)


def test_conflict_on_segment_route_is_a_failure() -> None:
    """On route segment a 409 is not an answer Courier gives for success: reported."""
    reports = Reports()
    courier = FakeCourier(lambda request, body, attempt: status(409))
    with make_client(courier, on_error=reports, route="segment") as client:
        client.track("E", user_id="u1")
        client.flush(5)
    assert isinstance(reports.errors[0], RejectedError)


def test_full_queue_drops_new_messages_and_reports_them(caplog: pytest.LogCaptureFixture) -> None:
    """Past max_queue_size new messages are dropped, counted, logged once and reported."""
    reports = Reports()
    courier = FakeCourier()
    courier.gate.clear()
    with caplog.at_level(logging.WARNING, "courier_analytics"):
        client = make_client(courier, max_queue_size=2, max_in_flight=1, on_error=reports)
        kept = [client.track("E", {"n": n}, user_id="u1") for n in range(2)]
        dropped = [client.track("E", {"n": n}, user_id="u1") for n in range(2, 5)]
    assert client.stats.dropped == 3
    assert [m.message_id for m in (m for _, m in reports.calls)] == dropped
    assert all(isinstance(e, QueueFullError) for e in reports.errors)
    assert len([r for r in caplog.records if "queue is full" in r.getMessage()]) == 1
    courier.gate.set()
    assert client.flush(5)
    assert [b["messageId"] for b in courier.bodies] == kept
    assert balanced(client)
    client.shutdown()


def test_queue_accepts_messages_again_once_drained() -> None:
    """After a burst of drops, the client queues again when there is room."""
    courier = FakeCourier()
    courier.gate.clear()
    with make_client(courier, max_queue_size=1, max_in_flight=1) as client:
        client.track("E", user_id="u1")
        client.track("E", user_id="u1")
        courier.gate.set()
        client.flush(5)
        client.track("E", user_id="u1")
        client.flush(5)
        assert (client.stats.delivered, client.stats.dropped) == (2, 1)


def test_flush_returns_false_by_its_deadline_when_the_server_hangs() -> None:
    """flush(timeout) gives up on time while a request hangs, reporting pending work."""
    courier = FakeCourier()
    courier.gate.clear()
    client = make_client(courier)
    client.track("E", user_id="u1")
    assert client.flush(0.05) is False
    assert client.stats.pending == 1
    courier.gate.set()
    client.shutdown(5)


def test_shutdown_reports_what_it_could_not_deliver() -> None:
    """shutdown(timeout) with a hung server fails the pending messages as NotDeliveredError."""
    reports = Reports()
    courier = FakeCourier()
    courier.gate.clear()
    client = make_client(courier, on_error=reports, max_in_flight=2)
    for n in range(5):
        client.track("E", user_id=f"u{n}")
    client.shutdown(0.05)
    courier.gate.set()
    assert client.stats.failed == 5
    assert balanced(client)
    assert all(isinstance(e, NotDeliveredError) for e in reports.errors)


def test_calls_after_shutdown_are_dropped_and_reported() -> None:
    """A call on a shut-down client does not raise: it is dropped and reported."""
    reports = Reports()
    client = make_client(FakeCourier(), on_error=reports)
    client.shutdown()
    client.track("E", user_id="u1")
    assert client.stats.dropped == 1
    assert isinstance(reports.errors[0], ClientClosedError)


def test_worker_survives_a_transport_bug() -> None:
    """An unexpected exception for one message fails only that message."""
    reports = Reports()

    def buggy(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        if body["properties"]["n"] == 0:
            return RuntimeError("bug in a custom transport")
        return accept(request, body, attempt)

    with make_client(FakeCourier(buggy), on_error=reports) as client:
        for n in range(3):
            client.track("E", {"n": n}, user_id="u1")
        client.flush(5)
        assert (client.stats.delivered, client.stats.failed) == (2, 1)
    assert type(reports.errors[0]) is DeliveryError
    assert isinstance(reports.errors[0].__cause__, RuntimeError)


def test_a_failing_on_error_handler_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in on_error is logged and the worker goes on."""

    def broken(error: BaseException, message: Any) -> None:
        raise ValueError("handler bug")

    courier = FakeCourier(lambda request, body, attempt: status(400))
    with make_client(courier, on_error=broken) as client:
        client.track("E", user_id="u1")
        client.track("E", user_id="u2")
        client.flush(5)
        assert client.stats.failed == 2
    assert any("on_error raised ValueError" in r.getMessage() for r in caplog.records)


def test_sync_mode_delivers_before_the_call_returns() -> None:
    """With sync_mode the request is made before track() returns."""
    courier = FakeCourier()
    with make_client(courier, sync_mode=True) as client:
        mid = client.track("E", user_id="u1")
        assert [
            message_id_of(r, b) for r, b in zip(courier.requests, courier.bodies, strict=True)
        ] == [mid]
        assert client.stats.delivered == 1


def test_send_false_validates_and_counts_but_sends_nothing() -> None:
    """send=False makes and counts messages as skipped without a request."""
    courier = FakeCourier()
    with make_client(courier, send=False) as client:
        client.identify("u1", {"a": 1})
        client.track("E", user_id="u1")
        assert client.stats.skipped == 2
    assert courier.requests == []


def test_skipped_types_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """A skipped page is counted and leaves a debug log line."""
    client = make_client(FakeCourier())
    with caplog.at_level(logging.DEBUG, "courier_analytics"), client:
        mid = client.page("Home", user_id="u1")
        assert client.stats.skipped == 1
    assert any("skipped page " + mid in r.getMessage() for r in caplog.records)


def flush_while_progressing(client: Client, stall: float = 60.0) -> bool:
    """Flush for as long as delivery moves on; False once nothing moved for ``stall`` s.

    A test about loss and order must not fail on a slow or busy machine: only a
    worker that stopped making progress fails it.
    """
    done = -1
    while not client.flush(stall):
        now = client.stats.delivered + client.stats.failed
        if now == done:
            return False
        done = now
    return True


def test_many_threads_lose_nothing_and_keep_order() -> None:
    """32 producer threads x 2,000 calls, strict: all delivered, each user in order."""
    courier = FakeCourier(shuffle=True)
    client = make_client(courier, max_queue_size=100_000, ordering="strict")

    def produce(thread: int) -> None:
        for n in range(2000):
            client.track("E", {"n": n}, user_id=f"t{thread}")

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert flush_while_progressing(client), "delivery made no progress for 60 s"
    seen: dict[str, list[int]] = defaultdict(list)
    for body in courier.bodies:
        seen[body["userId"]].append(body["properties"]["n"])
    assert client.stats.delivered == 64_000
    assert all(v == list(range(2000)) for v in seen.values())
    client.shutdown()


def test_concurrent_first_calls_in_sync_mode_start_one_worker() -> None:
    """Threads racing to make a sync-mode client's first call start a single worker."""
    courier = FakeCourier()
    client = make_client(courier, sync_mode=True)
    start = threading.Barrier(8)

    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "courier-analytics-worker"}

    # Threads, not a count: an earlier test's worker may still be ending (shutdown()
    # returns once it has reported, not once its thread is gone) and vanish meanwhile.
    before = workers()

    def call(n: int) -> None:
        start.wait()
        client.track("E", user_id=f"u{n}")

    threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(workers() - before) == 1
    assert client.stats.delivered == 8
    client.shutdown()


def test_worker_put_keeps_its_bound_when_threads_race_without_the_client_lock() -> None:
    """Worker.put is safe by itself: racing threads never queue more than max_queue_size."""
    courier = FakeCourier()
    courier.gate.clear()  # nothing finishes: every accepted message stays pending
    client = make_client(courier, max_queue_size=50, route="segment")  # sends the body as is
    message = Message("track", "m-1", "u1", None, "E", b"{}")
    accepted: list[bool] = []
    start = threading.Barrier(8)

    def put_many() -> None:
        start.wait()
        accepted.extend(client._worker.put(message) for _ in range(200))

    threads = [threading.Thread(target=put_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert accepted.count(True) == 50
    assert client._worker.pending == 50
    courier.gate.set()
    assert client.flush(30)
    client.shutdown(5)


def test_a_closed_worker_takes_nothing() -> None:
    """After close() put refuses, naming the shutdown, and nothing is queued."""
    client = make_client(FakeCourier())
    client._worker.close()
    with pytest.raises(WorkerUnavailable, match="shut down"):
        client._worker.put(Message("track", "m-1", "u1", None, "E", b"{}"))
    assert client._worker.pending == 0


def test_a_worker_that_cannot_start_drops_and_reports_without_raising(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If no thread can start (as at interpreter shutdown on 3.12+), the call reports a drop."""
    reports = Reports()
    client = make_client(FakeCourier(), on_error=reports)

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    client.track("E", user_id="u1")
    monkeypatch.undo()
    assert (client.stats.dropped, client.stats.pending) == (1, 0)
    assert isinstance(reports.errors[0], ClientClosedError)
    assert "no worker thread could start" in str(reports.errors[0])
    client.track("E", user_id="u1")  # threads can start again: delivery resumes
    assert client.flush(5)
    assert client.stats.delivered == 1
    client.shutdown()


def test_a_worker_that_fails_to_start_reports_every_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken environment (no CA file) fails the queued messages loudly; none stay pending."""
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    reports = Reports()
    client = Client(api_key="k", base_url="https://127.0.0.1:9", on_error=reports)
    for n in range(3):
        client.track("E", user_id=f"u{n}")
    assert client.flush(5)
    assert (client.stats.failed, client.stats.pending, client.stats.unaccounted) == (3, 0, 0)
    assert all(isinstance(e, NotDeliveredError) for e in reports.errors)
    assert "the worker failed" in str(reports.errors[0])
    client.shutdown()


def test_sync_mode_message_still_in_flight_at_shutdown_is_reported() -> None:
    """A sync-mode call that outlives its wait is failed and reported by shutdown, not lost."""
    reports = Reports()
    courier = FakeCourier()
    courier.gate.clear()
    client = make_client(courier, sync_mode=True, flush_timeout=0.05, on_error=reports)
    client.track("E", user_id="u1")  # returns after flush_timeout, still in flight
    client.shutdown(0.05)
    courier.gate.set()
    assert (client.stats.failed, client.stats.pending, client.stats.unaccounted) == (1, 0, 0)
    assert isinstance(reports.errors[0], NotDeliveredError)


def test_sync_mode_keeps_per_user_order_after_a_timed_out_call() -> None:
    """A sync-mode call that timed out still goes before the same user's next message."""
    courier = FakeCourier()
    courier.gate.clear()
    client = make_client(courier, sync_mode=True, flush_timeout=0.05)
    client.track("E", {"n": 1}, user_id="u1")  # times out waiting, stays queued first
    courier.gate.set()
    client.track("E", {"n": 2}, user_id="u1")
    assert client.flush(5)
    assert [b["properties"]["n"] for b in courier.bodies] == [1, 2]
    client.shutdown()


def test_flush_from_on_error_does_not_stall_delivery() -> None:
    """flush() called inside on_error returns at once instead of blocking the worker."""
    client: Client

    def flushing(error: BaseException, message: Any) -> None:
        client.flush()

    courier = FakeCourier(lambda request, body, attempt: status(400))
    client = make_client(courier, on_error=flushing, flush_timeout=30)
    client.track("E", user_id="u1")
    client.track("E", user_id="u2")
    assert client.flush(5)  # would be False if on_error's flush blocked for 30 s
    assert client.stats.failed == 2
    client.shutdown()


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_in_flight", 4.0), ("max_queue_size", True), ("retry", {"max_retries": 3}),
     ("transport", object())],
)  # fmt: skip
def test_options_of_the_wrong_type_are_refused_when_the_client_is_made(
    option: str, value: object
) -> None:
    """Wrong option types raise ConfigurationError at construction, not in the worker later."""
    with pytest.raises(ConfigurationError, match=option):
        Client(api_key="k", **{option: value})  # type: ignore[arg-type]


def test_a_message_in_backoff_holds_back_only_its_own_user() -> None:
    """While one user's message waits to retry, other users' messages use the free slot."""
    others_done = threading.Event()
    delivered_b: list[int] = []

    def rule(request: httpx.Request, body: dict[str, Any], attempt: int) -> httpx.Response:
        if body["userId"] == "a":
            return status(503)
        delivered_b.append(body["properties"]["n"])
        return accept(request, body, attempt)

    def counted(message: Any) -> None:  # after the worker counted it delivered
        if message.user_id == "b" and client.stats.delivered == 5:
            others_done.set()

    reports = Reports()
    slow_retry = RetryPolicy(max_retries=3, initial_wait=30, max_wait=30, jitter=0)
    client = make_client(
        FakeCourier(rule), max_in_flight=1, retry=slow_retry, on_error=reports, ordering="strict"
    )
    client.on("delivered", counted)
    client.track("E", {"n": 0}, user_id="a")  # fails, then waits 30 s to retry
    client.track("E", {"n": 1}, user_id="a")  # held back behind it, in order
    for n in range(5):
        client.track("E", {"n": n}, user_id="b")
    assert others_done.wait(25)  # before the 30 s backoff ends: the slot was free for b
    assert delivered_b == [0, 1, 2, 3, 4]
    assert (client.stats.delivered, client.stats.failed) == (5, 0)
    client.shutdown(0.1)
    assert [(type(e), m.user_id) for e, m in reports.calls] == [(NotDeliveredError, "a")] * 2
    assert client.stats.failed == 2
    assert client.stats.unaccounted == 0


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Signal(logging.Handler):
    """A log handler that sets an event on the first record containing `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


def test_unreachable_courier_is_reported_with_what_where_and_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listening: each report says connection refused, host:port, attempts; no key."""
    port = free_port()
    reports = Reports()
    policy = RetryPolicy(max_retries=2, initial_wait=0, max_wait=0, max_time=None)
    url = f"http://127.0.0.1:{port}"
    client = Client(api_key="sk-secret-123", base_url=url, retry=policy, on_error=reports)
    with caplog.at_level(logging.WARNING, logger="courier_analytics"):
        for n in range(3):
            client.track("E", user_id=f"u{n}")
        assert client.flush(30)
        client.shutdown(5)
    assert [type(e) for e in reports.errors] == [RetriesExhaustedError] * 3
    text = str(reports.errors[0])
    assert f"after 3 attempt(s): connection refused by 127.0.0.1:{port}" in text
    first_failure = [r for r in caplog.records if "retrying with backoff" in r.getMessage()]
    assert len(first_failure) == 1  # once per outage, not once per message
    assert f"connection refused by 127.0.0.1:{port}" in first_failure[0].getMessage()
    everything = caplog.text + "".join(str(e) for e in reports.errors)
    assert "sk-secret-123" not in everything


def test_shutdown_during_backoff_reports_the_last_failure() -> None:
    """A message still retrying at shutdown says how often it was tried and what it met."""
    port = free_port()
    reports = Reports()
    signal = Signal("retrying with backoff")
    logging.getLogger("courier_analytics").addHandler(signal)
    slow = RetryPolicy(max_retries=3, initial_wait=30, max_wait=30, jitter=0)
    client = Client(api_key="k", base_url=f"http://127.0.0.1:{port}", retry=slow, on_error=reports)
    try:
        client.track("E", user_id="u1")
        assert signal.seen.wait(30)  # the first attempt failed; the retry waits 30 s
        client.shutdown(0.5)
    finally:
        logging.getLogger("courier_analytics").removeHandler(signal)
    [error] = reports.errors
    assert isinstance(error, NotDeliveredError)
    assert error.attempts == 1
    assert str(error).endswith(
        f"after 1 attempt(s); the last: connection refused by 127.0.0.1:{port} "
        "(is anything listening there?)"
    )


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate and key for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    command = shlex.split("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1")
    subprocess.run([*command, "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


class TlsServer:
    """Accepts TLS connections on 127.0.0.1 with a certificate nobody trusts; counts them."""

    def __init__(self, cert: str, key: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            with conn, contextlib.suppress(OSError):
                self.context.wrap_socket(conn, server_side=True).close()

    def close(self) -> None:
        # close() alone leaves a thread blocked in accept() asleep on Linux;
        # shutdown() wakes it at once (EINVAL), so the join does not wait.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the TLS server's thread did not end"


def test_a_certificate_that_does_not_verify_fails_at_once(
    self_signed: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """No retry for a failing certificate: one attempt each, reported, one ERROR per client."""
    server = TlsServer(*self_signed)
    reports = Reports()
    url = f"https://127.0.0.1:{server.port}"
    try:
        with caplog.at_level(logging.WARNING, logger="courier_analytics"):
            client = Client(api_key="k", base_url=url, retry=NO_WAIT, on_error=reports)
            for n in range(3):
                client.track("E", user_id=f"u{n}")
            assert client.flush(30)
            assert (client.stats.failed, client.stats.retried) == (3, 0)
            client.shutdown(5)
    finally:
        server.close()
    assert server.connections == 3
    assert all(type(e) is DeliveryError and e.attempts == 1 for e in reports.errors)
    assert f"the TLS certificate of 127.0.0.1:{server.port} did not verify" in str(
        reports.errors[0]
    )
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "did not verify" in errors[0].getMessage()
