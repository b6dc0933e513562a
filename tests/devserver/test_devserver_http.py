"""Auth, body size limit, routing, the inspection API and the page."""

from __future__ import annotations

import json

import httpx
import pytest

from courier_analytics.devserver import DevServer, Faults

IDENTIFY = {"type": "identify", "messageId": "m1", "userId": "u1", "traits": {"a": 1}}
COURIER_ROUTES = [
    ("POST", "/inbound/segment"),
    ("POST", "/inbound/courier"),
    ("GET", "/profiles/u1"),
    ("POST", "/profiles/u1"),
    ("PUT", "/profiles/u1"),
    ("PATCH", "/profiles/u1"),
    ("DELETE", "/profiles/u1"),
]


@pytest.mark.parametrize(("method", "path"), COURIER_ROUTES)
def test_missing_key_is_401(anonymous: httpx.Client, method: str, path: str) -> None:
    """Every Courier route answers 401 authentication_error without a bearer key."""
    response = anonymous.request(method, path, json={})
    assert response.status_code == 401
    assert response.json()["type"] == "authentication_error"


@pytest.mark.parametrize("value", ["Bearer wrong", "Basic dGVzdA==", "Bearer", "<bare key>"])
def test_wrong_authorization_is_401(anonymous: httpx.Client, server: DevServer, value: str) -> None:
    """A wrong key, another scheme or a bare key is 401 and has no effect."""
    value = server.api_key if value == "<bare key>" else value
    response = anonymous.post("/inbound/segment", json=IDENTIFY, headers={"Authorization": value})
    assert response.status_code == 401
    assert server.profiles() == {}


def test_accept_any_key_option() -> None:
    """With accept_any_key, any non-empty bearer key is accepted, none is still 401."""
    with DevServer(accept_any_key=True) as server:
        url = server.base_url + "/inbound/segment"
        ok = httpx.post(url, json=IDENTIFY, headers={"Authorization": "Bearer whatever"})
        missing = httpx.post(url, json=IDENTIFY)
    assert (ok.status_code, missing.status_code) == (202, 401)


def test_body_over_limit_is_413(client: httpx.Client, server: DevServer) -> None:
    """A body over the size limit gets 413 and is not applied."""
    big = {**IDENTIFY, "traits": {"blob": "x" * (64 * 1024)}}
    response = client.post("/inbound/segment", json=big)
    assert response.status_code == 413
    assert server.profiles() == {}


def test_chunked_body_over_limit_is_413(client: httpx.Client) -> None:
    """A streamed (chunked) body over the limit also gets 413."""
    chunks = iter([b"{" + b" " * 40_000, b" " * 40_000 + b"}"])
    response = client.post("/inbound/segment", content=chunks)
    assert response.status_code == 413


def test_default_limit_is_six_megabytes() -> None:
    """The default size limit is Courier's 6 MB."""
    server = DevServer()
    assert server.state.max_body_bytes == 6 * 1024 * 1024


def test_unknown_path_is_404(client: httpx.Client) -> None:
    """An unknown path is 404."""
    assert client.post("/send", json={}).status_code == 404


def test_wrong_method_is_405(client: httpx.Client) -> None:
    """GET on an inbound route is 405."""
    assert client.get("/inbound/segment").status_code == 405


def test_binds_loopback_by_default(server: DevServer) -> None:
    """The stand-in binds 127.0.0.1 unless told otherwise."""
    assert server.base_url.startswith("http://127.0.0.1:")


def test_events_api_is_newest_first_and_needs_no_key(
    client: httpx.Client, anonymous: httpx.Client, server: DevServer
) -> None:
    """GET /__dev/events lists events newest first, without auth; events() is oldest first."""
    for index in range(3):
        client.post("/inbound/segment", json={**IDENTIFY, "messageId": f"m{index}"})
    listed = anonymous.get("/__dev/events").json()
    assert [event["messageId"] for event in listed] == ["m2", "m1", "m0"]
    assert [event["messageId"] for event in server.events()] == ["m0", "m1", "m2"]
    assert set(listed[0]) >= {
        "received",
        "route",
        "type",
        "messageId",
        "user",
        "event",
        "status",
        "data",
        "send",
    }


def test_events_api_limit(client: httpx.Client, anonymous: httpx.Client) -> None:
    """GET /__dev/events?limit=N returns the N newest."""
    for index in range(3):
        client.post("/inbound/segment", json={**IDENTIFY, "messageId": f"m{index}"})
    assert [e["messageId"] for e in anonymous.get("/__dev/events?limit=1").json()] == ["m2"]


def test_profiles_api(client: httpx.Client, anonymous: httpx.Client) -> None:
    """GET /__dev/profiles returns every stored profile."""
    client.post("/inbound/segment", json=IDENTIFY)
    assert anonymous.get("/__dev/profiles").json() == {"u1": {"a": 1}}


def test_stats_count_requests_by_route_and_status(
    client: httpx.Client, anonymous: httpx.Client
) -> None:
    """GET /__dev/stats counts requests by route and status, applied ids and duplicates."""
    client.post("/inbound/segment", json=IDENTIFY)
    client.post("/inbound/segment", json=IDENTIFY)
    anonymous.post("/inbound/segment", json=IDENTIFY)
    stats = anonymous.get("/__dev/stats").json()
    assert stats["requests"]["POST /inbound/segment"] == {"202": 2, "401": 1}
    assert stats["message_ids_applied"] == 1
    assert stats["duplicates"] == 1


def test_reset_forgets_everything_but_config(
    client: httpx.Client, anonymous: httpx.Client, server: DevServer
) -> None:
    """POST /__dev/reset clears data, stats and idempotency records."""
    client.post("/inbound/segment", json=IDENTIFY)
    assert anonymous.post("/__dev/reset").status_code == 200
    assert (server.events(), server.profiles(), server.stats()["requests_total"]) == ([], {}, 0)
    assert client.post("/inbound/segment", json=IDENTIFY).status_code == 202
    assert server.profiles() == {"u1": {"a": 1}}


def test_snapshots_are_copies(client: httpx.Client, server: DevServer) -> None:
    """Mutating what events()/profiles() return does not change the stand-in."""
    client.post("/inbound/segment", json=IDENTIFY)
    server.profiles()["u1"]["a"] = 99
    server.events()[0]["data"]["traits"]["a"] = 99
    assert server.profiles()["u1"] == {"a": 1}
    assert server.events()[0]["data"]["traits"] == {"a": 1}


def test_page_lists_events_newest_first(client: httpx.Client, anonymous: httpx.Client) -> None:
    """GET / is an HTML page listing events newest first."""
    for name in ("First Event", "Second Event"):
        client.post(
            "/inbound/segment", json={**IDENTIFY, "type": "track", "event": name, "messageId": name}
        )
    page = anonymous.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.index("Second Event") < page.text.index("First Event")


def test_page_escapes_everything(client: httpx.Client, anonymous: httpx.Client) -> None:
    """Event names, users and data are HTML-escaped on the page."""
    evil = "<script>alert(1)</script>"
    body = {
        "type": "track",
        "messageId": "m1",
        "userId": '"><img src=x>',
        "event": evil,
        "properties": {"p": evil},
    }
    client.post("/inbound/segment", json=body)
    text = anonymous.get("/").text
    assert evil not in text
    assert "<img src=x>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_page_has_strict_content_security_policy(anonymous: httpx.Client) -> None:
    """The page forbids any script but its own inline one."""
    csp = anonymous.get("/").headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'sha256-" in csp
    assert "unsafe-inline" not in csp


def test_api_key_never_leaks(
    client: httpx.Client, anonymous: httpx.Client, server: DevServer
) -> None:
    """The key appears on neither the page, the inspection API nor the repr."""
    client.post("/inbound/segment", json=IDENTIFY, headers={"Idempotency-Key": "k"})
    anonymous.post(
        "/inbound/segment", json=IDENTIFY, headers={"Authorization": "Bearer leaked-guess"}
    )
    server.set_faults(Faults(latency_ms=1))
    seen = [
        anonymous.get(path).text
        for path in (
            "/",
            "/__dev/events",
            "/__dev/profiles",
            "/__dev/stats",
            "/__dev/sends",
            "/__dev/faults",
        )
    ]
    seen.append(repr(server))
    seen.append(json.dumps([server.events(), server.stats(), server.sends()]))
    for text in seen:
        assert server.api_key not in text
        assert "leaked-guess" not in text
