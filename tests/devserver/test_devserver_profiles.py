"""/profiles/{user_id}: merge, replace, patch, get, delete, Idempotency-Key."""

from __future__ import annotations

import http.client

import httpx
import pytest

from courier_analytics.devserver import DevServer


def test_post_merges_and_answers_success(client: httpx.Client, server: DevServer) -> None:
    """POST merges into the profile (creating it) and answers 200 SUCCESS."""
    response = client.post("/profiles/u1", json={"profile": {"email": "a@example.com"}})
    assert (response.status_code, response.json()) == (200, {"status": "SUCCESS"})
    client.post("/profiles/u1", json={"profile": {"name": "Ada"}})
    assert server.profiles()["u1"] == {"email": "a@example.com", "name": "Ada"}


def test_post_null_removes_key(client: httpx.Client, server: DevServer) -> None:
    """POST with a key set to null removes that key."""
    client.post("/profiles/u1", json={"profile": {"email": "a@example.com", "name": "Ada"}})
    client.post("/profiles/u1", json={"profile": {"name": None}})
    assert server.profiles()["u1"] == {"email": "a@example.com"}


def test_put_replaces_profile(client: httpx.Client, server: DevServer) -> None:
    """PUT replaces the whole profile."""
    client.post("/profiles/u1", json={"profile": {"email": "a@example.com"}})
    assert client.put("/profiles/u1", json={"profile": {"name": "Ada"}}).status_code == 200
    assert server.profiles()["u1"] == {"name": "Ada"}


def test_get_returns_profile(client: httpx.Client) -> None:
    """GET returns {"profile": ...}."""
    client.post("/profiles/u1", json={"profile": {"email": "a@example.com"}})
    response = client.get("/profiles/u1")
    assert (response.status_code, response.json()) == (200, {"profile": {"email": "a@example.com"}})


def test_get_unknown_profile_is_404(client: httpx.Client) -> None:
    """GET of an unknown user is 404."""
    assert client.get("/profiles/nobody").status_code == 404


def test_delete_removes_profile(client: httpx.Client, server: DevServer) -> None:
    """DELETE removes the profile."""
    client.post("/profiles/u1", json={"profile": {"email": "a@example.com"}})
    assert client.delete("/profiles/u1").status_code == 204
    assert client.get("/profiles/u1").status_code == 404
    assert server.profiles() == {}


def test_user_id_is_url_decoded(client: httpx.Client, server: DevServer) -> None:
    """A URL-encoded user id (with / and spaces) is stored decoded."""
    client.post("/profiles/team%2Fa%20b", json={"profile": {"x": 1}})
    assert server.profiles() == {"team/a b": {"x": 1}}


@pytest.mark.parametrize(
    ("raw_path", "status", "profiles"),
    [
        ("/profiles/..", 404, {}),
        ("/profiles/.", 404, {}),
        ("/profiles/a/../b", 200, {"b": {"x": 1}}),
        ("/profiles/%2E%2E", 200, {"..": {"x": 1}}),
    ],
)
def test_dot_segments_are_resolved_as_a_real_server_resolves_them(
    server: DevServer, client: httpx.Client, raw_path: str, status: int, profiles: dict[str, object]
) -> None:
    """A raw `/profiles/..` is the root (404), as servers and proxies read it; `%2E%2E` is an id."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        headers = {**client.headers, "Content-Type": "application/json"}
        connection.request("POST", raw_path, body=b'{"profile": {"x": 1}}', headers=headers)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == status
    assert server.profiles() == profiles


def test_post_without_profile_object_is_400(client: httpx.Client) -> None:
    """POST without a "profile" object is 400."""
    response = client.post("/profiles/u1", json={"email": "a@example.com"})
    assert response.status_code == 400
    assert response.json()["type"] == "invalid_request_error"


PATCH_CASES = [
    (
        [{"op": "add", "path": "/name", "value": "Ada"}],
        {"email": "e", "tags": ["a", "b"], "name": "Ada"},
    ),
    ([{"op": "add", "path": "/tags/-", "value": "c"}], {"email": "e", "tags": ["a", "b", "c"]}),
    ([{"op": "add", "path": "/tags/0", "value": "z"}], {"email": "e", "tags": ["z", "a", "b"]}),
    ([{"op": "remove", "path": "/email"}], {"tags": ["a", "b"]}),
    ([{"op": "replace", "path": "/email", "value": "f"}], {"email": "f", "tags": ["a", "b"]}),
    ([{"op": "move", "from": "/email", "path": "/mail"}], {"mail": "e", "tags": ["a", "b"]}),
    (
        [{"op": "copy", "from": "/tags/1", "path": "/first"}],
        {"email": "e", "tags": ["a", "b"], "first": "b"},
    ),
    (
        [{"op": "test", "path": "/email", "value": "e"}, {"op": "remove", "path": "/tags/0"}],
        {"email": "e", "tags": ["b"]},
    ),
]


@pytest.mark.parametrize(("ops", "expected"), PATCH_CASES)
def test_patch_applies_rfc6902_op(
    client: httpx.Client, server: DevServer, ops: list[object], expected: object
) -> None:
    """PATCH applies each RFC 6902 operation."""
    client.post("/profiles/u1", json={"profile": {"email": "e", "tags": ["a", "b"]}})
    response = client.patch("/profiles/u1", json={"patch": ops})
    assert (response.status_code, response.json()) == (200, {"status": "SUCCESS"})
    assert server.profiles()["u1"] == expected


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/email", "value": "other"}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "add", "path": "/tags/9", "value": 1}],
        [{"op": "frobnicate", "path": "/email"}],
        [{"op": "add", "path": "/email/x", "value": 1}],
        "not a list",
    ],
)
def test_failed_patch_is_400_and_changes_nothing(
    client: httpx.Client, server: DevServer, ops: object
) -> None:
    """A patch that fails (including a failed test op) is 400 and leaves the profile as it was."""
    client.post("/profiles/u1", json={"profile": {"email": "e", "tags": ["a", "b"]}})
    response = client.patch(
        "/profiles/u1",
        json={"patch": [{"op": "remove", "path": "/tags"}, *ops] if isinstance(ops, list) else ops},
    )
    assert response.status_code == 400
    assert server.profiles()["u1"] == {"email": "e", "tags": ["a", "b"]}


def test_patch_unknown_profile_is_404(client: httpx.Client) -> None:
    """PATCH of an unknown user is 404."""
    assert client.patch("/profiles/nobody", json={"patch": []}).status_code == 404


def test_idempotency_key_replays_first_answer(client: httpx.Client, server: DevServer) -> None:
    """A POST with a seen Idempotency-Key gets the first answer and is not applied again."""
    headers = {"Idempotency-Key": "k-1"}
    first = client.post("/profiles/u1", json={"profile": {"n": 1}}, headers=headers)
    again = client.post("/profiles/u1", json={"profile": {"n": 2}}, headers=headers)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert server.profiles()["u1"] == {"n": 1}
    assert server.stats()["duplicates"] == 1
