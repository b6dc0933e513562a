"""A bare WSGI app that tracks one event per request, for the gunicorn tests.

Configured by the environment (``COURIER_API_KEY``, ``COURIER_BASE_URL``), as a
deployed app would be. It tracks ``App Booted`` when imported, so under
``--preload`` the master has a running client when it forks its workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import courier_analytics as analytics

analytics.track("App Booted", {"pid": os.getpid()}, user_id="ops")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Track ``Page Served`` for ``?user=...&n=...``; answer with the messageId."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    message_id = analytics.track(
        "Page Served", {"n": int(query["n"][0]), "pid": os.getpid()}, user_id=query["user"][0]
    )
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [message_id.encode()]
