"""The delivery engine: one cycle that takes each message from the queue to its outcome.

The cycle, on the worker's thread (`_worker.py` runs the loop and the lifecycle):

1. **queue → lanes** (`drain`): messages the callers queued go to their user's
   lane (`_lanes.py`), which *releases* each once its user's ordering allows.
2. **lanes → ready**: a released message waits on the ready queue.
3. **ready → start** (`_pump`): while the adaptive limit on requests in flight
   (`_concurrency.py`) and `max_queue_bytes` allow, a ready message's request is
   built (once per attempt) and handed to the sender's `start(request, on_done)`.
   The sender writes it on an idle connection, or opens one for it.
4. **on_done** (`_on_done`): the answer, or the error that ended the attempt,
   comes back by callback; the place in flight is free again.
5. **finish, or schedule a retry** (`_settle`): a delivered or final outcome
   finishes the message and lets its lane go on (`_finish_lane`); a retryable
   one waits on a timer, then goes back on the ready queue, ahead of first
   attempts, and takes a place under the same limit as they do.

A track waiting to retry holds back nothing (its lane is *detached*); a barrier
(`identify`...) holds back its user's later messages. There is no task, future
or timer per message on the way: the sender's callback is the whole path back.

With a spool, `Journal` (`_spool/_journal.py`) hooks in at `drain`,
`_finish_lane`, `_finish` and `_fail`, and calls back through the methods under
"For the spool's journal".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING

from courier_analytics import _outcomes
from courier_analytics._concurrency import Concurrency
from courier_analytics._errors import DeliveryError, NotDeliveredError
from courier_analytics._events import Emitter
from courier_analytics._lanes import Lanes
from courier_analytics._messages import Message
from courier_analytics._retry import (
    Outcome,
    RetryPolicy,
    is_retryable_error,
    is_retryable_status,
    parse_retry_after,
)
from courier_analytics._routes import Route
from courier_analytics._spool import Settings as SpoolSettings
from courier_analytics._transport import NativeSender, Response, Sender

if TYPE_CHECKING:
    import httpx

    from courier_analytics._metrics import Recorder
    from courier_analytics._spool._journal import Journal
else:
    from courier_analytics._lazy import Journal, httpx

__all__ = ["WIRE_COPIES", "Engine", "Waiter", "Waiters"]


#: A sync-mode call waiting for its message: settled with None (delivered) or the error.
Waiter = Future["BaseException | None"]


class Waiters:
    """The sync-mode calls waiting for their messages, settled as each message ends.

    A waiter is settled with None when its message is delivered (or kept in the
    spool for a later process), else with the error `on_error` was given. Callers
    add under the worker's lock, before the message is queued; the worker thread
    settles. A message object queued twice has two waiters, settled in turn.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, list[Waiter]] = {}  # by id(message): alive while queued
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def add(self, message: Message, waiter: Waiter) -> None:
        """Wait for `message`, about to be queued."""
        with self._lock:
            self._waiting.setdefault(id(message), []).append(waiter)

    def discard(self, message: Message, waiter: Waiter) -> None:
        """Wait no more: the message was not queued after all."""
        with self._lock:
            waiters = self._waiting.get(id(message), [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiting.pop(id(message), None)

    def take(self, message: Message) -> Waiter | None:
        """The first call waiting for `message`, to settle later; None if none waits."""
        if not self._waiting:
            return None
        with self._lock:
            waiters = self._waiting.get(id(message))
            if not waiters:
                return None
            waiter = waiters.pop(0)
            if not waiters:
                del self._waiting[id(message)]
        return waiter

    def settle(self, message: Message, error: BaseException | None) -> None:
        """Tell the call waiting for `message` (if one does) how it ended."""
        waiter = self.take(message)
        if waiter is not None and not waiter.done():
            waiter.set_result(error)


logger = logging.getLogger("courier_analytics")

Reporter = Callable[[BaseException, Message], None]

#: Copies of a message's bytes that a request in flight holds besides the message:
#: its body, and the whole request (head and body) as it is written; asyncio keeps
#: what the socket has not taken yet, a TLS connection its encrypted form.
WIRE_COPIES = 2

#: The outcome of an accepted answer, made once per status (outcomes are immutable).
_DELIVERED = {status: Outcome(status, delivered=True) for status in (200, 201, 202, 204, 409)}


def _call_after(
    loop: asyncio.AbstractEventLoop, wait: float, due: Callable[[_Retry], None], retry: _Retry
) -> asyncio.TimerHandle:
    """A retry's timer: `due(retry)` in `wait` seconds (tests replace it to skip the wait)."""
    return loop.call_at(loop.time() + wait, due, retry)


class _Retry:
    """A message whose attempt failed in a way another may fix: its retries so far."""

    __slots__ = ("attempts", "deadline", "message", "outcome", "timer", "waits")

    def __init__(self, message: Message, deadline: float, waits: Iterator[float]) -> None:
        self.message = message
        self.attempts = 1  # requests made for it
        self.deadline = deadline  # monotonic; no retry starts after it
        self.waits = waits  # the policy's backoff, one wait per retry allowed
        self.outcome: Outcome | None = None  # the last attempt's
        self.timer: asyncio.TimerHandle | None = None  # while it waits


class Engine:
    """Lanes, ready queue, requests in flight and retries of one worker's messages.

    Used from the worker's thread, except where said. Counters: `delivered`,
    `failed`, `retried`, and `held` (messages taken from the queue and not yet
    finished).

    Args:
        queue: The worker's queue, which callers append to.
        route: Turns a message into a request.
        policy: The retry policy.
        max_queue_size: The most messages held in memory.
        max_queue_bytes: The most bytes held for undelivered messages.
        max_in_flight: The ceiling of the adaptive limit on requests in flight.
        strict_order: One message per user at a time (`ordering="strict"`).
        report: Passes a message's failure to the client (`on_error`).
        origin: host:port, for reports of failed connections.
        events: The client's event handlers.
        spool: With a spool, its settings.
        on_idle: Called when nothing is queued or held (releases `flush()` waiters).
        wake: Wakes the worker's sleeping loop; False if it was not asleep.
    """

    def __init__(
        self,
        *,
        queue: deque[Message],
        route: Route,
        policy: RetryPolicy,
        max_queue_size: int,
        max_queue_bytes: int,
        max_in_flight: int,
        strict_order: bool,
        report: Reporter,
        origin: str,
        events: Emitter,
        spool: SpoolSettings | None,
        on_idle: Callable[[], None],
        wake: Callable[[], bool],
    ) -> None:
        self.queue = queue
        # What a message's request is, how it is retried, where its outcome goes.
        self._route, self._policy, self._origin = route, policy, origin
        self._report, self._events = report, events
        # The bounds: in memory, in flight, per user.
        self.max_queue_size, self.max_queue_bytes = max_queue_size, max_queue_bytes
        self._max_in_flight, self._strict_order = max_in_flight, strict_order
        # What the worker is told: idle (flush() returns), or woken by the spool.
        self._on_idle, self._wake = on_idle, wake
        self.held = self.delivered = self.failed = self.retried = 0
        # Bytes of the messages held (see `held_bytes`): added by callers under the
        # worker's lock, freed by the worker thread alone, so neither counter needs
        # the other's lock; `wire` is the bytes of requests in flight.
        self.bytes_taken = self.bytes_freed = self.wire = 0
        #: Sync-mode calls waiting for their message (see `Worker.put`).
        self.done = Waiters()
        #: OpenTelemetry's recorder of durations (`_metrics.py`), or None: metrics are off.
        self.metrics: Recorder | None = None
        self._busy = False  # took messages since it was last idle (for "drained")
        #: Messages callers have queued so far (counted by `Worker.put` after each
        #: append), and how many of them had been queued when the engine was last
        #: idle: a `flush()` that began after its calls knows its calls are done once
        #: `idle_mark` reaches what `queued` was when it began. Any thread reads them.
        self.queued = self.idle_mark = 0
        # The sender while the engine runs (between `begin` and `end`); None: nothing
        # is sent, and failures wait for the report `end` makes of them all.
        self._sender: Sender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lanes: Lanes | None = None
        self._ready: deque[Message | _Retry] = deque()  # released, not yet started
        self._concurrency = Concurrency(max_in_flight, time.monotonic())
        self._in_flight = 0
        # Attempts started and not answered, by a number of their own (one message
        # object may be queued twice): what `end` reports if no answer comes.
        self._sending: dict[int, Message | _Retry] = {}
        self._keys = itertools.count()
        self._waiting: set[_Retry] = set()  # retries on their timer
        self._alarms: set[str] = set()  # ERRORs already logged, once each
        self._unreachable = False  # the last attempt got no answer (logged once)
        # What the engine leaves undelivered as it ends, counted at once and reported
        # together (see `_report_ended`), with each sync-mode waiter to resolve after.
        self._unreported: list[tuple[Message, DeliveryError, str, Waiter | None]] = []
        # With a spool, messages are written ahead to it (see `_spool/_journal.py`).
        self.journal: Journal | None = None if spool is None else Journal(self, spool)

    @property
    def in_flight(self) -> int:
        """Requests being sent right now (not messages waiting to retry). Any thread."""
        return self._in_flight

    @property
    def held_bytes(self) -> int:
        """Bytes held for undelivered messages: queued, in lanes, in flight or waiting to retry.

        Each message counts its kept bytes once (a retry builds its request anew, so
        no second copy waits with it); a request in flight counts `WIRE_COPIES` more.
        Any thread.
        """
        return self.bytes_taken - self.bytes_freed + self.wire

    # ------------------------------------------------------------------- the cycle

    def begin(self, sender: Sender) -> None:
        """Start a run on the running loop: fresh lanes and limit, the spool opened."""
        self._sender = sender
        self._loop = asyncio.get_running_loop()
        self._ready = deque()
        self._lanes = Lanes(
            self._ready.append,
            strict=self._strict_order,
            per_user=max(1, self._max_in_flight // 2),
        )
        self._concurrency = Concurrency(self._max_in_flight, time.monotonic())
        self._in_flight = 0
        if self.journal is not None:
            self.journal.start()

    def drain(self) -> None:
        """Move queued messages into lanes and start what may go; tell waiters when idle."""
        # `queued` is read before the queue is looked at: every message it counts was
        # appended before, so if the queue is found empty below, each of them was taken.
        queue, lanes, queued = self.queue, self._lanes, self.queued
        if lanes is None:
            return
        journal = self.journal
        if journal is not None:
            if queue:
                self._busy = True
            journal.drain()  # commits, then hands to the lanes
        else:
            add = lanes.add
            while queue and self.held < self.max_queue_size:
                # held first: callers read len(queue) + held without a lock, and must
                # never see a message in neither place.
                self.held += 1
                add(queue.popleft())
                self._busy = True
        if self._ready:
            self._pump()
        if not queue and (not self.held or (journal is not None and journal.resting())):
            if self._busy:  # told before flush() returns, so a flush sees its handlers run
                self._busy = False
                if self._events.handlers:
                    self._events.emit("drained")
            self.idle_mark = queued
            self._on_idle()

    def _pump(self) -> None:
        """Start ready messages while the limit on requests in flight allows."""
        ready, sender, limit = self._ready, self._sender, self._concurrency.limit
        if sender is None:
            return
        # Copies another process took over from the spool (this one stalled past its
        # lease) are not sent: rare, so each message is asked only while there are any.
        journal = self.journal
        taken = journal.taken if journal is not None and journal.some_taken else None
        native = sender if isinstance(sender, NativeSender) else None
        while ready and self._in_flight < limit:
            item = ready[0]
            message = item.message if isinstance(item, _Retry) else item
            # A request holds copies of its message's bytes while it is sent: it
            # waits while they would pass max_queue_bytes, unless none is in flight.
            wire = WIRE_COPIES * len(message._data)
            if self._in_flight and self.held_bytes + wire > self.max_queue_bytes:
                break
            if (
                native is not None
                and not native.idle
                and not self._concurrency.opens(self._in_flight, self.held - self._in_flight)
            ):
                break  # no connection pays its handshake: the next answer or tick asks again
            ready.popleft()
            if taken is not None and taken(message):
                self._finish_lane(message)
                continue
            self._start(sender, message, wire, item if isinstance(item, _Retry) else None)

    def _start(self, sender: Sender, message: Message, wire: int, retry: _Retry | None) -> None:
        """Build the attempt's request and hand it to the sender; `_on_done` follows."""
        key = next(self._keys)
        try:
            request = self._route.request(message)
            self._sending[key] = message if retry is None else retry
            self._in_flight += 1
            self.wire += wire
            self._concurrency.last_start = sent = time.monotonic()
            sender.start(request, partial(self._on_done, key, message, wire, sent, retry))
        except Exception as exc:  # a bug: the message is reported, the worker goes on
            if self._sending.pop(key, None) is not None:
                self._in_flight -= 1
                self.wire -= wire
            attempts = 0 if retry is None else retry.attempts - 1
            error = _outcomes.exception_error(message, attempts, exc)
            self._fail(message, error, type(exc).__name__)
            self._finish_lane(message, error)

    def _on_done(
        self,
        key: int,
        message: Message,
        wire: int,
        sent: float,
        retry: _Retry | None,
        response: Response | None,
        error: BaseException | None,
    ) -> None:
        """The sender's `on_done`: an attempt's answer, or the error that ended it."""
        if self._sending.pop(key, None) is None:
            return  # the engine ended meanwhile and reported it
        self._in_flight -= 1
        self.wire -= wire
        if error is None or isinstance(error, httpx.TransportError):
            self._settle(message, retry, self._outcome(response, error, sent), sent)
        else:  # not the transport's failure, a bug: reported, never retried
            attempts = 1 if retry is None else retry.attempts
            exc = error if isinstance(error, Exception) else RuntimeError(repr(error))
            failure = _outcomes.exception_error(message, attempts, exc)
            self._fail(message, failure, type(exc).__name__)
            self._finish_lane(message, failure)
        self._concurrency.update(time.monotonic(), self.held - self._in_flight)
        self.drain()  # which starts what may go now

    def _settle(
        self, message: Message, retry: _Retry | None, outcome: Outcome, sent: float
    ) -> None:
        """After an attempt: schedule a retry if it may fix the outcome, else finish."""
        attempts = 1 if retry is None else retry.attempts
        refusal = None
        if outcome.retry:
            if retry is None:
                policy = self._policy
                deadline = math.inf if policy.max_time is None else sent + policy.max_time
                retry = _Retry(message, deadline, policy.waits())
            backoff_wait = next(retry.waits, None)
            if backoff_wait is not None:
                wait = max(backoff_wait, outcome.retry_after or 0.0)
                time_left = retry.deadline - time.monotonic()
                refusal = self._policy.refusal(wait, outcome.retry_after, time_left)
                if refusal is None:
                    self._schedule(retry, outcome, wait)
                    return
        self._finish_lane(message, self._finish(message, outcome, attempts, refusal))

    def _schedule(self, retry: _Retry, outcome: Outcome, wait: float) -> None:
        """Put the message back on the ready queue after `wait` seconds."""
        loop = self._loop
        assert loop is not None  # set by begin()
        assert self._lanes is not None
        if retry.outcome is None:
            self._lanes.detach(retry.message)  # a track's retries hold back no one else
        retry.outcome = outcome
        self._log_retry(retry.message, outcome, wait, retry.attempts)
        retry.timer = _call_after(loop, wait, self._retry_due, retry)
        self._waiting.add(retry)

    def _retry_due(self, retry: _Retry) -> None:
        self._waiting.discard(retry)
        retry.timer = None
        if self.journal is not None and self.journal.taken(retry.message):
            self._finish_lane(retry.message)  # another process took it over, and sends it
            return
        retry.attempts += 1
        self.retried += 1
        self._ready.appendleft(retry)  # it has waited longest: ahead of first attempts
        self._pump()

    def _outcome(
        self, response: Response | None, error: httpx.TransportError | None, sent: float
    ) -> Outcome:
        """What an attempt came to; counted for the concurrency limit."""
        concurrency = self._concurrency
        if self.metrics is not None:
            self.metrics.request(
                time.monotonic() - sent, None if response is None else response.status, error
            )
        if response is None:
            assert error is not None  # one of the two is given
            error.__traceback__ = None  # its frames hold the sender (see _outcomes.detached)
            retry = is_retryable_error(error)
            concurrency.record(congested=retry)
            outcome = Outcome(
                None, error=error, retry=retry, detail=_outcomes.describe(error, self._origin)
            )
            if retry and not self._unreachable:  # once per outage, not once per message
                self._unreachable = True
                logger.warning(
                    "courier-analytics: %s; retrying with backoff (messages wait and are "
                    "reported if they cannot be delivered)",
                    outcome.detail,
                )
            return outcome
        if self._unreachable:
            self._unreachable = False
            logger.info("courier-analytics: %s answers again", self._origin)
        status = response.status
        if self._route.accepted(status):
            concurrency.record(congested=False, seconds=time.monotonic() - sent)
            return _DELIVERED.get(status) or Outcome(status, delivered=True)
        retry = is_retryable_status(status)
        concurrency.record(congested=retry)
        return Outcome(
            status,
            retry_after=parse_retry_after(response.retry_after) if retry else None,
            retry=retry,
            detail=_outcomes.error_detail(response.body),
        )

    def _log_retry(self, message: Message, outcome: Outcome, wait: float, attempts: int) -> None:
        if "retry" in self._events.handlers:
            error = _outcomes.retry_error(message, outcome, wait, attempts)
            self._events.retry(error, message, attempts)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "courier-analytics: retrying %s %s in %.2fs after %s (attempt %d)",
                message.type,
                message.message_id,
                wait,
                _outcomes.summary(outcome),
                attempts,
            )

    # ------------------------------------------------------------ finishing a message

    def _finish(
        self, message: Message, outcome: Outcome, attempts: int, refusal: str | None = None
    ) -> DeliveryError | None:
        """Count a message's last outcome: delivered, or failed (parked, with a spool).

        Returns:
            The error it failed with; None when delivered (or parked).
        """
        if outcome.retry and self.journal is not None:
            why = self.journal.park(message)  # waits in the spool for a later retry
            if why is None:
                if self.metrics is not None:  # it comes back as another object, if at all
                    self.metrics.forget(id(message))
                return None
            refusal = why or refusal
        if outcome.delivered:
            self.delivered += 1
            if self.metrics is not None:
                self.metrics.delivered(id(message), time.monotonic())
            if self._events.handlers:
                self._events.message("delivered", message)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "courier-analytics: delivered %s %s (%d bytes, HTTP %s, %d attempt(s))",
                    message.type,
                    message.message_id,
                    message.size,
                    outcome.status,
                    attempts,
                )
            return None
        error = _outcomes.error_for(message, outcome, attempts, refusal)
        self._fail(message, error, _outcomes.summary(outcome), _outcomes.alarm(outcome))
        return error

    def _fail(
        self, message: Message, error: DeliveryError, why: str, alarm: str | None = None
    ) -> None:
        """The one place a message is counted as failed, logged and reported.

        While the engine is not running (it ends), the message is counted here and
        reported with the others it leaves (see `_report_ended`): one log line for all.

        Args:
            message: The message.
            error: What `on_error` is given.
            why: A few words for the log line (never the payload).
            alarm: An ERROR that every message would share: logged once per client,
                in place of a WARNING per message.
        """
        if self.metrics is not None:  # first: kept or reported later, it ends here
            self.metrics.forget(id(message))
        ending = self._sender is None
        if (
            ending
            and self.journal is not None
            and isinstance(error, NotDeliveredError)
            and self.journal.keep(message)
        ):
            self.done.settle(message, None)  # kept in the spool, as if still queued
            return  # kept in the spool: the next process to open it delivers it
        self.failed += 1
        if alarm is not None and alarm not in self._alarms:
            self._alarms.add(alarm)
            logger.error("courier-analytics: %s", alarm)
        if ending:
            # Its sync-mode waiter, if any, is resolved after the report, as it
            # would be by _finish_lane after a report made at once.
            self._unreported.append((message, error, why, self.done.take(message)))
            return
        if alarm is None:
            logger.warning(
                "courier-analytics: %s %s (%d bytes) not delivered: %s (%s)",
                message.type,
                message.message_id,
                message.size,
                type(error).__name__,
                why,
            )
        self._report(error, message)

    def _finish_lane(self, message: Message, error: BaseException | None = None) -> None:
        """A released message is done: let its user's next messages go.

        `error`: what it failed with (already reported), or None.
        """
        if self.journal is not None:
            self.journal.finished(message)  # its row goes (unless it was parked)
        self.held -= 1
        self.bytes_freed += len(message._data)
        if self.done:
            self.done.settle(message, error)
        assert self._lanes is not None  # set by begin()
        self._lanes.finish(message)

    # -------------------------------------------------------------------- the end

    def end(self, reason: str, leftovers: list[Message] | None = None) -> None:
        """Stop sending; count and report what is in flight, retrying or held as not delivered.

        Args:
            reason: Why what is held was not delivered.
            leftovers: What is left to count; default: all the lanes and queue hold.
        """
        self._sender = None
        for retry in self._waiting:
            if retry.timer is not None:
                retry.timer.cancel()
            self._stopped(retry.message, retry.attempts, retry.outcome)
        self._waiting = set()
        for item in self._sending.values():
            if isinstance(item, _Retry):
                self._stopped(item.message, item.attempts, item.outcome)
            else:
                self._stopped(item, 1, None)
        self._sending = {}
        self._in_flight, self.wire = 0, 0
        self._abandon(self.take_all() if leftovers is None else leftovers, reason)
        if self.journal is not None:
            # Before the report, which lets wait_stopped return: an exit or SIGTERM
            # right after must find what is kept committed (a second stop is a no-op).
            self.journal.stop()
        self._report_ended()

    def _stopped(self, message: Message, attempts: int, last: Outcome | None) -> None:
        """A message in flight or waiting to retry as the engine ends: not delivered."""
        self.bytes_freed += len(message._data)
        error = _outcomes.not_delivered(message, attempts, last=last)
        why = (
            _outcomes.SHUT_DOWN
            if last is None
            else f"{_outcomes.SHUT_DOWN}; {_outcomes.summary(last)}"
        )
        self._fail(message, error, why)

    def take_all(self) -> list[Message]:
        """Empty the lanes and the queue; what they held, oldest lanes first."""
        leftovers: list[Message] = []
        for item in self._ready:  # released, not yet started
            leftovers.append(item.message if isinstance(item, _Retry) else item)
        self._ready.clear()
        if self._lanes is not None:
            leftovers.extend(self._lanes.drain())
        self.held = 0
        while self.queue:
            leftovers.append(self.queue.popleft())
        self.bytes_freed += sum(len(message._data) for message in leftovers)
        return leftovers

    def _abandon(self, leftovers: list[Message], reason: str) -> None:
        """Count each message as not delivered, and why (reported by `_report_ended`)."""
        for message in leftovers:
            self._fail(message, _outcomes.not_delivered(message, reason=reason), reason)

    def _report_ended(self) -> None:
        """Log what the ending engine leaves undelivered in one line; pass each to `report`."""
        unreported, self._unreported = self._unreported, []
        if unreported:
            reasons = Counter(why for _, _, why, _ in unreported)
            kinds = Counter(type(error).__name__ for _, error, _, _ in unreported)
            logger.warning(
                "courier-analytics: %d message(s) not delivered when the worker stopped (%s: %s); "
                "each is passed to on_error",
                len(unreported),
                ", ".join(f"{count} {name}" for name, count in kinds.most_common()),
                "; ".join(f"{count} x {why}" for why, count in reasons.most_common(3)),
            )
        for message, error, _, waiter in unreported:
            self._report(error, message)
            if waiter is not None and not waiter.done():
                waiter.set_result(error)

    # ---------------------------------------------------------- for the spool's journal

    def add_to_lanes(self, messages: list[Message]) -> None:
        """Hand messages taken from the queue (counted in `held`) to their users' lanes."""
        assert self._lanes is not None  # set by begin()
        add = self._lanes.add
        for message in messages:
            add(message)

    def is_barrier(self, message: Message) -> bool:
        """Whether the user's later messages wait for this one."""
        assert self._lanes is not None  # set by begin()
        return self._lanes.is_barrier(message)

    def withdraw(self, user: str) -> list[Message]:
        """Take a user's messages not yet released out of their lane."""
        assert self._lanes is not None  # set by begin()
        return self._lanes.withdraw(user)

    def left_memory(self, messages: list[Message]) -> None:
        """Messages taken from the queue left memory for the spool (or were dropped)."""
        self.bytes_freed += sum(len(message._data) for message in messages)
        if self.metrics is not None:  # what comes back from the spool is another object
            for message in messages:
                self.metrics.forget(id(message))

    def spilled(self, messages: list[Message]) -> None:
        """Messages taken from the queue wait in the spool now: their calls return."""
        self.left_memory(messages)
        if self.done:
            for message in messages:
                self.done.settle(message, None)

    def back_in_memory(self, message: Message) -> None:
        """A message claimed from the spool is held in memory again (`max_queue_bytes`)."""
        self.bytes_freed -= len(message._data)

    def report(self, error: BaseException, message: Message) -> None:
        """Pass a message's failure to the client (`on_error`, events), and to its call."""
        self._report(error, message)
        self.done.settle(message, error)

    def fail_at_stop(self, message: Message, error: DeliveryError) -> None:
        """Count and report a message the stopping worker could not keep."""
        self._fail(message, error, _outcomes.SHUT_DOWN)

    def wake_for_spool(self) -> None:
        """A spool commit or batch is due: run `drain` (waking the worker's loop if asleep)."""
        if not self._wake():
            self.drain()
