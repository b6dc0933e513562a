"""Helpers of the spool tests: messages left by a dead process, and what a spool holds."""

from __future__ import annotations

import time
from pathlib import Path

from courier_analytics._messages import Message
from courier_analytics._spool._backend import SpoolStatus
from courier_analytics._spool._sqlite import SqliteBackend


def status(path: Path) -> SpoolStatus:
    """What the spool file holds, read as `courier-analytics spool status` does."""
    return SqliteBackend(str(path), owner="reader", lease=60).inspect(time.time())


def leave(path: Path, messages: list[Message]) -> None:
    """Commit messages as a process would that then died (its lease already over)."""
    backend = SqliteBackend(str(path), owner="dead", lease=-1.0)
    backend.open()
    backend.commit(messages, time.time(), False)
    backend.close()


def track(n: int, user: str = "u1") -> Message:
    """A whole-form track message numbered `n`."""
    body = f'{{"type":"track","messageId":"m-{user}-{n}","userId":"{user}","event":"E",'
    body += f'"properties":{{"n":{n}}},"timestamp":"2026-01-01T00:00:00.000+00:00"}}'
    return Message("track", f"m-{user}-{n}", user, None, "E", body.encode())
