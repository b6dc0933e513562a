"""Fixtures: the real client against the real local Courier stand-in on 127.0.0.1."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from courier_analytics import Client, RetryPolicy
from courier_analytics.devserver import DevServer, Faults

KEY = "e2e-key-41f0"
MAPPINGS = {"Segment-TrackEvent:Order Completed": "tmpl_order"}

#: Instant retries: fault tests stay fast without sleeping.
INSTANT = RetryPolicy(max_retries=100, initial_wait=0, max_wait=0, max_time=None)

MakeClient = Callable[..., Client]


@pytest.fixture(scope="session")
def server() -> Iterator[DevServer]:
    """One stand-in for the session."""
    with DevServer(api_key=KEY, mappings=MAPPINGS, max_events=100_000) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(server: DevServer) -> None:
    """Each test starts with an empty stand-in and no faults."""
    server.set_faults(Faults())
    server.reset()


@pytest.fixture(params=["segment", "api"])
def route(request: pytest.FixtureRequest) -> str:
    """Both delivery routes."""
    return str(request.param)


@pytest.fixture
def make_client(server: DevServer, route: str) -> Iterator[MakeClient]:
    """Build clients for the stand-in on ``route``; all are shut down after the test."""
    made: list[Client] = []

    def make(**options: Any) -> Client:
        options = {"api_key": KEY, "base_url": server.base_url, "route": route,
                   "retry": INSTANT, "timeout": 5.0, **options}  # fmt: skip
        client = Client(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown(5)


def order_by_user(server: DevServer) -> dict[str, list[int]]:
    """The ``n`` property of each user's events, in the order the stand-in applied them."""
    seen: dict[str, list[int]] = defaultdict(list)
    for event in server.events():
        data = event["data"]
        properties = data.get("properties", {})
        if "n" in properties:
            seen[str(event["user"])].append(properties["n"])
    return seen
