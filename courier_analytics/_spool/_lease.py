"""Lease keeping: what an owner holds in memory, and whether it still holds it.

An owner (a client in a process) claims the messages it commits or takes from
the spool with a lease: its owner row's expiry (SQLite) or its shard leases
(Redis). Another process takes the messages over once the lease expired. A live
process renews it every third of its length (a heartbeat, on its own timer, so
an idle worker renews too); a process that stalls past it (SIGSTOP, a long GC, a
suspended VM) finds on waking that its messages are another's.

So before anything held goes out the owner knows whether its lease still holds:
`Lease.safe_until` is a monotonic time two thirds of a lease after the last
renewal began, and a send decided before it cannot meet a taker (a taker waits
for the whole lease). Past it, the lease is renewed first, on the worker's
thread; renewing says whether it had been lost. Comparing one float per batch
is all the check costs while the lease holds.

When it was lost, every message held in memory under it is *gone*: the taker
delivers it. `Holdings` keeps the rows of messages held in memory and, after a
loss, the ones gone; each is dropped at its next send (first attempt or retry),
or settles as usual if its request was already on the wire.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from itertools import repeat

from courier_analytics._messages import Message
from courier_analytics._spool._backend import Backend

__all__ = ["Alarm", "Holdings", "Lease", "Row"]

#: A held message's row: (key, made by this client, committed at, tries).
Row = tuple[int, bool, float, int]


class Alarm:
    """Wakes the worker once at a set time (a commit or a batch is due then).

    Args:
        wake: Called on the worker's loop at that time.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._handle: asyncio.TimerHandle | None = None
        #: The monotonic time it is set for, or None.
        self.set_for: float | None = None

    def set(self, when: float) -> None:
        """Wake the worker at `when` (monotonic), unless set already."""
        if self.set_for is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the worker's loop (tests drive it by hand)
            return
        self.set_for = when
        self._handle = loop.call_at(loop.time() + max(0.0, when - time.monotonic()), self._ring)

    def cancel(self) -> None:
        """Not any more."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self.set_for = None

    def _ring(self) -> None:
        self._handle = self.set_for = None
        self._wake()


class Lease:
    """An owner's lease on what it holds: when to renew it, and until when it surely holds.

    Args:
        backend: The store.
        seconds: The lease's length.
        wake: Called on the worker's loop when a renewal is due (a heartbeat).
    """

    def __init__(self, backend: Backend, seconds: float, wake: Callable[[], None]) -> None:
        self._backend = backend
        self._seconds = seconds
        self._wake = wake
        #: Monotonic time until which a send may go out without renewing first.
        self.safe_until = -math.inf
        #: Monotonic time of the next renewal (and take-over of what the dead left).
        self.next_upkeep = 0.0
        self._beat: asyncio.TimerHandle | None = None

    def renew(self, now: float) -> bool:
        """Renew the lease (now: epoch seconds); False when it had been lost.

        Raises:
            SpoolError: the store failed (whether the lease holds is unknown).
        """
        started = time.monotonic()
        held = self._backend.renew(now)
        self.renewed(started)
        return held

    def renewed(self, started: float) -> None:
        """The lease was renewed by a write that began at `started` (monotonic)."""
        self.safe_until = started + self._seconds * 2 / 3
        self._heartbeat(started + self._seconds / 3)

    def _heartbeat(self, when: float) -> None:
        """Wake the worker at `when`, busy or idle (flush_interval may be long)."""
        if self._beat is not None:
            self._beat.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the worker's loop (tests drive it by hand)
            return
        delay = max(0.0, when - time.monotonic())
        self._beat = loop.call_at(loop.time() + delay, self._wake)

    def stop(self) -> None:
        """No more heartbeats (the worker stops)."""
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        self.safe_until = -math.inf


class Holdings:
    """The rows of messages held in memory, by message object; and those gone with a lease.

    A message object queued twice has two rows (`_twins`).
    """

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self._twins: dict[int, list[Row]] = {}
        # id(message) -> copies held here that another owner took over: not to be sent.
        self._gone: dict[int, int] = {}

    def __bool__(self) -> bool:
        return bool(self.rows)

    @property
    def any_gone(self) -> bool:
        """Whether copies lost with a lease are still in memory (sends look at each)."""
        return bool(self._gone)

    def add(self, message: Message, row: Row) -> None:
        """Note a message held in memory and its row."""
        if self.rows.setdefault(id(message), row) is not row:
            self._twins.setdefault(id(message), []).append(row)

    def add_committed(self, messages: list[Message], keys: list[int], made_at: float) -> None:
        """Note messages this owner just committed under `keys` (made here, never tried)."""
        rows = zip(keys, repeat(True), repeat(made_at), repeat(0))
        new = dict(zip(map(id, messages), rows, strict=True))
        if len(new) == len(messages) and self.rows.keys().isdisjoint(new):
            self.rows.update(new)  # the usual case, in C: no message object queued twice
            return
        for message, key in zip(messages, keys, strict=True):
            self.add(message, (key, True, made_at, 0))

    def pop(self, message: Message) -> Row | None:
        """The row of a held message, no longer held; None if it has none."""
        if self._twins:
            twins = self._twins.get(id(message))
            if twins:
                row = twins.pop()
                if not twins:
                    del self._twins[id(message)]
                return row
        return self.rows.pop(id(message), None)

    def lose_all(self) -> int:
        """The lease was lost: every held message is gone; how many."""
        gone = self._gone
        for key in self.rows:
            gone[key] = gone.get(key, 0) + 1
        for key, twins in self._twins.items():
            gone[key] = gone.get(key, 0) + len(twins)
        count = len(self.rows) + sum(len(twins) for twins in self._twins.values())
        self.rows.clear()
        self._twins.clear()
        return count

    def gone(self, message: Message) -> bool:
        """Whether this copy was lost with a lease (then it is no longer noted)."""
        copies = self._gone.get(id(message))
        if copies is None:
            return False
        if copies == 1:
            del self._gone[id(message)]
        else:
            self._gone[id(message)] = copies - 1
        return True

    def clear(self) -> None:
        """Forget everything (the worker stopped)."""
        self.rows.clear()
        self._twins.clear()
        self._gone.clear()
