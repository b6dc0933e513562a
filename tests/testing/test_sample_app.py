"""The checkout service tested with the kit, the way a user would."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

import courier_analytics
from courier_analytics.devserver import DevServer
from courier_analytics.testing import CapturedEvents

from .sample_app import Item, checkout, register

CART = [Item("mug", 12.5, 2), Item("tea", 5.0)]


@pytest.fixture
def courier_dev_server_mappings() -> Mapping[str, str]:
    """The shop maps its order confirmation to a template."""
    return {"Order Completed": "tmpl_confirmation"}


def test_checkout_tracks_order_completed(courier_analytics_events: CapturedEvents) -> None:
    """Checkout tracks Order Completed for the user with the total (partial match)."""
    checkout("u1", "o-1", CART)
    courier_analytics_events.assert_tracked(
        "Order Completed", user_id="u1", properties={"total": 30.0, "shipping": {"country": "FR"}}
    )


def test_checkout_without_coupon_sends_no_coupon(courier_analytics_events: CapturedEvents) -> None:
    """Without a coupon, the event has no coupon property."""
    checkout("u1", "o-1", CART)
    [event] = courier_analytics_events.tracked("Order Completed")
    assert "coupon" not in event["properties"]


def test_empty_cart_tracks_failure_not_order(courier_analytics_events: CapturedEvents) -> None:
    """An empty cart tracks Checkout Failed and no Order Completed."""
    checkout("u1", "o-1", [])
    courier_analytics_events.assert_not_tracked("Order Completed")
    courier_analytics_events.assert_tracked("Checkout Failed", properties={"reason": "empty cart"})


def test_register_identifies_with_email(courier_analytics_events: CapturedEvents) -> None:
    """Registering identifies the user with their email."""
    register("u1", "ada@example.com", "Ada")
    courier_analytics_events.assert_identified("u1", traits={"email": "ada@example.com"})


def test_nothing_is_sent_while_capturing(courier_analytics_events: CapturedEvents) -> None:
    """Captured messages are counted as skipped by the default client, not delivered."""
    checkout("u1", "o-1", CART)
    stats = courier_analytics.stats()
    assert stats is not None
    assert (stats.skipped, stats.delivered, stats.pending) == (1, 0, 0)


def test_checkout_end_to_end_sends_confirmation(courier_dev_server: DevServer) -> None:
    """Against the stand-in: profile merged, Order Completed mapped, one send made."""
    register("u1", "ada@example.com", "Ada")
    checkout("u1", "o-1", CART, coupon="SPRING")
    courier_analytics.flush()
    assert courier_dev_server.profiles()["u1"]["email"] == "ada@example.com"
    statuses = [(e["type"], e["status"]) for e in courier_dev_server.events()]
    assert statuses == [("profile.merge", "Accepted"), ("track", "Mapped")]
    assert len(courier_dev_server.sends()) == 1


def test_failed_checkout_is_unmapped_on_courier(courier_dev_server: DevServer) -> None:
    """Against the stand-in: Checkout Failed has no template, so Courier logs it Unmapped."""
    checkout("u1", "o-1", [])
    courier_analytics.flush()
    [event] = courier_dev_server.events()
    assert (event["event"], event["status"]) == ("Segment-TrackEvent:Checkout Failed", "Unmapped")
    assert courier_dev_server.sends() == []
