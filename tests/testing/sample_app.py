"""A tiny checkout service that reports to Courier through courier-analytics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import courier_analytics as analytics


@dataclass(frozen=True)
class Item:
    """A line of the cart."""

    sku: str
    price: float
    quantity: int = 1


def register(user_id: str, email: str, name: str) -> None:
    """Create the customer's profile."""
    analytics.identify(user_id, {"email": email, "name": name})


def checkout(
    user_id: str, order_id: str, items: Sequence[Item], coupon: str | None = None
) -> float:
    """Complete an order and tell Courier, which may send the confirmation."""
    total = round(sum(item.price * item.quantity for item in items), 2)
    if not items:
        analytics.track("Checkout Failed", {"reason": "empty cart"}, user_id=user_id)
        return 0.0
    properties = {
        "order_id": order_id,
        "total": total,
        "items": [{"sku": i.sku, "quantity": i.quantity} for i in items],
        "shipping": {"method": "standard", "country": "FR"},
    }
    if coupon:
        properties["coupon"] = coupon
    analytics.track("Order Completed", properties, user_id=user_id)
    return total
