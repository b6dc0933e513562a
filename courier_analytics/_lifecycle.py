"""A client's life: flushing, shutting down, forking, and delivering at exit.

`Lifecycle` is the part of a [`Client`][courier_analytics.Client] that waits for
its worker and stops it; the functions below shut every live client down together
at exit (or on SIGTERM, see `_signals.py`) on one budget.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from types import TracebackType
from typing import TYPE_CHECKING

from courier_analytics import _metrics
from courier_analytics._intake import NO_STATS, Intake, Stats
from courier_analytics._options import Options
from courier_analytics._value import Value

if TYPE_CHECKING:
    import asyncio
    from typing import Self
else:  # the first Client() imports asyncio: see _lazy
    from courier_analytics._lazy import asyncio

__all__ = [
    "REPORT_TIMEOUT",
    "FlushReport",
    "Lifecycle",
    "begin_exit",
    "exit_deadlines",
    "shut_down_together",
]

logger = logging.getLogger("courier_analytics")

#: Every live client, for delivery at exit and a fresh start in a forked child.
CLIENTS: weakref.WeakSet[Lifecycle] = weakref.WeakSet()

#: Seconds that reporting what a stopped client left undelivered may take past its
#: deadline: `on_error` is called once for each, and a slow one must not hold an exit
#: for ever.
REPORT_TIMEOUT = 5.0


class FlushReport(Value):
    """What became of a client's messages, from one flush to the next.

    [`Client.flush_report`][courier_analytics.Client.flush_report] returns it. The
    counts are of messages settled since the previous `flush()`, `aflush()` or
    `flush_report()` of the client (or since it was made), so a script that flushes
    once learns the fate of everything it sent:

    ```python
    from courier_analytics import Client

    client = Client(api_key="pk_test_123", send=False)
    client.track("Signed Up", user_id="u1")
    report = client.flush_report()
    assert report.done and report.ok
    ```

    Attributes:
        done: What `flush()` returns: `True` when nothing was left pending, each
            message delivered or given up on (failed), before the timeout.
        delivered: Messages Courier accepted since the previous flush.
        failed: Messages that will not be delivered (refused, out of retries,
            cancelled), each also passed to `on_error`.
        dropped: Messages refused at the call (queue full, client closed), each also
            passed to `on_error`.
        pending: Messages still queued or being delivered (0 when `done`, unless
            parked in a spool for a later retry).
    """

    __match_args__ = ("done", "delivered", "failed", "dropped", "pending")
    __slots__ = __match_args__

    done: bool
    delivered: int
    failed: int
    dropped: int
    pending: int

    def __init__(self, done: bool, delivered: int, failed: int, dropped: int, pending: int) -> None:
        self._assign(done, delivered, failed, dropped, pending)

    @property
    def ok(self) -> bool:
        """Whether all of it was delivered: `done`, nothing failed or was dropped, none pending.

        With a spool `done` is `True` while messages are parked there for a later
        retry (see the Durability page): they are `pending`, so not `ok`.

        Messages not sent by design (skipped: `send=False`, a type the route does
        not deliver, an `integrations` filter) do not make it `False`.
        """
        return self.done and self.failed == 0 and self.dropped == 0 and self.pending == 0


class Lifecycle(Intake):
    """Flushing and shutting down: the part of a [`Client`][courier_analytics.Client] that waits.

    The client's set-up (`_open`) makes the worker; this waits for it and stops it.
    """

    def _open(self, options: Options) -> None:
        """Make the worker and fresh counters (the client's set-up; again in a forked child).

        `Client` provides it: the set-up belongs with the options it reads.
        """
        raise NotImplementedError

    def _open_lifecycle(self) -> None:
        # The counters when the last flush returned: what the next report counts from.
        self._flushed: Stats = NO_STATS
        # (messages made, seconds waited) while flushes time out on the same messages:
        # exit does not wait for them again beyond flush_timeout (see _exit_wait).
        self._gave_up: tuple[int, float] | None = None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued message is delivered or has failed.

        `True` says that nothing is left pending, not that everything was
        delivered: a message Courier refused (a wrong key: 401) has failed, and
        was passed to `on_error`. To know whether all of it was delivered, use
        [`flush_report`][courier_analytics.Client.flush_report].

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.

        Returns:
            `True` when nothing is left pending, `False` when the timeout passed first.
        """
        return self._flush("flush", timeout).done

    def flush_report(self, timeout: float | None = None) -> FlushReport:
        """Flush, and say what became of the messages since the previous flush.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.

        Returns:
            A [`FlushReport`][courier_analytics.FlushReport]: `report.ok` is `True`
            when everything was delivered; `report.failed` and `report.dropped` count
            what was not (each also passed to `on_error`).
        """
        return self._flush("flush", timeout)

    def _flush(self, name: str, timeout: float | None, done: bool | None = None) -> FlushReport:
        """Wait (unless `done` is given: aflush waited), then report and remember."""
        wait = self._options.flush_timeout if timeout is None else timeout
        if done is None:
            done = self._worker.wait_idle(wait)
        now = self.stats
        with self._lock:
            before, self._flushed = self._flushed, now
            if done:
                self._gave_up = None
            else:
                previous = self._gave_up
                same = previous is not None and previous[0] == now.made
                self._gave_up = (now.made, wait + (previous[1] if previous and same else 0.0))
        if not done:
            logger.info(
                "courier-analytics: %s gave up after %ss with %d message(s) pending",
                name,
                wait,
                now.pending,
            )
        return FlushReport(
            done=done,
            delivered=now.delivered - before.delivered,
            failed=now.failed - before.failed,
            dropped=now.dropped - before.dropped,
            pending=now.pending,
        )

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush, then stop the worker; later calls are dropped and reported.

        What is still pending when `timeout` passes is counted as failed and
        passed to `on_error` as [`NotDeliveredError`][courier_analytics.NotDeliveredError],
        with one WARNING line for them all, before this returns: then
        `stats.pending == 0` and `stats.unaccounted == 0`. Reporting takes what
        `on_error` takes for each message, at most 5 s more (past that an ERROR line
        says so; the counts are settled even then). Calling it again is harmless.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.
        """
        wait = self._options.flush_timeout if timeout is None else timeout
        shut_down_together([(self, time.monotonic() + wait)])

    async def aflush(self, timeout: float | None = None) -> bool:
        """`flush` for async code: awaits delivery while the event loop goes on.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.

        Returns:
            `True` when nothing is left pending, `False` when the timeout passed first.
        """
        wait = self._options.flush_timeout if timeout is None else timeout
        done = await self._worker.wait_idle_async(wait)
        return self._flush("aflush", wait, done).done

    async def ashutdown(self, timeout: float | None = None) -> None:
        """`shutdown` for async code: the event loop goes on while it waits.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.
        """
        self._worker.close()
        wait = self._options.flush_timeout if timeout is None else timeout
        await self._worker.wait_idle_async(wait)
        # Waiting for the reports of what is left blocks: on a thread, not on the loop.
        await asyncio.to_thread(_stop_and_report, [self])

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ashutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def _after_fork_in_child(self) -> None:
        """Start over in a forked child: the parent's queue is the parent's to send."""
        closed = self._worker.closed
        self._open(self._options)
        if closed:
            self._worker.close()

    def _exit_deadline(self, began: float) -> float:
        """When this client's delivery must end if the exit began at `began` (monotonic)."""
        options = self._options
        return began + (self._exit_wait() if options.flush_at_exit else 0.0)

    def _exit_wait(self) -> float:
        """`exit_timeout`, cut so no message is waited for beyond `flush_timeout` in all.

        A script whose `flush()` timed out (a dead URL) and that made nothing since
        would otherwise wait `exit_timeout` more for the same messages at exit.
        """
        options = self._options
        # No lock: this runs in the SIGTERM handler too, which may interrupt a holder
        # of `_lock`; the tuple is replaced whole, so a plain read is consistent.
        gave_up = self._gave_up
        if gave_up is None:
            return options.exit_timeout
        # Nor a wait for it (that holder may be this thread): unknown, the whole wait.
        if not self._lock.acquire(blocking=False):
            return options.exit_timeout
        try:
            made = self._made_now()
        finally:
            self._lock.release()
        if gave_up[0] != made:
            return options.exit_timeout
        return min(options.exit_timeout, max(0.0, options.flush_timeout - gave_up[1]))


def _after_fork_in_child() -> None:
    global _exit_began
    _exit_began = None  # a child has not begun to exit because its parent had
    _metrics.after_fork_in_child()  # before the clients below make their recorders
    for client in list(CLIENTS):
        client._after_fork_in_child()


def shut_down_together(clients: list[tuple[Lifecycle, float]]) -> None:
    """Shut clients down at once, each delivering until its deadline (`time.monotonic()`).

    They deliver side by side, so the slowest deadline bounds the whole, not their sum;
    then each reports what it leaves undelivered (see `Client.shutdown`).
    """
    for client, _ in clients:
        client._worker.close()
    for client, deadline in clients:
        client._worker.wait_idle(max(0.0, deadline - time.monotonic()))
    _stop_and_report([client for client, _ in clients])


def _stop_and_report(clients: list[Lifecycle]) -> None:
    """Stop the workers of closed clients and wait for their reports of what is left."""
    for client in clients:
        client._worker.stop()
    # Cancelling what is in flight takes milliseconds; the rest is on_error's time.
    cutoff = time.monotonic() + REPORT_TIMEOUT
    for client in clients:
        worker = client._worker
        if not worker.wait_stopped(max(0.0, cutoff - time.monotonic())):
            logger.error(
                "courier-analytics: on_error was still being called for the messages a "
                "stopped client did not deliver after %ss; they are counted as failed, "
                "and any report not made when the process exits is lost",
                REPORT_TIMEOUT,
            )


#: When the process began to exit (`time.monotonic()`), once it has: a SIGTERM
#: handler (see `handle_sigterm`) and the atexit hook share one exit budget.
_exit_began: float | None = None


def begin_exit() -> float:
    """Note that the process is exiting, if not yet noted; return when it began to."""
    global _exit_began
    if _exit_began is None:
        _exit_began = time.monotonic()
    return _exit_began


def exit_deadlines(began: float) -> list[tuple[Lifecycle, float]]:
    """Every live client with the deadline of its delivery at an exit that began at `began`."""
    return [(client, client._exit_deadline(began)) for client in list(CLIENTS)]


def _flush_all_at_exit() -> None:
    # Every client at once, on one budget: each gets its exit_timeout from when the
    # exit began, side by side (one after another, three took three times as long).
    # Also for a client whose shutdown() runs in another thread: that thread is a
    # daemon and dies with the interpreter, so exit waits here instead.
    try:
        shut_down_together(exit_deadlines(begin_exit()))
    except Exception:  # pragma: no cover - never let exit fail because of analytics
        logger.exception("courier-analytics: flushing at exit failed")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_all_at_exit)
