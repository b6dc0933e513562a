"""Celery: the producer's scope travels with each task; events are flushed after tasks and at exit.

```text
pip install 'courier-analytics[celery]'
```

```python
from celery import Celery
from courier_analytics.integrations.celery import install

app = Celery("tasks")
install(app, flush_after_task=True)

@app.task
def export(report_id):
    ...
    analytics.track("Export Finished", {"report": report_id})  # the requester's user
```

See the Integrations pages of the documentation.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

import orjson
from celery import Celery, bootsteps, signals

import courier_analytics as analytics
from courier_analytics.integrations._http import check_settings

__all__ = ["HEADER", "install"]

logger = logging.getLogger("courier_analytics")

#: The task message header that carries the producer's scope.
HEADER: Final = "courier_analytics_scope"


class _Installed:
    """One `install()`: its options, and the scopes open around running tasks."""

    def __init__(
        self, app: Celery, flush_after_task: bool, flush_timeout: float, shutdown_timeout: float
    ) -> None:
        self.app = app
        self.flush_after_task = flush_after_task
        self.flush_timeout = flush_timeout
        self.shutdown_timeout = shutdown_timeout
        self.lock = threading.Lock()
        # (task id, thread) -> the scope open around that run. The thread too: a
        # redelivered task (acks_late) can run twice at once under one id, and each
        # run's scope must end in the thread (context) it was opened in.
        self.open: dict[tuple[str, int], analytics.scope] = {}

    # -- producer -------------------------------------------------------------

    def before_publish(self, headers: dict[str, Any] | None = None, **_: Any) -> None:
        snapshot = analytics.scope.snapshot()
        if snapshot is None or headers is None:
            return
        try:
            orjson.dumps(snapshot)  # it must survive any serializer: JSON is the narrowest
        except TypeError as exc:
            logger.warning(
                "courier-analytics: the current scope is not JSON-serialisable (%s); the task "
                "is sent without it",
                exc,
            )
            return
        headers[HEADER] = snapshot

    # -- worker ---------------------------------------------------------------

    def prerun(self, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if task is None or task.app is not self.app or task_id is None:
            return
        snapshot = _header(task.request)
        if snapshot is None:
            return
        try:
            scope = analytics.scope(**snapshot)
        except (TypeError, ValueError) as exc:  # a header from elsewhere: never fail the task
            logger.warning("courier-analytics: ignored an invalid %s header (%s)", HEADER, exc)
            return
        scope.__enter__()
        with self.lock:
            self.open[task_id, threading.get_ident()] = scope

    def postrun(self, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if task is None or task.app is not self.app:
            return
        with self.lock:
            scope = self.open.pop((task_id or "", threading.get_ident()), None)
        if scope is not None:
            scope.__exit__(None, None, None)
        if self.flush_after_task and not analytics.flush(self.flush_timeout):
            logger.warning(
                "courier-analytics: the flush after task %s gave up after %ss; the rest "
                "goes on in the background",
                task_id,
                self.flush_timeout,
            )

    def shutdown(self, **_: Any) -> None:
        analytics.shutdown(self.shutdown_timeout)


def _header(request: Any) -> dict[str, Any] | None:
    """The scope snapshot a task's message carries, wherever this Celery version puts it."""
    value = getattr(request, HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None) or {}
        value = headers.get(HEADER) if isinstance(headers, dict) else None
    return value if isinstance(value, dict) else None


class _CheckSettings(bootsteps.Step):  # type: ignore[misc]  # Celery ships no types
    """A worker step: the worker does not start with a configuration that makes no client.

    It runs as the worker is built, after Celery has imported the app's modules
    (and set Django up, whose app config applies `COURIER_ANALYTICS`), before any
    task runs: a missing API key or a bad value stops the worker with an error
    naming the setting, instead of failing every task's calls.
    """

    name = "courier_analytics.CheckSettings"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        check_settings("courier_analytics")
        super().__init__(parent, **kwargs)


_installed: dict[int, _Installed] = {}


def install(
    celery_app: Celery,
    *,
    flush_after_task: bool = False,
    flush_timeout: float = 5.0,
    shutdown_timeout: float = 10.0,
) -> None:
    """Connect courier-analytics to a Celery app (producer and worker sides).

    - **Producer**: sending a task inside a [`scope`][courier_analytics.scope]
      (a web request, with a framework integration) puts a snapshot of it in the
      task's headers.
    - **Worker**: the snapshot is reopened around the task, so calls in it know
      the user. A prefork child starts its own delivery thread on its first call
      and delivers what is left when it exits; the worker delivers what is left at
      shutdown (within `shutdown_timeout`).
    - With `flush_after_task`, each task's events are delivered (within
      `flush_timeout`) before the task counts as done, so before an `acks_late`
      task is acknowledged.

    - **Start-up**: the worker validates the whole configuration as it starts
      (a worker step) and does not start if it makes no client (no API key
      anywhere, a bad value), naming the setting. Not here at `install()`: it
      runs when the app's module is imported, and a Django project imports its
      Celery app before its settings (and `COURIER_ANALYTICS`) are applied.

    Calling it again for the same app replaces its options.

    Args:
        celery_app: The Celery app, in the producer and in the worker.
        flush_after_task: Flush after every task of this app.
        flush_timeout: Seconds each flush after a task may take.
        shutdown_timeout: Seconds delivery at worker (or child) shutdown may take.

    Raises:
        TypeError: `celery_app` is not a Celery app, or a timeout is not a number.
        ValueError: A timeout is negative.
    """
    if not isinstance(celery_app, Celery):
        raise TypeError(f"celery_app must be a celery.Celery app, not {type(celery_app).__name__}")
    for name, value in (("flush_timeout", flush_timeout), ("shutdown_timeout", shutdown_timeout)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name} must be 0 or more seconds, not {value!r}")
    installed = _Installed(celery_app, bool(flush_after_task), flush_timeout, shutdown_timeout)
    _installed[id(celery_app)] = installed
    celery_app.steps["worker"].add(_CheckSettings)  # a set: installing twice adds it once
    uid = f"courier_analytics:{id(celery_app)}"
    # Signals are global; weak=False keeps the bound methods alive, and the
    # dispatch_uid makes a second install() replace the first.
    for signal, receiver in (
        (signals.before_task_publish, installed.before_publish),
        (signals.task_prerun, installed.prerun),
        (signals.task_postrun, installed.postrun),
        # A prefork child ends with os._exit(), which runs no atexit hook: it
        # delivers what it queued when it sends worker_process_shutdown instead.
        (signals.worker_process_shutdown, installed.shutdown),
        (signals.worker_shutdown, installed.shutdown),
    ):
        signal.disconnect(dispatch_uid=uid)
        signal.connect(receiver, weak=False, dispatch_uid=uid)
