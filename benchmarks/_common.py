"""What the benchmark's processes share: payloads, process readings, the wire protocol."""

from __future__ import annotations

import json
import resource
import sys
from typing import Any

API_KEY = "bench-key"
#: How many distinct users the tracked events are spread over (per-user order matters
#: to courier-analytics, which keeps one lane per user).
USERS = 1000

SMALL_PROPERTIES: dict[str, Any] = {
    "order_id": "ord_0001234567",
    "total": 42.5,
    "currency": "USD",
    "items": 3,
    "coupon": None,
    "express": True,
}

KB_PROPERTIES: dict[str, Any] = {
    **SMALL_PROPERTIES,
    "products": [
        {"sku": f"SKU-{i:05d}", "name": f"Product number {i}", "price": 9.99 + i, "qty": 1 + i % 3}
        for i in range(11)
    ],
    "note": "x" * 64,
}

PAYLOADS = {"small": SMALL_PROPERTIES, "kb": KB_PROPERTIES}


def payload_bytes(kind: str) -> int:
    """Size of the properties object as compact JSON."""
    return len(json.dumps(PAYLOADS[kind], separators=(",", ":")))


def cpu_seconds() -> float:
    """User + system CPU seconds of this whole process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_status_kb(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``); ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss


def send_line(stream: Any, data: dict[str, Any]) -> None:
    """Write one JSON line and flush (the processes talk in JSON lines)."""
    stream.write(json.dumps(data) + "\n")
    stream.flush()
