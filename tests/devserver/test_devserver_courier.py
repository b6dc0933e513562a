"""POST /inbound/courier: route 2's track."""

from __future__ import annotations

import httpx
import pytest

from courier_analytics.devserver import DevServer


def send_track(
    client: httpx.Client, message_id: str, event: str, **props: object
) -> httpx.Response:
    body = {
        "event": event,
        "messageId": message_id,
        "type": "track",
        "properties": props,
        "userId": "u1",
    }
    return client.post("/inbound/courier", json=body)


def test_track_answers_202_and_logs_event_as_sent(client: httpx.Client, server: DevServer) -> None:
    """A track is accepted with 202 and logged under the event name as sent."""
    response = send_track(client, "c1", "Page Liked")
    assert (response.status_code, response.json()) == (202, {"messageId": "c1"})
    (event,) = server.events()
    assert (event["route"], event["event"], event["status"]) == (
        "courier",
        "Page Liked",
        "Unmapped",
    )


def test_mapped_track_sends_properties_as_data(client: httpx.Client, server: DevServer) -> None:
    """A mapped track sends with its properties as data and the profile of the user."""
    client.post("/profiles/u1", json={"profile": {"email": "a@example.com"}})
    send_track(client, "c1", "invoice.paid", amount=12)
    (send,) = server.sends()
    assert send["template"] == "tmpl_invoice"
    assert send["data"] == {"amount": 12}
    assert send["profile"] == {"email": "a@example.com"}
    assert server.events()[-1]["status"] == "Mapped"


def test_segment_named_track_maps_by_its_short_name(
    client: httpx.Client, server: DevServer
) -> None:
    """Segment-TrackEvent:<event> (as route api names it) uses a mapping of <event>."""
    send_track(client, "c1", "Segment-TrackEvent:Order Completed")
    send_track(client, "c2", "Order Completed")
    assert [s["template"] for s in server.sends()] == ["tmpl_order", "tmpl_order"]
    assert server.events()[0]["event"] == "Segment-TrackEvent:Order Completed"


def test_courier_list_property_makes_list_send(client: httpx.Client, server: DevServer) -> None:
    """properties.courier.list redirects the send to a list."""
    send_track(client, "c1", "invoice.paid", courier={"list": "billing"})
    assert (server.sends()[0]["kind"], server.sends()[0]["recipient"]) == ("list", "billing")


def test_repeated_message_id_answers_409(client: httpx.Client, server: DevServer) -> None:
    """A repeated messageId gets 409 Conflict and is not applied twice."""
    send_track(client, "c1", "invoice.paid")
    response = send_track(client, "c1", "invoice.paid")
    assert response.status_code == 409
    assert len(server.sends()) == 1
    assert server.stats()["duplicates"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"event": "E", "type": "track", "userId": "u1"},
        {"messageId": "c1", "type": "track", "userId": "u1"},
        {"event": "E", "messageId": "c1", "type": "identify", "userId": "u1"},
        {"event": "E", "messageId": "c1", "type": "track", "userId": "u1", "properties": []},
    ],
)
def test_invalid_track_answers_400(client: httpx.Client, server: DevServer, body: object) -> None:
    """A track missing a field or with a wrong type gets 400 and no effect."""
    response = client.post("/inbound/courier", json=body)
    assert response.status_code == 400
    assert response.json()["type"] == "invalid_request_error"
    assert server.events() == []
