"""Fixtures shared by the whole suite."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import courier_analytics
from courier_analytics import _default


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without Courier env vars, settings, default client or its plugins."""
    for name in (
        "COURIER_API_KEY",
        "COURIER_AUTH_TOKEN",
        "COURIER_BASE_URL",
        "COURIER_ANALYTICS_SPOOL",
    ):
        monkeypatch.delenv(name, raising=False)
    saved = {name: getattr(courier_analytics, name) for name in _default.SETTINGS}
    level = logging.getLogger("courier_analytics").level
    yield
    courier_analytics.shutdown(timeout=5)
    _default._plugins.clear()  # module-level plugins and event handlers
    _default._events.clear()
    for name, value in saved.items():
        setattr(courier_analytics, name, value)
    logging.getLogger("courier_analytics").setLevel(level)
