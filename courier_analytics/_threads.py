"""Daemon threads that run blocking calls for the worker's event loop.

Not `concurrent.futures.ThreadPoolExecutor` (nor the loop's default executor,
which `loop.getaddrinfo` uses): once interpreter shutdown begins, before
`atexit` hooks run, those refuse new work, and they join their threads at exit.
Delivery at exit must still resolve host names and run blocking transports, and a
stuck call must not hang the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["BlockingRunner"]

T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class BlockingRunner:
    """Up to `size` daemon threads, each running one blocking call at a time.

    One thread starts with the runner (threads cannot be started at interpreter
    exit, where delivery must still run); another starts only when a call finds
    every thread busy, and a thread left idle for `idle_timeout` seconds ends,
    except the last one. So the threads follow the calls actually waiting, not
    `size`. A thread that cannot be started (the interpreter is exiting) is not
    needed: the call waits for a running one.

    Args:
        size: Most threads at once.
        name: Thread name, for debuggers and thread dumps.
        idle_timeout: Seconds an idle thread waits for work before it ends.
    """

    def __init__(self, size: int, name: str, *, idle_timeout: float = 30.0) -> None:
        self._size = size
        self._name = name
        self._idle_timeout = idle_timeout
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # running
        self._idle = 0  # waiting for work no call has claimed yet
        self._backlog = 0  # calls queued while every thread was busy
        with self._lock:
            self._start_thread()
            self._idle = self._threads

    @property
    def threads(self) -> int:
        """How many threads run now."""
        return self._threads

    def run(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Run `job()` on a thread; await the returned future for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread takes it
            elif not (self._threads < self._size and self._start_thread()):
                self._backlog += 1  # the next thread to finish takes it
            self._jobs.put((job, loop, future))
        return future

    def _start_thread(self) -> bool:
        thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            return False
        self._threads += 1
        return True

    def _run(self) -> None:
        while True:
            try:
                item = self._jobs.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._idle and self._threads > 1:  # not needed for claimed work
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            if item is None:
                return
            self._execute(*item)
            del item  # an idle thread keeps no request or answer alive

    def _execute(
        self, job: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        result, error = None, None
        if not future.done():  # else its caller gave up (a deadline): never run it late
            try:
                result = job()
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
        with self._lock:  # before the answer, so the call it lets in finds this thread
            if self._backlog:
                self._backlog -= 1
            else:
                self._idle += 1
        # The loop may have closed meanwhile (the client shut down): then nobody
        # waits for this answer any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, result, error)

    def close(self) -> None:
        """Let the threads end once they finish what they are running."""
        with self._lock:
            for _ in range(self._threads):
                self._jobs.put(None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
