"""From a made message to the worker's queue: what becomes of each call, and the counts.

`Intake` is the part of a [`Client`][courier_analytics.Client] that takes a
message the factory made and queues, skips or drops it, counting each in
[`Stats`][courier_analytics.Stats] and reporting what is not queued to
`on_error`. `_dispatch` is the one way in, for every call, plain or not.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Literal, NamedTuple

from courier_analytics import _capture
from courier_analytics._errors import (
    ClientClosedError,
    ConfigurationError,
    CourierAnalyticsError,
    QueueFullError,
    WorkerUnavailable,
)
from courier_analytics._events import Emitter
from courier_analytics._message import Message
from courier_analytics._options import Options
from courier_analytics._value import Value

if TYPE_CHECKING:
    from courier_analytics._engine import Waiter
    from courier_analytics._worker import Worker

__all__ = ["DROP_LOG_INTERVAL", "Intake", "Outcome", "Stats"]

logger = logging.getLogger("courier_analytics")

#: Seconds between two warnings about dropped messages (each drop is still reported).
DROP_LOG_INTERVAL = 10.0


class Stats(Value):
    """Counts of what a client did with the messages made through it.

    At any quiet moment (after [`Client.flush`][courier_analytics.Client.flush]),
    `made == delivered + failed + dropped + skipped + pending`.

    Attributes:
        made: Calls that produced a valid message.
        queued: Messages accepted for delivery (made, less skipped, dropped and cancelled).
        delivered: Messages Courier accepted.
        retried: Retry attempts (not messages): a message retried twice counts 2.
        failed: Messages that will not be delivered: refused by Courier, out of
            retries, still pending at shutdown, or cancelled by a `before` plugin
            that raised. Each was passed to `on_error`.
        dropped: Messages refused because the queue was full, the client closed, or
            (module-level calls) the module settings are invalid. Each was passed to
            `on_error`.
        skipped: Messages not sent by design: a type the route does not deliver
            (page, screen, alias; group on route `"api"`), `send=False`,
            captured by [`courier_analytics.testing.capture`][courier_analytics.testing.capture],
            dropped by a plugin or source middleware, turned away by their
            `integrations` (`{"Courier": False}`, `{"All": False}`), or made in a
            scope with `on_missing_identity="skip"` that knew no user.
        pending: Messages queued, being delivered, or waiting in the spool right now.
        spooled: Messages made by this client that are in its spool now (with a
            `spool`; they are also in `pending`, or about to leave it).
        recovered: Messages this client took over from the spool, left there by a
            process (or client) that died or stopped; each ends in `delivered` or
            `failed`, or is still `pending`. With a Redis spool: every message this
            client claimed from the streams to deliver, its own included.
        committed: Messages this client committed to a Redis spool: from then on
            they are the fleet's, delivered by whichever process holds their
            shard (they leave `pending`; those this client delivers come back
            through `recovered`).
        taken_over: Messages another process took over from the spool because
            this one stalled past its lease (SIGSTOP, a suspended VM): that
            process delivers them, and this one sends none of them (they leave
            `pending`).
    """

    __match_args__ = (
        "made",
        "queued",
        "delivered",
        "retried",
        "failed",
        "dropped",
        "skipped",
        "pending",
        "spooled",
        "recovered",
        "committed",
        "taken_over",
    )
    __slots__ = __match_args__

    made: int
    queued: int
    delivered: int
    retried: int
    failed: int
    dropped: int
    skipped: int
    pending: int
    spooled: int
    recovered: int
    committed: int
    taken_over: int

    def __init__(
        self,
        made: int,
        queued: int,
        delivered: int,
        retried: int,
        failed: int,
        dropped: int,
        skipped: int,
        pending: int,
        spooled: int = 0,
        recovered: int = 0,
        committed: int = 0,
        taken_over: int = 0,
    ) -> None:
        self._assign(
            made,
            queued,
            delivered,
            retried,
            failed,
            dropped,
            skipped,
            pending,
            spooled,
            recovered,
            committed,
            taken_over,
        )

    @property
    def unaccounted(self) -> int:
        """`made + recovered - (delivered + failed + ... + pending + committed + taken_over)`.

        0 when quiet.

        Nonzero only for an instant while a message moves between two counters;
        after [`Client.flush`][courier_analytics.Client.flush] it is always 0. Anything else is a
        bug.
        """
        settled = self.delivered + self.failed + self.dropped + self.skipped + self.pending
        settled += self.committed + self.taken_over
        return self.made + self.recovered - settled


NO_STATS = Stats(
    made=0, queued=0, delivered=0, retried=0, failed=0, dropped=0, skipped=0, pending=0
)

#: What became of a message at its call (see `Outcome`).
State = Literal["accepted", "skipped", "dropped", "failed"]

#: What `_dispatch` returns for a message it did not simply queue: its state and why.
#: A queued message returns None, so the common call allocates nothing to say so.
NotQueued = tuple[State, "str | BaseException"]


class Outcome(NamedTuple):
    """What became of one message at its call, as `_client.dispatch` returns it.

    Attributes:
        message_id: The message's `messageId`.
        state: `"accepted"`: queued (in sync mode: delivered); `"skipped"`: not
            sent by design; `"dropped"`: refused at the call (queue full, client
            closed, invalid module settings); `"failed"`: cancelled by a plugin
            or, in sync mode, not delivered.
        why: The reason a message was skipped (a few words), or the error a
            dropped or failed one was reported to `on_error` with; None when accepted.
    """

    message_id: str
    state: State
    why: str | BaseException | None = None

    @property
    def ok(self) -> bool:
        """Whether the call did what was asked: accepted, or skipped by design."""
        return self.state == "accepted" or self.state == "skipped"


class Intake:
    """Queues, skips or drops each made message, and counts what became of it.

    The base of [`Client`][courier_analytics.Client] that its calls end in; the
    client's set-up gives it its options, worker, events and route's message types.
    """

    _options: Options
    _worker: Worker
    _events: Emitter
    #: The message types the route sends; the others are skipped.
    _delivered: frozenset[str]

    # Set by the settings module (`_default.py`) on a default client it replaced or
    # built as a stand-in; None on every other client.
    # - `_successor`: a default client retired after a setting changed hands the calls
    #   that still reach it (a thread held it across the rebuild) to the current one.
    # - `_refusal`: why the settings are invalid, on the stand-in that drops each call.
    _successor: Callable[[], Intake] | None = None
    _refusal: str | None = None

    def _open_intake(self, options: Options) -> None:
        """Fresh counters (at construction, and in a forked child)."""
        self._send = options.send
        self._sync_mode = options.sync_mode
        self._lock = threading.Lock()
        # Messages made: one tick each, taken without the lock (`next` on a count is
        # one atomic step, as message ids rely on too); `stats` reads it by taking a
        # tick of its own under the lock, and subtracts the ticks reads took.
        self._made = itertools.count()
        self._made_reads = 0
        self._handed_over = 0  # made here, then passed to the successor, which counts them
        self._dropped = 0
        self._skipped = 0
        self._cancelled = 0
        self._drops_unlogged = 0
        self._drop_logged_at = -DROP_LOG_INTERVAL

    @property
    def stats(self) -> Stats:
        """A snapshot of this client's counters; see [`Stats`][courier_analytics.Stats]."""
        worker = self._worker
        with self._lock:
            made = self._made_now()
            dropped, skipped = self._dropped, self._skipped
            cancelled = self._cancelled
        journal = worker.journal
        if journal is not None:
            dropped += journal.dropped  # the spool was full
        return Stats(
            made=made,
            queued=made - dropped - skipped - cancelled,
            delivered=worker.delivered,
            retried=worker.retried,
            failed=worker.failed + cancelled,
            dropped=dropped,
            skipped=skipped,
            pending=worker.pending,
            spooled=0 if journal is None else journal.spooled,
            recovered=0 if journal is None else journal.recovered,
            committed=0 if journal is None else journal.committed,
            taken_over=0 if journal is None else journal.taken_over,
        )

    def _made_now(self) -> int:
        """Messages made so far (under `_lock`: reading the count advances it)."""
        made = next(self._made) - self._made_reads - self._handed_over
        self._made_reads += 1
        return made

    def _dispatch(self, message: Message) -> NotQueued | None:
        """Queue, skip or drop a made message; None when queued, else its state and why."""
        stop = message._stop
        if stop is not None:
            if _capture.recorders and isinstance(stop, str):
                for recorder in _capture.recorders:  # tests see what was skipped, and why
                    recorder(message, stop)
            return self._stopped(message, stop)
        if _capture.recorders:
            return self._capture(message)
        if not self._send:
            if self._refusal is not None:
                return self._refuse(message)
            return self._stopped(message, "send=False")
        if message.type not in self._delivered:
            return self._stopped(message, f"route {self._options.route!r} does not deliver it")
        next(self._made)  # before the worker can count it delivered: never negative
        if self._sync_mode:
            return self._put_and_wait(message)
        try:
            if self._worker.put(message):
                return None
        except WorkerUnavailable as exc:
            return self._unavailable(message, exc)
        return self._full(message)

    def _put_and_wait(self, message: Message) -> NotQueued | None:
        """Sync mode: queue the message and wait until it is delivered or has failed.

        The worker settles `done` with the message's outcome: None when delivered,
        else the error it reported (see `Worker.put`).
        """
        done: Waiter = Future()
        try:
            queued = self._worker.put(message, done)
        except WorkerUnavailable as exc:
            return self._unavailable(message, exc)
        if not queued:
            return self._full(message)
        error = self._worker.wait_done(message, done, self._options.flush_timeout)
        return None if error is None else ("failed", error)

    def _full(self, message: Message) -> NotQueued:
        options = self._options
        error = QueueFullError(
            f"{message.type} {message.message_id} ({len(message._data)} bytes) dropped: "
            f"the queue is full (at most {options.max_queue_size} messages and "
            f"{options.max_queue_bytes} bytes pending)"
        )
        self._not_queued(message, error)
        return "dropped", error

    def _unavailable(self, message: Message, exc: WorkerUnavailable) -> NotQueued | None:
        """The worker takes no more: the successor takes the message, or it is dropped."""
        successor = self._successor
        if successor is not None and self._worker.closed:
            with self._lock:
                self._handed_over += 1
            return successor()._dispatch(message)
        error = ClientClosedError(f"{message.type} {message.message_id} dropped: {exc}")
        self._not_queued(message, error)
        return "dropped", error

    def _refuse(self, message: Message) -> NotQueued | None:
        """Drop a call made while the module settings are invalid (see `_refusal`).

        Counted as made and dropped and passed to `on_error`; the settings module
        logged the problem once, so this logs nothing.
        """
        successor = self._successor
        if successor is not None:  # the settings changed since: the new client takes it
            return successor()._dispatch(message)
        next(self._made)
        error = ConfigurationError(
            f"{message.type} {message.message_id} dropped: the module settings are "
            f"invalid ({self._refusal})"
        )
        self._not_queued(message, error, warn=False)
        return "dropped", error

    def _not_queued(
        self, message: Message, error: CourierAnalyticsError, *, warn: bool = True
    ) -> None:
        """Count, log and report a message the worker refused: the queue was full, or closed."""
        with self._lock:
            self._dropped += 1
            drops = self._count_drop() if warn else 0
        if drops:
            logger.warning(
                "courier-analytics: %s (%d message(s) dropped since the last such warning; "
                "each was passed to on_error)",
                error,
                drops,
            )
        if self._events.handlers:
            if self._worker.closed:
                self._events.message("call_after_close", message)
            self._events.failure("dropped", error, message)
        self._report(error, message)

    def _stopped(self, message: Message, why: str | Exception) -> NotQueued:
        """Count a message that goes no further than the call: skipped, or cancelled."""
        next(self._made)
        if isinstance(why, str):
            with self._lock:
                self._skipped += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "courier-analytics: skipped %s %s (%s)", message.type, message.message_id, why
                )
            return "skipped", why
        with self._lock:
            self._cancelled += 1
        logger.warning("courier-analytics: %s (passed to on_error)", why)
        self._report(why, message)
        return "failed", why

    def _count_drop(self) -> int:
        """Count a drop; return how many to log now (0 inside the quiet interval). Locked."""
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._drop_logged_at < DROP_LOG_INTERVAL:
            return 0
        drops, self._drops_unlogged, self._drop_logged_at = self._drops_unlogged, 0, now
        return drops

    def _capture(self, message: Message) -> NotQueued:
        """Hand the message to the test recorders instead of sending it (counted as skipped)."""
        for recorder in _capture.recorders:
            recorder(message, None)
        next(self._made)
        with self._lock:
            self._skipped += 1
        return "skipped", "captured"

    def _report(self, error: BaseException, message: Message) -> None:
        """Tell `on_error` (and "error" handlers) about a message that goes no further."""
        if self._events.handlers:
            self._events.failure("error", error, message)
        handler = self._options.on_error
        if handler is None:
            return
        try:
            handler(error, message)
        except Exception as exc:
            logger.warning(
                "courier-analytics: on_error raised %s for %s %s; ignored",
                type(exc).__name__,
                message.type,
                message.message_id,
            )
