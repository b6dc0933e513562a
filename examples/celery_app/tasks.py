"""A Celery worker that tells users their export is ready, through Courier.

Needs no broker service: kombu's filesystem transport keeps the queue in a
folder (set CELERY_BROKER_URL to use Redis or RabbitMQ instead). From the
repository root, with the local Courier stand-in running:

    courier-analytics dev --mappings-file examples/mappings.json
    celery --workdir examples/celery_app -A tasks worker --pool prefork
    python examples/celery_app/send.py ada 42      # in a third terminal
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import courier_analytics as analytics
from celery import Celery
from courier_analytics.integrations.celery import install

# In production: the key from your secret store, and no base_url.
analytics.configure(
    api_key=os.environ.get("COURIER_API_KEY", "dev-key"),
    base_url=os.environ.get("COURIER_BASE_URL", "http://127.0.0.1:8787"),
)

folder = Path(
    os.environ.get(
        "EXAMPLE_CELERY_DIR",
        Path(tempfile.gettempdir()) / "courier-celery-example",
    )
)
for name in ("queue", "processed", "results", "control"):
    (folder / name).mkdir(parents=True, exist_ok=True)

app = Celery(
    "tasks",
    broker=os.environ.get("CELERY_BROKER_URL", "filesystem://"),
    backend=os.environ.get(
        "CELERY_RESULT_BACKEND", f"file://{folder / 'results'}"
    ),
)
app.conf.update(
    broker_transport_options={
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        # kombu keeps its exchange tables in ./control unless told otherwise.
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    },
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
)
# The sender's scope (who asked for the export) travels with each task, and each
# task's events are delivered before it is acknowledged.
install(app, flush_after_task=True)


@app.task
def export_report(report_id: int) -> str:
    """Build the report, then tell its requester (Courier notifies them)."""
    url = f"https://reports.example.com/{report_id}.csv"
    # No user_id: the scope of whoever sent the task says who it is.
    analytics.track("Export Finished", {"report_id": report_id, "url": url})
    return url
