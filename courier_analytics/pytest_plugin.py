"""pytest fixtures for apps that use courier-analytics (or its Segment drop-in).

Registered through the `pytest11` entry point, so installing courier-analytics
makes them available; or list `pytest_plugins = ["courier_analytics.pytest_plugin"]`
in a `conftest.py`.

`courier_analytics_events`
    Captures every client's messages for the test's duration and yields a
    [`CapturedEvents`][courier_analytics.testing.CapturedEvents]. Nothing is sent. If no API
    key is set anywhere, a placeholder key is set for the test, so code that
    builds its client during the test works; default clients built with it are
    discarded afterwards.

`courier_dev_server`
    Needs the `dev` extra (`pip install 'courier-analytics[dev]'`); without it,
    the test fails with a message that says so. A local Courier stand-in on
    127.0.0.1 (one per session, reset for each test)
    with the default client, the Segment drop-in's default client and new clients
    pointed at it (`COURIER_BASE_URL` and `COURIER_API_KEY` are set). Yields the
    [`DevServer`][courier_analytics.devserver.DevServer]: flush your client, then look at
    `server.profiles()`, `server.events()` (`status` `Mapped`/`Unmapped`) and
    `server.sends()`. Event-to-template mappings come from the
    `courier_dev_server_mappings` fixture, which you may override. The server
    itself is the session-scoped `courier_dev_server_session`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import pytest

import courier_analytics
from courier_analytics import segment
from courier_analytics.testing import CapturedEvents, capture

if TYPE_CHECKING:
    from courier_analytics.devserver import DevServer

__all__ = [
    "courier_analytics_events",
    "courier_dev_server",
    "courier_dev_server_mappings",
    "courier_dev_server_session",
]

#: The key set during ``courier_analytics_events`` when none is configured.
PLACEHOLDER_API_KEY = "courier-analytics-test-placeholder"
_KEY_VARIABLES = ("COURIER_API_KEY", "COURIER_AUTH_TOKEN")


def _reset_default_clients(timeout: float) -> None:
    """Stop both default clients; the next call builds new ones from the settings."""
    courier_analytics.shutdown(timeout=timeout)
    client, segment.default_client = segment.default_client, None
    if client is not None:
        client.join()


@pytest.fixture
def courier_analytics_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturedEvents]:
    """Capture every client's messages for this test instead of sending them."""
    placeholder = not any(os.environ.get(name) for name in _KEY_VARIABLES)
    if placeholder:
        monkeypatch.setenv("COURIER_API_KEY", PLACEHOLDER_API_KEY)
    with capture() as events:
        yield events
    if placeholder:
        _reset_default_clients(timeout=5.0)


@pytest.fixture
def courier_dev_server_mappings() -> Mapping[str, str]:
    """Event name -> template id for `courier_dev_server`; override it to map your events."""
    return {}


@pytest.fixture(scope="session")
def courier_dev_server_session() -> Iterator[DevServer]:
    """The stand-in shared by the session (use `courier_dev_server` in tests)."""
    try:
        from courier_analytics.devserver import DevServer
    except ModuleNotFoundError as exc:
        pytest.fail(f"courier_dev_server: {exc}", pytrace=False)

    with DevServer() as server:
        yield server


@pytest.fixture
def courier_dev_server(
    courier_dev_server_session: DevServer,
    courier_dev_server_mappings: Mapping[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[DevServer]:
    """A local Courier stand-in that every client of this test delivers to."""
    server = courier_dev_server_session
    server.reset()
    server.state.mappings = dict(courier_dev_server_mappings)
    monkeypatch.setenv("COURIER_BASE_URL", server.base_url)
    monkeypatch.setenv("COURIER_API_KEY", server.api_key)
    monkeypatch.delenv("COURIER_AUTH_TOKEN", raising=False)
    for name in ("base_url", "api_key"):
        monkeypatch.setattr(courier_analytics, name, getattr(server, name))
    monkeypatch.setattr(courier_analytics, "region", "us")
    monkeypatch.setattr(courier_analytics, "send", True)
    monkeypatch.setattr(segment, "write_key", server.api_key)
    monkeypatch.setattr(segment, "host", server.base_url)
    monkeypatch.setattr(segment, "send", True)
    _reset_default_clients(timeout=5.0)
    yield server
    _reset_default_clients(timeout=5.0)
