"""The background worker: one thread running an asyncio loop that delivers messages.

Callers append messages to a bounded deque (no lock wait, no syscall while the
worker is busy) and the worker moves them into per-user *lanes* (`_lanes.py`),
which release each message once its user's ordering allows: an `identify` after
that user's earlier messages are answered and before any later one goes; tracks
between two such barriers together, up to a per-user cap (`ordering="strict"`:
one message per user at a time). Released messages are sent concurrently over
one keep-alive connection pool; how many are in flight is found at run time
under the `max_in_flight` ceiling (`_concurrency.py`).

The common case costs no task, future or timer per message: a released message
goes out on an idle connection at once (`NativeSender.start`), and its answer is
handled in the connection's callback, which then sends the next released
message on the same connection. A message that finds no idle connection (one
must be opened), any answer but an acceptance, and every sender other than the
native one (httpx transports) take the general path: a task per message. A
message waiting to retry holds no place in flight; a track waiting to retry
holds back nothing else, a barrier holds back its user's later messages.

The thread starts lazily on the first message. After `fork()` the child gets a
fresh, unstarted worker with an empty queue (see `Client`), so nothing the
parent queued is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from courier_analytics import _outcomes
from courier_analytics._concurrency import Concurrency
from courier_analytics._errors import DeliveryError, NotDeliveredError, WorkerUnavailable
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
from courier_analytics._routes import Request, Route
from courier_analytics._spool import Settings as SpoolSettings
from courier_analytics._transport import NativeSender, Response, Sender

if TYPE_CHECKING:
    import httpx

    from courier_analytics._metrics import Recorder
    from courier_analytics._spool._journal import Journal
else:
    from courier_analytics._lazy import Journal, httpx

__all__ = ["Worker", "WorkerUnavailable"]

logger = logging.getLogger("courier_analytics")

Reporter = Callable[[BaseException, Message], None]

#: Copies of a message's bytes that a request in flight holds besides the message:
#: its body, and the whole request (head and body) as it is written; asyncio keeps
#: what the socket has not taken yet, a TLS connection its encrypted form.
WIRE_COPIES = 2


class _IdleWaiter(Protocol):
    def set(self) -> None: ...


class _LoopWaiter:
    """An idle waiter that resolves a future on another thread's event loop (`aflush`)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


#: The outcome of an accepted answer, made once per status (outcomes are immutable).
_DELIVERED = {status: Outcome(status, delivered=True) for status in (200, 201, 202, 204, 409)}


class Worker:
    """Queue, scheduler and delivery of one client's messages.

    Counters written only by the worker thread: `delivered`, `failed`, `retried`,
    `held` (messages taken from the queue and not yet finished). Its own lock makes
    `put` and `close` safe to call from any thread.
    """

    def __init__(
        self,
        *,
        make_sender: Callable[[], Sender],
        route: Route,
        policy: RetryPolicy,
        max_queue_size: int,
        max_queue_bytes: int,
        max_in_flight: int,
        flush_interval: float,
        report: Reporter,
        origin: str = "Courier",
        events: Emitter | None = None,
        strict_order: bool = False,
        new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
        spool: SpoolSettings | None = None,
    ) -> None:
        self._make_sender = make_sender
        self._route = route
        self._policy = policy
        self._max_queue_size = max_queue_size
        self._max_queue_bytes = max_queue_bytes
        self._max_in_flight = max_in_flight
        self._strict_order = strict_order
        self._new_loop = new_loop
        self._flush_interval = flush_interval
        self._report = report
        self._origin = origin  # host:port, for reports of failed connections
        self._events = Emitter() if events is None else events
        self._busy = False  # took messages since it was last idle (for "drained")
        self.queue: deque[Message] = deque()
        self._lock = threading.Lock()  # producers: the queue's bound, closing, starting
        self._closed = False
        self.held = 0
        # Bytes of the messages held (see `held_bytes`): added by producers under the
        # lock, freed by the worker thread alone, so neither counter needs the other's
        # lock; `_wire` is the bytes of requests in flight (worker thread only).
        self._bytes_taken = 0
        self._bytes_freed = 0
        self._wire = 0
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sleeping = False
        self._stopping = False
        self._waiter: asyncio.Future[None] | None = None
        self._idle_events: list[_IdleWaiter] = []
        # Reentrant: a SIGTERM handler (see _signals.py) may flush from the main thread
        # while that thread is inside wait_idle's few lines holding it.
        self._idle_lock = threading.RLock()
        self._lanes: Lanes | None = None
        self._ready: deque[Message] = deque()  # released by their lanes, not yet sent
        self._concurrency: Concurrency | None = None
        self._in_flight = 0  # released messages being sent (not waiting to retry)
        self._ending = False  # the worker is ending: nothing more is sent
        self._sending: dict[int, Message] = {}  # messages sent by callback, by a key of their own
        self._tasks: set[asyncio.Task[None]] = set()  # the general path's deliveries
        # Retries waiting for room, each with the bytes its request holds in flight
        self._room: deque[tuple[asyncio.Future[None], int]] = deque()
        self._native: NativeSender | None = None
        self._sender: Sender | None = None
        self._sender_error: Exception | None = None
        self._alarms: set[str] = set()  # ERRORs already logged, once each
        self._unreachable = False  # the last attempt got no answer (logged once)
        self._done: dict[int, Future[None]] = {}  # id(message) -> sync-mode waiter
        self._retrying: set[asyncio.Task[None]] = set()
        # Messages whose delivery or retry task has not taken its first step: a task
        # cancelled then never runs its body, so the worker's end reports them itself.
        # Keyed by a number of their own: one message object may be queued twice.
        self._unstarted: dict[int, tuple[Message, int, Outcome | None]] = {}
        self._task_keys = itertools.count()
        # With a spool, messages are written ahead to it (see `_spool/_journal.py`).
        self.journal: Journal | None = None if spool is None else Journal(self, spool)
        # With a spool, a call wakes the worker when this many wait to be committed,
        # so a burst is committed at once instead of overflowing the queue.
        self._wake_at = -1 if self.journal is None else self.journal.burst
        # What the worker leaves undelivered as it ends, counted at once and reported
        # after (see _report_ended), with each sync-mode waiter to resolve after it.
        self._unreported: list[tuple[Message, DeliveryError, str, Future[None] | None]] = []
        self._ended = threading.Event()  # set once the ending worker has reported all
        #: OpenTelemetry's recorder of durations (`_metrics.py`), or None: metrics are off.
        self.metrics: Recorder | None = None

    # ----------------------------------------------------------------- producer side

    @property
    def pending(self) -> int:
        """Messages queued, being delivered, or waiting in the spool."""
        journal = self.journal
        return len(self.queue) + self.held + (0 if journal is None else journal.left)

    @property
    def max_queue_size(self) -> int:
        """The most messages held in memory (with a spool: beyond it they wait there)."""
        return self._max_queue_size

    @property
    def in_flight(self) -> int:
        """Requests being sent right now (not messages waiting to retry)."""
        return self._in_flight

    @property
    def held_bytes(self) -> int:
        """Bytes held for undelivered messages: queued, in lanes, in flight or waiting to retry.

        Each message counts its kept bytes once (a retry rebuilds its request, so no
        second copy waits with it); a request in flight counts `WIRE_COPIES` more.
        """
        return self._bytes_taken - self._bytes_freed + self._wire

    @property
    def closed(self) -> bool:
        """Whether `close` was called: no message is taken any more."""
        return self._closed

    def close(self) -> None:
        """Take no more messages; what is queued is still delivered (see `stop`)."""
        # No lock: a put checks the flag under its lock, and the ending worker takes
        # that lock to collect what a put appended meanwhile (see _thread_main), so no
        # message slips between. Lock-free, close() is safe from a signal handler that
        # interrupted a put in the same thread.
        self._closed = True

    def put(self, message: Message, done: Future[None] | None = None) -> bool:
        """Queue a message; `False` when the queue is full, in messages or bytes.

        Safe from any thread.

        Args:
            message: The message.
            done: Resolved once the message is delivered or has failed (sync mode).

        Raises:
            WorkerUnavailable: the worker was closed, or its thread could not start.
        """
        with self._lock:
            if self._closed:
                raise WorkerUnavailable("the client was shut down")
            # With a spool, what the worker took is on disk or bounded by it: only the
            # queue (not yet committed) counts here.
            held = self.held if self.journal is None else 0
            if len(self.queue) + held >= self._max_queue_size:
                return False
            cost = len(message._data)
            held = self._bytes_taken - self._bytes_freed + self._wire  # held_bytes, inlined
            if held + cost > self._max_queue_bytes:
                return False
            self._bytes_taken += cost
            if done is not None:
                self._done[id(message)] = done
            self.queue.append(message)
            if self.metrics is not None:
                self.metrics.queued(id(message))
            if self._thread is None:
                try:
                    self._start()
                except WorkerUnavailable:
                    self.queue.pop()  # ours: no worker runs to have taken it
                    self._bytes_taken -= cost
                    self._done.pop(id(message), None)
                    raise
            elif self._sleeping or len(self.queue) == self._wake_at:
                self._wake()
            return True

    def wait_done(self, message: Message, done: Future[None], timeout: float | None) -> None:
        """Wait until a message queued with `done` is delivered or failed (sync mode)."""
        if threading.current_thread() is self._thread:
            return  # from on_error on the worker itself: waiting would deadlock it
        try:
            done.result(timeout)
        except (TimeoutError, FutureTimeoutError):  # two classes before Python 3.11
            logger.warning(
                "courier-analytics: %s %s still being delivered after %ss (sync_mode); "
                "it goes on in the background",
                message.type,
                message.message_id,
                timeout,
            )

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until nothing is queued or in flight, or `timeout` passes."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self.queue and not self.held
        if threading.current_thread() is thread:
            logger.warning(
                "courier-analytics: flush() called on the worker thread (from on_error?) "
                "returns at once: waiting there would stop delivery"
            )
            return not self.queue and not self.held
        event = threading.Event()
        with self._idle_lock:
            self._idle_events.append(event)
        if self._thread is None:  # it ended meanwhile, after releasing the waiters
            return not self.queue and not self.held
        self._call_soon(self._drain)
        done = event.wait(timeout)
        if self._thread is None:  # released because the worker ended, not because idle
            return not self.queue and not self.held
        return done

    async def wait_idle_async(self, timeout: float | None) -> bool:
        """`wait_idle` for a coroutine: the caller's event loop goes on meanwhile."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self.queue and not self.held
        waiter = _LoopWaiter()
        with self._idle_lock:
            self._idle_events.append(waiter)
        try:
            if self._thread is None:  # it ended meanwhile, after releasing the waiters
                return not self.queue and not self.held
            self._call_soon(self._drain)
            try:
                await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
            except (TimeoutError, asyncio.TimeoutError):  # two classes before Python 3.11
                return False
            if self._thread is None:  # released because the worker ended, not because idle
                return not self.queue and not self.held
            return True
        finally:
            with self._idle_lock, contextlib.suppress(ValueError):
                self._idle_events.remove(waiter)

    def stop(self) -> None:
        """Tell the thread to end; what is still pending is reported as not delivered."""
        if self._thread is None:
            return
        self._stopping = True
        self._call_soon(self._resolve_waiter)

    def wait_stopped(self, timeout: float | None) -> bool:
        """Wait until a stopped worker has counted and reported all it did not deliver.

        Returns:
            `True` once every such message was passed to `report`; `False` if `timeout`
            passed first (the counts are settled even then: only reports are left).
        """
        thread, ended = self._thread, self._ended
        if thread is None or threading.current_thread() is thread:  # never wait for ourselves
            return True
        return ended.wait(timeout)

    def start(self) -> None:
        """Start the thread now (a client with a spool delivers what it finds there)."""
        with self._lock:
            if self._thread is None and not self._closed:
                with contextlib.suppress(WorkerUnavailable):  # interpreter exit: next time
                    self._start()

    def _start(self) -> None:
        self._stopping = False
        self._ended = threading.Event()
        # The sender (and any helper threads it starts: DNS, blocking transports) is
        # made here, in the caller's thread, before the worker runs: Python 3.12+
        # refuses new threads once interpreter shutdown begins, and a script that
        # tracks and exits reaches that point while the worker is still starting.
        self._sender, self._sender_error = None, None
        try:
            self._sender = self._make_sender()
        except Exception as exc:  # reported for each message by the worker
            self._sender_error = exc
        loop = self._new_loop()
        self._loop = loop
        thread = threading.Thread(
            target=self._thread_main, args=(loop,), name="courier-analytics-worker", daemon=True
        )
        self._thread = thread
        try:
            thread.start()
        except RuntimeError as exc:  # 3.12+: "can't create new thread at interpreter shutdown"
            self._thread = self._loop = None
            loop.close()
            raise WorkerUnavailable(f"no worker thread could start ({exc})") from exc

    def _wake(self) -> None:
        self._sleeping = False
        self._call_soon(self._resolve_waiter)

    def _call_soon(self, callback: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to wake
            loop.call_soon_threadsafe(callback)

    # ------------------------------------------------------------------- worker side

    def _thread_main(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException:  # a bug or a broken environment; the next call restarts it
            logger.exception("courier-analytics: the worker stopped unexpectedly")
        finally:
            self._ending = True
            self._abandon(self._take_all(), "the worker failed")  # reported, never lost
            loop.close()
            with self._lock:  # a put made meanwhile found a thread that no longer reads
                self._thread = None
                stragglers = self._take_all()
            self._abandon(stragglers, "the worker failed")
            if self.journal is not None:
                self.journal.stop()  # what is left stays in the spool, for the next process
            self._report_ended()
            self._release_idle_waiters()

    async def _main(self) -> None:
        reason = _outcomes.SHUT_DOWN
        try:
            if self._sender is None:
                raise self._sender_error or RuntimeError("no sender")
            if isinstance(self._sender, NativeSender):
                self._native = self._sender
            self._ready = deque()
            self._lanes = Lanes(
                self._ready.append,
                strict=self._strict_order,
                per_user=max(1, self._max_in_flight // 2),
            )
            self._concurrency = Concurrency(self._max_in_flight, time.monotonic())
            self._in_flight = 0
            self._ending = False
            if self.journal is not None:
                self.journal.start()
            while not self._stopping:
                self._drain()
                await self._sleep()
        except BaseException as exc:  # e.g. no TLS context: SSL_CERT_FILE names no file
            reason = f"the worker failed ({type(exc).__name__}: {exc})"
            raise
        finally:
            self._ending = True  # nothing more is sent: what is left is reported
            tasks = [*self._tasks, *self._retrying]
            running = set(tasks)
            while running:
                for task in running:
                    task.cancel()
                # A cancellation can be lost (before Python 3.12, asyncio.wait_for drops
                # one that meets the end of what it waits for: a retry then went on for
                # its whole policy), so what still runs is cancelled again.
                _, running = await asyncio.wait(running, timeout=0.05)
            await asyncio.gather(*tasks, return_exceptions=True)  # retrieves their errors
            unstarted, self._unstarted = list(self._unstarted.values()), {}
            for message, attempts, last in unstarted:  # cancelled before they ran
                self._bytes_freed += len(message._data)
                error = _outcomes.not_delivered(message, attempts, last=last)
                self._fail(message, error, _outcomes.SHUT_DOWN)
            sending, self._sending = list(self._sending.values()), {}
            self._wire = 0  # the requests of the callbacks and unstarted tasks: ended
            for message in sending:  # sent by callback and not answered: ended with us
                self._bytes_freed += len(message._data)
                self._fail(message, _outcomes.not_delivered(message, 1), _outcomes.SHUT_DOWN)
            self._abandon(self._take_all(), reason)
            if self.journal is not None:
                # Before the report, which lets wait_stopped return: an exit or SIGTERM
                # right after must find what is kept committed (a second stop is a no-op).
                self.journal.stop()
            # Reported before the sender closes: closing may wait on the network.
            self._report_ended()
            if self._sender is not None:
                await self._sender.aclose()

    async def _sleep(self) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        # While a spool commit is scheduled its timer wakes the worker: calls need not.
        self._sleeping = self.journal is None or not self.journal.waiting
        if (self.queue and self._sleeping) or self._stopping:  # appended after _drain
            self._sleeping = False
            return
        timer = loop.call_later(self._flush_interval, self._resolve_waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._sleeping = False
            self._waiter = None

    def _resolve_waiter(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _drain(self) -> None:
        """Move queued messages into lanes; report idleness to `flush()` waiters."""
        queue, lanes = self.queue, self._lanes
        if lanes is None:
            return
        journal = self.journal
        if journal is not None:
            if queue:
                self._busy = True
            journal.drain()  # commits, then hands to the lanes
        else:
            add = lanes.add
            while queue and self.held < self._max_queue_size:
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
            self._release_idle_waiters()

    def _release_idle_waiters(self) -> None:
        with self._idle_lock:
            events, self._idle_events = self._idle_events, []
        for event in events:
            event.set()

    def _pump(self) -> None:
        """Send released messages while the concurrency limit allows."""
        ready, concurrency, native = self._ready, self._concurrency, self._native
        assert concurrency is not None  # set by _main()
        if self._ending:
            return
        while ready and self._in_flight < concurrency.limit:
            # A request holds copies of its message's bytes while it is sent: it
            # waits while they would pass max_queue_bytes, unless none is in flight,
            # and after a retry that waits for room (which would starve otherwise).
            wire = WIRE_COPIES * len(ready[0]._data)
            if self._room or not self._fits(wire):
                break
            if (
                native is not None
                and not native.idle
                and not concurrency.may_open(self._in_flight, len(ready))
            ):
                break  # no connection pays its handshake: an answer frees one soon
            message = ready.popleft()
            self._in_flight += 1
            self._wire += wire  # until its first attempt ends
            if native is None or not self._send_now(native, message, wire):
                key = next(self._task_keys)
                self._unstarted[key] = (message, 0, None)
                task = asyncio.create_task(self._deliver(message, key, wire))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _send_now(self, native: NativeSender, message: Message, wire: int) -> bool:
        """Send on an idle connection, the answer handled by callback; False if none is idle."""
        try:
            request = self._route.request(message)
        except Exception:
            return False  # the general path reports it
        sent, key = time.monotonic(), next(self._task_keys)
        try:
            # Only the wire bytes go with the request: the answer's callback keeps the
            # message, whose retries rebuild their request (one copy of a body waits).
            if not native.start(request, partial(self._answered, key, message, wire, sent)):
                return False
        except Exception:  # not expected; the general path sends it, or reports why not
            return False
        self._sending[key] = message
        return True

    def _answered(
        self,
        key: int,
        message: Message,
        wire: int,
        sent: float,
        response: Response | None,
        error: httpx.TransportError | None,
    ) -> None:
        """The answer to a message sent by `_send_now` (or the error that ended it)."""
        if self._sending.pop(key, None) is None:
            return  # the worker stopped meanwhile and reported it
        self._wire -= wire
        self._free_place()
        concurrency = self._concurrency
        assert concurrency is not None  # set by _main()
        if response is not None and self._route.accepted(response.status):
            if self._unreachable or self._events.handlers or logger.isEnabledFor(logging.DEBUG):
                self._finish(message, self._outcome(response, None, sent), 1)
            else:  # the usual answer, as _outcome and _finish take it, minus their cost
                now = time.monotonic()
                concurrency.record(False, now - sent)
                self.delivered += 1
                if self.metrics is not None:
                    self.metrics.request(now - sent, response.status, None)
                    self.metrics.delivered(id(message), now)
            self._finish_lane(message)
        else:
            outcome = self._outcome(response, error, sent)
            if not self._settle(message, outcome, sent):
                self._finish_lane(message)
        self._answer_done()

    def _answer_done(self) -> None:
        """After an answer: adjust the limit, move queued messages on, send what may go."""
        concurrency = self._concurrency
        assert concurrency is not None  # set by _main()
        concurrency.update(time.monotonic(), len(self._ready))
        self._drain()  # which sends what may go

    async def _deliver(self, message: Message, key: int, wire: int) -> None:
        """The general path: one released message's first attempt, in a task of its own."""
        del self._unstarted[key]
        handed_over = False
        try:
            handed_over = await self._first_attempt(message)
        finally:
            self._wire -= wire
            self._free_place()
            if not handed_over:
                self._finish_lane(message)
        self._answer_done()

    def _free_place(self) -> None:
        """A request in flight ended: its place goes to a waiting retry, if any."""
        self._in_flight -= 1
        if self._room:
            self._make_room()

    def _fits(self, wire: int) -> bool:
        """Whether a request holding `wire` bytes may go: within max_queue_bytes, or alone."""
        return not self._in_flight or self.held_bytes + wire <= self._max_queue_bytes

    def _make_room(self) -> None:
        """Hand a free place in flight to the retry that has waited longest for one.

        The place (and its bytes) is taken here, for the retry: were it only woken,
        the first attempts sent before it runs would take the place again, and under
        a steady load at the ceiling it would wait for as long as messages keep coming.
        """
        room = self._room
        while room and self._in_flight < self._max_in_flight:
            waiter, wire = room[0]
            if waiter.done():  # cancelled
                room.popleft()
                continue
            if not self._fits(wire):
                return  # until an answer frees bytes; none goes before it meanwhile
            room.popleft()
            self._in_flight += 1
            self._wire += wire
            waiter.set_result(None)

    def _finish_lane(self, message: Message) -> None:
        """A released message is done: let its user's next messages go."""
        if self.journal is not None:
            self.journal.finished(message)  # its row goes (unless it was parked)
        self.held -= 1
        self._bytes_freed += len(message._data)
        if self._done:
            self._signal_done(message)
        assert self._lanes is not None  # set by _main()
        self._lanes.finish(message)

    def _signal_done(self, message: Message) -> None:
        done = self._done.pop(id(message), None)
        if done is not None and not done.done():
            done.set_result(None)

    async def _first_attempt(self, message: Message) -> bool:
        """Try once; hand a retryable failure to a retry task and return True, else False.

        Retries wait in their own task, so a message backing off keeps no slot: it
        holds back only its own user's later messages (its lane).
        """
        started = time.monotonic()
        attempts = 0
        try:
            request = self._route.request(message)
            attempts = 1
            outcome = await self._attempt(request, counted=True)
        except asyncio.CancelledError:
            self._fail(message, _outcomes.not_delivered(message, attempts), _outcomes.SHUT_DOWN)
            raise
        except Exception as exc:
            error = _outcomes.exception_error(message, attempts, exc)
            self._fail(message, error, type(exc).__name__)
            return False
        return self._settle(message, outcome, started)

    def _settle(self, message: Message, outcome: Outcome, started: float) -> bool:
        """After a first attempt: a retry task (True), or finished, delivered or not (False)."""
        if outcome.retry and self._policy.max_retries:
            if self._ending:  # an answer while the worker ends: no retry task would run
                error = _outcomes.not_delivered(message, 1, last=outcome)
                self._fail(message, error, f"{_outcomes.SHUT_DOWN}; {_outcomes.summary(outcome)}")
                return False
            assert self._lanes is not None  # set by _main()
            self._lanes.detach(message)  # a track's retries hold back no one else
            key = next(self._task_keys)
            self._unstarted[key] = (message, 1, outcome)
            task = asyncio.create_task(self._retry(message, outcome, started, key))
            self._retrying.add(task)
            task.add_done_callback(self._retrying.discard)
            return True
        self._finish(message, outcome, 1)
        return False

    async def _retry(self, message: Message, outcome: Outcome, started: float, key: int) -> None:
        """Retry a message whose first attempt failed, then release its lane.

        The policy gives the waits; the server's `Retry-After` is a floor on each (a
        retry never goes out before the server said it may); no retry starts after
        one monotonic deadline, `max_time` after the first attempt. Each attempt
        builds its request anew: a message waiting keeps only its own bytes, not a
        second copy of its body (`max_queue_bytes` counts one).
        """
        del self._unstarted[key]
        policy = self._policy
        deadline = math.inf if policy.max_time is None else started + policy.max_time
        attempts, refusal = 1, None
        try:
            for backoff_wait in policy.waits():
                wait = max(backoff_wait, outcome.retry_after or 0.0)
                refusal = policy.refusal(wait, outcome.retry_after, deadline - time.monotonic())
                if refusal is not None:
                    break
                self._log_retry(message, outcome, wait, attempts)
                await asyncio.sleep(wait)
                attempts += 1
                self.retried += 1
                outcome = await self._attempt(self._route.request(message))
                if not outcome.retry:
                    break
            self._finish(message, outcome, attempts, refusal)
        except asyncio.CancelledError:
            error = _outcomes.not_delivered(message, attempts, last=outcome)
            self._fail(message, error, f"{_outcomes.SHUT_DOWN}; {_outcomes.summary(outcome)}")
            raise
        except Exception as exc:
            error = _outcomes.exception_error(message, attempts, exc)
            self._fail(message, error, type(exc).__name__)
        finally:
            self._finish_lane(message)
            self._drain()

    async def _attempt(self, request: Request, counted: bool = False) -> Outcome:
        """Send the request once and say what came of it.

        Args:
            request: The request.
            counted: Its place in flight is already taken (a first attempt); a retry
                waits for room under the `max_in_flight` ceiling and takes it here.
        """
        sender = self._sender
        assert sender is not None  # set by _main()
        # A first attempt's copies are counted by _pump; a retry's wait for room in
        # bytes too, as a first attempt's do
        wire = 0 if counted else WIRE_COPIES * len(request.body)
        if not counted:
            if self._in_flight < self._max_in_flight and not self._room and self._fits(wire):
                self._in_flight += 1
                self._wire += wire
            else:  # after the retries already waiting, in turn
                waiter = asyncio.get_running_loop().create_future()
                self._room.append((waiter, wire))
                self._make_room()  # a place may be free (only cancelled waiters ahead)
                try:
                    await waiter  # its place and bytes are taken for it (see _make_room)
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():  # given a place: give it back
                        self._wire -= wire
                        self._free_place()
                    raise
        sent = time.monotonic()
        try:
            response = await sender.send(request)
        except httpx.TransportError as exc:
            return self._outcome(None, exc, sent)
        finally:
            if not counted:
                self._wire -= wire
                self._free_place()
                # No answer callback follows a retry's attempt: what waited for its
                # place goes now, not at the next wake-up (flush_interval)
                self._drain()
        return self._outcome(response, None, sent)

    def _outcome(
        self, response: Response | None, error: httpx.TransportError | None, sent: float
    ) -> Outcome:
        """What an attempt came to; counted for the concurrency limit."""
        concurrency = self._concurrency
        assert concurrency is not None  # set by _main()
        if self.metrics is not None:
            status = None if response is None else response.status
            self.metrics.request(time.monotonic() - sent, status, error)
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

    def _finish(
        self, message: Message, outcome: Outcome, attempts: int, refusal: str | None = None
    ) -> None:
        if outcome.retry and self.journal is not None:
            why = self.journal.park(message)  # waits in the spool for a later retry
            if why is None:
                if self.metrics is not None:  # it comes back as another object, if at all
                    self.metrics.forget(id(message))
                return
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
            return
        error = _outcomes.error_for(message, outcome, attempts, refusal)
        self._fail(message, error, _outcomes.summary(outcome), _outcomes.alarm(outcome))

    def _fail(
        self, message: Message, error: DeliveryError, why: str, alarm: str | None = None
    ) -> None:
        """The one place a message is counted as failed, logged and reported.

        While the worker ends, the message is counted here and reported with the
        others it leaves (see `_report_ended`): one log line for them all.

        Args:
            message: The message.
            error: What `on_error` is given.
            why: A few words for the log line (never the payload).
            alarm: An ERROR that every message would share: logged once per client,
                in place of a WARNING per message.
        """
        if self.metrics is not None:  # first: kept or reported later, it ends here
            self.metrics.forget(id(message))
        if (
            self._ending
            and self.journal is not None
            and isinstance(error, NotDeliveredError)
            and self.journal.keep(message)
        ):
            return  # kept in the spool: the next process to open it delivers it
        self.failed += 1
        if alarm is not None and alarm not in self._alarms:
            self._alarms.add(alarm)
            logger.error("courier-analytics: %s", alarm)
        if self._ending:
            # Its sync-mode waiter, if any, is resolved after the report, as it
            # would be by _finish_lane after a report made at once.
            done = self._done.pop(id(message), None) if self._done else None
            self._unreported.append((message, error, why, done))
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

    def _take_all(self) -> list[Message]:
        """Empty the lanes and the queue; what they held, oldest lanes first."""
        leftovers: list[Message] = []
        leftovers.extend(self._ready)  # released, not yet sent
        self._ready.clear()
        if self._lanes is not None:
            leftovers.extend(self._lanes.drain())
        self.held = 0
        while self.queue:
            leftovers.append(self.queue.popleft())
        self._bytes_freed += sum(len(message._data) for message in leftovers)
        return leftovers

    def _abandon(self, leftovers: list[Message], reason: str) -> None:
        """Count each message as not delivered, and why (reported by `_report_ended`)."""
        for message in leftovers:
            self._fail(message, _outcomes.not_delivered(message, reason=reason), reason)

    # ---------------------------------------------------------- for the spool's journal

    def add_to_lanes(self, message: Message) -> None:
        """Hand a message taken from the queue (counted in `held`) to its user's lane."""
        assert self._lanes is not None  # set by _main()
        self._lanes.add(message)

    def is_barrier(self, message: Message) -> bool:
        """Whether the user's later messages wait for this one."""
        assert self._lanes is not None  # set by _main()
        return self._lanes.is_barrier(message)

    def withdraw(self, user: str) -> list[Message]:
        """Take a user's messages not yet released out of their lane."""
        assert self._lanes is not None  # set by _main()
        return self._lanes.withdraw(user)

    def left_memory(self, messages: list[Message]) -> None:
        """Messages taken from the queue left memory for the spool (or were dropped)."""
        self._bytes_freed += sum(len(message._data) for message in messages)
        if self.metrics is not None:  # what comes back from the spool is another object
            for message in messages:
                self.metrics.forget(id(message))

    def back_in_memory(self, message: Message) -> None:
        """A message claimed from the spool is held in memory again (`max_queue_bytes`)."""
        self._bytes_freed -= len(message._data)

    def report(self, error: BaseException, message: Message) -> None:
        """Pass a message's failure to the client (`on_error`, events)."""
        self._report(error, message)

    def fail_at_stop(self, message: Message, error: DeliveryError) -> None:
        """Count and report a message the stopping worker could not keep."""
        self._fail(message, error, _outcomes.SHUT_DOWN)

    def wake_for_spool(self) -> None:
        """A spool commit or batch is due: run `_drain` (waking the main loop if asleep)."""
        if self._waiter is not None:
            self._resolve_waiter()
        else:
            self._drain()

    def _report_ended(self) -> None:
        """Log what the ending worker leaves undelivered in one line; pass each to `report`.

        The counts were settled as each was taken (`_fail`); `wait_stopped` returns
        once this is done.
        """
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
        for message, error, _, done in unreported:
            self._report(error, message)
            if done is not None and not done.done():
                done.set_result(None)
        self._ended.set()
