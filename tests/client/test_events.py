"""Events: client.on(name, handler) and analytics.on, as analytics-node's emitter."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import httpx
import pytest

import courier_analytics as analytics
from courier_analytics import (
    ClientClosedError,
    DeliveryError,
    MessageView,
    PluginError,
    QueueFullError,
    RejectedError,
)
from courier_analytics.testing import capture

from .fakes import FakeCourier, Reports, make_client


class Calls:
    """A handler that keeps its arguments and the thread it ran on."""

    def __init__(self) -> None:
        self.args: list[tuple[Any, ...]] = []
        self.threads: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> None:
        with self._lock:
            self.args.append(args)
            self.threads.append(threading.get_ident())


def answer(status: int) -> Any:
    return lambda request, body, attempt: httpx.Response(status)


def test_delivered_gets_a_view_of_each_delivered_message() -> None:
    """ "delivered"(message) fires once per delivery, on the worker thread, with a MessageView."""
    delivered = Calls()
    client = make_client(FakeCourier())
    client.on("delivered", delivered)
    message_id = client.track("Order Completed", {"total": 42}, user_id="u1", anonymous_id="a1")
    assert client.flush(5)
    [(view,)] = delivered.args
    assert view == MessageView("track", message_id, "u1", "a1", "Order Completed")
    assert delivered.threads[0] != threading.get_ident()
    client.shutdown()


def test_the_message_view_is_read_only_and_holds_no_payload() -> None:
    """A MessageView cannot be changed and carries neither the properties nor the key."""
    delivered = Calls()
    client = make_client(FakeCourier(), api_key="sk_secret_key_123")
    client.on("delivered", delivered)
    client.identify("u1", {"email": "private@example.com"})
    assert client.flush(5)
    [(view,)] = delivered.args
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.user_id = "u2"
    assert not hasattr(view, "body")
    assert not hasattr(view, "to_dict")
    assert "private@example.com" not in repr(view)
    assert "sk_secret_key_123" not in repr(view)
    client.shutdown()


def test_error_fires_in_the_same_cases_as_on_error() -> None:
    """ "error"(exc, message) gets what on_error gets: here a 400 refusal."""
    errors, reports = Calls(), Reports()
    client = make_client(FakeCourier(answer(400)), on_error=reports)
    client.on("error", errors)
    message_id = client.track("E", user_id="u1")
    assert client.flush(5)
    [(exc, view)] = errors.args
    assert isinstance(exc, RejectedError)
    assert exc is reports.errors[0]
    assert view.message_id == message_id
    client.shutdown()


def test_retry_fires_before_each_retry_with_the_attempt_number() -> None:
    """Two 503s then 202: "retry"(exc, message, attempt) for attempts 1 and 2, then delivered."""
    retries, delivered = Calls(), Calls()

    def flaky(request: httpx.Request, body: dict[str, Any], attempt: int) -> httpx.Response:
        return httpx.Response(503 if attempt < 3 else 202)

    client = make_client(FakeCourier(flaky))
    client.on("retry", retries)
    client.on("delivered", delivered)
    message_id = client.track("E", user_id="u1")
    assert client.flush(5)
    assert [attempt for _, _, attempt in retries.args] == [1, 2]
    for exc, view, _ in retries.args:
        assert isinstance(exc, DeliveryError)
        assert exc.status == 503
        assert view.message_id == message_id
    assert len(delivered.args) == 1
    client.shutdown()


def test_retry_after_a_network_error_carries_it_as_the_cause() -> None:
    """A retry after a connection error: the exception's cause is the httpx error."""
    retries = Calls()
    refused = httpx.ConnectError("refused")

    def once(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        return refused if attempt == 1 else httpx.Response(202)

    client = make_client(FakeCourier(once))
    client.on("retry", retries)
    client.track("E", user_id="u1")
    assert client.flush(5)
    [(exc, _, attempt)] = retries.args
    assert attempt == 1
    assert exc.__cause__ is refused
    assert "ConnectError" in str(exc)
    client.shutdown()


def test_dropped_and_error_fire_in_the_callers_thread_when_the_queue_is_full() -> None:
    """A full queue: "dropped"(QueueFullError, message) and "error" fire at the call."""
    dropped, errors = Calls(), Calls()
    courier = FakeCourier()
    courier.gate.clear()
    client = make_client(courier, max_queue_size=1, max_in_flight=1)
    client.on("dropped", dropped)
    client.on("error", errors)
    client.track("Kept", user_id="u1")
    message_id = client.track("Dropped", user_id="u1")
    [(exc, view)] = dropped.args
    assert isinstance(exc, QueueFullError)
    assert view.message_id == message_id
    assert dropped.threads == [threading.get_ident()]
    assert errors.args == dropped.args
    courier.gate.set()
    assert client.flush(5)
    client.shutdown()


def test_call_after_close_fires_for_calls_after_shutdown() -> None:
    """After shutdown(): "call_after_close"(message), then "dropped" with ClientClosedError."""
    after, dropped = Calls(), Calls()
    client = make_client(FakeCourier())
    client.on("call_after_close", after)
    client.on("dropped", dropped)
    client.track("Before", user_id="u1")
    client.shutdown()
    message_id = client.track("After", user_id="u1")
    [(view,)] = after.args
    assert view.message_id == message_id
    assert view.event == "After"
    [(exc, _)] = dropped.args
    assert isinstance(exc, ClientClosedError)


def test_call_after_close_does_not_fire_for_a_full_queue() -> None:
    """A drop for a full queue on an open client is not a call after close."""
    after = Calls()
    courier = FakeCourier()
    courier.gate.clear()
    client = make_client(courier, max_queue_size=1, max_in_flight=1)
    client.on("call_after_close", after)
    client.track("Kept", user_id="u1")
    client.track("Dropped", user_id="u1")
    assert after.args == []
    courier.gate.set()
    client.shutdown()


def test_drained_fires_when_nothing_is_left_queued_or_in_flight() -> None:
    """ "drained"() fires after the last message is done, before flush() returns."""
    pending_when_drained: list[int] = []
    client = make_client(FakeCourier())
    client.on("drained", lambda: pending_when_drained.append(client.stats.pending))
    for n in range(20):
        client.track("E", {"n": n}, user_id=f"u{n % 3}")
    assert client.flush(5)
    assert pending_when_drained
    assert set(pending_when_drained) == {0}
    count = len(pending_when_drained)
    assert client.flush(5)  # nothing new: no new "drained"
    assert len(pending_when_drained) == count
    client.shutdown()


def test_a_cancelled_message_fires_error_with_the_plugin_error() -> None:
    """A before plugin that raises: "error"(PluginError, message) in the caller's thread."""
    errors = Calls()
    client = make_client(FakeCourier())
    client.add_source_middleware(lambda m: 1 / 0)
    client.on("error", errors)
    client.track("E", user_id="u1")
    [(exc, view)] = errors.args
    assert isinstance(exc, PluginError)
    assert view.event == "E"
    client.shutdown()


def test_unsubscribe_stops_the_handler_and_is_harmless_twice() -> None:
    """The function on() returns unsubscribes that handler only; calling it again does nothing."""
    first, second = Calls(), Calls()
    client = make_client(FakeCourier())
    unsubscribe = client.on("delivered", first)
    client.on("delivered", second)
    unsubscribe()
    unsubscribe()
    client.track("E", user_id="u1")
    assert client.flush(5)
    assert (len(first.args), len(second.args)) == (0, 1)
    client.shutdown()


def test_one_handler_subscribed_twice_runs_twice_until_each_unsubscribes() -> None:
    """Each on() is its own subscription, even for the same function."""
    calls = Calls()
    client = make_client(FakeCourier())
    unsubscribe = client.on("delivered", calls)
    client.on("delivered", calls)
    client.track("E", user_id="u1")
    assert client.flush(5)
    unsubscribe()
    client.track("E", user_id="u1")
    assert client.flush(5)
    assert len(calls.args) == 3
    client.shutdown()


def test_a_raising_handler_is_logged_once_and_never_breaks_delivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler that raises: delivery goes on, other handlers run, one warning then DEBUG."""
    others = Calls()

    def broken(view: MessageView) -> None:
        raise RuntimeError("handler bug")

    client = make_client(FakeCourier())
    client.on("delivered", broken)
    client.on("delivered", others)
    with caplog.at_level(logging.DEBUG, "courier_analytics"):
        for _ in range(3):
            client.track("E", user_id="u1")
        assert client.flush(5)
    assert client.stats.delivered == 3
    assert len(others.args) == 3
    records = [r for r in caplog.records if "event handler raised" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    client.shutdown()


def test_each_new_raising_handler_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler subscribed after another raised and was dropped gets its own WARNING."""
    client = make_client(FakeCourier())
    with caplog.at_level(logging.DEBUG, "courier_analytics"):
        for _ in range(5):  # each a new function, where the last one was freed

            def broken(view: MessageView) -> None:
                raise RuntimeError("handler bug")

            unsubscribe = client.on("delivered", broken)
            client.track("E", user_id="u1")
            assert client.flush(5)
            unsubscribe()
            del broken
    records = [r for r in caplog.records if "event handler raised" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING] * 5
    client.shutdown()


def test_on_refuses_an_unknown_event_listing_the_known_ones() -> None:
    """on("deliverd", ...) is a ValueError naming the events."""
    client = make_client(FakeCourier())
    with pytest.raises(ValueError, match=r"unknown event 'deliverd'.*delivered\(message\)"):
        client.on("deliverd", print)  # type: ignore[arg-type]
    client.shutdown()


def test_on_refuses_a_handler_that_is_not_callable() -> None:
    """on("delivered", None) is a TypeError."""
    client = make_client(FakeCourier())
    with pytest.raises(TypeError, match="handler must be callable"):
        client.on("delivered", None)  # type: ignore[arg-type]
    client.shutdown()


def test_module_level_on_survives_a_rebuild_of_the_default_client() -> None:
    """analytics.on subscribes to the default client, across a settings change."""
    delivered = Calls()
    unsubscribe = analytics.on("delivered", delivered)
    try:
        analytics.configure(api_key="first", transport=FakeCourier())
        analytics.track("E", user_id="u1")
        assert analytics.flush(5)
        analytics.api_key = "second"
        analytics.track("E", user_id="u1")
        assert analytics.flush(5)
        assert len(delivered.args) == 2
    finally:
        unsubscribe()


def test_handlers_on_one_client_do_not_hear_another() -> None:
    """Events are per client: another Client's deliveries do not reach this handler."""
    calls = Calls()
    one, other = make_client(FakeCourier()), make_client(FakeCourier())
    one.on("delivered", calls)
    other.track("E", user_id="u1")
    assert other.flush(5)
    assert calls.args == []
    one.shutdown()
    other.shutdown()


def test_captured_messages_fire_no_delivery_events() -> None:
    """Under testing.capture nothing is delivered, so "delivered" does not fire."""
    calls = Calls()
    client = make_client(FakeCourier())
    client.on("delivered", calls)
    with capture():
        client.track("E", user_id="u1")
    assert client.flush(5)
    assert calls.args == []
    client.shutdown()
