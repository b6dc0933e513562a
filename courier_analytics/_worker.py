"""The background worker: one thread running the event loop that delivers messages.

Callers append messages to a bounded deque (no lock wait, no syscall while the
worker is busy); the worker's loop hands them to the delivery engine
(`_engine.py`: lanes, ready queue, requests in flight, retries) whenever it is
woken, and at least every `flush_interval`. While requests are in flight a
call does not wake it: each answer drains the queue, and so does a tick every
`TICK_S` should no answer come. This module keeps what crosses
threads: the queue and its bounds, `flush()`'s waiters, and the lifecycle, one
`State`: open, closed (no more messages taken; what is queued is still
delivered), stopping (the thread is told to end; what is left is reported).

The thread starts lazily on the first message. After `fork()` the child gets a
fresh, unstarted worker with an empty queue (see `Client`), so nothing the
parent queued is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import TYPE_CHECKING, Any, Protocol

from courier_analytics import _outcomes
from courier_analytics._engine import WIRE_COPIES, Engine, Reporter, Waiter
from courier_analytics._errors import WorkerUnavailable
from courier_analytics._events import Emitter
from courier_analytics._messages import Message
from courier_analytics._retry import RetryPolicy
from courier_analytics._routes import Route
from courier_analytics._spool import Settings as SpoolSettings
from courier_analytics._transport import NativeSender, Sender

if TYPE_CHECKING:
    from courier_analytics._metrics import Recorder
    from courier_analytics._spool._journal import Journal

__all__ = ["WIRE_COPIES", "State", "Worker", "WorkerUnavailable"]

logger = logging.getLogger("courier_analytics")

#: While requests are in flight, the worker drains the queue at least this often
#: (seconds) besides after every answer, and calls do not wake it (see `Worker.put`).
TICK_S = 0.005


class State(enum.Enum):
    """Where a worker is in its life; it only moves forward."""

    OPEN = "open"  # takes messages
    CLOSED = "closed"  # takes none; what is queued is still delivered
    STOPPING = "stopping"  # the thread is told to end; what is left is reported


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


class _EngineCount:
    """A number of the worker's engine, read as the worker's own (`worker.delivered`)."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, worker: Worker, owner: type | None = None) -> int:
        count: int = getattr(worker._engine, self._name)
        return count


class Worker:
    """Queue, thread and lifecycle of one client's delivery (the engine does the rest).

    Its own lock makes `put`, `close` and `start` safe to call from any thread.
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
        self._new_loop = new_loop
        self._flush_interval = flush_interval
        self.queue: deque[Message] = deque()
        self._engine = Engine(
            queue=self.queue,
            route=route,
            policy=policy,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            max_in_flight=max_in_flight,
            strict_order=strict_order,
            report=report,
            origin=origin,
            events=Emitter() if events is None else events,
            spool=spool,
            on_idle=self._release_idle_waiters,
            wake=self._resolve_waiter,
        )
        self.journal: Journal | None = self._engine.journal
        # With a spool, a call wakes the worker when this many wait to be committed,
        # so a burst is committed at once instead of overflowing the queue.
        self._wake_at = -1 if self.journal is None else self.journal.burst
        self._lock = threading.Lock()  # callers: the queue's bounds, closing, starting
        self._state = State.OPEN
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sender: Sender | None = None
        self._sender_error: Exception | None = None
        self._sleeping = False
        self._waiter: asyncio.Future[None] | None = None
        self._idle_events: list[_IdleWaiter] = []
        # Reentrant: a SIGTERM handler (see _signals.py) may flush from the main thread
        # while that thread is inside wait_idle's few lines holding it.
        self._idle_lock = threading.RLock()
        self._ended = threading.Event()  # set once the ending worker has reported all

    # The engine's counters, read from any thread (`stats`, metrics).
    delivered = _EngineCount("Messages Courier accepted.")
    failed = _EngineCount("Messages counted as not delivered.")
    retried = _EngineCount("Retries made.")
    held = _EngineCount("Messages taken from the queue and not yet finished.")
    in_flight = _EngineCount("Requests being sent right now (not messages waiting to retry).")
    held_bytes = _EngineCount("Bytes held for undelivered messages (see `Engine.held_bytes`).")
    max_queue_size = _EngineCount(
        "The most messages held in memory (beyond it, with a spool, in it)."
    )

    @property
    def pending(self) -> int:
        """Messages queued, being delivered, or waiting in the spool."""
        journal = self.journal
        return len(self.queue) + self._engine.held + (0 if journal is None else journal.left)

    @property
    def metrics(self) -> Recorder | None:
        """OpenTelemetry's recorder of durations (`_metrics.py`), or None: metrics are off."""
        return self._engine.metrics

    @metrics.setter
    def metrics(self, recorder: Recorder | None) -> None:
        self._engine.metrics = recorder

    # ----------------------------------------------------------------- producer side

    @property
    def closed(self) -> bool:
        """Whether `close` was called: no message is taken any more."""
        return self._state is not State.OPEN

    def close(self) -> None:
        """Take no more messages; what is queued is still delivered (see `stop`)."""
        # No lock: a put checks the state under its lock, and the ending worker takes
        # that lock to collect what a put appended meanwhile (see _thread_main), so no
        # message slips between. Lock-free, close() is safe from a signal handler that
        # interrupted a put in the same thread.
        if self._state is State.OPEN:
            self._state = State.CLOSED

    def put(self, message: Message, done: Waiter | None = None) -> bool:
        """Queue a message; `False` when the queue is full, in messages or bytes.

        Safe from any thread.

        Args:
            message: The message.
            done: Settled once the message is delivered (with None) or has failed (with
                the error `on_error` was given): sync mode. See `wait_done`.

        Raises:
            WorkerUnavailable: the worker was closed, or its thread could not start.
        """
        engine = self._engine
        with self._lock:
            if self._state is not State.OPEN:
                raise WorkerUnavailable("the client was shut down")
            # With a spool, what the worker took is on disk or bounded by it: only the
            # queue (not yet committed) counts here.
            held = engine.held if self.journal is None else 0
            if len(self.queue) + held >= engine.max_queue_size:
                return False
            cost = len(message._data)
            if (
                engine.bytes_taken - engine.bytes_freed + engine.wire + cost
                > engine.max_queue_bytes
            ):
                return False
            engine.bytes_taken += cost
            if done is not None:
                engine.done.add(message, done)
            self.queue.append(message)
            engine.queued += 1  # after the append: see `Engine.queued`
            if engine.metrics is not None:
                engine.metrics.queued(id(message))
            if self._thread is None:
                try:
                    self._start()
                except WorkerUnavailable:
                    self.queue.pop()  # ours: no worker runs to have taken it
                    engine.bytes_taken -= cost
                    if done is not None:
                        engine.done.discard(message, done)
                    raise
            elif (self._sleeping and not engine.in_flight) or len(self.queue) == self._wake_at:
                # With requests in flight, the next answer (or the tick, within
                # TICK_S) takes the message: a wake-up would cost both threads a
                # syscall and a hand-off of the GIL for every few messages.
                self._wake()
            return True

    def wait_done(
        self, message: Message, done: Waiter, timeout: float | None
    ) -> BaseException | None:
        """Wait until a message queued with `done` is delivered or failed (sync mode).

        Returns:
            The error it failed with (as `on_error` was given it); None once it is
            delivered, or while it is still being delivered after `timeout`, or when
            called on the worker thread itself (from `on_error`), which cannot wait.
        """
        if threading.current_thread() is self._thread:
            return None  # from on_error on the worker itself: waiting would deadlock it
        try:
            return done.result(timeout)
        except (TimeoutError, FutureTimeoutError):  # two classes before Python 3.11
            # Nobody waits now: the waiter goes, so that no later message that comes to
            # have this one's id() (once it is freed) can be given its outcome.
            self._engine.done.discard(message, done)
            logger.warning(
                "courier-analytics: %s %s still being delivered after %ss (sync_mode); "
                "it goes on in the background",
                message.type,
                message.message_id,
                timeout,
            )
            return None

    def _idle_now(self) -> bool:
        return not self.queue and not self._engine.held

    def _done_since(self, queued: int) -> bool:
        """Whether the engine was idle after the calls counted in `queued` were queued."""
        return self._engine.idle_mark >= queued

    def _settled(self, queued: int) -> bool:
        """Nothing is queued or held, and the last idle came after `queued` calls.

        Then a flush has nothing to wait for, not even the "drained" handlers, which
        ran before that idle was recorded. With a spool, messages may wait on disk
        outside both counts: the engine alone says when it is idle.
        """
        return self.journal is None and self._idle_now() and self._done_since(queued)

    def _add_idle_waiter(self, waiter: _IdleWaiter) -> bool:
        """Register `waiter` and have the engine check for idle; False: no worker runs."""
        with self._idle_lock:
            self._idle_events.append(waiter)
        if self._thread is None:  # it ended meanwhile, after releasing the waiters
            return False
        self._call_soon(self._engine.drain)
        return True

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until what was queued before the call is done, or `timeout` passes.

        Done: delivered or failed, as the engine counts it, with nothing of it queued
        or in flight. A waiter is released whenever the engine is idle; one whose
        calls were queued after the engine found the queue empty (a call made while
        "drained" handlers ran) waits for the next idle.
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._idle_now()
        if threading.current_thread() is thread:
            logger.warning(
                "courier-analytics: flush() called on the worker thread (from on_error?) "
                "returns at once: waiting there would stop delivery"
            )
            return self._idle_now()
        queued = self._engine.queued
        if self._settled(queued):
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event = threading.Event()
            if not self._add_idle_waiter(event):
                return self._idle_now()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not event.wait(left):
                return False
            if self._thread is None:  # released because the worker ended, not because idle
                return self._idle_now()
            if self._done_since(queued):
                return True

    async def wait_idle_async(self, timeout: float | None) -> bool:
        """`wait_idle` for a coroutine: the caller's event loop goes on meanwhile."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._idle_now()
        queued = self._engine.queued
        if self._settled(queued):
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            waiter = _LoopWaiter()
            try:
                if not self._add_idle_waiter(waiter):
                    return self._idle_now()
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    await asyncio.wait_for(asyncio.shield(waiter.future), left)
                except (TimeoutError, asyncio.TimeoutError):  # two classes before Python 3.11
                    return False
                if self._thread is None:  # released because the worker ended, not idle
                    return self._idle_now()
                if self._done_since(queued):
                    return True
            finally:
                with self._idle_lock, contextlib.suppress(ValueError):
                    self._idle_events.remove(waiter)

    def stop(self) -> None:
        """Tell the thread to end; what is still pending is reported as not delivered."""
        self._state = State.STOPPING
        if self._thread is not None:
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
            if self._thread is None and self._state is State.OPEN:
                with contextlib.suppress(WorkerUnavailable):  # interpreter exit: next time
                    self._start()

    def _start(self) -> None:
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
        engine = self._engine
        try:
            loop.run_until_complete(self._main())
        except BaseException:  # a bug or a broken environment; the next call restarts it
            logger.exception("courier-analytics: the worker stopped unexpectedly")
        finally:
            engine.end("the worker failed")  # reported, never lost (after _main's own end)
            loop.close()
            with self._lock:  # a put made meanwhile found a thread that no longer reads
                self._thread = None
                stragglers = engine.take_all()
            engine.end("the worker failed", stragglers)
            self._ended.set()
            self._release_idle_waiters()

    async def _main(self) -> None:
        engine, sender = self._engine, self._sender
        reason = _outcomes.SHUT_DOWN
        try:
            if sender is None:
                raise self._sender_error or RuntimeError("no sender")
            engine.begin(sender)
            native = sender if isinstance(sender, NativeSender) else None
            while self._state is not State.STOPPING:
                engine.drain()
                if native is not None:  # answers close idle connections; this, once none come
                    native.close_idle()
                await self._sleep()
        except BaseException as exc:  # e.g. no TLS context: SSL_CERT_FILE names no file
            reason = f"the worker failed ({type(exc).__name__}: {exc})"
            raise
        finally:
            # Reported before the sender closes: closing may wait on the network.
            engine.end(reason)
            self._ended.set()
            if sender is not None:
                await sender.aclose()

    async def _sleep(self) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        # While a spool commit is scheduled its timer wakes the worker: calls need not.
        self._sleeping = self.journal is None or not self.journal.waiting
        if (self.queue and self._sleeping) or self._state is State.STOPPING:
            self._sleeping = False  # appended after the drain, or told to stop
            return
        wait = min(TICK_S, self._flush_interval) if self._engine.in_flight else self._flush_interval
        timer = loop.call_later(wait, self._resolve_waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._sleeping = False
            self._waiter = None

    def _resolve_waiter(self) -> bool:
        """Wake the loop if it sleeps; whether it did."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            return True
        return waiter is not None

    def _release_idle_waiters(self) -> None:
        with self._idle_lock:
            events, self._idle_events = self._idle_events, []
        for event in events:
            event.set()
