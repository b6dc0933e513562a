"""Courier's own Python SDK (trycourier) as a client of the stand-in gets Courier's answers.

The SDK is in the `test` extra: it is the independent client that checks the
stand-in against Courier's API description, not against this library's requests.
"""

from __future__ import annotations

import httpx
import pytest

from courier_analytics.devserver import DevServer

courier = pytest.importorskip("courier", reason="trycourier is in the test extra")


@pytest.fixture
def sdk(server: DevServer) -> courier.Courier:
    """The SDK pointed at the stand-in, without retries."""
    return courier.Courier(api_key=server.api_key, base_url=server.base_url, max_retries=0)


def test_sdk_track_with_a_user_is_accepted(sdk: courier.Courier, server: DevServer) -> None:
    """inbound.track_event with user_id answers 202 with the messageId and logs the user."""
    answer = sdk.inbound.track_event(
        event="Order Completed", message_id="sdk-1", properties={"total": 3}, type="track",
        user_id="u1",
    )  # fmt: skip
    assert answer.message_id == "sdk-1"
    (event,) = server.events()
    assert (event["user"], event["event"]) == ("u1", "Order Completed")


def test_sdk_track_without_a_user_is_accepted(
    sdk: courier.Courier, server: DevServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A track without userId (optional in Courier's OpenAPI) is accepted, with no recipient."""
    monkeypatch.setattr(server.state, "mappings", {"Order Completed": "tmpl_order"})
    answer = sdk.inbound.track_event(
        event="Order Completed", message_id="sdk-2", properties={"total": 3}, type="track"
    )
    assert answer.message_id == "sdk-2"
    (event,) = server.events()
    assert (event["user"], event["status"]) == (None, "Mapped")
    (send,) = server.sends()
    assert (send["kind"], send["recipient"], send["profile"]) == ("none", None, None)


def test_sdk_repeated_message_id_is_a_conflict(sdk: courier.Courier) -> None:
    """The same messageId twice answers 409, which the SDK raises as ConflictError."""
    sdk.inbound.track_event(event="E", message_id="sdk-3", properties={}, type="track")
    with pytest.raises(courier.ConflictError):
        sdk.inbound.track_event(event="E", message_id="sdk-3", properties={}, type="track")


def test_sdk_wrong_key_is_unauthorized(server: DevServer) -> None:
    """A wrong key answers 401, which the SDK raises as AuthenticationError."""
    wrong = courier.Courier(api_key="wrong", base_url=server.base_url, max_retries=0)
    with pytest.raises(courier.AuthenticationError):
        wrong.inbound.track_event(event="E", message_id="sdk-4", properties={}, type="track")


def test_userless_track_shows_no_recipient_on_the_data_logs_page(
    client: httpx.Client, server: DevServer
) -> None:
    """The Data Logs page marks a track without userId as having no recipient."""
    body = {"event": "E", "messageId": "c-none", "type": "track", "properties": {}}
    assert client.post("/inbound/courier", json=body).status_code == 202
    page = httpx.get(server.page_url).text
    assert '<td class="no-recipient">no recipient</td>' in page


def test_track_with_an_empty_user_id_is_still_refused(client: httpx.Client) -> None:
    """userId, when given, must be a non-empty string: 400 names it."""
    body = {"event": "E", "messageId": "c-empty", "type": "track", "properties": {}, "userId": ""}
    answer = client.post("/inbound/courier", json=body)
    assert answer.status_code == 400
    assert "userId must be a non-empty string" in answer.text
