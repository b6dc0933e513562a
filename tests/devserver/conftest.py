"""Fixtures: one real stand-in on 127.0.0.1 for the whole session, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from courier_analytics.devserver import DevServer, Faults

API_KEY = "test-key-5d1c"
MAPPINGS = {
    "Order Completed": "tmpl_order",
    "Segment-TrackEvent:Signed Up": "tmpl_welcome",
    "invoice.paid": "tmpl_invoice",
}


@pytest.fixture(scope="session")
def server() -> Iterator[DevServer]:
    """A running stand-in with a known key and mapping table."""
    with DevServer(api_key=API_KEY, mappings=MAPPINGS, max_body_bytes=64 * 1024) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(server: DevServer) -> None:
    """Each test starts with no data and no faults."""
    server.set_faults(Faults())
    server.reset()


@pytest.fixture
def client(server: DevServer) -> Iterator[httpx.Client]:
    """An authenticated client for the stand-in."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=5) as http:
        yield http


@pytest.fixture
def anonymous(server: DevServer) -> Iterator[httpx.Client]:
    """A client for the stand-in that sends no key."""
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        yield http
