"""The exact requests each route makes, seen at the HTTP layer with respx.

respx fakes httpx's transports, so these clients are given ``HTTPX``, an httpx
transport, instead of the default native sender; the native sender's bytes are
pinned in test_http11.py and end to end against the stand-in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from courier_analytics import Client, Message
from courier_analytics._client import make_message
from courier_analytics._messages import LIBRARY, MessageFactory
from courier_analytics._routes import ApiRoute
from courier_analytics._transport import USER_AGENT

from .fakes import NO_WAIT, FakeCourier, make_client

BASE = "https://api.courier.com"
WHEN = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)


def httpx_client(**options: Any) -> Client:
    """A client sending through an httpx transport, which respx can fake."""
    return Client(transport=httpx.AsyncHTTPTransport(), **options)


@pytest.fixture
def courier() -> Iterator[respx.MockRouter]:
    """Courier faked at the transport: every POST is accepted."""
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.post("/inbound/segment").respond(202, json={"messageId": "x"})
        router.post("/inbound/courier").respond(202, json={"messageId": "x"})
        router.post(path__regex=r"^/profiles/.+").respond(200, json={"status": "SUCCESS"})
        yield router


def sent(courier: respx.MockRouter) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """(raw path, headers, JSON body) of each request made."""
    return [
        (c.request.url.raw_path.decode(), dict(c.request.headers), orjson.loads(c.request.content))
        for c in courier.calls
    ]


def deliver(route: str, call: str, *args: Any, **kwargs: Any) -> None:
    """Make one call on a fresh client with ``route`` and deliver it."""
    with httpx_client(api_key="sk_live_abc", route=route) as client:
        getattr(client, call)(*args, timestamp=WHEN, message_id="m-1", **kwargs)
        assert client.flush(5)


def test_requests_carry_auth_json_and_user_agent_headers(courier: respx.MockRouter) -> None:
    """Every request has the bearer key, JSON content type and the library's user agent."""
    deliver("segment", "track", "Signed Up", user_id="u1")
    ((_, headers, _),) = sent(courier)
    assert headers["authorization"] == "Bearer sk_live_abc"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT


def test_segment_route_posts_identify_unchanged(courier: respx.MockRouter) -> None:
    """Route segment posts the identify message as is to /inbound/segment."""
    deliver("segment", "identify", "u1", {"email": "a@example.com"})
    ((path, _, body),) = sent(courier)
    assert path == "/inbound/segment"
    assert body == {
        "type": "identify",
        "messageId": "m-1",
        "timestamp": "2026-03-04T05:06:07.000+00:00",
        "userId": "u1",
        "traits": {"email": "a@example.com"},
        "context": {"library": LIBRARY},
    }


def test_segment_route_posts_track_unchanged(courier: respx.MockRouter) -> None:
    """Route segment posts the track message as is; Courier adds the event prefix."""
    deliver("segment", "track", "Order Completed", {"total": 10}, user_id="u1")
    ((path, _, body),) = sent(courier)
    assert path == "/inbound/segment"
    assert body == {
        "type": "track",
        "messageId": "m-1",
        "timestamp": "2026-03-04T05:06:07.000+00:00",
        "userId": "u1",
        "event": "Order Completed",
        "properties": {"total": 10},
        "context": {"library": LIBRARY},
    }


def test_segment_route_posts_group(courier: respx.MockRouter) -> None:
    """Route segment posts group messages (Courier logs them)."""
    deliver("segment", "group", "g1", {"name": "Acme"}, user_id="u1")
    ((path, _, body),) = sent(courier)
    assert (path, body["type"], body["groupId"], body["traits"]) == (
        "/inbound/segment",
        "group",
        "g1",
        {"name": "Acme"},
    )


def test_default_route_is_couriers_documented_api(courier: respx.MockRouter) -> None:
    """Without a route, identify goes to /profiles/{id} and track to /inbound/courier."""
    with httpx_client(api_key="k") as client:
        client.identify("u1", {"a": 1})
        client.track("E", user_id="u1")
        assert client.flush(5)
    assert client.options.route == "api"
    assert [path for path, _, _ in sent(courier)] == ["/profiles/u1", "/inbound/courier"]


@pytest.mark.parametrize("route", ["segment", "api"])
def test_page_is_not_sent_on_either_route(courier: respx.MockRouter, route: str) -> None:
    """page is validated and skipped: Courier answers 501 to it."""
    deliver(route, "page", "Home", user_id="u1")
    assert sent(courier) == []


def test_api_route_merges_identify_into_the_profile(courier: respx.MockRouter) -> None:
    """Route api posts {"profile": traits} to /profiles/{id}."""
    deliver("api", "identify", "user/1 é", {"email": "a@example.com", "phone_number": None})
    ((path, _, body),) = sent(courier)
    assert path == "/profiles/user%2F1%20%C3%A9"
    assert body == {"profile": {"email": "a@example.com", "phone_number": None}}


@pytest.mark.parametrize("route", ["segment", "api"])
def test_no_request_carries_an_idempotency_key(courier: respx.MockRouter, route: str) -> None:
    """Courier would replay a saved 5xx to every retry with the same key: none is sent."""
    deliver(route, "identify", "u1", {"email": "a@example.com"})
    deliver(route, "track", "Order Completed", user_id="u1")
    requests = sent(courier)
    assert len(requests) == 2
    assert all("idempotency-key" not in headers for _, headers, _ in requests)


RETRIED = [
    ("segment", "identify", ("u1", {"a": 1}), {}, "/inbound/segment", 202),
    ("segment", "track", ("E",), {"user_id": "u1"}, "/inbound/segment", 202),
    ("api", "identify", ("u1", {"a": 1}), {}, "/profiles/u1", 200),
    ("api", "track", ("E",), {"user_id": "u1"}, "/inbound/courier", 202),
]


@pytest.mark.parametrize(("route", "call", "args", "kwargs", "path", "ok"), RETRIED)
def test_a_transient_500_then_success_ends_delivered(
    route: str, call: str, args: tuple[Any, ...], kwargs: dict[str, Any], path: str, ok: int
) -> None:
    """A 500 on the first attempt, then success: the retry delivers the message."""
    saved: dict[str, httpx.Response] = {}
    fresh = iter([httpx.Response(500, json={"message": "oops"}), httpx.Response(ok)])

    def like_courier(request: httpx.Request) -> httpx.Response:
        # Courier saves the first answer to an Idempotency-Key, a 500 included.
        key = request.headers.get("idempotency-key")
        if key is not None and key in saved:
            return saved[key]
        answer = next(fresh)
        if key is not None:
            saved[key] = answer
        return answer

    with respx.mock(base_url=BASE) as router:
        answers = router.post(path).mock(side_effect=like_courier)
        with httpx_client(api_key="k", route=route, retry=NO_WAIT) as client:
            getattr(client, call)(*args, **kwargs)
            assert client.flush(5)
            stats = client.stats
    assert answers.call_count == 2
    assert (stats.delivered, stats.retried, stats.failed) == (1, 1, 0)


def test_api_route_posts_track_as_prefixed_inbound_event(courier: respx.MockRouter) -> None:
    """Route api posts track to /inbound/courier with the Segment event prefix."""
    deliver("api", "track", "Order Completed", {"total": 10}, user_id="u1")
    ((path, _, body),) = sent(courier)
    assert path == "/inbound/courier"
    assert body == {
        "event": "Segment-TrackEvent:Order Completed",
        "messageId": "m-1",
        "type": "track",
        "properties": {"total": 10},
        "userId": "u1",
    }


def test_api_route_files_anonymous_messages_under_the_namespaced_anonymous_id(
    courier: respx.MockRouter,
) -> None:
    """Without a user id, route api's profile id is anonymous:<anonymous id>, never a user's."""
    deliver("api", "track", "Viewed", anonymous_id="1")
    deliver("api", "identify", traits={"plan": "pro"}, anonymous_id="1")
    deliver("api", "track", "Viewed", user_id="u1", anonymous_id="1")
    [(_, _, track), (identify_path, _, _), (_, _, known)] = sent(courier)
    assert (track["userId"], identify_path, known["userId"]) == (
        "anonymous:1",
        "/profiles/anonymous%3A1",
        "u1",
    )


def test_api_route_uses_the_configured_event_prefix(courier: respx.MockRouter) -> None:
    """event_prefix replaces the default prefix on route api."""
    with httpx_client(api_key="k", route="api", event_prefix="") as client:
        client.track("Raw Name", user_id="u1")
        client.flush(5)
    assert sent(courier)[0][2]["event"] == "Raw Name"


def test_api_route_skips_group(courier: respx.MockRouter) -> None:
    """group has no meaning on Courier's public API: skipped on route api."""
    with httpx_client(api_key="k", route="api") as client:
        client.group("g1", user_id="u1")
        client.flush(5)
        assert client.stats.skipped == 1
    assert sent(courier) == []


def test_eu_region_sends_to_the_eu_host() -> None:
    """region='eu' sends to api.eu.courier.com."""
    with respx.mock(base_url="https://api.eu.courier.com") as router:
        route = router.post("/inbound/courier").respond(202, json={})
        with httpx_client(api_key="k", region="eu") as client:
            client.track("E", user_id="u")
            client.flush(5)
        assert route.call_count == 1


def test_base_url_env_wins_over_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """COURIER_BASE_URL replaces the region's host, path prefix included."""
    monkeypatch.setenv("COURIER_BASE_URL", "https://proxy.example.com/courier/")
    with respx.mock(base_url="https://proxy.example.com") as router:
        route = router.post("/courier/inbound/courier").respond(202, json={})
        with httpx_client(api_key="k", region="eu") as client:
            client.track("E", user_id="u")
            client.flush(5)
        assert route.call_count == 1


def test_sync_transport_is_supported() -> None:
    """A synchronous httpx transport (e.g. one with a proxy) works too."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(202, json={})

    class SyncOnly(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return handler(request)

    with Client(api_key="k", transport=SyncOnly()) as client:
        client.track("E", user_id="u")
        assert client.flush(5)
    assert seen == ["/inbound/courier"]


@pytest.mark.parametrize(
    ("kind", "args", "who"),
    [
        ("track", ("Order Completed", {"total": 42.5, "when": WHEN, 7: [1, "é"]}), "user_id"),
        ("track", ('Ünïcode "quoted"', None), "anonymous_id"),
        ("identify", ("u/1 é", {"email": "a@example.com", "gone": None}), None),
        ("identify", (None, {"a": {"b": [1.5, True]}}), "anonymous_id"),
    ],
)
def test_api_route_makes_the_same_bytes_from_compact_and_whole_messages(
    kind: str, args: tuple[Any, ...], who: str | None
) -> None:
    """Courier's body from a compact message is byte for byte the one decoding makes."""
    call = {"context": None, "timestamp": WHEN, "message_id": "m-1", "integrations": None}
    if who is not None:
        call[who] = 'u"1'
    call.setdefault("anonymous_id", None)
    if kind == "track":
        call.setdefault("user_id", None)
    compact = getattr(MessageFactory(), kind)(*args, **call)
    assert compact._mid is None
    whole = Message(kind, compact.message_id, compact.user_id, compact.anonymous_id,
                    compact.event, compact.body)  # fmt: skip
    route = ApiRoute(event_prefix="P:")
    assert route.request(compact) == route.request(whole)


@pytest.mark.parametrize(("route", "compact"), [("api", True), ("segment", False)])
def test_only_route_api_makes_compact_messages(route: Any, compact: bool) -> None:
    """Route segment sends whole bodies, so its messages are kept whole, not remade per request."""
    call: dict[str, Any] = {"user_id": "u1", "anonymous_id": None, "context": None}
    call.update(timestamp=None, message_id=None, integrations=None)
    with Client(api_key="k", route=route, send=False) as client:
        message = make_message(client, lambda f: f.track("E", {"a": 1}, **call))
    assert (message._mid is None) is compact


def test_calls_made_the_short_way_send_what_the_factory_makes() -> None:
    """Plain identify() and track() calls (made without the factory) send the same bodies."""
    courier = FakeCourier()
    with make_client(courier) as client:
        client.identify("u1", {"email": "a@example.com", "gone": None})
        message_id = client.track("Order Completed", {"total": 1.5}, user_id="u1")
        assert client.flush(5)
    assert courier.paths() == ["/profiles/u1", "/inbound/courier"]
    assert courier.bodies == [
        {"profile": {"email": "a@example.com", "gone": None}},
        {
            "event": "Segment-TrackEvent:Order Completed",
            "messageId": message_id,
            "type": "track",
            "properties": {"total": 1.5},
            "userId": "u1",
        },
    ]
