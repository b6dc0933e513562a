"""Plugins, source middleware and the per-call `integrations` object."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

import courier_analytics as analytics
from courier_analytics import Client, PluginError
from courier_analytics.segment import Client as SegmentClient
from courier_analytics.testing import capture

from . import fakes
from .fakes import FakeCourier, Reports, balanced

Seen = list[tuple[str, dict[str, Any]]]


def make_client(courier: FakeCourier, **options: Any) -> Client:
    """A client on route segment unless told otherwise: its bodies are what plugins shape."""
    options.setdefault("route", "segment")
    return fakes.make_client(courier, **options)


class Recorder:
    """A plugin that records what it saw (under its name) and passes the message on."""

    def __init__(self, name: str, seen: Seen, type: str = "before") -> None:
        self.name = name
        self.type = type
        self.seen = seen

    def process(self, message: dict[str, Any]) -> dict[str, Any]:
        self.seen.append((self.name, dict(message)))
        return message


class RedactEmail:
    """The issue's example: a before plugin with a track method only."""

    name = "redact-email"
    type = "before"

    def track(self, message: dict[str, Any]) -> dict[str, Any] | None:
        message["properties"].pop("email", None)
        return message


class AddRegion:
    """An enrichment plugin with one process for every type."""

    name = "add-region"
    type = "enrichment"

    def process(self, message: dict[str, Any]) -> dict[str, Any]:
        message["context"]["region"] = "eu-west-1"
        return message


class Plain:
    """A plugin made from a name, a type and methods given as keywords."""

    def __init__(self, name: str, type: str = "before", **methods: Callable[..., Any]) -> None:
        self.name = name
        self.type = type
        for key, method in methods.items():
            setattr(self, key, method)


def sent(client: Client, courier: FakeCourier) -> list[dict[str, Any]]:
    assert client.flush(5)
    return courier.bodies


# ------------------------------------------------------------------ what runs


def test_a_before_plugin_changes_what_is_sent() -> None:
    """RedactEmail's track() removes the email before the message is encoded and queued."""
    courier = FakeCourier()
    client = make_client(courier)
    client.register(RedactEmail())
    client.track("Signed Up", {"email": "a@example.com", "plan": "pro"}, user_id="u1")
    assert sent(client, courier)[0]["properties"] == {"plan": "pro"}
    client.shutdown()


def test_a_per_type_method_runs_only_for_its_type() -> None:
    """A plugin with only track() leaves identify messages alone."""
    courier = FakeCourier()
    client = make_client(courier)
    client.register(RedactEmail())
    client.identify("u1", {"email": "a@example.com"})
    assert sent(client, courier)[0]["traits"] == {"email": "a@example.com"}
    client.shutdown()


def test_process_runs_for_every_type() -> None:
    """An enrichment plugin's process() sees identify, track and group messages."""
    courier = FakeCourier()
    client = make_client(courier)
    client.register(AddRegion())
    client.identify("u1")
    client.track("E", user_id="u1")
    client.group("g1", user_id="u1")
    assert [b["context"]["region"] for b in sent(client, courier)] == ["eu-west-1"] * 3
    client.shutdown()


def test_a_per_type_method_wins_over_process() -> None:
    """A plugin with both track() and process() gets track messages in track() only."""
    calls: list[str] = []
    plugin = Plain(
        "both",
        track=lambda m: calls.append("track") or m,
        process=lambda m: calls.append("process") or m,
    )
    client = make_client(FakeCourier())
    client.register(plugin)
    client.track("E", user_id="u1")
    client.identify("u1")
    assert calls == ["track", "process"]
    client.shutdown()


def test_before_plugins_run_first_then_enrichment_each_in_registration_order() -> None:
    """Order: every before plugin (and middleware) as registered, then every enrichment one."""
    seen: Seen = []
    client = make_client(FakeCourier())
    client.register(Recorder("enrich-1", seen, "enrichment"), Recorder("before-1", seen))
    client.add_source_middleware(lambda m: seen.append(("middleware", m)) or m)
    client.register(Recorder("before-2", seen), Recorder("enrich-2", seen, "enrichment"))
    client.track("E", user_id="u1")
    assert [name for name, _ in seen] == [
        "before-1",
        "middleware",
        "before-2",
        "enrich-1",
        "enrich-2",
    ]
    client.shutdown()


def test_a_plugin_sees_the_built_segment_message() -> None:
    """The dict has the Segment fields made by the call: type, ids, messageId, context.library."""
    seen: Seen = []
    client = make_client(FakeCourier())
    client.register(Recorder("r", seen))
    message_id = client.track("E", {"a": 1}, user_id="u1", anonymous_id="anon-1")
    message = seen[0][1]
    assert message["type"] == "track"
    assert message["messageId"] == message_id
    assert (message["userId"], message["anonymousId"]) == ("u1", "anon-1")
    assert message["event"] == "E"
    assert message["properties"] == {"a": 1}
    assert message["context"]["library"]["name"] == "courier-analytics"
    assert "timestamp" in message
    client.shutdown()


def test_plugins_run_in_the_callers_thread() -> None:
    """A plugin runs in the thread that made the call, before the call returns."""
    threads: list[int] = []
    client = make_client(FakeCourier())
    client.add_source_middleware(lambda m: threads.append(threading.get_ident()) or m)
    client.track("E", user_id="u1")
    assert threads == [threading.get_ident()]
    client.shutdown()


def test_a_plugin_changing_the_message_id_is_honoured() -> None:
    """The messageId a plugin sets is the one sent and returned."""
    courier = FakeCourier()
    client = make_client(courier)
    client.add_source_middleware(lambda m: {**m, "messageId": "order-42-completed"})
    assert client.track("E", user_id="u1") == "order-42-completed"
    assert sent(client, courier)[0]["messageId"] == "order-42-completed"
    client.shutdown()


def test_a_plugin_modifying_properties_leaves_the_callers_dict_alone() -> None:
    """Changing message["properties"] in place does not change the dict the app passed."""
    client = make_client(FakeCourier())
    client.register(RedactEmail())
    properties = {"email": "a@example.com"}
    client.track("E", properties, user_id="u1")
    assert properties == {"email": "a@example.com"}
    client.shutdown()


def test_a_plugin_cannot_replace_context_library() -> None:
    """context.library is always this library's: a replaced one is put back."""
    courier = FakeCourier()
    client = make_client(courier)

    def forge(message: dict[str, Any]) -> dict[str, Any]:
        message["context"]["library"] = {"name": "forged"}
        return message

    client.add_source_middleware(forge)
    client.track("E", user_id="u1", context={"ip": "203.0.113.7"})
    client.track("E", user_id="u1")
    assert [b["context"]["library"]["name"] for b in sent(client, courier)] == [
        "courier-analytics"
    ] * 2
    client.shutdown()


def test_a_plugin_cannot_change_the_shared_library_dict() -> None:
    """Editing context.library in place raises in the plugin: the message is cancelled."""
    courier, reports = FakeCourier(), Reports()
    client = make_client(courier, on_error=reports)

    def forge(message: dict[str, Any]) -> dict[str, Any]:
        message["context"]["library"]["name"] = "forged"
        return message

    client.add_source_middleware(forge)
    client.track("E", user_id="u1")
    client.deregister(client._plugins.names("track")[0])
    client.track("E", user_id="u1")
    assert [b["context"]["library"]["name"] for b in sent(client, courier)] == ["courier-analytics"]
    assert isinstance(reports.errors[0].__cause__, TypeError)
    client.shutdown()


def test_a_plugin_never_sees_the_api_key() -> None:
    """Nothing a plugin is given (the message dict) holds the API key."""
    seen: Seen = []
    client = make_client(FakeCourier(), api_key="sk_secret_key_123")
    client.register(Recorder("r", seen))
    client.identify("u1", {"a": 1})
    assert "sk_secret_key_123" not in repr(seen)
    client.shutdown()


def test_the_testing_capture_records_the_message_after_plugins() -> None:
    """capture() records what the plugins returned."""
    client = make_client(FakeCourier())
    client.register(RedactEmail())
    with capture() as events:
        client.track("E", {"email": "a@example.com", "plan": "pro"}, user_id="u1")
    assert events[0]["properties"] == {"plan": "pro"}
    client.shutdown()


# --------------------------------------------------------------------- dropping


def test_a_before_plugin_returning_none_drops_the_message_as_skipped() -> None:
    """None from a before plugin: not sent, counted skipped, no error reported."""
    courier, reports = FakeCourier(), Reports()
    client = make_client(courier, on_error=reports)
    client.register(Plain("drop-all", track=lambda m: None))
    message_id = client.track("E", user_id="u1")
    assert message_id
    assert sent(client, courier) == []
    assert (client.stats.made, client.stats.skipped) == (1, 1)
    assert reports.calls == []
    assert balanced(client)
    client.shutdown()


def test_source_middleware_returning_none_drops_only_that_message() -> None:
    """The issue's middleware drops "Noise" events and lets the others through."""
    courier = FakeCourier()
    client = make_client(courier)
    client.add_source_middleware(lambda m: None if m.get("event") == "Noise" else m)
    client.track("Noise", user_id="u1")
    client.track("Signal", user_id="u1")
    assert [b["event"] for b in sent(client, courier)] == ["Signal"]
    assert client.stats.skipped == 1
    client.shutdown()


def test_a_dropped_message_is_logged_at_debug_with_the_plugins_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The debug log says which plugin dropped the message."""
    caplog.set_level(logging.DEBUG, logger="courier_analytics")
    client = make_client(FakeCourier())
    client.register(Plain("drop-all", track=lambda m: None))
    message_id = client.track("E", user_id="u1")
    assert f"skipped track {message_id} (plugin 'drop-all' dropped it)" in caplog.text
    client.shutdown()


def test_an_enrichment_plugin_returning_none_keeps_the_message() -> None:
    """None from an enrichment plugin keeps the message, with what it changed in place."""
    courier = FakeCourier()
    client = make_client(courier)

    def tag(message: dict[str, Any]) -> None:
        message["properties"]["tagged"] = True

    client.register(Plain("tagger", "enrichment", process=tag))
    client.track("E", user_id="u1")
    assert sent(client, courier)[0]["properties"] == {"tagged": True}
    client.shutdown()


# ---------------------------------------------------------------------- errors


def test_a_before_plugin_that_raises_cancels_the_message() -> None:
    """A raising before plugin: not sent, counted failed, on_error gets a PluginError naming it."""
    courier, reports = FakeCourier(), Reports()
    client = make_client(courier, on_error=reports)
    boom = RuntimeError("boom")

    def explode(message: dict[str, Any]) -> dict[str, Any]:
        raise boom

    client.register(Plain("exploder", track=explode))
    message_id = client.track("E", {"secret": "s3"}, user_id="u1")
    assert sent(client, courier) == []
    [(error, message)] = reports.calls
    assert isinstance(error, PluginError)
    assert error.plugin == "exploder"
    assert error.message_id == message_id
    assert "'exploder'" in str(error)
    assert "s3" not in str(error)
    assert error.__cause__ is boom
    assert message.message_id == message_id
    assert (client.stats.made, client.stats.failed, client.stats.queued) == (1, 1, 0)
    assert balanced(client)
    client.shutdown()


def test_a_raising_before_plugin_is_logged_without_the_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The warning names the plugin and the exception type, never the message's data."""
    client = make_client(FakeCourier())
    client.register(Plain("exploder", track=lambda m: 1 / 0))
    with caplog.at_level(logging.WARNING, "courier_analytics"):
        client.track("E", {"secret": "s3cr3t"}, user_id="u1")
    assert "'exploder' raised ZeroDivisionError" in caplog.text
    assert "s3cr3t" not in caplog.text
    client.shutdown()


def test_an_enrichment_plugin_that_raises_is_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raising enrichment plugin: the message goes on; one warning, later ones at DEBUG."""
    courier = FakeCourier()
    client = make_client(courier)
    client.register(Plain("flaky", "enrichment", process=lambda m: 1 / 0), AddRegion())
    with caplog.at_level(logging.DEBUG, "courier_analytics"):
        for n in range(3):
            client.track("E", {"n": n}, user_id="u1")
    assert [b["context"]["region"] for b in sent(client, courier)] == ["eu-west-1"] * 3
    flaky = [r for r in caplog.records if "'flaky'" in r.getMessage()]
    assert [r.levelno for r in flaky] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    client.shutdown()


def test_each_new_raising_enrichment_plugin_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plugin registered after another raised and was deregistered gets its own WARNING."""
    client = make_client(FakeCourier())
    with caplog.at_level(logging.DEBUG, "courier_analytics"):
        for n in range(5):  # each a new function, where the last one was freed
            client.register(Plain(f"flaky-{n}", "enrichment", process=lambda m: 1 / 0))
            client.track("E", user_id="u1")
            client.deregister(f"flaky-{n}")
    flaky = [r for r in caplog.records if "'flaky-" in r.getMessage()]
    assert [r.levelno for r in flaky] == [logging.WARNING] * 5
    client.shutdown()


def test_an_enrichment_plugin_returning_a_non_dict_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An enrichment plugin returning, say, a list is logged and its result ignored."""
    courier = FakeCourier()
    client = make_client(courier)
    client.register(Plain("odd", "enrichment", process=lambda m: ["not", "a", "dict"]))
    with caplog.at_level(logging.WARNING, "courier_analytics"):
        client.track("E", {"a": 1}, user_id="u1")
    assert sent(client, courier)[0]["properties"] == {"a": 1}
    assert "'odd' returned list" in caplog.text
    client.shutdown()


def test_a_before_plugin_returning_a_non_dict_raises_at_the_call() -> None:
    """A before plugin returning neither a dict nor None is a TypeError naming it."""
    client = make_client(FakeCourier())
    client.register(Plain("odd", process=lambda m: "message"))
    with pytest.raises(TypeError, match="before plugin 'odd' returned str"):
        client.track("E", user_id="u1")
    client.shutdown()


@pytest.mark.parametrize(
    ("change", "error", "text"),
    [
        (lambda m: {**m, "properties": {"when": object()}}, TypeError, "properties"),
        (
            lambda m: {k: v for k, v in m.items() if k != "userId"},
            ValueError,
            "userId or anonymousId",
        ),
        (lambda m: {**m, "userId": 3.5}, TypeError, "userId must be a str"),
        (lambda m: {**m, "type": "identify"}, ValueError, "type must stay 'track'"),
        (lambda m: {**m, "event": ""}, ValueError, "event must be a non-empty string"),
        (lambda m: {**m, "properties": ["a"]}, TypeError, "properties must be a mapping"),
        (lambda m: {**m, "context": "ip"}, TypeError, "context must be a mapping"),
        (lambda m: {**m, "timestamp": "yesterday"}, TypeError, "timestamp must be a datetime"),
        (lambda m: {**m, "messageId": ""}, ValueError, "message_id must be a non-empty"),
    ],
)
def test_the_message_a_plugin_returns_is_validated_like_a_call(
    change: Callable[[dict[str, Any]], dict[str, Any]], error: type[Exception], text: str
) -> None:
    """Non-JSON values, a missing user, a changed type...: the call raises, naming the plugin."""
    client = make_client(FakeCourier())
    client.add_source_middleware(change)
    with pytest.raises(error, match=text) as raised:
        client.track("E", user_id="u1")
    assert "plugin(s) 'source-middleware:" in str(raised.value)
    assert client.stats.made == 0
    client.shutdown()


def test_a_plugin_cannot_make_a_message_larger_than_courier_accepts() -> None:
    """The size limit applies to what the plugins return."""
    client = make_client(FakeCourier(), max_message_bytes=1000)
    client.add_source_middleware(lambda m: {**m, "properties": {"blob": "x" * 2000}})
    with pytest.raises(ValueError, match="bytes of JSON"):
        client.track("E", user_id="u1")
    client.shutdown()


# ----------------------------------------------------------------- registration


@pytest.mark.parametrize(
    ("plugin", "error", "text"),
    [
        (Plain("", process=lambda m: m), TypeError, "non-empty str `name`"),
        (object(), TypeError, "non-empty str `name`"),
        (Plain("x", "destination", process=lambda m: m), ValueError, "'before' or 'enrichment'"),
        (Plain("x", "after", process=lambda m: m), ValueError, "has type 'after'"),
        (Plain("x"), TypeError, "no process"),
        (Plain("x", track="not a method"), TypeError, "track must be a method"),
    ],
)
def test_register_refuses_what_is_not_a_plugin(
    plugin: Any, error: type[Exception], text: str
) -> None:
    """register() checks name, type and methods, and says what is wrong."""
    client = make_client(FakeCourier())
    with pytest.raises(error, match=text):
        client.register(plugin)
    client.shutdown()


def test_register_refuses_a_name_already_registered() -> None:
    """Two plugins with one name: the second register() raises and registers nothing."""
    client = make_client(FakeCourier())
    client.register(AddRegion())
    with pytest.raises(ValueError, match="'redact-email' is already registered"):
        client.register(RedactEmail(), Plain("redact-email", process=lambda m: m))
    with pytest.raises(ValueError, match="'add-region' is already registered"):
        client.register(AddRegion())
    client.deregister("add-region")
    with pytest.raises(ValueError, match="no plugin named 'redact-email'"):
        client.deregister("redact-email")
    client.shutdown()


def test_deregister_removes_a_plugin() -> None:
    """After deregister(name) the plugin no longer runs."""
    courier = FakeCourier()
    client = make_client(courier)
    client.register(RedactEmail())
    client.deregister("redact-email")
    client.track("E", {"email": "a@example.com"}, user_id="u1")
    assert sent(client, courier)[0]["properties"] == {"email": "a@example.com"}
    client.shutdown()


def test_deregister_of_an_unknown_name_raises_listing_the_known() -> None:
    """deregister("typo") is a ValueError naming what is registered."""
    client = make_client(FakeCourier())
    client.register(AddRegion())
    with pytest.raises(ValueError, match=r"no plugin named 'typo'.*'add-region'"):
        client.deregister("typo")
    client.shutdown()


def test_add_source_middleware_returns_a_name_to_deregister() -> None:
    """The name add_source_middleware returns removes that middleware, and only it."""
    courier = FakeCourier()
    client = make_client(courier)

    def drop_noise(message: dict[str, Any]) -> dict[str, Any] | None:
        return None if message.get("event") == "Noise" else message

    first = client.add_source_middleware(drop_noise)
    second = client.add_source_middleware(drop_noise)
    assert first != second
    assert "drop_noise" in first
    client.deregister(first)
    client.track("Noise", user_id="u1")
    client.deregister(second)
    client.track("Noise", user_id="u1")
    assert len(sent(client, courier)) == 1
    client.shutdown()


def test_add_source_middleware_refuses_a_non_callable() -> None:
    """add_source_middleware(42) is a TypeError."""
    client = make_client(FakeCourier())
    with pytest.raises(TypeError, match="middleware must be a function"):
        client.add_source_middleware(42)  # type: ignore[arg-type]
    client.shutdown()


def test_module_level_register_survives_a_rebuild_of_the_default_client() -> None:
    """analytics.register acts on the default client, and a changed setting keeps the plugin."""
    analytics.register(RedactEmail())
    try:
        analytics.api_key = "first"
        with capture() as events:
            analytics.track("E", {"email": "a@example.com"}, user_id="u1")
            analytics.api_key = "second"
            analytics.track("E", {"email": "b@example.com"}, user_id="u1")
        assert [e["properties"] for e in events] == [{}, {}]
        name = analytics.add_source_middleware(lambda m: None)
        with capture() as events:
            analytics.track("E", user_id="u1")
        assert len(events) == 0
        analytics.deregister(name)
    finally:
        analytics.deregister("redact-email")


def test_each_client_has_its_own_plugins() -> None:
    """A plugin registered on one Client does not run for another."""
    courier = FakeCourier()
    one, other = make_client(FakeCourier()), make_client(courier)
    one.register(RedactEmail())
    other.track("E", {"email": "a@example.com"}, user_id="u1")
    assert sent(other, courier)[0]["properties"] == {"email": "a@example.com"}
    one.shutdown()
    other.shutdown()


def test_plugins_see_scope_filled_messages() -> None:
    """In a request scope a plugin sees the scope's ids and context already in the message."""
    seen: Seen = []
    client = make_client(FakeCourier())
    client.register(Recorder("r", seen))
    with analytics.scope(user_id="u1", context={"ip": "203.0.113.7"}):
        client.track("E")
    assert seen[0][1]["userId"] == "u1"
    assert seen[0][1]["context"]["ip"] == "203.0.113.7"
    client.shutdown()


# ------------------------------------------------------------------ integrations


@pytest.mark.parametrize(
    "integrations", [{"All": False}, {"Courier": False}, {"All": True, "Courier": False}]
)
def test_integrations_turning_courier_off_skip_the_message(integrations: dict[str, Any]) -> None:
    """{"All": False} or {"Courier": False}: not sent, counted skipped, no error."""
    courier, reports = FakeCourier(), Reports()
    client = make_client(courier, on_error=reports)
    client.track("E", user_id="u1", integrations=integrations)
    assert sent(client, courier) == []
    assert client.stats.skipped == 1
    assert reports.calls == []
    assert balanced(client)
    client.shutdown()


@pytest.mark.parametrize(
    "integrations",
    [
        {"All": False, "Courier": True},
        {"All": False, "Courier": {"channel": "email"}},
        {"Mixpanel": False},
        {},
    ],
)
def test_integrations_leaving_courier_on_send_the_field_unchanged(
    integrations: dict[str, Any],
) -> None:
    """{"All": False, "Courier": True} and the like send, with integrations passed on as given."""
    courier = FakeCourier()
    client = make_client(courier)
    client.track("E", user_id="u1", integrations=integrations)
    assert sent(client, courier)[0]["integrations"] == integrations
    client.shutdown()


def test_integrations_are_honoured_on_route_api_too() -> None:
    """On route "api" a message with {"Courier": False} is skipped as well."""
    courier = FakeCourier()
    client = make_client(courier, route="api")
    client.identify("u1", {"a": 1}, integrations={"Courier": False})
    client.track("E", user_id="u1", integrations={"All": False})
    assert sent(client, courier) == []
    assert client.stats.skipped == 2
    client.shutdown()


def test_a_plugin_can_turn_courier_off_through_integrations() -> None:
    """The integrations object is read after the plugins: a plugin may switch Courier off."""
    courier = FakeCourier()
    client = make_client(courier)
    client.add_source_middleware(lambda m: {**m, "integrations": {"Courier": False}})
    client.track("E", user_id="u1")
    assert sent(client, courier) == []
    assert client.stats.skipped == 1
    client.shutdown()


def test_a_message_turned_away_by_integrations_is_not_captured() -> None:
    """capture() records only messages meant for Courier."""
    client = make_client(FakeCourier())
    with capture() as events:
        client.track("Off", user_id="u1", integrations={"Courier": False})
        client.track("On", user_id="u1")
    assert [e["event"] for e in events] == ["On"]
    client.shutdown()


def test_the_segment_drop_in_honours_integrations() -> None:
    """segment.Client.track(..., integrations={"All": False}) sends nothing to Courier."""
    courier = FakeCourier()
    shim = SegmentClient("test-key", sync_mode=True, courier_options={"transport": courier})
    ok, message = shim.track("u1", "E", integrations={"All": False})
    assert ok
    assert message["integrations"] == {"All": False}
    shim.track("u1", "Sent")
    shim.flush()
    assert [b["event"] for b in courier.bodies] == ["Segment-TrackEvent:Sent"]
    shim.shutdown()


def test_the_segment_drop_in_returns_a_message_a_plugin_dropped() -> None:
    """A plugin on the drop-in's engine dropping a call: (True, the message dict), nothing sent."""
    courier = FakeCourier()
    shim = SegmentClient("test-key", sync_mode=True, courier_options={"transport": courier})
    shim.courier_client.add_source_middleware(lambda m: None)
    ok, message = shim.track("u1", "Dropped", {"a": 1})
    assert ok
    assert (message["event"], message["properties"]) == ("Dropped", {"a": 1})
    shim.flush()
    assert courier.bodies == []
    shim.shutdown()
