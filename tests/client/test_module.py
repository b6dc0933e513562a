"""The module-level API: settings, the lazily built default client, and its rebuilds."""

from __future__ import annotations

import inspect
import sys
import threading
import types

import attrs
import httpx
import pytest

import courier_analytics as analytics
from courier_analytics import Client, ConfigurationError, Options, _default

from .fakes import NO_WAIT, FakeCourier

PUBLIC = {
    "AuthenticationError", "Client", "ClientClosedError", "ConfigurationError",
    "CourierAnalyticsError", "DEFAULT_EVENT_PREFIX", "DeliveryError", "ErrorHandler", "FlushReport",
    "MAX_REQUEST_BYTES", "Message", "MessageTooLargeError", "MessageView", "NotDeliveredError",
    "Options", "Plugin", "PluginError", "QueueFullError", "REGIONS", "RejectedError",
    "RetriesExhaustedError", "RetryPolicy", "Stats", "User", "__version__",
    "add_source_middleware", "aflush", "alias", "ashutdown", "configure", "default_client",
    "deregister", "flush", "flush_report", "group", "identify", "on", "page", "register",
    "reset", "scope", "screen", "shutdown", "stats", "track", "user",
}  # fmt: skip


def test_exported_names_are_the_intended_public_surface() -> None:
    """__all__ lists exactly the public names, sorted, and each exists."""
    assert set(analytics.__all__) == PUBLIC
    assert analytics.__all__ == sorted(analytics.__all__, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(analytics, name) for name in analytics.__all__)


def test_module_settings_mirror_the_client_options_and_defaults() -> None:
    """Every Options field is a module setting with the same default."""
    for field in attrs.fields(Options):
        assert getattr(analytics, field.name) == field.default, field.name
    assert {f.name for f in attrs.fields(Options)} == _default.SETTINGS


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


def test_a_call_without_any_key_raises_configuration_error() -> None:
    """The first call with no key set anywhere raises ConfigurationError at the call."""
    with pytest.raises(ConfigurationError, match="api_key is required"):
        analytics.track("E", user_id="u1")


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
