"""The stand-in's profiles are bounded by count and by bytes, the oldest going first."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import httpx
import pytest

from courier_analytics.devserver import DevServer
from courier_analytics.devserver._state import DevState, Profiles

API_KEY = "test-key-bounds"


@pytest.fixture
def small() -> Iterator[httpx.Client]:
    """A client of a stand-in that keeps 3 profiles and 3,000 bytes of them."""
    with DevServer(api_key=API_KEY, max_profiles=3, max_profile_bytes=3_000) as server:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=5) as http:
            http.server = server  # type: ignore[attr-defined]
            yield http


def test_past_max_profiles_the_least_recently_written_is_forgotten(small: httpx.Client) -> None:
    """A fourth profile pushes out the one written longest ago; a rewrite keeps one young."""
    for user in ("u1", "u2", "u3"):
        small.post(f"/profiles/{user}", json={"profile": {"n": 1}})
    small.post("/profiles/u1", json={"profile": {"n": 2}})  # u1 is now the newest
    small.post("/profiles/u4", json={"profile": {"n": 1}})
    assert small.get("/profiles/u2").status_code == 404
    server: DevServer = small.server  # type: ignore[attr-defined]
    assert sorted(server.profiles()) == ["u1", "u3", "u4"]
    assert server.stats()["profiles_evicted"] == 1


def test_past_max_profile_bytes_the_oldest_go_until_it_fits(small: httpx.Client) -> None:
    """Profiles over the byte bound in all push out the oldest, however few they are."""
    for user in ("u1", "u2"):
        small.post(f"/profiles/{user}", json={"profile": {"bio": "x" * 1_200}})
    small.post("/profiles/u3", json={"profile": {"bio": "y" * 1_200}})
    server: DevServer = small.server  # type: ignore[attr-defined]
    assert sorted(server.profiles()) == ["u2", "u3"]
    assert server.stats()["profile_bytes"] <= 3_000


def test_a_profile_larger_than_the_byte_bound_is_not_kept(small: httpx.Client) -> None:
    """One profile over the whole bound is answered as Courier would, and not kept."""
    small.post("/profiles/u1", json={"profile": {"n": 1}})
    response = small.post("/profiles/big", json={"profile": {"bio": "z" * 4_000}})
    assert response.status_code == 200
    assert small.get("/profiles/big").status_code == 404
    assert small.get("/profiles/u1").status_code == 200


def test_profiles_hold_about_their_json_and_no_more_than_the_bound() -> None:
    """Ten thousand 1.5 KB profiles into a 2 MB bound hold under 2.5 MB, measured."""
    state = DevState(api_key="k", max_profile_bytes=2_000_000)
    traits = {f"trait_{index}": "v" * 40 for index in range(30)}  # about 1.5 KB of JSON
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with state.lock:
            for user in range(10_000):
                state.profiles_by_id[f"user-{user}"] = {**traits, "id": user}
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert state.profiles_by_id.bytes <= 2_000_000
    assert held < 2_500_000
    assert len(state.profiles_by_id) < 2_000_000 // 1_500 + 1


def test_reads_are_fresh_copies() -> None:
    """Changing a profile read from the store changes nothing stored."""
    profiles = Profiles(10, 10_000)
    profiles["u1"] = {"tags": ["a"]}
    profile = profiles.get("u1")
    assert profile is not None
    profile["tags"].append("b")
    assert profiles.get("u1") == {"tags": ["a"]}
