"""A small shop backend written for segment-analytics-python.

The only line changed for Courier is the import: everything below is ordinary
Segment code (positional calls, module settings, ``on_error(error, items)``,
``(success, msg)`` results, ``AssertionError`` for bad input, numeric ids).
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import courier_analytics.segment as analytics  # was: import segment.analytics as analytics

log = logging.getLogger(__name__)
failures: list[tuple[BaseException, list[dict[str, Any]]]] = []


def on_error(error: BaseException, items: list[dict[str, Any]]) -> None:
    """Segment-style error callback: log and remember what failed."""
    log.warning("analytics failed for %d item(s): %s", len(items), error)
    failures.append((error, items))


def init_app() -> None:
    """Configure analytics at start-up, from the environment."""
    analytics.write_key = os.environ.get("ANALYTICS_WRITE_KEY") or os.environ["COURIER_API_KEY"]
    analytics.on_error = on_error
    analytics.max_queue_size = 1000
    analytics.gzip = True  # left over from the Segment configuration


def sign_up(user_id: int, email: str, plan: str) -> None:
    """A new customer: identify, track and a page view."""
    analytics.identify(
        user_id, {"email": email, "plan": plan, "created_at": datetime.datetime.now()}
    )
    analytics.track(user_id, "Signed Up", {"plan": plan})
    analytics.page(user_id, "Onboarding", "Welcome", {"path": "/welcome"})


def place_order(user_id: int, order_id: str, total: float, coupon: str | None = None) -> bool:
    """Record a completed order; returns whether it was queued."""
    properties = {"order_id": order_id, "total": total, "currency": "EUR"}
    if coupon:
        properties["coupon"] = coupon
    context = {"ip": "203.0.113.7"}
    success, msg = analytics.track(
        user_id, "Order Completed", properties, context, datetime.datetime.now()
    )
    log.debug("queued %s", msg["messageId"])
    return success


def record_click(anonymous_id: str, button: Any) -> bool:
    """Track a click from an anonymous visitor; bad input is logged, not raised."""
    try:
        analytics.track(None, button, anonymous_id=anonymous_id)
    except AssertionError:
        log.info("ignored a click without a button name")
        return False
    return True


def shutdown() -> None:
    """At exit: deliver what is pending."""
    analytics.flush()
    analytics.shutdown()
