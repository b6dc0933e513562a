"""From a made message to the queue: each call's outcome, and set-up done once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import courier_analytics as analytics
from courier_analytics import (
    Client,
    ClientClosedError,
    ConfigurationError,
    NotDeliveredError,
    PluginError,
    QueueFullError,
    RejectedError,
    RetriesExhaustedError,
    _client,
)
from courier_analytics._client import Outcome, dispatch, make_message
from courier_analytics._messages import Message, MessageFactory
from courier_analytics._worker import Worker

from .fakes import FakeCourier, Reports, make_client


def _track(client: Client, user_id: str = "u") -> Message:
    """A track message made with the client's own factory."""
    return make_message(client, lambda f: f.track("E", {}, user_id=user_id, anonymous_id=None))


def test_dispatch_says_a_queued_message_was_accepted() -> None:
    """A message the worker took is accepted, under its own id."""
    with make_client(FakeCourier()) as client:
        message = _track(client)
        assert dispatch(client, message) == Outcome(message.message_id, "accepted")
        assert client.flush(10)
    assert client.stats.delivered == 1


def test_dispatch_says_why_a_message_was_skipped() -> None:
    """send=False and a type the route does not deliver are skipped, each with its reason."""
    quiet = Client(api_key="k", send=False)
    assert dispatch(quiet, _track(quiet)).why == "send=False"
    with make_client(FakeCourier()) as client:
        page = make_message(client, lambda f: f.view("page", "Home", None, category=None,
                            user_id="u", anonymous_id=None, context=None, timestamp=None,
                            message_id=None, integrations=None))  # fmt: skip
        outcome = dispatch(client, page)
    assert (outcome.state, outcome.why) == ("skipped", "route 'api' does not deliver it")
    assert outcome.ok


def test_dispatch_says_a_message_was_dropped_when_the_queue_is_full() -> None:
    """A message over max_queue_size is dropped: not ok, with the error on_error got."""
    courier = FakeCourier()
    courier.gate.clear()  # the first message stays in delivery
    reports = Reports()
    with make_client(courier, max_queue_size=1, on_error=reports) as client:
        assert dispatch(client, _track(client)).ok
        outcome = dispatch(client, _track(client))
        courier.gate.set()
    assert outcome.state == "dropped"
    assert not outcome.ok
    assert isinstance(outcome.why, QueueFullError)
    assert reports.errors == [outcome.why]


def test_dispatch_says_a_message_was_dropped_after_shutdown() -> None:
    """A message made for a client that shut down is dropped with ClientClosedError."""
    client = make_client(FakeCourier())
    message = _track(client)
    client.shutdown()
    outcome = dispatch(client, message)
    assert outcome.state == "dropped"
    assert isinstance(outcome.why, ClientClosedError)


def test_dispatch_says_a_message_a_plugin_cancelled_failed() -> None:
    """A before plugin that raises cancels the message: failed, with the PluginError."""

    class Refuser:
        name = "refuser"
        type = "before"

        def track(self, message: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("no")

    with make_client(FakeCourier()) as client:
        client.register(Refuser())
        outcome = dispatch(client, _track(client))
    assert outcome.state == "failed"
    assert isinstance(outcome.why, PluginError)


def test_dispatch_in_sync_mode_says_a_refused_message_failed() -> None:
    """Sync mode: a message Courier refuses comes back failed, with the error reported."""
    courier = FakeCourier(lambda request, body, attempt: httpx.Response(400))
    with make_client(courier, sync_mode=True) as client:
        refused = dispatch(client, _track(client))
        courier.rule = lambda request, body, attempt: httpx.Response(202)
        delivered = dispatch(client, _track(client))
    assert refused.state == "failed"
    assert isinstance(refused.why, RejectedError)
    assert delivered.state == "accepted"
    assert not client._worker._engine.done  # no call left waiting


def test_a_plain_call_and_a_general_one_make_the_same_message() -> None:
    """The factory's plain way (compact) and its general way agree byte for byte."""
    factory = MessageFactory()
    plain = factory.track("E", {"a": 1}, user_id="u", anonymous_id=None)
    general = factory.track(
        "E", {"a": 1}, user_id="u", anonymous_id=None, message_id=plain.message_id,
        timestamp=None, context={},
    )  # fmt: skip
    assert plain._mid is None
    assert general._mid is None
    assert plain.to_dict() | {"timestamp": 0} == general.to_dict() | {"timestamp": 0}


def _count_workers(monkeypatch: pytest.MonkeyPatch) -> list[Worker]:
    """The workers clients make from now on, in order."""
    workers: list[Worker] = []

    def counted(**kwargs: Any) -> Worker:
        workers.append(Worker(**kwargs))
        return workers[-1]

    monkeypatch.setattr(_client, "Worker", counted)
    return workers


def test_the_default_client_is_built_once_with_its_plugins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The settings module builds its client once: one worker, the shared plugins given."""
    workers = _count_workers(monkeypatch)
    seen: list[str] = []

    def middleware(message: dict[str, Any]) -> dict[str, Any]:
        seen.append(message["event"])
        return message

    analytics.add_source_middleware(middleware)
    analytics.configure(api_key="k", send=False)
    analytics.track("E", user_id="u")
    client = analytics.default_client()
    assert workers == [client._worker]
    assert seen == ["E"]


def test_the_stand_in_of_invalid_settings_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Invalid settings: the stand-in that drops calls is built once too, and says why."""
    workers = _count_workers(monkeypatch)
    analytics.region = "asia"  # type: ignore[assignment]
    analytics.api_key = "k"
    analytics.track("E", user_id="u")
    assert len(workers) == 1
    with pytest.raises(ConfigurationError, match="region"):
        analytics.default_client()


# -- sync mode: the call's wait carries what became of its message


class Arrivals(FakeCourier):
    """A fake Courier whose `arrived` semaphore is released as each request arrives."""

    def __init__(self, rule: Any = None) -> None:
        super().__init__(rule or (lambda request, body, attempt: httpx.Response(202)))
        self.arrived = threading.Semaphore(0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.arrived.release()
        return await super().handle_async_request(request)


def _meanwhile(call: Callable[[], Outcome]) -> Callable[[], Outcome]:
    """Run `call` on a thread of its own; the returned function joins it and gives its result."""
    results: list[Outcome] = []
    thread = threading.Thread(target=lambda: results.append(call()), daemon=True)
    thread.start()

    def result() -> Outcome:
        thread.join(30)
        assert not thread.is_alive(), "the sync-mode call is still waiting"
        return results[0]

    return result


def test_sync_mode_a_delivered_message_is_accepted() -> None:
    """A sync-mode call whose message Courier accepted returns accepted, nothing reported."""
    reports = Reports()
    with make_client(FakeCourier(), sync_mode=True, on_error=reports) as client:
        message = _track(client)
        assert dispatch(client, message) == Outcome(message.message_id, "accepted")
        assert client.stats.delivered == 1
    assert reports.calls == []


def test_sync_mode_a_message_out_of_retries_returns_the_error_on_error_got() -> None:
    """Retries run out: the call returns failed with the very error on_error got, once."""
    reports = Reports()
    courier = FakeCourier(lambda request, body, attempt: httpx.Response(503))
    with make_client(courier, sync_mode=True, on_error=reports) as client:
        outcome = dispatch(client, _track(client))
    assert outcome.state == "failed"
    assert isinstance(outcome.why, RetriesExhaustedError)
    assert reports.errors == [outcome.why]


def test_sync_mode_a_message_in_flight_at_shutdown_returns_not_delivered() -> None:
    """Shut down while a sync-mode call waits: it returns failed as on_error is told, once."""
    reports = Reports()
    courier = Arrivals()
    courier.gate.clear()
    client = make_client(courier, sync_mode=True, on_error=reports)
    result = _meanwhile(lambda: dispatch(client, _track(client)))
    assert courier.arrived.acquire(timeout=30)
    client.shutdown(0.05)
    courier.gate.set()
    outcome = result()
    assert outcome.state == "failed"
    assert isinstance(outcome.why, NotDeliveredError)
    assert reports.errors == [outcome.why]


def test_sync_mode_a_call_after_shutdown_is_dropped() -> None:
    """A sync-mode call on a shut-down client returns dropped, with the error reported once."""
    reports = Reports()
    client = make_client(FakeCourier(), sync_mode=True, on_error=reports)
    client.shutdown()
    outcome = dispatch(client, _track(client))
    assert outcome.state == "dropped"
    assert isinstance(outcome.why, ClientClosedError)
    assert reports.errors == [outcome.why]


def test_sync_mode_a_call_over_a_full_queue_is_dropped() -> None:
    """A sync-mode call that finds the queue full returns dropped; the waiting one delivers."""
    reports = Reports()
    courier = Arrivals()
    courier.gate.clear()
    with make_client(courier, sync_mode=True, max_queue_size=1, on_error=reports) as client:
        first = _meanwhile(lambda: dispatch(client, _track(client, "u1")))
        assert courier.arrived.acquire(timeout=30)
        outcome = dispatch(client, _track(client, "u2"))
        courier.gate.set()
        assert first().state == "accepted"
    assert outcome.state == "dropped"
    assert isinstance(outcome.why, QueueFullError)
    assert reports.errors == [outcome.why]


def test_sync_mode_a_call_that_outlives_its_wait_is_accepted_and_its_failure_reported_once() -> (
    None
):
    """Past flush_timeout the call returns accepted; the later failure goes to on_error once."""
    reports = Reports()
    courier = FakeCourier(lambda request, body, attempt: httpx.Response(400))
    courier.gate.clear()
    with make_client(courier, sync_mode=True, flush_timeout=0.05, on_error=reports) as client:
        outcome = dispatch(client, _track(client))
        courier.gate.set()
        assert client.flush(30)
    assert outcome.state == "accepted"
    assert len(reports.errors) == 1
    assert isinstance(reports.errors[0], RejectedError)


def test_sync_mode_the_same_message_from_two_threads_returns_each_its_outcome() -> None:
    """One message object dispatched twice at once: each call gets its own delivery's outcome.

    Both calls waited under the message's id: the second put replaced the first's
    waiter, and the first call waited out its flush_timeout, then said accepted.
    """
    reports = Reports()
    courier = Arrivals(lambda request, body, attempt: httpx.Response(400))
    courier.gate.clear()
    with make_client(courier, sync_mode=True, flush_timeout=10, on_error=reports) as client:
        message = _track(client)
        first = _meanwhile(lambda: dispatch(client, message))
        assert courier.arrived.acquire(timeout=30)
        second = _meanwhile(lambda: dispatch(client, message))
        assert courier.arrived.acquire(timeout=30)  # both in flight at once
        courier.gate.set()
        outcomes = [first(), second()]
    assert [outcome.state for outcome in outcomes] == ["failed", "failed"]
    assert {id(outcome.why) for outcome in outcomes} == {id(error) for error in reports.errors}
    assert len(reports.errors) == 2
