"""The spool's disk: bytes per spooled event, and the file's size under churn.

    python -m benchmarks.spool_disk            # 20,000 held, 200,000 through
    python -m benchmarks.spool_disk --quick

Drives the SQLite backend as the worker does, in one process and without a
server: batches committed, then removed once "answered", with the tidy-up the
worker runs every few seconds (a checkpoint; free pages given back). Messages
are the benchmark's small track in the compact form the client keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/spool_disk.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import PAYLOADS
from courier_analytics._messages import Message, compact, new_message_id, now_ms, pack
from courier_analytics._spool._sqlite import SqliteBackend

#: Messages per commit and per removal, as the worker batches them under load.
BATCH = 2000
#: Batches between two tidy-ups (the worker tidies every few seconds).
TIDY_EVERY = 10


def _messages(count: int) -> list[Message]:
    payload = PAYLOADS["small"]
    return [
        compact("track", f"user-{i % 1000}", None, "Order Completed",
                pack(now_ms(), new_message_id(), "properties", payload))
        for i in range(count)
    ]  # fmt: skip


def _file_bytes(path: Path) -> int:
    return sum(
        os.path.getsize(f"{path}{suffix}")
        for suffix in ("", "-wal", "-shm")
        if os.path.exists(f"{path}{suffix}")
    )


def measure(held: int, through: int) -> dict[str, Any]:
    """Bytes per event with `held` in the spool; the file's size while `through` pass."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "spool.db"
        backend = SqliteBackend(str(path), owner="bench", lease=60)
        backend.open()
        batch = _messages(BATCH)
        keys: list[int] = []
        for _ in range(held // BATCH):
            keys += backend.commit(batch, time.time(), False)
        backend.tidy()
        data = sum(len(m._data) for m in batch) / BATCH
        result: dict[str, Any] = {
            "held": len(keys),
            "bytes_per_event": backend.used_bytes() / len(keys),  # the pages rows use
            "data_bytes_per_event": data,
            "file_mb_held": _file_bytes(path) / 1e6,  # with the WAL (at most WAL_LIMIT)
        }
        for start in range(0, len(keys), BATCH):  # all delivered: the file empties
            backend.remove(keys[start : start + BATCH])
        backend.tidy()
        result["file_mb_emptied"] = _file_bytes(path) / 1e6
        # Churn: a window of `held` in the spool while `through` pass through it.
        window: list[list[int]] = []
        peak = 0
        cpu0 = time.process_time()
        for round_ in range(through // BATCH):
            window.append(backend.commit(batch, time.time(), False))
            if len(window) * BATCH > held:
                backend.remove(window.pop(0))
            if round_ % TIDY_EVERY == 0:
                backend.tidy()
            peak = max(peak, _file_bytes(path))
        cpu = time.process_time() - cpu0
        backend.tidy()
        result.update(
            through=through,
            churn_file_mb_peak=peak / 1e6,
            churn_file_mb_end=_file_bytes(path) / 1e6,
            churn_cpu_us_per_event=cpu / through * 1e6,
        )
        backend.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spool_disk")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    args = parser.parse_args(argv)
    held, through = (4_000, 20_000) if args.quick else (20_000, 200_000)
    print(json.dumps(measure(held, through), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
