"""Helpers of the spool tests: messages left by a dead process, and what a spool holds."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from courier_analytics._messages import Message
from courier_analytics._spool._backend import SpoolStatus
from courier_analytics._spool._sqlite import SqliteBackend


def backend(path: Path, owner: str, lease: float = 60.0) -> SqliteBackend:
    """An open backend on `path` for `owner`."""
    opened = SqliteBackend(str(path), owner=owner, lease=lease)
    opened.open()
    return opened


def rows(path: Path, table: str) -> int:
    """How many rows a table of the file has."""
    with sqlite3.connect(path) as db:
        count: int = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return count


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
