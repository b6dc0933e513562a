"""The module-level API: settings, the lazily built default client, and its rebuilds."""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import types
from typing import Any

import httpx
import pytest

import courier_analytics as analytics
from courier_analytics import Client, ConfigurationError, Options, _default

from .fakes import NO_WAIT, FakeCourier, Reports

PUBLIC = {
    "AuthenticationError", "Client", "ClientClosedError", "ConfigurationError",
    "CourierAnalyticsError", "DEFAULT_EVENT_PREFIX", "DeliveryError", "ErrorHandler", "FlushReport",
    "MAX_REQUEST_BYTES", "Message", "MessageTooLargeError", "MessageView", "NotDeliveredError",
    "Options", "Plugin", "PluginError", "QueueFullError", "REGIONS", "RejectedError",
    "RetriesExhaustedError", "RetryPolicy", "Stats", "User", "__version__",
    "add_source_middleware", "aflush", "alias", "ashutdown", "configure", "default_client",
    "deregister", "flush", "flush_report", "group", "handle_sigterm", "identify", "on", "page",
    "register",
    "reset", "scope", "screen", "shutdown", "stats", "track", "user",
}  # fmt: skip


def test_exported_names_are_the_intended_public_surface() -> None:
    """__all__ lists exactly the public names, sorted, and each exists."""
    assert set(analytics.__all__) == PUBLIC
    assert analytics.__all__ == sorted(analytics.__all__, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(analytics, name) for name in analytics.__all__)


def test_module_settings_mirror_the_client_options_and_defaults() -> None:
    """Every Options field is a module setting with the same default."""
    defaults = {name: p.default for name, p in inspect.signature(Options).parameters.items()}
    for name in Options.__match_args__:
        assert getattr(analytics, name) == defaults[name], name
    assert set(Options.__match_args__) == _default.SETTINGS


def test_module_functions_use_the_settings() -> None:
    """analytics.track sends with analytics.api_key through the default client."""
    courier = FakeCourier()
    analytics.api_key = "module-key"
    analytics.transport = courier
    analytics.track("E", {"a": 1}, user_id="u1")
    assert analytics.flush(5)
    assert courier.requests[0].headers["authorization"] == "Bearer module-key"


def test_changing_a_setting_rebuilds_the_default_client() -> None:
    """A setting assigned after the first call applies to the next call."""
    courier = FakeCourier()
    analytics.configure(api_key="first", transport=courier, retry=NO_WAIT)
    analytics.identify("u1", {"a": 1})
    first = analytics.default_client()
    analytics.api_key = "second"
    analytics.identify("u1", {"a": 2})
    assert analytics.default_client() is not first
    analytics.flush(5)
    first.flush(5)
    keys = [r.headers["authorization"] for r in courier.requests]
    assert sorted(keys) == ["Bearer first", "Bearer second"]


def test_configure_rejects_unknown_settings() -> None:
    """configure() with a misspelt name raises TypeError listing the settings."""
    with pytest.raises(TypeError, match="api_keyy"):
        analytics.configure(api_keyy="x")


def event(body: dict[str, Any]) -> str:
    """The track event name as made, without the route's prefix."""
    return str(body["event"]).removeprefix(analytics.DEFAULT_EVENT_PREFIX)


@pytest.mark.parametrize(
    ("settings", "named"),
    [({}, "api_key is required"), ({"api_key": "k", "region": "asia"}, "region must be one of")],
)
def test_a_call_with_invalid_settings_is_dropped_and_reported_not_raised(
    settings: dict[str, object], named: str
) -> None:
    """No key or a bad setting: the call returns, its message is counted dropped and reported."""
    reports = Reports()
    analytics.configure(on_error=reports, **settings)
    message_id = analytics.track("E", user_id="u1")
    assert [(type(e), m.message_id) for e, m in reports.calls] == [(ConfigurationError, message_id)]
    assert named in str(reports.errors[0])
    stats = analytics.stats()
    assert stats is not None
    assert (stats.made, stats.dropped, stats.unaccounted) == (1, 1, 0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("COURIER_ANALYTICS_SPOOL", "ftp://spool"), ("COURIER_ANALYTICS_DELIVER", "maybe")],
)
def test_an_invalid_spool_environment_variable_drops_calls_too(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad spool variable in the environment: calls are dropped and reported, not raised."""
    monkeypatch.setenv(variable, value)
    reports = Reports()
    analytics.configure(api_key="k", on_error=reports)
    analytics.track("E", user_id="u1")
    [error] = reports.errors
    assert isinstance(error, ConfigurationError)
    assert variable in str(error)


def test_invalid_settings_are_logged_once_as_an_error_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many calls with a bad key log one ERROR naming api_key; the key is in no log or report."""
    reports = Reports()
    analytics.configure(api_key="sk_secret_value\n", on_error=reports)
    with caplog.at_level(logging.DEBUG, logger="courier_analytics"):
        for _ in range(5):
            analytics.track("E", user_id="u1")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    assert "api_key" in errors[0]
    texts = [r.getMessage() for r in caplog.records] + [str(e) for e in reports.errors]
    assert len(reports.calls) == 5
    assert not any("sk_secret" in text for text in texts)


def test_invalid_settings_still_refuse_bad_arguments_at_the_call() -> None:
    """With invalid settings a bad argument still raises TypeError, as with any client."""
    with pytest.raises(TypeError, match="event"):
        analytics.track(123, user_id="u1")  # type: ignore[arg-type]


def test_a_call_after_the_settings_are_fixed_is_delivered() -> None:
    """Assigning the missing key makes the next call build a real client that delivers."""
    courier = FakeCourier()
    analytics.transport = courier
    analytics.track("Dropped", user_id="u1")
    analytics.api_key = "k"
    analytics.track("Delivered", user_id="u1")
    assert analytics.flush(10)
    assert [event(body) for body in courier.bodies] == ["Delivered"]


def test_default_client_still_raises_for_invalid_settings() -> None:
    """default_client(), asked for explicitly, raises ConfigurationError naming the setting."""
    analytics.track("E", user_id="u1")
    with pytest.raises(ConfigurationError, match="api_key is required"):
        analytics.default_client()


def test_a_call_reaching_a_replaced_client_goes_to_the_new_one() -> None:
    """A thread still holding the old default client after a rebuild reaches the new one."""
    courier = FakeCourier()
    reports = Reports()
    analytics.configure(api_key="first", transport=courier, on_error=reports)
    analytics.track("First", user_id="u1")
    old = analytics.default_client()
    analytics.api_key = "second"
    analytics.track("Second", user_id="u1")
    new = analytics.default_client()
    old.shutdown(10)  # as its retirement does, in the background
    old.track("Late", user_id="u1")  # the thread that still held it
    assert analytics.flush(10)
    keys = [request.headers["authorization"] for request in courier.requests]
    sent = {event(body): key for body, key in zip(courier.bodies, keys, strict=True)}
    assert sent == {"First": "Bearer first", "Second": "Bearer second", "Late": "Bearer second"}
    assert reports.calls == []
    assert (old.stats.made, old.stats.delivered, old.stats.unaccounted) == (1, 1, 0)
    assert (new.stats.made, new.stats.delivered, new.stats.unaccounted) == (2, 2, 0)


def test_calls_racing_setting_changes_all_reach_courier() -> None:
    """8 threads tracking while a setting changes 200 times: every call is delivered."""
    courier = FakeCourier()
    reports = Reports()
    analytics.configure(api_key="k", transport=courier, on_error=reports, retry=NO_WAIT)
    start = threading.Barrier(9)

    def track(n: int) -> None:
        start.wait()
        for m in range(1_000):
            analytics.track("E", {"m": m}, user_id=f"u{n}")

    threads = [threading.Thread(target=track, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    start.wait()
    for change in range(200):
        analytics.max_retries = 3 + change % 2  # any assignment rebuilds the client
        analytics.track("Change", user_id="main")
    for thread in threads:
        thread.join()
    assert analytics.flush(60)
    assert reports.calls == []
    assert len(courier.bodies) == 8 * 1_000 + 200


def test_flush_waits_for_a_replaced_client_still_delivering() -> None:
    """analytics.flush() is False while a replaced client still holds a message, then True."""
    first, second = FakeCourier(), FakeCourier()
    first.gate.clear()
    analytics.configure(api_key="k", transport=first)
    analytics.track("Held", user_id="u1")
    analytics.transport = second
    analytics.track("Sent", user_id="u1")
    assert analytics.flush(0.1) is False
    first.gate.set()
    assert analytics.flush(10) is True
    assert [event(body) for body in first.bodies] == ["Held"]


def test_flush_and_stats_before_any_call_need_no_client() -> None:
    """flush() is True and stats() None before the default client exists."""
    assert analytics.flush() is True
    assert analytics.stats() is None


def test_module_functions_keep_the_client_signatures() -> None:
    """analytics.track has Client.track's signature and docs."""
    assert analytics.track.__doc__ == Client.track.__doc__
    assert analytics.track.__wrapped__ is Client.track  # type: ignore[attr-defined]


def test_shutdown_then_call_builds_a_new_default_client() -> None:
    """After analytics.shutdown(), the next call starts a fresh client."""
    analytics.configure(api_key="k", send=False)
    analytics.track("E", user_id="u1")
    first = analytics.default_client()
    analytics.shutdown()
    analytics.track("E", user_id="u1")
    assert analytics.default_client() is not first


def test_sync_mode_setting_sends_inline() -> None:
    """analytics.sync_mode = True delivers before the call returns."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(202, json={})

    analytics.configure(api_key="k", sync_mode=True, transport=httpx.MockTransport(handler))
    analytics.track("E", user_id="u1")
    assert seen == ["/inbound/courier"]


def test_module_route_setting_defaults_to_api_and_opts_into_segment() -> None:
    """The module's route is "api" unless set; route = "segment" switches the endpoint."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(202, json={})

    analytics.configure(api_key="k", sync_mode=True, transport=httpx.MockTransport(handler))
    analytics.identify("u1", {"a": 1})
    analytics.route = "segment"
    analytics.identify("u1", {"a": 1})
    assert seen == ["/profiles/u1", "/inbound/segment"]


def test_module_functions_show_the_real_signature() -> None:
    """inspect.signature(analytics.track) is Client.track's without self."""
    method = inspect.signature(Client.track)
    assert inspect.signature(analytics.track) == method.replace(
        parameters=list(method.parameters.values())[1:]
    )
    assert str(inspect.signature(analytics.identify)).startswith("(user_id")


class _Built:
    """A stand-in client: remembers its settings and whether it was shut down."""

    def __init__(self, **settings: object) -> None:
        self.settings = settings
        self.closed = threading.Event()

    def shutdown(self) -> None:
        self.closed.set()


def _settings_module(monkeypatch: pytest.MonkeyPatch, build: object) -> types.ModuleType:
    module = types.ModuleType("settings_under_test")
    module.colour = "red"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    _default.install(_default.DefaultClient(module.__name__, frozenset({"colour"}), build))  # type: ignore[arg-type]
    return module


def test_settings_module_rebuilds_and_retires_the_old_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new setting gives a new client built with it; the old one is shut down."""
    module = _settings_module(monkeypatch, _Built)
    defaults = module._defaults
    first = defaults.get()
    assert defaults.get() is first
    module.colour = "blue"  # type: ignore[attr-defined]
    second = defaults.get()
    assert second.settings == {"colour": "blue"}
    assert first.closed.wait(10)
    assert not second.closed.is_set()


def test_a_setting_assigned_during_a_rebuild_keeps_the_client_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A setting assigned while the client is being built is not lost: the next call rebuilds."""
    module: types.ModuleType

    def build(**settings: object) -> _Built:
        if settings["colour"] == "red":  # another thread assigns while this one builds
            module.colour = "green"  # type: ignore[attr-defined]
        return _Built(**settings)

    module = _settings_module(monkeypatch, build)
    assert module._defaults.get().settings == {"colour": "red"}
    assert module._defaults.get().settings == {"colour": "green"}
