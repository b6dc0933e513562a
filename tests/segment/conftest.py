"""Fixtures for the Segment drop-in: settings restored, and an in-memory Courier."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from courier_analytics import segment
from courier_analytics.pytest_plugin import (
    courier_analytics_events,
    courier_dev_server,
    courier_dev_server_mappings,
    courier_dev_server_session,
)

__all__ = [
    "FakeCourier",
    "courier_analytics_events",
    "courier_dev_server",
    "courier_dev_server_mappings",
    "courier_dev_server_session",
]


class FakeCourier:
    """An in-memory Courier: records every request and answers ``status`` (202 by default)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 202
        self.gate: threading.Event | None = None
        self.transport = httpx.MockTransport(self._handle)
        self._lock = threading.Lock()

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if self.gate is not None:
            self.gate.wait(5)
        request.read()
        with self._lock:
            self.requests.append(request)
        return httpx.Response(self.status, json={"messageId": "x"})

    @property
    def paths(self) -> list[str]:
        """Paths of the requests received, in order."""
        with self._lock:
            return [r.url.path for r in self.requests]


@pytest.fixture
def courier() -> FakeCourier:
    """A fresh in-memory Courier."""
    return FakeCourier()


@pytest.fixture(autouse=True)
def _segment_settings() -> Iterator[None]:
    """Each test starts with Segment's default settings and no default client."""
    saved = {name: getattr(segment, name) for name in segment.SETTINGS}
    segment.default_client = None
    yield
    client, segment.default_client = segment.default_client, None
    if client is not None:
        client.join()
    for name, value in saved.items():
        setattr(segment, name, value)
