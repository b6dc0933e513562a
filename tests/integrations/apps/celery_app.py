"""A Celery app on kombu's filesystem transport (no broker service), for test_celery.py.

The test process is the producer; ``celery -A integrations.apps.celery_app worker``
runs the same module as a real prefork worker. Configured by the environment:
``CELERY_TEST_DIR`` (broker and result folders), ``COURIER_API_KEY``,
``COURIER_BASE_URL``, ``FLUSH_AFTER_TASK`` (``1`` to flush after each task) and
``TRACK_AT_IMPORT`` (``1`` to track an event at import, before the prefork pool forks).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from celery import Celery

import courier_analytics as analytics
from courier_analytics.integrations.celery import install

root = Path(os.environ["CELERY_TEST_DIR"])
for folder in ("queue", "processed", "results", "control"):
    (root / folder).mkdir(parents=True, exist_ok=True)

app = Celery("celery_app", broker="filesystem://", backend=f"file://{root / 'results'}")
app.conf.update(
    broker_transport_options={
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "processed_folder": str(root / "processed"),
        # The exchange tables: kombu's default is ./control, in whatever folder the
        # worker starts in (the repository, when pytest runs from it).
        "control_folder": str(root / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    },
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)
if "COURIER_TEST_ROUTE" in os.environ:  # the worker: "segment" carries the context
    analytics.configure(route=os.environ["COURIER_TEST_ROUTE"])
# Generous timeouts: a loaded machine must not turn slow delivery into a loss.
install(
    app,
    flush_after_task=os.environ.get("FLUSH_AFTER_TASK") == "1",
    flush_timeout=30,
    shutdown_timeout=30,
)

if os.environ.get("TRACK_AT_IMPORT") == "1":  # the worker's main process, before it forks
    analytics.track("Worker Booted", {"pid": os.getpid()}, user_id="ops")


@app.task
def export(report: int) -> dict[str, object]:
    """Track ``Export Finished`` for the requester; say how many the stand-in had before."""
    base_url = os.environ["COURIER_BASE_URL"]
    events = httpx.get(f"{base_url}/__dev/events", timeout=30).json()
    seen = sum(event["event"] == "Segment-TrackEvent:Export Finished" for event in events)
    analytics.track("Export Finished", {"report": report, "pid": os.getpid()})
    user = analytics.user()
    return {"seen": seen, "user": user.id if user else None, "pid": os.getpid()}


@app.task
def burst(report: int, count: int) -> str | None:
    """Track ``count`` events for the requester at once; return the scope's user."""
    for n in range(count):
        analytics.track("Export Finished", {"report": report, "n": n, "pid": os.getpid()})
    user = analytics.user()
    return user.id if user else None
