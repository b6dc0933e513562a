"""What a spool's store does, and what it answers: loaded only by a client with a spool.

`Backend` is the interface both stores implement (see the package's docstring for
the verbs); `open_backend` picks one for a spool's settings. Kept out of the
package's `__init__`, which every client imports (its settings are among the
client's options), so that a client without a spool never defines these classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from courier_analytics._message import Message
    from courier_analytics._spool import Settings

__all__ = ["Backend", "Claimed", "OwnerStatus", "SpoolStatus", "open_backend"]


@attrs.frozen
class Claimed:
    """A message claimed from the spool.

    Attributes:
        key: The backend's key for it (SQLite: a row id).
        message: The message, as it was made (same messageId, timestamp and body).
        maker: The token of the client that made it.
        tries: How often it was parked after running out of in-memory retries.
        made_at: When it was committed (seconds since the epoch).
        counted: Already counted by this owner (it parked it); else new to it
            (taken over from a process that is gone, or released by one that stopped).
    """

    key: int
    message: Message
    maker: str
    tries: int
    made_at: float
    counted: bool


@attrs.frozen
class OwnerStatus:
    """One owner (a client in a process) of a spool, as `spool status` shows it."""

    owner: str
    host: str
    pid: int
    messages: int
    lease_left: float


@attrs.frozen
class SpoolStatus:
    """What a spool holds (see `courier-analytics spool status`).

    Attributes:
        messages: Messages in the spool.
        bytes: Bytes of their data.
        file_bytes: The size of the spool's files on disk.
        oldest_age: Seconds since the oldest message was committed, or None.
        unowned: Messages no live process owns: the next to open the spool takes them.
        parked: Messages waiting for a later retry.
        next_retry: Seconds until the next parked message is due (0: due), or None.
        owners: The processes that own messages.
        dead: Messages that failed for good and are kept as dead letters (Redis).
    """

    messages: int
    bytes: int
    file_bytes: int
    oldest_age: float | None
    unowned: int
    parked: int
    next_retry: float | None
    owners: tuple[OwnerStatus, ...]
    dead: int = 0


class Backend(Protocol):
    """A spool's store; used by one worker thread of one process (never across fork)."""

    owner: str

    def open(self) -> None:
        """Open (or create) the store and register this owner with a fresh lease."""

    def commit(self, messages: Sequence[Message], made_at: float, parked: bool) -> list[int]:
        """Store messages, owned by this owner, in order; their keys.

        Args:
            messages: The batch, oldest first.
            made_at: Now (seconds since the epoch).
            parked: Stored out of memory, to be claimed (else held in this process's memory).
        """

    def claim(
        self, limit: int, now: float, take: Callable[[int, Message], bool] | None = None
    ) -> list[Claimed]:
        """This owner's parked messages that are due, oldest first, now held in memory.

        `take` is asked of each candidate in order; those it refuses stay parked.
        """

    def remove(self, keys: Sequence[int]) -> None:
        """Forget answered messages (delivered, or failed for good)."""

    def fail(self, keys: Sequence[int], reason: str) -> None:
        """Forget messages that outlived `spool_max_age` (Redis keeps them as dead letters)."""

    def park(self, entries: Sequence[tuple[int, float, int]]) -> None:
        """Move held messages out of memory: (key, due time in epoch seconds, tries added)."""

    def renew(self, now: float) -> bool:
        """Renew this owner's lease (or leases); False when it had lapsed and was lost.

        Lost: another owner took over what this one held (it stalled past its
        lease), and this one now holds nothing; it is registered anew.
        """

    def take_over(self, now: float) -> int:
        """Renew this owner's lease and take the messages of owners that are gone.

        A lease that had lapsed and was lost is left for `renew` to report (the
        owner then drops what it held): nothing is taken meanwhile.

        Returns:
            How many messages were taken (loose: owned by this owner, not yet counted
            by it, due at once).
        """

    def next_due(self, after: float) -> float | None:
        """When this owner's earliest parked message due after `after` is due, or None."""

    def used_bytes(self) -> int:
        """Bytes the store uses now (what `spool_max_bytes` bounds)."""

    def tidy(self) -> None:
        """Return free space and shorten logs (checkpoint, incremental vacuum)."""

    def release(self) -> int:
        """Give up this owner's messages and lease, for anyone to take; how many."""

    def status(self, now: float) -> SpoolStatus:
        """What the store holds."""

    def close(self) -> None:
        """Close the store (the messages stay)."""


def open_backend(settings: Settings, owner: str) -> Backend:
    """The backend for a spool's settings, not yet opened."""
    if settings.shared:
        from courier_analytics._spool._redis import RedisBackend

        return RedisBackend(
            settings.path, owner=owner, lease=settings.lease, deliver=settings.deliver
        )
    from courier_analytics._spool._sqlite import SqliteBackend

    return SqliteBackend(settings.path, owner=owner, lease=settings.lease)
