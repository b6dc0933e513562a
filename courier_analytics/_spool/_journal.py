"""How a worker writes ahead to its spool, delivers from it, and leaves it at stop.

The worker calls five hooks, all on its own thread:

- `drain` where queued messages leave the queue: they are committed to the spool in
  batches (at most one commit per `commit_interval` under load, at once when idle),
  then handed to the lanes. Messages beyond `max_queue_size` in memory, and every
  message while older ones wait in the spool (first in, first out), are committed
  *parked*: on disk only, claimed back as room frees. `drain` also renews the lease,
  takes over what dead processes left (`take_over`), claims parked messages that
  are due, and writes the batches of answered and parked messages.
- `finished` where a message's delivery ends (`_finish_lane`): its row is removed
  (in the next batch), unless it was parked.
- `park` where a message would fail after its in-memory retries ran out on a
  retryable failure: it is parked instead, due again after a backoff, until
  `max_age` after it was made; then it fails.
- `keep` where a message would be reported as not delivered because the worker is
  stopping: it stays in the spool (committed at `stop` if it had not been yet).
- `stop` when the worker ends: the rest is committed, and everything this owner
  holds is released, for the next process that opens the spool.

Counting: a parked message stays in the worker's `held` (taken from the queue and
not finished), so `pending` and `flush()` see it. `left` counts what stayed in
the spool when the worker stopped; `recovered` what this worker took over.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from courier_analytics import _outcomes
from courier_analytics._errors import QueueFullError
from courier_analytics._messages import Message
from courier_analytics._spool import Backend, Settings, SpoolError, open_backend

if TYPE_CHECKING:
    from courier_analytics._engine import Engine

__all__ = ["Journal"]

logger = logging.getLogger("courier_analytics")

#: The most messages one commit or claim moves.
BATCH = 2000
#: Bytes a row takes beyond its message's data (columns, ids, the b-tree).
ROW_OVERHEAD = 80
#: Seconds after a spool error before the spool is tried again.
RETRY_SPOOL = 1.0
#: The first and the longest wait of a parked retry.
FIRST_WAIT, LONGEST_WAIT = 1.0, 300.0
#: Parked messages retried at a time while Courier does not answer (an outage).
PROBE = 10


class Journal:
    """The spool side of one worker (see the module's docstring).

    Args:
        worker: The worker it serves.
        settings: The spool's settings.
        backend: The store (default: opened from `settings`).
        clock: Seconds since the epoch (tests pass their own).
    """

    def __init__(
        self,
        worker: Engine,
        settings: Settings,
        *,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._worker = worker
        self._settings = settings
        self.token = uuid.uuid4().hex
        self._backend = backend or open_backend(settings, self.token)
        self._clock = clock
        self._open = False
        self._closing = False
        # Messages held in memory that have a row: id(message) -> (key, made here,
        # committed at, tries). A message object queued twice has two rows.
        self._rows: dict[int, tuple[int, bool, float, int]] = {}
        self._twins: dict[int, list[tuple[int, bool, float, int]]] = {}
        self._to_remove: list[int] = []
        self._to_park: list[tuple[int, float, int]] = []
        self._to_fail: list[tuple[int, str]] = []
        # A shared spool (Redis): what is committed belongs to the fleet, and this
        # process delivers only what it claims (or nothing, with deliver=False).
        self._shared = settings.shared
        self._deliver = settings.deliver
        self._kept: list[Message] = []  # pending at stop with no row yet: committed at stop
        self._parked = 0  # parked rows counted by this worker (in its `held`)
        self._backlog = False  # due parked rows may wait: new messages queue behind them
        self._next_due = math.inf  # when the earliest parked retry is due (epoch seconds)
        if self._shared and self._deliver:
            self._next_due = -math.inf  # new entries may wait there now: look at once
        self._blocked: dict[str, int] = {}  # user -> key of their parked barrier
        self._last_write = -math.inf
        self._next_upkeep = 0.0
        self._broken_until = 0.0  # the spool failed: memory only until then
        self._trouble_logged = False
        self._full_logged = False
        self._used = 0  # bytes the spool used at the last look, plus what was added
        self._timer: asyncio.TimerHandle | None = None
        # Relay once: every parked message is due now, but those parked again in this
        # run wait for their time (else they would be retried without pause).
        self._eager = False
        self._parked_now: set[int] = set()
        # An outage: a message was parked and none delivered since. New messages wait
        # in the spool and only a few parked ones are tried, once per wait, the wait
        # doubling (shared by all, as a Courier that does not answer is one for all);
        # the first delivery ends it and every parked message is tried at once.
        self._outage = False
        self._outage_wait = FIRST_WAIT
        self._doubled_at = 0.0
        self._catch_up = False
        self._delivered_seen = 0
        #: Messages queued at which a commit is made at once, window or not.
        self.burst = max(1, min(BATCH, worker.max_queue_size // 2))
        #: Messages made by this client in the spool now.
        self.spooled = 0
        #: Messages taken over from other processes (or clients) that stopped or died.
        self.recovered = 0
        #: Messages committed to a shared spool, for the fleet to deliver.
        self.committed = 0
        #: Messages dropped because the spool was full.
        self.dropped = 0
        #: Messages left in the spool when the worker stopped (still pending).
        self.left = 0

    def retry_everything_now(self) -> None:
        """Treat every parked message as due now, once each (`relay --once`)."""
        self._eager = True
        self._backlog = True

    @property
    def waiting(self) -> bool:
        """A commit is scheduled: the worker need not be woken for each new message."""
        return self._timer is not None

    def resting(self) -> bool:
        """Nothing is in memory and nothing parked is due: `flush()` may return."""
        worker = self._worker
        return (
            worker.held == self._parked
            and not self._backlog
            and self._clock() < self._next_due
            and not worker.queue
        )

    # --------------------------------------------------------------- the hooks

    def start(self) -> None:
        """Open the spool on the worker's thread (a forked child opens its own)."""
        self._closing = False
        self._next_upkeep = 0.0  # the first drain takes over what the dead left
        if self._open:
            return
        try:
            self._backend.open()
        except SpoolError as exc:
            self._trouble(exc)
        else:
            self._open = True

    def drain(self) -> None:
        """Commit what is queued (once per window), claim what is due, write what is done."""
        if self._closing:  # stopped: a late wake-up (flush, an answer) must not reopen it
            return
        worker = self._worker
        now = time.monotonic()
        if worker.queue:
            if now >= self._last_write + self._settings.commit_interval or (
                len(worker.queue) >= self.burst
            ):
                self._commit(now)
            elif self._timer is None:
                self._schedule(self._last_write + self._settings.commit_interval)
        if now >= self._next_upkeep:
            self._upkeep(now)
        if worker.delivered != self._delivered_seen:
            self._delivered_seen = worker.delivered
            if self._outage:  # Courier answers again: everything parked may go now
                self._outage, self._outage_wait = False, FIRST_WAIT
                self._catch_up = self._backlog = True
        if (
            (self._backlog or self._clock() >= self._next_due)
            and now >= self._broken_until
            and self._deliver
        ):
            self._refill()
        if self._to_park or self._to_remove or self._to_fail:
            if (
                now >= self._last_write + self._settings.commit_interval
                or len(self._to_remove) >= BATCH
                or worker.held == self._parked
            ):
                self._write_done(now)
            elif self._timer is None:
                self._schedule(self._last_write + self._settings.commit_interval)

    def finished(self, message: Message) -> None:
        """A held message's delivery ended (delivered, or failed for good): remove its row."""
        row = self._pop_row(message) if self._twins else self._rows.pop(id(message), None)
        if row is not None:
            self._to_remove.append(row[0])
            if row[1]:
                self.spooled -= 1

    def park(self, message: Message) -> str | None:
        """Park a message whose retries ran out on a retryable failure.

        Returns:
            None when parked; else why it fails now: `""` when it has no row (it
            fails as without a spool), the age limit when it is too old.
        """
        row = self._pop_row(message)
        if row is None:
            return ""
        key, mine, made_at, _tries = row
        now = self._clock()
        expires = made_at + self._settings.max_age
        if now >= expires or self._closing:
            why = f"it waited in the spool for spool_max_age ({self._settings.max_age:g}s)"
            self._to_fail.append((key, why))
            if mine:
                self.spooled -= 1
            return why
        if not self._outage:
            self._outage, self._doubled_at = True, now
        elif now - self._doubled_at >= self._outage_wait:
            self._outage_wait = min(LONGEST_WAIT, self._outage_wait * 2)
            self._doubled_at = now
        due = min(now + self._outage_wait * random.uniform(0.5, 1.0), expires)
        self._to_park.append((key, due, 1))
        self._next_due = min(self._next_due, due)
        if self._eager:
            self._parked_now.add(key)
        # It leaves memory but stays pending: counted in held again (its lane's end
        # takes one off).
        self._worker.held += 1
        self._parked += 1
        if self._worker.is_barrier(message):
            self._block(message.recipient, key)
        return None

    def keep(self, message: Message) -> bool:
        """Keep a message the stopping worker would report as not delivered."""
        if self._closing:
            return False
        if self._pop_row(message) is None:
            self._kept.append(message)
        self.left += 1
        return True

    def stop(self) -> None:
        """Commit what is left, release everything this owner holds, and close."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        kept, self._kept = self._kept, []
        self.left += self._parked
        self._parked = 0
        if not self._open:
            self._lose(kept, "the spool could not be opened")
            return
        try:
            self._write_done(time.monotonic())
            if kept:
                self._backend.commit(kept, self._clock(), True)
                self.spooled += len(kept)
                kept = []
            self._backend.release()
            self._backend.tidy()
        except SpoolError as exc:
            logger.error("courier-analytics: %s; messages left in memory are lost", exc)
            self._lose(kept, "the spool failed")
        finally:
            self._rows.clear()
            self._twins.clear()
            self._blocked.clear()
            self._backend.close()
            self._open = False

    # --------------------------------------------------------------- the work

    def _commit(self, now: float) -> None:
        """Move queued messages to the spool; hand those memory has room for to the lanes."""
        worker, settings = self._worker, self._settings
        queue = worker.queue
        count = min(len(queue), BATCH)
        worker.held += count  # first: callers read len(queue) + held, never less
        batch = [queue.popleft() for _ in range(count)]
        if not self._open or now < self._broken_until:
            self._unspooled(batch, count)
            return
        size = sum(len(m._data) for m in batch) + ROW_OVERHEAD * count
        if self._used + size > settings.max_bytes:
            try:
                self._used = self._backend.used_bytes()
            except SpoolError as exc:
                self._trouble(exc)
                self._unspooled(batch, count)
                return
            if self._used + size > settings.max_bytes:
                batch = self._fit(batch, settings.max_bytes - self._used)
        if self._shared:
            self._hand_over(batch, now, size)
            return
        # Room before this batch (held counts it already); none while older messages
        # wait in the spool (new ones queue behind them) or while Courier is out.
        room = 0 if self._backlog or self._outage else self._room() + len(batch)
        held: list[Message] = []
        parked: list[Message] = []
        for message in batch:
            if message.recipient in self._blocked:
                parked.append(message)  # behind their user's barrier, which waits there
            elif len(held) < room:
                held.append(message)
            else:
                parked.append(message)
                room = 0  # the rest queue behind it
        wall = self._clock()
        try:
            keys = self._backend.commit(held, wall, False) if held else []
            parked_keys = self._backend.commit(parked, wall, True) if parked else []
        except SpoolError as exc:
            self._trouble(exc)
            self._unspooled(batch, len(batch))
            return
        self._last_write = now
        self._used += size
        self.spooled += len(held) + len(parked)
        if parked_keys:
            self._parked += len(parked_keys)
            self._backlog = True
            worker.left_memory(parked)
        rows, add = self._rows, worker.add_to_lanes
        for message, key in zip(held, keys, strict=True):
            row = (key, True, wall, 0)
            if rows.setdefault(id(message), row) is not row:  # queued twice
                self._twins.setdefault(id(message), []).append(row)
            add(message)

    def _hand_over(self, batch: list[Message], now: float, size: int) -> None:
        """Commit messages to a shared spool: from then on, whoever holds their shard delivers."""
        try:
            if batch:
                self._backend.commit(batch, self._clock(), True)
        except SpoolError as exc:
            self._trouble(exc)
            self._unspooled(batch, len(batch))
            return
        self._worker.held -= len(batch)
        self._worker.left_memory(batch)  # claimed back (back_in_memory) only if this one delivers
        self._last_write = now
        self._used += size
        self.committed += len(batch)
        self._backlog = self._deliver  # this process may hold their shards: look now

    def _fit(self, batch: list[Message], room: int) -> list[Message]:
        """The messages of `batch` that fit in `room` bytes; the rest are dropped and reported."""
        kept: list[Message] = []
        for message in batch:
            room -= len(message._data) + ROW_OVERHEAD
            if room >= 0:
                kept.append(message)
                continue
            self._worker.held -= 1
            self._worker.left_memory([message])
            self.dropped += 1
            error = QueueFullError(
                f"{message.type} {message.message_id} dropped: the spool is full "
                f"(spool_max_bytes={self._settings.max_bytes})"
            )
            if not self._full_logged:
                self._full_logged = True
                logger.error(
                    "courier-analytics: the spool %s is full (spool_max_bytes=%d): new messages "
                    "are dropped, each passed to on_error, until it has room",
                    self._settings.where,
                    self._settings.max_bytes,
                )
            self._worker.report(error, message)
        if len(kept) == len(batch):
            self._full_logged = False
        return kept

    def _unspooled(self, batch: list[Message], count: int) -> None:
        """The spool is unavailable: deliver from memory what has room; the rest waits.

        With a shared spool nothing is delivered from memory: it all waits (bounded
        by `max_queue_size`) to be committed when the spool is back.
        """
        room = 0 if self._shared else max(0, self._room() + count)  # held counts the batch
        for message in batch[:room]:
            self._worker.add_to_lanes(message)
        rest = batch[room:]
        if rest:
            self._worker.queue.extendleft(reversed(rest))
            self._worker.held -= len(rest)
            self._schedule(time.monotonic() + RETRY_SPOOL)

    def _room(self) -> int:
        """How many more messages memory has room for (`max_queue_size` in memory)."""
        worker = self._worker
        return worker.max_queue_size - (worker.held - self._parked)

    def _refill(self) -> None:
        """Claim parked messages that are due, as memory has room, oldest first."""
        room = min(self._room(), PROBE if self._outage else BATCH)
        if room < self.burst and self._worker.held > self._parked:
            return  # a batch at a time, once memory has room for one (a claim scans)
        if room <= 0 or not self._open:
            return
        now = self._clock()
        try:
            if self._to_park:  # written first: the spool then knows when each is due
                self._write_done(time.monotonic())
            everything = self._eager or self._catch_up
            claimed = self._backend.claim(room, math.inf if everything else now, self._take)
            if self._outage:  # a few at a time, once per wait
                self._backlog = False
                self._next_due = now + self._outage_wait
            elif len(claimed) < room:
                self._backlog = self._catch_up = False
                try:
                    due = self._backend.next_due(now)
                except SpoolError as exc:  # what was claimed goes on: it is held now
                    self._trouble(exc)
                else:
                    self._next_due = math.inf if due is None else due
        except SpoolError as exc:
            self._trouble(exc)
            return
        worker, rows = self._worker, self._rows
        for entry in claimed:
            mine = entry.maker == self.token
            if entry.counted:
                self._parked -= 1
            elif mine and self.left:  # released by this client's earlier worker
                self.left -= 1
                worker.held += 1
            else:
                if not mine or self._shared:  # shared: own messages came back through the fleet
                    self.recovered += 1
                worker.held += 1
            # `spooled` counts this client's messages in its own spool (not a shared one).
            row = (entry.key, mine and not self._shared, entry.made_at, entry.tries)
            self._add_row(rows, entry.message, row)
            worker.back_in_memory(entry.message)
            worker.add_to_lanes(entry.message)

    def _take(self, key: int, message: Message) -> bool:
        """Whether a due parked message may go: not while its user's barrier waits."""
        if self._eager and key in self._parked_now:
            return False
        blocker = self._blocked.get(message.recipient)
        if blocker is None:
            return True
        if blocker == key:
            del self._blocked[message.recipient]
            return True
        return False

    def _block(self, user: str, key: int) -> None:
        """A user's barrier waits in the spool: their later messages wait there too."""
        self._blocked.setdefault(user, key)
        for message in self._worker.withdraw(user):
            row = self._pop_row(message)
            if row is None:  # no row: it goes on from memory
                self._worker.add_to_lanes(message)
                continue
            self._to_park.append((row[0], 0.0, 0))
            self._parked += 1
            self._worker.left_memory([message])

    def _write_done(self, now: float) -> None:
        """Write the batches of parked and answered messages."""
        park, self._to_park = self._to_park, []
        remove, self._to_remove = self._to_remove, []
        fail, self._to_fail = self._to_fail, []
        try:
            if park:
                self._backend.park(park)
            if remove:
                self._backend.remove(remove)
            for key, why in fail:
                self._backend.fail([key], why)
        except SpoolError as exc:
            self._to_park[:0] = park  # written with the next batch
            self._to_remove[:0] = remove
            self._to_fail[:0] = fail
            self._trouble(exc)
            return
        self._last_write = now

    def _upkeep(self, now: float) -> None:
        """Renew the lease, take over what the dead left, and keep the file small."""
        self._next_upkeep = now + self._settings.lease / 3
        if not self._open:
            self.start()
            if not self._open:
                return
        try:
            if self._backend.take_over(self._clock()):
                self._backlog = True
            self._backend.tidy()
            self._used = self._backend.used_bytes()
        except SpoolError as exc:
            self._trouble(exc)
            return
        if self._trouble_logged:
            self._trouble_logged = False
            logger.info("courier-analytics: the spool %s works again", self._settings.where)

    def _trouble(self, exc: SpoolError) -> None:
        """The spool failed: deliver from memory for a while; log once per episode."""
        self._broken_until = time.monotonic() + RETRY_SPOOL
        self._next_upkeep = min(self._next_upkeep, self._broken_until)
        if not self._trouble_logged:
            self._trouble_logged = True
            logger.error(
                "courier-analytics: %s; %s until the spool works again "
                "(what is not committed is lost if the process dies)",
                exc,
                "keeping new messages in memory (up to max_queue_size, then dropping them)"
                if self._shared
                else "delivering from memory",
            )

    def _lose(self, messages: list[Message], reason: str) -> None:
        """Report messages that could not be kept at stop (the spool failed)."""
        for message in messages:
            self.left -= 1
            self._worker.fail_at_stop(message, _outcomes.not_delivered(message, reason=reason))

    def _schedule(self, when: float) -> None:
        """Wake the worker at `when` (monotonic): a commit or a batch is due then."""
        if self._timer is not None or self._closing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the worker's loop (tests drive it by hand)
            return
        self._timer = loop.call_at(loop.time() + max(0.0, when - time.monotonic()), self._due)

    def _due(self) -> None:
        self._timer = None
        self._worker.wake_for_spool()

    def _add_row(
        self,
        rows: dict[int, tuple[int, bool, float, int]],
        message: Message,
        row: tuple[int, bool, float, int],
    ) -> None:
        if rows.setdefault(id(message), row) is not row:
            self._twins.setdefault(id(message), []).append(row)

    def _pop_row(self, message: Message) -> tuple[int, bool, float, int] | None:
        twins = self._twins.get(id(message)) if self._twins else None
        if twins:
            row = twins.pop()
            if not twins:
                del self._twins[id(message)]
            return row
        return self._rows.pop(id(message), None)
