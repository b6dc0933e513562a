"""What the stand-in keeps and whom it answers: depth, size, hosts, origins, idempotency."""

from __future__ import annotations

import http.client
import logging
from typing import Any

import httpx
import orjson
import pytest

from courier_analytics import Client
from courier_analytics.devserver import DevServer, Faults
from courier_analytics.devserver._server import exposure_warning
from courier_analytics.devserver._state import RENDER_DEPTH, Records


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(levels):
        value = {"d": value}
    return value


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, dict) and value:
        value = next(iter(value.values()))
        depth += 1
    return depth


IDENTIFY = {"type": "identify", "messageId": "m-deep", "userId": "u1", "traits": {"t": _deep(251)}}


def test_deep_nesting_that_was_accepted_never_breaks_a_view(
    client: httpx.Client, anonymous: httpx.Client, server: DevServer
) -> None:
    """A 251-level body is accepted and kept; the events API, page and snapshots show it cut."""
    assert client.post("/inbound/segment", json=IDENTIFY).status_code == 202
    assert client.post("/profiles/u2", json={"profile": {"t": _deep(251)}}).status_code == 200
    listed = anonymous.get("/__dev/events")
    assert listed.status_code == 200
    assert anonymous.get("/").status_code == 200
    assert anonymous.get("/__dev/profiles").status_code == 200
    (event, profile_event) = server.events()
    cut = event["data"]["traits"]
    assert RENDER_DEPTH - 3 <= _depth(cut) <= RENDER_DEPTH
    assert "nested deeper than" in orjson.dumps(cut).decode()
    assert listed.json()[1]["data"] == event["data"]
    assert profile_event["user"] == "u2"
    assert set(server.profiles()) == {"u1", "u2"}


def test_a_large_body_is_kept_as_a_preview_with_a_marker() -> None:
    """A body over max_event_bytes keeps its first characters and truncated.bytes; Courier's
    profile still gets every trait."""
    with DevServer(api_key="k", max_event_bytes=10_000) as server:
        big = {"type": "identify", "messageId": "m1", "userId": "u1", "traits": {"x": "y" * 50_000}}
        body = orjson.dumps(big)
        answer = httpx.post(server.base_url + "/inbound/segment", content=body,
                            headers={"Authorization": "Bearer k"})  # fmt: skip
        assert answer.status_code == 202
        (event,) = server.events()
        assert event["truncated"] == {"bytes": len(body)}
        assert isinstance(event["data"], str)
        assert body.decode().startswith(event["data"].rstrip("\u2026"))
        assert len(event["data"]) <= 2049
        assert server.profiles()["u1"]["x"] == "y" * 50_000


def test_what_the_page_fetches_is_bounded_per_event() -> None:
    """The page's fetch (?preview=300) carries 300 characters of each body, not the body."""
    with DevServer(api_key="k", max_body_bytes=2_000_000) as server:
        for n in range(5):
            traits = {"blob": "z" * 1_000_000}
            message = {"type": "identify", "messageId": f"m{n}", "userId": "u", "traits": traits}
            httpx.post(server.base_url + "/inbound/segment", json=message,
                       headers={"Authorization": "Bearer k"}, timeout=30)  # fmt: skip
        fetched = httpx.get(server.base_url + "/__dev/events?limit=500&preview=300")
        assert len(fetched.content) < 5 * 1000
        assert all(len(event["data"]) <= 301 for event in fetched.json())
        page = httpx.get(server.page_url)
        assert len(page.content) < 20_000


@pytest.mark.parametrize("path", ["/", "/__dev/events", "/__dev/stats", "/inbound/segment"])
def test_a_foreign_host_header_is_refused(server: DevServer, path: str) -> None:
    """A Host that names another site (DNS rebinding) gets 403 on every route."""
    with httpx.Client(base_url=server.base_url, headers={"Host": "attacker.example"}) as http:
        assert http.get(path).status_code == 403
        assert http.post("/__dev/reset").status_code == 403


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:1", "127.0.0.1", "app.localhost:8787", "[::1]:9", "10.1.2.3"]
)
def test_loopback_names_and_addresses_are_answered(server: DevServer, host: str) -> None:
    """localhost (and *.localhost) and any IP address are answered."""
    with httpx.Client(base_url=server.base_url, headers={"Host": host}) as http:
        assert http.get("/__dev/stats").status_code == 200


def _post_with_origin(server: DevServer, path: str, origin: str, body: bytes = b"{}") -> int:
    headers = {"Origin": origin, "Content-Type": "text/plain"}
    return httpx.post(server.base_url + path, content=body, headers=headers).status_code


@pytest.mark.parametrize("origin", ["http://attacker.example", "null", "https://127.0.0.1:1"])
def test_another_origin_cannot_change_the_stand_in(
    client: httpx.Client, server: DevServer, origin: str
) -> None:
    """A cross-origin POST to /__dev/faults or /__dev/reset is refused and changes nothing."""
    client.post("/profiles/u1", json={"profile": {"a": 1}})
    assert _post_with_origin(server, "/__dev/faults", origin, b'{"hang_rate": 1.0}') == 403
    assert _post_with_origin(server, "/__dev/reset", origin) == 403
    assert server.faults() == Faults()
    assert server.profiles() == {"u1": {"a": 1}}


def test_the_stand_ins_own_origin_may_change_it(server: DevServer) -> None:
    """A POST whose Origin is the stand-in's own (its page) is answered."""
    origin = server.base_url
    assert _post_with_origin(server, "/__dev/faults", origin, b'{"error_rate": 0.5}') == 200
    assert server.faults() == Faults(error_rate=0.5)


@pytest.mark.parametrize("size", [70 * 1024, 7 * 1024 * 1024])
def test_an_oversized_faults_body_is_413_and_changes_nothing(server: DevServer, size: int) -> None:
    """A body over 64 KiB to /__dev/faults is answered 413; the faults stay as they were."""
    server.set_faults(Faults(latency_ms=1))
    answer = httpx.post(server.base_url + "/__dev/faults", content=b" " * size, timeout=30)
    assert answer.status_code == 413
    assert server.faults() == Faults(latency_ms=1)


def test_a_seen_idempotency_key_replays_a_first_5xx(
    client: httpx.Client, server: DevServer
) -> None:
    """As Courier documents: the first answer, a 500 included, is replayed for the same key."""
    server.set_faults(Faults(fail_next=1, fail_with=500))
    track = {"event": "E", "messageId": "m1", "type": "track", "properties": {}, "userId": "u1"}
    first = client.post("/inbound/courier", json=track, headers={"Idempotency-Key": "k1"})
    again = client.post("/inbound/courier", json=track, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (500, 500)
    assert again.json() == first.json()
    assert server.events() == []
    fresh = client.post("/inbound/courier", json=track, headers={"Idempotency-Key": "k2"})
    assert fresh.status_code == 202


def test_a_validation_failure_is_not_saved_for_its_key(client: httpx.Client) -> None:
    """A 400 is not kept: the corrected request with the same key is applied."""
    headers = {"Idempotency-Key": "k1"}
    assert client.post("/profiles/u1", json={"nope": 1}, headers=headers).status_code == 400
    assert client.post("/profiles/u1", json={"profile": {}}, headers=headers).status_code == 200


def test_without_idempotency_keys_a_transient_500_ends_delivered(server: DevServer) -> None:
    """The client sends no Idempotency-Key on route api, so one 500 is retried to success."""
    server.set_faults(Faults(fail_next=2, fail_with=500))
    with Client(api_key=server.api_key, base_url=server.base_url, route="api",
                retry=_instant()) as client:  # fmt: skip
        client.identify("u1", {"plan": "pro"})
        client.track("Signed Up", user_id="u1")
        assert client.flush(10)
        assert (client.stats.delivered, client.stats.failed) == (2, 0)
    assert server.profiles() == {"u1": {"plan": "pro"}}


def _instant() -> Any:
    from courier_analytics import RetryPolicy

    return RetryPolicy(max_retries=5, initial_wait=0, max_wait=0, max_time=None)


def test_idempotency_records_are_bounded_by_count() -> None:
    """Beyond max_idempotency_records the oldest key is forgotten (and applies again)."""
    with DevServer(api_key="k", max_idempotency_records=2) as server:
        headers = {"Authorization": "Bearer k"}
        for key in ("k1", "k2", "k3", "k1"):
            httpx.post(server.base_url + "/profiles/u1", json={"profile": {"n": key}},
                       headers={**headers, "Idempotency-Key": key})  # fmt: skip
        merges = [e for e in server.events() if e["type"] == "profile.merge"]
        assert len(merges) == 4
        assert len(server.state.idempotent_answers) == 2


def test_records_expire_after_their_age() -> None:
    """A record older than its time to live is gone; a younger one stays."""
    now = [0.0]
    records: Records[str] = Records(10, 24 * 3600.0, lambda: now[0])
    records.add("old", "a")
    now[0] = 12 * 3600.0
    records.add("young", "b")
    now[0] = 24 * 3600.0 + 1
    assert (records.get("old"), records.get("young")) == (None, "b")
    assert len(records) == 1


def test_records_keep_the_first_value_and_the_count() -> None:
    """A key already kept keeps its first value; the oldest goes beyond the count."""
    records: Records[int] = Records(2, 60.0, lambda: 0.0)
    for key, value in (("a", 1), ("a", 2), ("b", 3), ("c", 4)):
        records.add(key, value)
    assert (records.get("a"), records.get("b"), records.get("c")) == (None, 3, 4)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "myhost.example"])
def test_binding_beyond_this_machine_is_warned_about(host: str) -> None:
    """Any address but loopback gets a warning that names what is exposed."""
    warning = exposure_warning(host)
    assert warning is not None
    assert host in warning
    assert "inject faults" in warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_binding_loopback_is_not_warned_about(host: str) -> None:
    """Loopback addresses get no warning."""
    assert exposure_warning(host) is None


def test_a_server_bound_to_every_interface_logs_the_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DevServer(host="0.0.0.0") logs a WARNING when it starts."""
    with caplog.at_level(logging.WARNING, "courier_analytics.devserver"):
        server = DevServer(host="0.0.0.0").start()
        server.stop()
    assert any("reachable from other machines" in r.getMessage() for r in caplog.records)


def test_a_raw_http_10_request_without_host_is_answered(server: DevServer) -> None:
    """No Host header (HTTP/1.0 tools) is no browser's request: it is answered."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.putrequest("GET", "/__dev/stats", skip_host=True)
        connection.endheaders()
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_allowed_hosts_are_answered_too() -> None:
    """A name given in allowed_hosts (a Docker service name, say) is answered; others not."""
    with DevServer(allowed_hosts=["standin"]) as server:
        for host, status in (("standin:8787", 200), ("other:8787", 403)):
            answer = httpx.get(server.base_url + "/__dev/stats", headers={"Host": host})
            assert answer.status_code == status
