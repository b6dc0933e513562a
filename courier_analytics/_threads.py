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
    """`size` daemon threads, each running one blocking call at a time.

    Args:
        size: Number of threads.
        name: Thread name, for debuggers and thread dumps.
    """

    def __init__(self, size: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=name, daemon=True) for _ in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Run `job()` on a thread; await the returned future for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((job, loop, future))
        return future

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, loop, future = item
            try:
                result, error = job(), None
            except BaseException as exc:  # handed to the awaiting coroutine
                result, error = None, exc
            # The loop may have closed meanwhile (the client shut down): then
            # nobody waits for this answer any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result, error)

    def close(self) -> None:
        """Let the threads end once they finish what they are running."""
        for _ in self._threads:
            self._jobs.put(None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
