"""An opt-in SIGTERM handler: deliver what is pending, report the rest, then end as before.

`docker stop`, systemd and Kubernetes end a process with SIGTERM. Servers such as
gunicorn, uvicorn and Celery turn it into a clean exit, which runs the atexit hook
that delivers what is pending. A plain Python process (a script, a consumer loop)
does not: SIGTERM's default action ends it at once, and no exit hook runs.
`handle_sigterm()` puts a handler in front of whatever was there.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from courier_analytics._client import begin_exit, exit_deadlines, shut_down_together

__all__ = ["handle_sigterm"]

logger = logging.getLogger("courier_analytics")

#: SIGTERM's disposition before `handle_sigterm()`: what the handler goes on to.
_previous: Any = signal.SIG_DFL


def handle_sigterm() -> bool:
    """On SIGTERM, deliver what every client holds within the exit budget, then go on as before.

    Opt in where nothing else turns SIGTERM into a clean exit (see the Reliability
    page for which servers do). On SIGTERM the handler, in the main thread:

    - if SIGTERM had its default action: shuts every client down together, each
      delivering for at most its `exit_timeout` (one budget for all, counted from
      the signal), reports what is left to `on_error` (one log line for all), then
      restores the default action and raises SIGTERM again, so the process ends as
      it would have (killed by signal 15, shell status 143; as PID 1 in a container,
      where the default action does nothing, it exits with status 143);
    - if a Python handler was set before: flushes every client within the same
      budget, then calls that handler (clients stay open: it may let the program
      go on). If the program then exits, the atexit hook reports what is left,
      within what is left of that budget;
    - if SIGTERM was ignored: does nothing, as before.

    Calling it again is harmless. A handler set later replaces this one (chain to
    `signal.getsignal(signal.SIGTERM)` from it to keep both).

    Example:
        ```python
        import courier_analytics as analytics

        analytics.handle_sigterm()  # at start-up, in the main thread
        ```

    Returns:
        `True` once the handler is in place; `False` if SIGTERM has a handler set
        outside Python (C code), which cannot be chained and is left as it is.

    Raises:
        ValueError: it was called outside the main thread (Python sets signal
            handlers only there).
    """
    global _previous
    if threading.current_thread() is not threading.main_thread():
        raise ValueError(
            "handle_sigterm() must be called from the main thread: Python sets signal "
            "handlers only there"
        )
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        return True
    if current is None:
        logger.warning(
            "courier-analytics: SIGTERM has a handler set outside Python; handle_sigterm() "
            "leaves it in place"
        )
        return False
    _previous = current
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    previous = _previous
    if previous == signal.SIG_IGN:
        return
    began = begin_exit()
    if callable(previous):
        logger.info("courier-analytics: SIGTERM: flushing, then calling the previous handler")
        for client, deadline in exit_deadlines(began):
            client.flush(max(0.0, deadline - time.monotonic()))
        previous(signum, frame)
        return
    logger.info("courier-analytics: SIGTERM: delivering what is pending, then exiting")
    shut_down_together(exit_deadlines(began))
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
    # Still here: the default action did nothing, as for PID 1 in a container (no
    # init process). The process was asked to stop and its clients are shut down.
    os._exit(128 + signum)
