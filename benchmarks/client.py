"""One client in its own process, so CPU and RSS readings are that client's alone.

Run as ``python -m benchmarks.client '<json spec>'``; prints one JSON line of readings.
Spec fields: ``lib`` (``courier``, ``segment``, ``trycourier``), ``mode`` (``deliver``,
``stall``, ``inline``), ``url``, ``n``, ``warmup``, ``payload`` (``small``/``kb``),
``max_in_flight`` (courier only; ``None`` keeps the client's default), ``settle_s``,
``courier_src`` (a directory holding another ``courier_analytics`` to measure).

- ``deliver``: ``warmup`` tracks and a flush, then ``n`` tracks timed in the calling
  thread while the background worker delivers, then a flush. Reports the caller's
  wall and CPU time per call, ``t0`` (``time.monotonic()`` before the first timed
  call, compared with the server's receipt time) and process CPU over the whole phase.
- ``stall``: ``n`` tracks against a server that never answers, ``settle_s`` of waiting,
  then RSS (current and peak). The process ends with ``os._exit`` (nothing to flush).
- ``inline``: ``n`` blocking ``trycourier`` ``inbound.track_event`` calls.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks._common import API_KEY, PAYLOADS, USERS, cpu_seconds, proc_status_kb, send_line

QUEUE_SIZE = 1_000_000
FLUSH_TIMEOUT_S = 600.0

Track = Callable[[int], Any]


def _courier(spec: dict[str, Any]) -> tuple[Track, Callable[[], None]]:
    from courier_analytics import Client

    options: dict[str, Any] = {}
    if spec.get("max_in_flight"):
        options["max_in_flight"] = int(spec["max_in_flight"])
    client = Client(
        api_key=API_KEY,
        base_url=spec["url"],
        max_queue_size=QUEUE_SIZE,
        flush_at_exit=False,
        **options,
    )
    properties = PAYLOADS[spec["payload"]]
    users = [f"user-{i}" for i in range(USERS)]

    def track(i: int) -> Any:
        return client.track("Order Completed", properties, user_id=users[i % USERS])

    def flush() -> None:
        client.flush(FLUSH_TIMEOUT_S)

    return track, flush


def _segment(spec: dict[str, Any]) -> tuple[Track, Callable[[], None]]:
    from segment.analytics import Client

    client = Client(write_key=API_KEY, host=spec["url"], max_queue_size=QUEUE_SIZE)
    properties = PAYLOADS[spec["payload"]]
    users = [f"user-{i}" for i in range(USERS)]

    def track(i: int) -> Any:
        return client.track(users[i % USERS], "Order Completed", properties)

    def flush() -> None:
        client.flush()  # joins the queue: returns once every batch was answered

    return track, flush


def _trycourier(spec: dict[str, Any]) -> tuple[Track, Callable[[], None]]:
    from courier import Courier

    client = Courier(api_key=API_KEY, base_url=spec["url"])
    properties = PAYLOADS[spec["payload"]]
    users = [f"user-{i}" for i in range(USERS)]

    def track(i: int) -> Any:
        return client.inbound.track_event(
            event="Order Completed",
            message_id=str(uuid.uuid4()),
            properties=properties,
            type="track",
            user_id=users[i % USERS],
        )

    return track, lambda: None


MAKERS = {"courier": _courier, "segment": _segment, "trycourier": _trycourier}


def _timed_calls(track: Track, start: int, n: int) -> tuple[float, float, float]:
    """(t0, wall seconds, calling-thread CPU seconds) for n calls."""
    cpu0 = time.thread_time()
    t0 = time.monotonic()
    p0 = time.perf_counter()
    for i in range(start, start + n):
        track(i)
    wall = time.perf_counter() - p0
    return t0, wall, time.thread_time() - cpu0


def run(spec: dict[str, Any]) -> dict[str, Any]:
    track, flush = MAKERS[spec["lib"]](spec)
    n, warmup, mode = int(spec["n"]), int(spec.get("warmup", 0)), spec["mode"]
    rss_base_kb = proc_status_kb("VmRSS")
    if warmup:
        for i in range(warmup):
            track(i)
        flush()
    cpu0 = cpu_seconds()
    t0, wall, thread_cpu = _timed_calls(track, warmup, n)
    result: dict[str, Any] = {
        "n": n,
        "t0": t0,
        "caller_us": wall / n * 1e6,
        "caller_cpu_us": thread_cpu / n * 1e6,
    }
    if mode == "stall":
        time.sleep(float(spec.get("settle_s", 1.0)))
        result.update(
            rss_base_kb=rss_base_kb,
            rss_kb=proc_status_kb("VmRSS"),
            rss_peak_kb=proc_status_kb("VmHWM"),
        )
        return result
    flush()
    result.update(
        t_flushed=time.monotonic(),
        cpu_s=cpu_seconds() - cpu0,
        rss_peak_kb=proc_status_kb("VmHWM"),
    )
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("courier_src"):  # measure another copy of courier_analytics (a baseline)
        sys.path.insert(0, spec["courier_src"])
    profile = spec.get("profile")
    if profile:  # cProfile of the calling thread only; prefer py-spy for the worker
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(run, spec)
        profiler.dump_stats(profile)
    else:
        result = run(spec)
    if spec["lib"] == "courier":
        result["courier_file"] = sys.modules["courier_analytics"].__file__
    send_line(sys.stdout, result)
    sys.stderr.flush()
    os._exit(0)  # skip the clients' exit hooks: a stalled server would make them wait


if __name__ == "__main__":
    main()
