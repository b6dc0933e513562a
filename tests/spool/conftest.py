"""Fixtures: a Courier stand-in on 127.0.0.1 for the spool's process tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from courier_analytics.devserver import DevServer, Faults

KEY = "spool-key-7c1d"


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    """One stand-in for the module."""
    with DevServer(api_key=KEY, max_events=200_000) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(server: DevServer) -> None:
    """Each test starts with an empty stand-in and no faults."""
    server.set_faults(Faults())
    server.reset()
