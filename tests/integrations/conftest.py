"""Fixtures for the framework integrations: one local Courier stand-in for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import courier_analytics as analytics
from courier_analytics.devserver import DevServer, Faults

KEY = "integrations-key-7c2e"
MAPPINGS = {"Segment-TrackEvent:Export Finished": "tmpl_export"}
#: An anonymous id as analytics.js makes one (a UUID v4), and its cookie value.
ANONYMOUS_ID = "9f1c2a4e-0b8d-4f6a-9c3e-1d2b3a4c5e61"
ANONYMOUS_COOKIE = f"%22{ANONYMOUS_ID}%22"


@pytest.fixture(scope="session")
def server() -> Iterator[DevServer]:
    """One stand-in on 127.0.0.1 for every integration test."""
    with DevServer(api_key=KEY, mappings=MAPPINGS, max_events=100_000) as running:
        yield running


@pytest.fixture
def courier(server: DevServer) -> DevServer:
    """The stand-in, emptied and without faults."""
    server.set_faults(Faults())
    server.reset()
    return server


@pytest.fixture(autouse=True)
def _segment_route() -> None:
    """The module-level client on route "segment", whose messages carry the whole context.

    (Route "api" sends a track's properties only: the integrations' context would not
    reach the stand-in to be checked. tests/conftest.py restores the setting.)
    """
    analytics.route = "segment"
