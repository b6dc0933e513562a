"""flush_report(): what became of the messages since the previous flush."""

from __future__ import annotations

import threading
from typing import Any

import httpx

import courier_analytics as analytics
from courier_analytics import Client, FlushReport

from .fakes import NO_WAIT, FakeCourier


def refuse(request: httpx.Request, body: dict[str, Any], attempt: int) -> httpx.Response:
    """Answer as Courier does to a wrong key."""
    return httpx.Response(401, json={"message": "Unauthorized"})


def test_refused_messages_leave_flush_true_but_the_report_not_ok() -> None:
    """After a 401 on every message, flush() is True (nothing pending), the report is not ok."""
    with Client(api_key="k", transport=FakeCourier(refuse), retry=NO_WAIT) as client:
        client.track("A", user_id="u1")
        client.track("B", user_id="u1")
        assert client.flush(10) is True
        client.track("C", user_id="u1")
        report = client.flush_report(10)
    assert report.done
    assert not report.ok
    assert (report.delivered, report.failed, report.dropped, report.pending) == (0, 1, 0, 0)


def test_report_counts_from_the_previous_flush() -> None:
    """Each report counts only what settled since the previous flush of the client."""
    with Client(api_key="k", transport=FakeCourier()) as client:
        client.track("A", user_id="u1")
        first = client.flush_report(10)
        client.track("B", user_id="u1")
        client.track("C", user_id="u1")
        second = client.flush_report(10)
    assert first == FlushReport(done=True, delivered=1, failed=0, dropped=0, pending=0)
    assert second == FlushReport(done=True, delivered=2, failed=0, dropped=0, pending=0)
    assert second.ok


def test_report_of_a_flush_that_timed_out() -> None:
    """A flush that times out reports done=False and what is still pending."""
    courier = FakeCourier()
    courier.gate.clear()  # hold every request
    client = Client(api_key="k", transport=courier)
    try:
        client.track("A", user_id="u1")
        report = client.flush_report(0.05)
        assert (report.done, report.ok, report.pending) == (False, False, 1)
    finally:
        courier.gate.set()
        client.shutdown(10)


def test_skipped_messages_do_not_spoil_the_report() -> None:
    """Messages not sent by design (page on route api) leave the report ok."""
    with Client(api_key="k", transport=FakeCourier()) as client:
        client.page("Home", user_id="u1")
        client.track("A", user_id="u1")
        report = client.flush_report(10)
    assert report.ok
    assert report.delivered == 1


def test_module_flush_report_before_any_call_reports_nothing() -> None:
    """courier_analytics.flush_report() with no default client yet is done and ok."""
    analytics.shutdown()
    report = analytics.flush_report(1)
    assert report == FlushReport(done=True, delivered=0, failed=0, dropped=0, pending=0)


def test_exit_wait_is_cut_by_a_timed_out_flush_until_a_new_message() -> None:
    """Exit waits what a timed-out flush left of flush_timeout; in full once more is made."""
    courier = FakeCourier()
    courier.gate.clear()  # hold every request
    client = Client(api_key="k", transport=courier, flush_timeout=1.0, exit_timeout=5.0)
    try:
        client.track("A", user_id="u1")
        assert client._exit_wait() == 5.0
        assert not client.flush(0.25)
        assert client._exit_wait() == 0.75
        assert not client.flush(0.25)  # the same messages: both waits count
        assert client._exit_wait() == 0.5
        client.track("B", user_id="u1")
        assert client._exit_wait() == 5.0
    finally:
        courier.gate.set()
        client.shutdown(10)


def test_exit_wait_is_found_by_a_signal_handler_that_interrupted_a_holder_of_the_lock() -> None:
    """The SIGTERM handler's exit wait never blocks on the client lock its own thread holds."""
    courier = FakeCourier()
    courier.gate.clear()  # hold every request
    client = Client(api_key="k", transport=courier, flush_timeout=1.0, exit_timeout=5.0)
    found: list[float] = []
    returned = threading.Event()

    def interrupted_holder() -> None:
        with client._lock:  # as a call counting a drop, when the handler runs on its thread
            found.append(client._exit_wait())
        returned.set()

    try:
        client.track("A", user_id="u1")
        assert not client.flush(0.25)
        threading.Thread(target=interrupted_holder, daemon=True).start()
        assert returned.wait(30)
        assert found == [5.0]  # cannot tell if more was made: the whole exit_timeout
    finally:
        courier.gate.set()
        client.shutdown(10)
