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

import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from courier_analytics import _outcomes
from courier_analytics._messages import Message
from courier_analytics._spool import Settings, SpoolError
from courier_analytics._spool._backend import Backend, open_backend
from courier_analytics._spool._bound import Bound
from courier_analytics._spool._health import RETRY_SPOOL, Health, Outage
from courier_analytics._spool._lease import Alarm, Holdings, Lease

if TYPE_CHECKING:
    from courier_analytics._engine import Engine

__all__ = ["Journal"]

logger = logging.getLogger("courier_analytics")

#: The most messages one commit or claim moves.
BATCH = 2000
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
        # Messages held in memory that have a row, and the lease they are held under.
        self._holdings = Holdings()
        self._lease = Lease(self._backend, settings.lease, worker.wake_for_spool)
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
        self._health = Health(settings)  # the spool failed: memory only for a while
        self._bound = Bound(worker, settings, self._backend)
        self._timer = Alarm(worker.wake_for_spool)
        # Relay once: every parked message is due now, but those parked again in this
        # run wait for their time (else they would be retried without pause).
        self._eager = False
        self._parked_now: set[int] = set()
        self._outage = Outage()  # Courier does not answer: parked ones are tried a few at a time
        self._catch_up, self._delivered_seen = False, 0
        #: Messages queued at which a commit is made at once, window or not.
        self.burst = max(1, min(BATCH, worker.max_queue_size // 2))
        #: Messages made by this client in the spool now.
        self.spooled = 0
        #: Messages taken over from other processes (or clients) that stopped or died.
        self.recovered = 0
        #: Messages committed to a shared spool, for the fleet to deliver.
        self.committed = 0
        #: Messages left in the spool when the worker stopped (still pending).
        self.left = 0
        #: Messages another process took over while this one stalled past its lease.
        self.taken_over = 0

    @property
    def dropped(self) -> int:
        """Messages dropped because the spool was full."""
        return self._bound.dropped

    @property
    def some_taken(self) -> bool:
        """Copies another process took over are still in memory: each send asks `taken`."""
        return self._holdings.any_gone

    def taken(self, message: Message) -> bool:
        """Whether another process took this message over; then it is not to be sent.

        Asked before each retry, and before each first attempt while `some_taken`;
        a message taken over leaves `pending` for `taken_over`. The lease is renewed
        first when its safe time passed (the process may have stalled).
        """
        if time.monotonic() >= self._lease.safe_until and self._open and not self._closing:
            self._check_lease()
        if self._holdings.any_gone and self._holdings.gone(message):
            self.taken_over += 1
            return True
        return False

    def retry_everything_now(self) -> None:
        """Treat every parked message as due now, once each (`relay --once`)."""
        self._eager = True
        self._backlog = True

    @property
    def waiting(self) -> bool:
        """A commit is scheduled: the worker need not be woken for each new message."""
        return self._timer.set_for is not None

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
        self._lease.next_upkeep = 0.0  # the first drain takes over what the dead left
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
        if now >= self._lease.safe_until and self._open and now >= self._health.broken_until:
            self._check_lease()  # first: nothing held goes out, nor is committed, unknowing
        if worker.queue:
            if now >= self._health.last_write + self._settings.commit_interval or (
                len(worker.queue) >= self.burst
            ):
                self._commit(now)
            elif self._timer.set_for is None:
                self._schedule(self._health.last_write + self._settings.commit_interval)
        if now >= self._lease.next_upkeep:
            self._upkeep(now)
        if worker.delivered != self._delivered_seen:
            self._delivered_seen = worker.delivered
            if self._outage.on:  # Courier answers again: everything parked may go now
                self._outage.end()
                self._catch_up = self._backlog = True
        if (
            (self._backlog or self._clock() >= self._next_due)
            and now >= self._health.broken_until
            and self._deliver
        ):
            self._refill()
        if self._to_park or self._to_remove or self._to_fail:
            if (
                now >= self._health.last_write + self._settings.commit_interval
                or len(self._to_remove) >= BATCH
                or worker.held == self._parked
            ):
                self._write_done(now)
            elif self._timer.set_for is None:
                self._schedule(self._health.last_write + self._settings.commit_interval)

    def finished(self, message: Message) -> None:
        """A held message's delivery ended (delivered, or failed for good): remove its row."""
        holdings = self._holdings
        row = holdings.pop(message)
        if row is not None:
            self._to_remove.append(row[0])
            if row[1]:
                self.spooled -= 1
        elif holdings.any_gone:
            holdings.gone(message)  # on the wire before its lease was lost: settled here

    def park(self, message: Message) -> str | None:
        """Park a message whose retries ran out on a retryable failure.

        Returns:
            None when parked; else why it fails now: `""` when it has no row (it
            fails as without a spool), the age limit when it is too old.
        """
        row = self._holdings.pop(message)
        if row is None:
            if self._holdings.any_gone and self._holdings.gone(message):
                self.taken_over += 1  # another process took it over: it retries it
                return None
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
        due = min(self._outage.next_try(now), expires)
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
        if self._holdings.pop(message) is None:
            if self._holdings.any_gone and self._holdings.gone(message):
                self.taken_over += 1  # another process took it over: it delivers it
                return True
            self._kept.append(message)
        self.left += 1
        return True

    def stop(self) -> None:
        """Commit what is left, release everything this owner holds, and close."""
        self._closing = True
        self._timer.cancel()
        self._lease.stop()
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
            self._holdings.clear()
            self._blocked.clear()
            self._backend.close()
            self._open = False

    # --------------------------------------------------------------- the work

    def _commit(self, now: float) -> None:
        """Move queued messages to the spool; hand those memory has room for to the lanes."""
        worker = self._worker
        queue = worker.queue
        count = min(len(queue), BATCH)
        worker.held += count  # first: callers read len(queue) + held, never less
        batch = [queue.popleft() for _ in range(count)]
        if not self._open or now < self._health.broken_until:
            self._unspooled(batch, count)
            return
        try:
            batch, size = self._bound.admit(batch)
        except SpoolError as exc:
            self._trouble(exc, committing=True)
            self._unspooled(batch, count)
            return
        if self._shared:
            self._hand_over(batch, now, size)
            return
        # Room before this batch (held counts it already); none while older messages
        # wait in the spool (new ones queue behind them) or while Courier is out.
        room = 0 if self._backlog or self._outage.on else self._room() + len(batch)
        held, parked = self._split(batch, room)
        wall = self._clock()
        try:
            keys = self._backend.commit(held, wall, False) if held else []
            parked_keys = self._backend.commit(parked, wall, True) if parked else []
        except SpoolError as exc:
            self._trouble(exc, committing=True)
            self._unspooled(batch, len(batch))
            return
        self._health.wrote(now, len(batch), committed=True)
        self._bound.used += size
        self.spooled += len(held) + len(parked)
        if parked_keys:
            self._parked += len(parked_keys)
            self._backlog = True
            worker.spilled(parked)
        self._holdings.add_committed(held, keys, wall)
        worker.add_to_lanes(held)

    def _split(self, batch: list[Message], room: int) -> tuple[list[Message], list[Message]]:
        """The messages of `batch` memory has room for, and those parked, both in order."""
        blocked = self._blocked
        if not blocked:  # the usual case: the first go, the rest queue behind them
            room = max(0, room)
            return batch[:room], batch[room:]
        held: list[Message] = []
        parked: list[Message] = []
        for message in batch:
            if message.recipient in blocked:
                parked.append(message)  # behind their user's barrier, which waits there
            elif len(held) < room:
                held.append(message)
            else:
                parked.append(message)
                room = 0  # the rest queue behind it
        return held, parked

    def _hand_over(self, batch: list[Message], now: float, size: int) -> None:
        """Commit messages to a shared spool: from then on, whoever holds their shard delivers."""
        try:
            if batch:
                self._backend.commit(batch, self._clock(), True)
        except SpoolError as exc:
            self._trouble(exc, committing=True)
            self._unspooled(batch, len(batch))
            return
        self._worker.held -= len(batch)
        self._worker.spilled(batch)  # claimed back (back_in_memory) only if this one delivers
        self._health.wrote(now, len(batch), committed=True)
        self._bound.used += size
        self.committed += len(batch)
        self._backlog = self._deliver  # this process may hold their shards: look now

    def _unspooled(self, batch: list[Message], count: int) -> None:
        """The spool is unavailable: deliver from memory what has room; the rest waits.

        With a shared spool nothing is delivered from memory: it all waits (bounded
        by `max_queue_size`) to be committed when the spool is back.
        """
        room = 0 if self._shared else max(0, self._room() + count)  # held counts the batch
        self._worker.add_to_lanes(batch[:room])
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
        room = min(self._room(), PROBE if self._outage.on else BATCH)
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
            if self._outage.on:  # a few at a time, once per wait
                self._backlog = False
                self._next_due = now + self._outage.wait
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
        worker, holdings = self._worker, self._holdings
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
            holdings.add(entry.message, row)
            worker.back_in_memory(entry.message)
        worker.add_to_lanes([entry.message for entry in claimed])

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
            row = self._holdings.pop(message)
            if row is None:  # no row: it goes on from memory
                self._worker.add_to_lanes([message])
                continue
            self._to_park.append((row[0], 0.0, 0))
            self._parked += 1
            self._worker.spilled([message])

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
        self._health.wrote(now, len(park) + len(remove) + len(fail))

    def _upkeep(self, now: float) -> None:
        """Renew the lease, take over what the dead left, and keep the file small."""
        self._lease.next_upkeep = now + self._settings.lease / 3
        if not self._open:
            self.start()
            if not self._open:
                return
        if not self._check_lease():
            return
        try:
            if self._backend.take_over(self._clock()):
                self._backlog = True
            self._backend.tidy()
            self._bound.used = self._backend.used_bytes()
        except SpoolError as exc:
            self._trouble(exc)
            return
        self._health.kept_lease()

    def _check_lease(self) -> bool:
        """Renew the lease; if it was lost, drop what it held. False when the spool failed."""
        try:
            held = self._lease.renew(self._clock())
        except SpoolError as exc:  # unknown: what is held goes on (see durability.md)
            self._trouble(exc)
            return False
        if not held:
            self._lose_lease()
        return True

    def _lose_lease(self) -> None:
        """This process stalled past its lease and another took over all it held: drop it.

        What is in memory is dropped at its next send (see `taken`); what was parked
        leaves `held` now. The taker counts them as recovered and delivers them.
        """
        worker = self._worker
        in_memory = self._holdings.lose_all()
        parked, self._parked = self._parked, 0
        worker.held -= parked
        self.taken_over += parked
        self.spooled = 0  # none of its rows is its own any more
        self._blocked.clear()
        self._parked_now.clear()
        # Their keys are the taker's now (the store would refuse them anyway).
        self._to_park, self._to_remove, self._to_fail = [], [], []
        self._backlog = False
        self._next_due = -math.inf if self._shared and self._deliver else math.inf
        logger.warning(
            "courier-analytics: this process stalled past its lease on the spool %s; another "
            "took over the %d message(s) it held and delivers them (this one sends none)",
            self._settings.where,
            in_memory + parked,
        )

    def _trouble(self, exc: SpoolError, *, committing: bool = False) -> None:
        """The spool failed (`committing`: a commit did): memory only for a while; log once."""
        until = self._health.failed(exc, committing=committing)
        self._lease.next_upkeep = min(self._lease.next_upkeep, until)

    def _lose(self, messages: list[Message], reason: str) -> None:
        """Report messages that could not be kept at stop (the spool failed)."""
        for message in messages:
            self.left -= 1
            self._worker.fail_at_stop(message, _outcomes.not_delivered(message, reason=reason))

    def _schedule(self, when: float) -> None:
        """Wake the worker at `when` (monotonic): a commit or a batch is due then."""
        if not self._closing:
            self._timer.set(when)
