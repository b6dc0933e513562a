"""The drop-in exposes segment-analytics-python 2.x's public API, name for name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from courier_analytics import segment

# Taken from segment-analytics-python 2.4.0 (segment/analytics/__init__.py, client.py).
SEGMENT_SETTINGS = {
    "write_key": None,
    "host": None,
    "on_error": None,
    "debug": False,
    "log_handler": None,
    "send": True,
    "sync_mode": False,
    "max_queue_size": 10000,
    "gzip": False,
    "timeout": 15,
    "max_retries": 10,
    "oauth_client_id": None,
    "oauth_client_key": None,
    "oauth_key_id": None,
    "oauth_auth_server": "https://oauth2.segment.io",
    "oauth_scope": "tracking_api:write",
}
SEGMENT_FUNCTIONS = {
    "track": ["user_id", "event", "properties", "context", "timestamp", "anonymous_id",
              "integrations", "message_id"],
    "identify": ["user_id", "traits", "context", "timestamp", "anonymous_id", "integrations",
                 "message_id"],
    "group": ["user_id", "group_id", "traits", "context", "timestamp", "anonymous_id",
              "integrations", "message_id"],
    "alias": ["previous_id", "user_id", "context", "timestamp", "integrations", "message_id"],
    "page": ["user_id", "category", "name", "properties", "context", "timestamp",
             "anonymous_id", "integrations", "message_id"],
    "screen": ["user_id", "category", "name", "properties", "context", "timestamp",
               "anonymous_id", "integrations", "message_id"],
    "flush": [],
    "join": [],
    "shutdown": [],
}  # fmt: skip
SEGMENT_CLIENT_PARAMS = [
    "write_key", "host", "debug", "max_queue_size", "send", "on_error", "gzip", "max_retries",
    "sync_mode", "timeout", "proxies", "thread", "upload_size", "upload_interval", "log_handler",
    "oauth_client_id", "oauth_client_key", "oauth_key_id", "oauth_auth_server", "oauth_scope",
    "max_total_backoff_duration", "max_rate_limit_duration",
]  # fmt: skip


def _positional(function: Callable[..., Any]) -> list[str]:
    parameters = inspect.signature(function).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in kinds and p.name != "self"]


@pytest.mark.parametrize(("name", "default"), SEGMENT_SETTINGS.items())
def test_module_setting_has_segments_default(name: str, default: object) -> None:
    """Every module-level setting of Segment exists with Segment's default."""
    assert getattr(segment, name) == default


@pytest.mark.parametrize(("name", "params"), SEGMENT_FUNCTIONS.items())
def test_module_function_has_segments_positional_signature(name: str, params: list[str]) -> None:
    """Every module-level function shows exactly Segment's parameters, in order (no self)."""
    assert list(inspect.signature(getattr(segment, name)).parameters) == params


@pytest.mark.parametrize(("name", "params"), SEGMENT_FUNCTIONS.items())
def test_client_method_has_segments_positional_signature(name: str, params: list[str]) -> None:
    """Every Client method takes Segment's parameters in Segment's order."""
    assert _positional(getattr(segment.Client, name)) == params


def test_client_constructor_has_segments_positional_signature() -> None:
    """Client() takes Segment's 22 options in Segment's positional order."""
    assert _positional(segment.Client) == SEGMENT_CLIENT_PARAMS


def test_module_has_default_client_and_version() -> None:
    """default_client (None before the first call), Client and __version__ exist."""
    assert segment.default_client is None
    assert isinstance(segment.__version__, str)
    assert segment.Client.__name__ == "Client"


def test_all_covers_segments_public_names() -> None:
    """__all__ lists every Segment name, and each name in it exists."""
    segment_names = {*SEGMENT_SETTINGS, *SEGMENT_FUNCTIONS, "Client", "default_client"}
    assert segment_names <= set(segment.__all__)
    assert all(hasattr(segment, name) for name in segment.__all__)
