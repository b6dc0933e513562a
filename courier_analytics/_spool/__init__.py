"""The durable spool: where messages wait, on disk, between the call and Courier's answer.

A spool is opt-in (`Client(spool=...)`). The worker writes each message to it before
sending it and removes it once it is answered, so a process that dies (SIGKILL, a
crash, a deploy past its grace period) leaves its messages for the next process
that opens the same spool. See `_journal.py` for how the worker uses it.

A backend is the store: SQLite today (`_sqlite.py`), Redis Streams next. Its
interface, `Backend` (`_backend.py`, loaded only with a spool), is what both can do cheaply:

- `commit` a batch of messages, owned by the committing process (a lease);
- `claim` a batch of its own parked messages that are due, oldest first;
- `remove` (acknowledge) a batch once answered;
- `park` a batch: out of memory, to be claimed again at a given time (a retry
  after an outage outlasted the in-memory retries, or a burst beyond memory);
- `renew` the caller's lease, saying whether it had lapsed and was lost (the
  caller stalled: what it held was taken over);
- `take_over` the messages of owners whose lease expired (or whose process is gone);
- `release` everything the caller owns, for anyone to take (a clean stop);
- `status`, for `courier-analytics spool status`.

With Redis Streams the same verbs map to XADD, XREADGROUP, XACK/XDEL, a sorted set
of parked entries by due time, XAUTOCLAIM with a minimum idle time, and XPENDING.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

from courier_analytics._errors import ConfigurationError

__all__ = [
    "DEFAULT_COMMIT_INTERVAL",
    "DEFAULT_LEASE",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_BYTES",
    "Settings",
    "SpoolError",
    "parse_spool",
]

#: How long a spooled message is retried before it fails: Segment's four hours.
DEFAULT_MAX_AGE = 4 * 3600.0
#: How large the spool may grow (the file's used pages): 1 GiB.
DEFAULT_MAX_BYTES = 1 << 30
#: Seconds between two commits under load: what a SIGKILL can lose at most.
DEFAULT_COMMIT_INTERVAL = 0.02
#: Seconds an owner's claim lasts without being renewed.
DEFAULT_LEASE = 15.0
#: URL schemes of the Redis Streams backend (`_redis.py`, the `[redis]` extra).
REDIS_SCHEMES = ("redis://", "rediss://")


class SpoolError(Exception):
    """The spool could not be read or written (a broken file, a full disk, a lock held too long)."""


class Settings(NamedTuple):
    """How a worker uses its spool (from the client's options).

    Attributes:
        path: The SQLite file.
        max_age: Seconds a message is retried from the spool before it fails.
        max_bytes: The most the spool may hold; beyond it new messages are dropped.
        commit_interval: Seconds between two commits under load.
        lease: Seconds an owner's claim lasts without a renewal.
        deliver: This process delivers from a shared (Redis) spool; else it only
            commits, and relays deliver.
    """

    path: str
    max_age: float = DEFAULT_MAX_AGE
    max_bytes: int = DEFAULT_MAX_BYTES
    commit_interval: float = DEFAULT_COMMIT_INTERVAL
    lease: float = DEFAULT_LEASE
    deliver: bool = True

    @property
    def shared(self) -> bool:
        """Whether the spool is shared by a fleet (Redis): what is committed is anyone's."""
        return self.path.startswith(REDIS_SCHEMES)

    @property
    def where(self) -> str:
        """The spool, for logs and errors (a Redis URL without its password)."""
        if not self.shared:
            return self.path
        from courier_analytics._spool._redis import redacted

        return redacted(self.path)


def parse_spool(value: object, source: str = "spool") -> str | None:
    """Check a `spool` setting; the SQLite file's path, or None for no spool.

    Accepts a path (str or `os.PathLike`), `sqlite:///path` (`sqlite:////abs/path`
    for an absolute one, as SQLAlchemy writes it), or a Redis URL (`redis://` or
    `rediss://`, with optional `stream` and `shards` query parameters), kept whole.

    Raises:
        ConfigurationError: the value names no spool this version can open (the
            message names `source`).
    """
    import os

    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{source} must be a path, 'sqlite:///path', 'redis://...' or None, "
            f"not {type(value).__name__}"
        )
    if not value.strip():
        raise ConfigurationError(
            f"{source} must not be empty: give a file path or 'sqlite:///path'"
        )
    if value.startswith(REDIS_SCHEMES):
        return _parse_redis(value, source)
    if "://" in value:
        parts = urlsplit(value)
        if parts.scheme != "sqlite":
            raise ConfigurationError(
                f"{source} must be a file path, 'sqlite:///path' or 'redis://host:port/db'; "
                f"{parts.scheme!r} spools are not supported"
            )
        if parts.query or parts.fragment:
            raise ConfigurationError(f"{source} must not have a query or fragment")
        if parts.netloc:
            raise ConfigurationError(
                f"{source}: write 'sqlite:///relative/path' or 'sqlite:////abs/path'"
            )
        path = parts.path[1:]
        if not path:
            raise ConfigurationError(f"{source} names no file: write 'sqlite:///path'")
        return path
    return value


def _parse_redis(value: str, source: str) -> str:
    """Check a Redis spool URL (its host, `stream` and `shards`); the URL."""
    parts = urlsplit(value)
    if not parts.hostname and not parts.path.startswith("/") and "unix" not in parts.scheme:
        raise ConfigurationError(f"{source} names no Redis host: write 'redis://host:6379/0'")
    try:
        from courier_analytics._spool._redis import redis_options
    except ImportError:
        raise ConfigurationError(
            f"{source} is a Redis URL: install the redis extra "
            "(pip install 'courier-analytics[redis]')"
        ) from None
    try:
        redis_options(value)
    except ValueError as exc:
        raise ConfigurationError(f"{source}: {exc}") from None
    return value
