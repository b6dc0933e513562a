"""flush() and aflush() wait for the calls made before them, and no longer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from courier_analytics import Client

from .fakes import FakeCourier, make_client


class _Noticed(list):  # type: ignore[type-arg]
    """The worker's list of flush waiters, telling when one is added."""

    def __init__(self, items: list[Any], added: threading.Event) -> None:
        super().__init__(items)
        self.added = added

    def append(self, item: Any) -> None:
        super().append(item)
        self.added.set()


def _late_call_during_drained(flush: Callable[[Client], bool]) -> dict[str, Any]:
    """A call and `flush` on another thread, made while the "drained" handlers run.

    The late call's message is held by the server until the end: a flush that
    returns True meanwhile returned early.
    """
    courier = FakeCourier()
    client = make_client(courier)
    worker = client._worker
    seen: dict[str, Any] = {}
    registered = threading.Event()

    def late_caller() -> None:
        client.track("Late", user_id="u2")
        seen["flushed"] = flush(client)
        seen["pending"] = client.stats.pending

    def on_drained() -> None:
        if "thread" in seen:
            return
        courier.gate.clear()  # the late message cannot be answered yet
        worker._idle_events = _Noticed(worker._idle_events, registered)
        seen["thread"] = thread = threading.Thread(target=late_caller)
        thread.start()
        registered.wait(10)  # the late caller's flush is waiting now

    client.on("drained", on_drained)
    client.track("First", user_id="u1")
    try:
        assert client.flush(10)
        seen["thread"].join(30)
    finally:
        courier.gate.set()
        client.shutdown(10)
    return seen


def test_flush_after_a_call_made_while_drained_handlers_run_waits_for_that_call() -> None:
    """A flush() begun after its call, as "drained" handlers run, is not released early."""
    seen = _late_call_during_drained(lambda client: client.flush(timeout=0.5))
    assert (seen["flushed"], seen["pending"]) == (False, 1)


def test_aflush_after_a_call_made_while_drained_handlers_run_waits_for_that_call() -> None:
    """aflush() waits the same way for a call made as "drained" handlers run."""
    seen = _late_call_during_drained(lambda client: asyncio.run(client.aflush(timeout=0.5)))
    assert (seen["flushed"], seen["pending"]) == (False, 1)


def test_flush_with_no_time_on_an_idle_client_says_nothing_is_pending() -> None:
    """flush(0) returns True at once when nothing is queued or in flight."""
    client = make_client(FakeCourier())
    try:
        client.track("Order Completed", user_id="u1")
        assert client.flush(10)
        assert [client.flush(0) for _ in range(20)] == [True] * 20
    finally:
        client.shutdown(10)


def test_flush_with_no_time_with_a_message_in_flight_says_false() -> None:
    """flush(0) returns False while a message is still being delivered."""
    courier = FakeCourier()
    client = make_client(courier)
    try:
        courier.gate.clear()
        client.track("Order Completed", user_id="u1")
        assert client.flush(0) is False
    finally:
        courier.gate.set()
        client.shutdown(10)
