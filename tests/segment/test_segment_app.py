"""An app written for Segment runs unchanged but for the import, end to end."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from courier_analytics.devserver import DevServer
from courier_analytics.testing import CapturedEvents

from . import segment_app


@pytest.fixture
def courier_dev_server_mappings() -> Mapping[str, str]:
    """The shop maps its order confirmation to a template."""
    return {"Order Completed": "tmpl_order_confirmation"}


@pytest.fixture(autouse=True)
def _app() -> None:
    """Start the app as its own start-up code does."""
    segment_app.failures.clear()


def test_signup_merges_profile_on_courier(courier_dev_server: DevServer) -> None:
    """identify with a numeric user id merges the traits into profile "42"."""
    segment_app.init_app()
    segment_app.sign_up(42, "ada@example.com", "pro")
    segment_app.shutdown()
    profile = courier_dev_server.profiles()["42"]
    assert (profile["email"], profile["plan"]) == ("ada@example.com", "pro")


def test_signup_event_is_unmapped_and_page_not_sent(courier_dev_server: DevServer) -> None:
    """Signed Up reaches Courier as an unmapped event; the page view is not sent."""
    segment_app.init_app()
    segment_app.sign_up(42, "ada@example.com", "pro")
    segment_app.shutdown()
    events = courier_dev_server.events()
    assert [e["type"] for e in events] == ["profile.merge", "track"]
    assert events[1]["status"] == "Unmapped"


def test_order_is_mapped_and_sends_notification(courier_dev_server: DevServer) -> None:
    """Order Completed is mapped to a template and makes a send to the user."""
    segment_app.init_app()
    assert segment_app.place_order(42, "o-1", 99.5, coupon="SPRING") is True
    segment_app.shutdown()
    [event] = courier_dev_server.events()
    assert event["status"] == "Mapped"
    assert event["data"]["properties"]["coupon"] == "SPRING"
    assert len(courier_dev_server.sends()) == 1
    assert segment_app.failures == []


def test_bad_click_is_caught_by_segment_style_except(courier_dev_server: DevServer) -> None:
    """The app's `except AssertionError` still catches a bad argument."""
    segment_app.init_app()
    assert segment_app.record_click("anon-1", None) is False
    assert segment_app.record_click("anon-1", "Buy") is True
    segment_app.shutdown()
    assert [e["event"] for e in courier_dev_server.events()] == ["Segment-TrackEvent:Buy"]


def test_app_analytics_in_capture_mode(courier_analytics_events: CapturedEvents) -> None:
    """The same Segment code can be asserted on with the testing kit, nothing sent."""
    segment_app.init_app()
    segment_app.sign_up(7, "bob@example.com", "free")
    segment_app.place_order(7, "o-2", 10.0)
    courier_analytics_events.assert_identified("7", traits={"email": "bob@example.com"})
    courier_analytics_events.assert_tracked("Order Completed", "7", properties={"total": 10.0})
    courier_analytics_events.assert_count(1, "page")
