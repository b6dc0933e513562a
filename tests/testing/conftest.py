"""The kit's fixtures, as the pytest11 entry point would provide them."""

from __future__ import annotations

from courier_analytics.pytest_plugin import (
    courier_analytics_events,
    courier_dev_server,
    courier_dev_server_mappings,
    courier_dev_server_session,
)

__all__ = [
    "courier_analytics_events",
    "courier_dev_server",
    "courier_dev_server_mappings",
    "courier_dev_server_session",
]
