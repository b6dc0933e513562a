"""POST /inbound/segment: the rows of courier-api.md's route 1 table."""

from __future__ import annotations

import httpx
import pytest

from courier_analytics.devserver import DevServer


def identify(
    client: httpx.Client, message_id: str, traits: object, **extra: object
) -> httpx.Response:
    body = {"type": "identify", "messageId": message_id, "userId": "u1", "traits": traits, **extra}
    return client.post("/inbound/segment", json=body)


def track(client: httpx.Client, message_id: str, event: str, **extra: object) -> httpx.Response:
    body = {"type": "track", "messageId": message_id, "userId": "u1", "event": event, **extra}
    return client.post("/inbound/segment", json=body)


def test_identify_answers_202_with_message_id(client: httpx.Client) -> None:
    """identify is accepted with 202 and the messageId."""
    response = identify(client, "m1", {"email": "a@example.com"})
    assert response.status_code == 202
    assert response.json() == {"messageId": "m1"}


def test_identify_merges_traits_shallowly(client: httpx.Client, server: DevServer) -> None:
    """identify merges traits into the profile; nested objects are replaced, not merged."""
    identify(client, "m1", {"email": "a@example.com", "address": {"city": "Paris", "zip": "1"}})
    identify(client, "m2", {"phone_number": "+33", "address": {"city": "Lyon"}})
    assert server.profiles()["u1"] == {
        "email": "a@example.com",
        "phone_number": "+33",
        "address": {"city": "Lyon"},
    }


def test_identify_null_trait_removes_key(client: httpx.Client, server: DevServer) -> None:
    """A trait set to null removes that key from the profile."""
    identify(client, "m1", {"email": "a@example.com", "name": "Ada"})
    identify(client, "m2", {"email": None})
    assert server.profiles()["u1"] == {"name": "Ada"}


def test_identify_falls_back_to_anonymous_id(client: httpx.Client, server: DevServer) -> None:
    """Without userId, identify stores the profile under anonymousId."""
    body = {"type": "identify", "messageId": "m1", "anonymousId": "anon-7", "traits": {"a": 1}}
    assert client.post("/inbound/segment", json=body).status_code == 202
    assert server.profiles() == {"anon-7": {"a": 1}}


@pytest.mark.parametrize(
    "body",
    [
        {"type": "identify", "messageId": "m1", "userId": "u1"},
        {"type": "identify", "messageId": "m1", "userId": "u1", "traits": [1]},
        {"type": "identify", "messageId": "m1", "traits": {"a": 1}},
        {"type": "track", "messageId": "m1", "userId": "u1"},
        {"type": "track", "messageId": "m1", "event": "E"},
        {"type": "track", "messageId": "m1", "userId": "u1", "event": "E", "properties": 3},
        {"type": "group", "messageId": "m1", "userId": "u1", "traits": {}},
        {"type": "group", "messageId": "m1", "userId": "u1", "groupId": "g1"},
        {"type": "group", "messageId": "m1", "groupId": "g1", "traits": {}},
        {"messageId": "m1", "userId": "u1"},
        {"type": "identify", "messageId": 5, "userId": "u1", "traits": {}},
        ["not", "an", "object"],
    ],
)
def test_missing_required_fields_answer_400(
    client: httpx.Client, server: DevServer, body: object
) -> None:
    """A message missing a required field gets 400 with Courier's error body and no effect."""
    response = client.post("/inbound/segment", json=body)
    assert response.status_code == 400
    assert response.json()["type"] == "invalid_request_error"
    assert response.json()["message"]
    assert server.events() == []
    assert server.profiles() == {}


def test_invalid_json_answers_400(client: httpx.Client) -> None:
    """A body that is not JSON gets 400."""
    response = client.post("/inbound/segment", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["type"] == "invalid_request_error"


def test_track_is_logged_under_courier_name(client: httpx.Client, server: DevServer) -> None:
    """track is recorded as Segment-TrackEvent:<event>."""
    assert track(client, "m1", "Page Liked").status_code == 202
    (event,) = server.events()
    assert event["event"] == "Segment-TrackEvent:Page Liked"
    assert event["type"] == "track"
    assert event["route"] == "segment"


def test_unmapped_track_has_status_unmapped_and_no_send(
    client: httpx.Client, server: DevServer
) -> None:
    """A track whose event is not in the mapping table is Unmapped and sends nothing."""
    track(client, "m1", "Page Liked")
    assert server.events()[0]["status"] == "Unmapped"
    assert server.sends() == []


def test_mapped_track_by_short_name_sends_whole_message(
    client: httpx.Client, server: DevServer
) -> None:
    """A track mapped by its short name sends to the user with the whole message as data."""
    identify(client, "m1", {"email": "a@example.com"})
    track(client, "m2", "Order Completed", properties={"total": 9})
    event = server.events()[-1]
    assert event["status"] == "Mapped"
    (send,) = server.sends()
    assert send["template"] == "tmpl_order"
    assert send["kind"] == "user"
    assert send["recipient"] == "u1"
    assert send["profile"] == {"email": "a@example.com"}
    assert send["data"] == event["data"]
    assert send["data"]["properties"] == {"total": 9}
    assert event["send"] == send


def test_mapped_track_by_courier_name(client: httpx.Client, server: DevServer) -> None:
    """The mapping table also accepts Courier's full name Segment-TrackEvent:<event>."""
    track(client, "m1", "Signed Up")
    assert server.sends()[0]["template"] == "tmpl_welcome"


def test_send_sees_profile_at_that_moment(client: httpx.Client, server: DevServer) -> None:
    """The send records the profile as it was when the track arrived."""
    identify(client, "m1", {"email": "old@example.com"})
    track(client, "m2", "Order Completed")
    identify(client, "m3", {"email": "new@example.com"})
    assert server.sends()[0]["profile"] == {"email": "old@example.com"}


def test_anonymous_track_sends_to_anonymous_id(client: httpx.Client, server: DevServer) -> None:
    """Without userId, a mapped track's recipient is the anonymousId."""
    body = {"type": "track", "messageId": "m1", "anonymousId": "anon-1", "event": "Order Completed"}
    client.post("/inbound/segment", json=body)
    assert server.sends()[0]["recipient"] == "anon-1"


@pytest.mark.parametrize(("key", "kind"), [("list", "list"), ("pattern", "list_pattern")])
def test_courier_list_property_redirects_send(
    client: httpx.Client, server: DevServer, key: str, kind: str
) -> None:
    """properties.courier.list / .pattern make a list / list-pattern send."""
    track(client, "m1", "Order Completed", properties={"courier": {key: "vip"}})
    (send,) = server.sends()
    assert send["kind"] == kind
    assert send["recipient"] == "vip"


def test_group_is_accepted_and_only_logged(client: httpx.Client, server: DevServer) -> None:
    """group is accepted (202), logged, and changes no profile."""
    body = {"type": "group", "messageId": "m1", "userId": "u1", "groupId": "g1", "traits": {"a": 1}}
    assert client.post("/inbound/segment", json=body).status_code == 202
    (event,) = server.events()
    assert (event["type"], event["status"]) == ("group", "Accepted")
    assert server.profiles() == {}
    assert server.sends() == []


@pytest.mark.parametrize("kind", ["page", "screen", "alias"])
def test_unsupported_types_answer_501(client: httpx.Client, server: DevServer, kind: str) -> None:
    """page, screen and alias get 501 Event Type Unsupported and no effect."""
    body = {"type": kind, "messageId": "m1", "userId": "u1", "previousId": "x"}
    response = client.post("/inbound/segment", json=body)
    assert response.status_code == 501
    assert response.json() == {"message": f"Event Type Unsupported: {kind}"}
    assert server.events() == []


def test_repeated_message_id_replays_first_answer(client: httpx.Client, server: DevServer) -> None:
    """A repeated messageId gets the first answer again and is not applied twice."""
    first = identify(client, "m1", {"n": 1})
    again = identify(client, "m1", {"n": 2})
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert server.profiles()["u1"] == {"n": 1}
    assert server.stats()["duplicates"] == 1
    assert [event["status"] for event in server.events()] == ["Accepted", "Duplicate"]


def test_repeated_mapped_track_sends_once(client: httpx.Client, server: DevServer) -> None:
    """A retried mapped track makes one send only."""
    track(client, "m1", "Order Completed")
    track(client, "m1", "Order Completed")
    assert len(server.sends()) == 1
    assert server.stats()["message_ids_applied"] == 1
