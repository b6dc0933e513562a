"""From a made message to the queue: each call's outcome, and set-up done once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import courier_analytics as analytics
from courier_analytics import (
    Client,
    ClientClosedError,
    ConfigurationError,
    PluginError,
    QueueFullError,
    RejectedError,
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
    assert client._waiting == {}


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
