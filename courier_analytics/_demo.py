"""`courier-analytics demo`: what Courier does with each kind of call, shown locally.

Starts the local Courier stand-in, sends a realistic sequence through a real
client, and prints what the stand-in did with each call, as Courier's Data Logs
would show it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TextIO

from courier_analytics._client import Client

__all__ = ["run_demo"]

USER = "user_1001"
TEMPLATE = "order-receipt"
#: Courier names track events from Segment like this; map that name to a template.
MAPPED_EVENT = "Segment-TrackEvent:Order Completed"


def _steps(client: Client) -> list[tuple[str, Callable[[], str]]]:
    """(label, call) for each call of the demo, in order."""
    contact = {"email": "carrier.pigeon@example.com", "phone_number": "+15555550100"}
    profile = {"name": "Carrier Pigeon", "plan": "pro"}
    order = {"order_id": "A-17", "total": 42.5}
    return [
        ("identify {email, phone_number}", lambda: client.identify(USER, contact)),
        ("identify {name, plan}", lambda: client.identify(USER, profile)),
        (
            'track "Order Completed" {order_id, total}',
            lambda: client.track("Order Completed", order, user_id=USER),
        ),
        (
            'track "Pricing Viewed"',
            lambda: client.track("Pricing Viewed", {"tier": "team"}, user_id=USER),
        ),
        ('group "acme" {name}', lambda: client.group("acme", {"name": "Acme Inc."}, user_id=USER)),
        ('page "Pricing"', lambda: client.page("Pricing", {"path": "/pricing"}, user_id=USER)),
    ]


def _outcome(
    label: str, event: dict[str, Any] | None, send: dict[str, Any] | None, route: str
) -> tuple[str, str, str]:
    """(Courier's name for it, status, what happened) for one call."""
    if event is None:
        if label.startswith("identify") and route == "api":
            return f"POST /profiles/{USER}", "200", "traits merged into the profile"
        if label.startswith("group") and route == "api":
            return "-", "not sent", "no group on Courier's API; skipped (route segment logs it)"
        return "-", "not sent", "Courier takes no such call; counted as skipped"
    name = str(event.get("event") or event.get("type") or "")
    status = str(event.get("status", ""))
    if send is not None:
        email = (send.get("profile") or {}).get("email", "no email")
        return name, status, f"sent {send.get('template')} to {send.get('recipient')} <{email}>"
    if event.get("type") == "identify":
        return name, status, "traits merged into the profile"
    if status == "Unmapped":
        return name, status, "logged; no notification mapped"
    return name, status, "logged"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return [line.rstrip() for line in lines]


def run_demo(*, route: str = "api", out: TextIO, keep_running: bool = False) -> int:
    """Run the demo against a fresh local stand-in and print the report to `out`."""
    try:
        from courier_analytics.devserver import DevServer
    except ImportError as exc:
        print(
            f"the demo needs the [dev] extra ({exc.name} is missing): "
            "pip install -e '.[dev]' in a clone of courier-analytics",
            file=out,
        )
        return 2
    with DevServer(mappings={MAPPED_EVENT: TEMPLATE}) as server:
        client = Client(
            api_key=server.api_key,
            base_url=server.base_url,
            route=route,  # type: ignore[arg-type]
        )
        calls = [(label, call()) for label, call in _steps(client)]
        client.shutdown(30)
        stats = client.stats
        by_id = {str(e.get("messageId")): e for e in server.events()}
        sends = {str(s.get("messageId")): s for s in server.sends()}
        where = "POST /inbound/segment" if route == "segment" else "/profiles and /inbound/courier"
        print(f"courier-analytics demo: route {route!r} ({where})", file=out)
        print(
            f"to a local Courier stand-in at {server.base_url}; nothing leaves this machine.\n",
            file=out,
        )
        print(f"Calls made for {USER}, and what Courier did with each:", file=out)
        rows: list[tuple[str, ...]] = [("#", "call", "Courier shows", "status", "what Courier did")]
        for n, (label, message_id) in enumerate(calls, 1):
            event, send = by_id.get(message_id), sends.get(message_id)
            rows.append((str(n), label, *_outcome(label, event, send, route)))
        for line in _table(rows):
            print(line, file=out)
        print(f"\nProfile of {USER} after the merges:", file=out)
        profile = server.profiles().get(USER, {})
        for key, value in profile.items():
            print(f"  {key:<14}{value}", file=out)
        print(
            f"\nClient stats: made {stats.made}, delivered {stats.delivered}, "
            f"skipped {stats.skipped}, failed {stats.failed}, dropped {stats.dropped}",
            file=out,
        )
        if route == "api":
            hint = "Route 'segment' posts to /inbound/segment as Segment's destination does"
            print(f"{hint}: `courier-analytics demo --route segment`.", file=out)
        if not keep_running:
            print(
                "Run `courier-analytics demo --keep-running` to browse the Data Logs page.",
                file=out,
            )
        if keep_running:
            print(f"Data Logs page: {server.base_url}/", file=out)
            print("Stand-in running; press Ctrl-C to stop.", file=out)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    return 0 if stats.failed == 0 and stats.dropped == 0 else 1
