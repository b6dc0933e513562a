"""Fault injection: each kind, deterministic modes, runtime changes, apply-then-fail."""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime

import httpx
import pytest

from courier_analytics.devserver import DevServer, Faults

IDENTIFY = {"type": "identify", "messageId": "m1", "userId": "u1", "traits": {"a": 1}}


def post_identify(client: httpx.Client, message_id: str = "m1", **kwargs: object) -> httpx.Response:
    return client.post("/inbound/segment", json={**IDENTIFY, "messageId": message_id}, **kwargs)  # type: ignore[arg-type]


def test_fail_next_n_with_status(client: httpx.Client, server: DevServer) -> None:
    """fail_next=N fails exactly the next N requests with the status, unapplied."""
    server.set_faults(Faults(fail_next=2, fail_with=503))
    statuses = [post_identify(client).status_code for _ in range(3)]
    assert statuses == [503, 503, 202]
    assert len(server.events()) == 1
    assert server.stats()["faults_injected"] == {"error": 2}


def test_fault_body_is_courier_error(client: httpx.Client, server: DevServer) -> None:
    """A 5xx fault carries a Courier-shaped error body."""
    server.set_faults(Faults(fail_next=1, fail_with=500))
    response = post_identify(client)
    assert response.status_code == 500
    assert set(response.json()) == {"message", "type"}


def test_rate_limit_with_retry_after_seconds(client: httpx.Client, server: DevServer) -> None:
    """A 429 fault sends Retry-After in seconds and is not applied."""
    server.set_faults(Faults(fail_next=1, fail_with=429, retry_after=3))
    response = post_identify(client)
    assert (response.status_code, response.headers["retry-after"]) == (429, "3")
    assert response.json()["type"] == "rate_limit_error"
    assert server.profiles() == {}


def test_rate_limit_with_retry_after_http_date(client: httpx.Client, server: DevServer) -> None:
    """Retry-After can be an HTTP date in the future."""
    server.set_faults(
        Faults(fail_next=1, fail_with=429, retry_after=30, retry_after_format="http-date")
    )
    header = post_identify(client).headers["retry-after"]
    assert parsedate_to_datetime(header).timestamp() > time.time() + 20


def test_rate_limit_without_retry_after(client: httpx.Client, server: DevServer) -> None:
    """With retry_after=None, the 429 has no Retry-After header."""
    server.set_faults(Faults(fail_next=1, fail_with=429, retry_after=None))
    response = post_identify(client)
    assert response.status_code == 429
    assert "retry-after" not in response.headers


def test_drop_closes_connection_without_answer(client: httpx.Client, server: DevServer) -> None:
    """A dropped request closes the connection with no answer and is not applied."""
    server.set_faults(Faults(fail_next=1, fail_with="drop"))
    with pytest.raises(httpx.RemoteProtocolError):
        post_identify(client)
    assert server.profiles() == {}
    assert post_identify(client).status_code == 202
    assert server.stats()["faults_injected"] == {"drop": 1}


def test_hang_never_answers(client: httpx.Client, server: DevServer) -> None:
    """A hanging request is never answered (the client times out) and is not applied."""
    server.set_faults(Faults(fail_next=1, fail_with="hang"))
    with pytest.raises(httpx.ReadTimeout):
        post_identify(client, timeout=0.2)
    assert server.profiles() == {}


def test_stop_releases_hanging_requests() -> None:
    """Stopping the stand-in ends a hanging request instead of waiting for it."""
    server = DevServer(api_key="k", faults=Faults(fail_next=1, fail_with="hang")).start()
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            httpx.post(
                server.base_url + "/inbound/segment",
                json=IDENTIFY,
                headers={"Authorization": "Bearer k"},
                timeout=10,
            )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert server.wait_for(lambda: server.stats()["faults_injected"].get("hang") == 1)
    started = time.monotonic()
    server.stop()
    caller.join(5)
    assert time.monotonic() - started < 5
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.RemoteProtocolError)


def test_slow_body_delivers_correct_answer_slowly(client: httpx.Client, server: DevServer) -> None:
    """A slow body arrives complete but takes slow_body_ms, and the request is applied."""
    server.set_faults(Faults(fail_next=1, fail_with="slow_body", slow_body_ms=200))
    started = time.monotonic()
    response = post_identify(client)
    assert time.monotonic() - started >= 0.18
    assert (response.status_code, response.json()) == (202, {"messageId": "m1"})
    assert server.profiles() == {"u1": {"a": 1}}


def test_fixed_latency_delays_answers(client: httpx.Client, server: DevServer) -> None:
    """latency_ms delays every Courier answer."""
    server.set_faults(Faults(latency_ms=60))
    started = time.monotonic()
    assert post_identify(client).status_code == 202
    assert time.monotonic() - started >= 0.055


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_latency_distributions_are_seeded_and_non_negative(distribution: str) -> None:
    """Latency distributions draw reproducibly from the seed and never go below 0."""
    from courier_analytics.devserver._faults import FaultInjector

    faults = Faults(latency_ms=5, latency_jitter_ms=50, latency_distribution=distribution, seed=7)  # type: ignore[arg-type]
    draws = [FaultInjector(faults).latency_s() for _ in range(2)]
    series = [FaultInjector(faults) for _ in range(2)]
    assert draws[0] == draws[1]
    values = [series[0].latency_s() for _ in range(200)]
    assert values == [series[1].latency_s() for _ in range(200)]
    assert min(values) >= 0
    assert len(set(values)) > 1


def test_fail_matching_message_ids(client: httpx.Client, server: DevServer) -> None:
    """Requests whose messageId matches the pattern fail; others pass."""
    server.set_faults(Faults(fail_message_ids=r"^bad-", fail_with=502))
    assert post_identify(client, "bad-1").status_code == 502
    assert post_identify(client, "good-1").status_code == 202
    assert post_identify(client, "bad-1").status_code == 502


def test_fail_matching_message_ids_a_number_of_times(
    client: httpx.Client, server: DevServer
) -> None:
    """fail_message_ids_times lets a retried messageId succeed after N failures, applied once."""
    server.set_faults(Faults(fail_message_ids="m1", fail_message_ids_times=2, fail_with=500))
    statuses = [post_identify(client, "m1").status_code for _ in range(4)]
    assert statuses == [500, 500, 202, 202]
    assert server.stats()["message_ids_applied"] == 1
    assert server.stats()["duplicates"] == 1


def test_idempotency_key_is_matched_as_message_id(client: httpx.Client, server: DevServer) -> None:
    """On profile routes the Idempotency-Key is what fail_message_ids matches."""
    server.set_faults(Faults(fail_message_ids="^key-", fail_with=500))
    response = client.post(
        "/profiles/u1", json={"profile": {"a": 1}}, headers={"Idempotency-Key": "key-1"}
    )
    assert response.status_code == 500
    assert server.profiles() == {}


def test_apply_first_then_drop(client: httpx.Client, server: DevServer) -> None:
    """apply_first applies the request, then drops the answer (a lost answer)."""
    server.set_faults(Faults(fail_next=1, fail_with="drop", apply_first=True))
    with pytest.raises(httpx.RemoteProtocolError):
        post_identify(client)
    assert server.profiles() == {"u1": {"a": 1}}
    assert post_identify(client).json() == {"messageId": "m1"}
    assert server.stats()["duplicates"] == 1


def test_apply_first_then_hang(client: httpx.Client, server: DevServer) -> None:
    """apply_first with hang applies the request, then never answers."""
    server.set_faults(Faults(fail_next=1, fail_with="hang", apply_first=True))
    with pytest.raises(httpx.ReadTimeout):
        post_identify(client, timeout=0.2)
    assert server.profiles() == {"u1": {"a": 1}}


def test_apply_first_then_error_on_courier_route(client: httpx.Client, server: DevServer) -> None:
    """apply_first with a 5xx: the retry then meets 409, proving the first was applied."""
    server.set_faults(Faults(fail_next=1, fail_with=500, apply_first=True))
    body = {"event": "E", "messageId": "c1", "type": "track", "userId": "u1"}
    assert client.post("/inbound/courier", json=body).status_code == 500
    assert client.post("/inbound/courier", json=body).status_code == 409


def test_random_faults_are_reproducible_with_seed(client: httpx.Client, server: DevServer) -> None:
    """Random fault rates draw from a seeded RNG: same seed, same sequence."""
    faults = Faults(error_rate=0.3, rate_limit_rate=0.2, error_statuses=(500, 503), seed=42)
    runs = []
    for _ in range(2):
        server.set_faults(faults)
        runs.append([post_identify(client, f"r{i}").status_code for i in range(30)])
        server.reset()
    assert runs[0] == runs[1]
    assert {500, 503, 429, 202} <= set(runs[0])


def test_faults_skip_inspection_api(anonymous: httpx.Client, server: DevServer) -> None:
    """Faults never touch / and /__dev/*."""
    server.set_faults(Faults(fail_next=5, fail_with=500))
    assert anonymous.get("/__dev/stats").status_code == 200
    assert anonymous.get("/").status_code == 200


def test_faults_changed_over_http(
    client: httpx.Client, anonymous: httpx.Client, server: DevServer
) -> None:
    """POST /__dev/faults changes faults at run time; GET shows them; {} clears them."""
    response = anonymous.post("/__dev/faults", json={"fail_next": 1, "fail_with": 503})
    assert response.status_code == 200
    assert anonymous.get("/__dev/faults").json()["fail_next"] == 1
    assert post_identify(client).status_code == 503
    anonymous.post("/__dev/faults", json={"fail_next": 3})
    anonymous.post("/__dev/faults", json={})
    assert post_identify(client).status_code == 202


@pytest.mark.parametrize(
    "body",
    [{"error_rate": 2}, {"nope": 1}, {"fail_with": 302}, {"fail_message_ids": "("}, [1]],
)
def test_invalid_faults_over_http_are_400(anonymous: httpx.Client, body: object) -> None:
    """Invalid fault settings are refused with 400 and a reason."""
    response = anonymous.post("/__dev/faults", json=body)
    assert response.status_code == 400
    assert response.json()["message"]


def test_faults_at_start() -> None:
    """Faults given to the constructor apply from the first request."""
    with DevServer(api_key="k", faults=Faults(fail_next=1, fail_with=502)) as server:
        url = server.base_url + "/inbound/segment"
        response = httpx.post(url, json=IDENTIFY, headers={"Authorization": "Bearer k"})
    assert response.status_code == 502


def test_fail_with_a_4xx_rejects_only_the_matching_message(
    client: httpx.Client, anonymous: httpx.Client
) -> None:
    """fail_with=400 with fail_message_ids answers Courier's 400 error body to that message only."""
    anonymous.post("/__dev/faults", json={"fail_message_ids": "^bad$", "fail_with": 400})
    bad = client.post(
        "/inbound/segment", json={"type": "track", "messageId": "bad", "event": "E", "userId": "u"}
    )
    good = client.post(
        "/inbound/segment", json={"type": "track", "messageId": "good", "event": "E", "userId": "u"}
    )
    assert (bad.status_code, bad.json()["type"]) == (400, "invalid_request_error")
    assert good.status_code == 202
