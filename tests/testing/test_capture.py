"""capture(): what it records, how it matches, and what its failures say."""

from __future__ import annotations

import threading

import pytest

import courier_analytics
from courier_analytics import Client, segment
from courier_analytics.testing import CapturedEvents, capture, matches


@pytest.fixture
def client() -> Client:
    """A client that would send to Courier if not capturing."""
    return Client(api_key="test-key")


def test_user_client_is_captured_not_sent(client: Client) -> None:
    """A client's messages are recorded and not sent."""
    with capture() as events:
        client.track("Signed Up", {"plan": "pro"}, user_id="u1")
    assert [m["event"] for m in events] == ["Signed Up"]
    assert (client.stats.skipped, client.stats.pending) == (1, 0)


def test_default_client_is_captured() -> None:
    """The module-level default client is captured too."""
    courier_analytics.api_key = "test-key"
    with capture() as events:
        courier_analytics.identify("u1", {"email": "a@example.com"})
    events.assert_identified("u1", traits={"email": "a@example.com"})


def test_segment_dropin_is_captured() -> None:
    """The Segment drop-in's calls are captured, with its positional signature."""
    with capture() as events:
        segment.Client("test-key").track("u1", "Clicked", {"button": "buy"})
    events.assert_tracked("Clicked", "u1", properties={"button": "buy"})


def test_nothing_recorded_after_the_block(client: Client) -> None:
    """After the block ends, messages are no longer recorded."""
    with capture() as events:
        pass
    client_off = Client(api_key="k", send=False)
    client_off.track("Later", user_id="u1")
    assert len(events) == 0


def test_usable_as_decorator(client: Client) -> None:
    """A CapturedEvents decorates a function: capturing while it runs."""
    events = capture()

    @events
    def handler() -> None:
        client.track("Clicked", user_id="u1")

    handler()
    assert not events.active
    events.assert_tracked("Clicked")


def test_nested_entry_keeps_capturing(client: Client) -> None:
    """Entering the same capture twice records until the outer exit."""
    events = capture()
    with events:
        with events:
            client.track("Inner", user_id="u1")
        client.track("Outer", user_id="u1")
    assert [m["event"] for m in events] == ["Inner", "Outer"]


def test_records_from_many_threads(client: Client) -> None:
    """Messages made in many threads at once are all recorded."""
    with capture() as events:
        threads = [
            threading.Thread(
                target=lambda n=n: [client.track("Hit", user_id=f"u{n}") for _ in range(50)]
            )
            for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    events.assert_count(400, "track", event="Hit")


def test_clear_forgets_messages(client: Client) -> None:
    """clear() forgets what was captured; capturing goes on."""
    with capture() as events:
        client.track("First", user_id="u1")
        events.clear()
        client.track("Second", user_id="u1")
    assert [m["event"] for m in events] == ["Second"]


def test_sequence_access(client: Client) -> None:
    """Captured messages support len, indexing, slicing and iteration."""
    with capture() as events:
        client.track("A", user_id="u1")
        client.track("B", user_id="u1")
    assert len(events) == 2
    assert events[0]["event"] == "A"
    assert [m["event"] for m in events[1:]] == ["B"]


def test_partial_match_of_nested_properties(client: Client) -> None:
    """assert_tracked matches nested dicts partially."""
    with capture() as events:
        client.track(
            "Order Completed",
            {"total": 42, "shipping": {"country": "FR", "method": "express"}},
            user_id="u1",
        )
    found = events.assert_tracked(
        "Order Completed", user_id="u1", properties={"shipping": {"country": "FR"}}
    )
    assert found["properties"]["total"] == 42


def test_tracked_filters_by_event_and_user(client: Client) -> None:
    """tracked() filters by event, user and other fields."""
    with capture() as events:
        client.track("A", user_id="u1")
        client.track("A", user_id="u2")
        client.track("B", user_id="u1")
    assert len(events.tracked("A")) == 2
    assert len(events.tracked(user_id="u1")) == 2
    assert len(events.tracked("A", "u2")) == 1


def test_identified_and_grouped_helpers(client: Client) -> None:
    """identified() and assert_grouped() find identify and group messages."""
    with capture() as events:
        client.identify("u1", {"plan": "pro"})
        client.group("g1", {"name": "Acme"}, user_id="u1")
    assert events.identified("u1", traits={"plan": "pro"})
    events.assert_grouped("g1", traits={"name": "Acme"})


def test_failure_lists_captured_and_differences(client: Client) -> None:
    """A failed assert_tracked lists what was captured and how the closest differs."""
    with capture() as events:
        client.track("Order Completed", {"total": 40}, user_id="u2")
        client.identify("u1", {"email": "a@example.com"})
    with pytest.raises(AssertionError) as info:
        events.assert_tracked("Order Completed", user_id="u1", properties={"total": 42})
    text = str(info.value)
    assert "Captured 2 message(s)" in text
    assert "track 'Order Completed' user='u2'" in text
    assert "userId: expected 'u1', got 'u2'" in text
    assert "properties['total']: expected 42, got 40" in text


def test_failure_names_missing_keys(client: Client) -> None:
    """A missing expected property is named as missing."""
    with capture() as events:
        client.track("Clicked", {}, user_id="u1")
    with pytest.raises(AssertionError, match=r"properties\['button'\]: missing"):
        events.assert_tracked("Clicked", properties={"button": "buy"})


def test_failure_with_nothing_captured() -> None:
    """With nothing captured, the failure says so."""
    with capture() as events:
        pass
    with pytest.raises(AssertionError, match="Nothing was captured"):
        events.assert_identified("u1")


def test_count_assertion(client: Client) -> None:
    """assert_tracked(count=...) checks the exact number of matching messages."""
    with capture() as events:
        client.track("Clicked", user_id="u1")
        client.track("Clicked", user_id="u1")
    events.assert_tracked("Clicked", count=2)
    with pytest.raises(AssertionError, match="Expected 3 x a track message"):
        events.assert_tracked("Clicked", count=3)


def test_assert_not_tracked(client: Client) -> None:
    """assert_not_tracked passes for absent events and fails listing present ones."""
    with capture() as events:
        client.track("Clicked", user_id="u1")
    events.assert_not_tracked("Order Completed")
    with pytest.raises(AssertionError, match="Expected no track message with event='Clicked'"):
        events.assert_not_tracked("Clicked")


def test_assert_not_identified_and_nothing_captured(client: Client) -> None:
    """assert_not_identified and assert_nothing_captured fail when something was."""
    with capture() as events:
        client.identify("u1", {"a": 1})
    with pytest.raises(AssertionError):
        events.assert_not_identified("u1")
    with pytest.raises(AssertionError, match="Expected no analytics calls"):
        events.assert_nothing_captured()


def test_matches_takes_python_names() -> None:
    """matches() accepts user_id-style names and partial nested mappings."""
    message = {"type": "track", "userId": "u1", "properties": {"a": {"b": 1, "c": 2}}}
    assert matches(message, user_id="u1", properties={"a": {"b": 1}})
    assert not matches(message, user_id="u2")


def test_repr_and_summary(client: Client) -> None:
    """repr shows the count; summary lists one line per message."""
    with capture() as events:
        client.page("Home", user_id="u1")
    assert repr(events) == "<CapturedEvents 1 message(s)>"
    assert "1. page 'Home' user='u1'" in events.summary()


def test_fixture_captures_for_the_test(courier_analytics_events: CapturedEvents) -> None:
    """The courier_analytics_events fixture captures the default client, keyless."""
    courier_analytics.track("Clicked", user_id="u1")
    courier_analytics_events.assert_tracked("Clicked", user_id="u1")


def test_integrations_filter_is_recorded_as_skipped(client: Client) -> None:
    """A track whose integrations turn Courier off is in events.skipped, not captured."""
    with capture() as events:
        client.track("Internal", user_id="u1", integrations={"Courier": False})
        client.track("Sent", user_id="u1")
    assert [m["event"] for m in events] == ["Sent"]
    assert [m["event"] for m in events.skipped] == ["Internal"]
    assert events.skipped[0]["integrations"] == {"Courier": False}


def test_segment_dropin_all_false_is_recorded_as_skipped() -> None:
    """The drop-in's integrations={"All": False} shows up in events.skipped."""
    with capture() as events:
        segment.Client("test-key").track("u1", "Hidden", integrations={"All": False})
    assert len(events) == 0
    assert [m["event"] for m in events.skipped] == ["Hidden"]


def test_failure_names_a_matching_skipped_message(client: Client) -> None:
    """assert_tracked on a skipped event fails, and the text says it was skipped and why."""
    with capture() as events:
        client.track("Internal", user_id="u1", integrations={"All": False})
    with pytest.raises(AssertionError, match=r"made but skipped.*integrations turn Courier off"):
        events.assert_tracked("Internal")


def test_clear_forgets_skipped_messages_too(client: Client) -> None:
    """clear() empties events.skipped as well."""
    with capture() as events:
        client.track("Internal", user_id="u1", integrations={"Courier": False})
        events.clear()
    assert events.skipped == []
