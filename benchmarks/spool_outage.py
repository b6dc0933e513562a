"""A Courier outage with a spool: memory stays flat, and everything arrives after it.

    python -m benchmarks.spool_outage                 # 100,000 events, 150 s outage
    python -m benchmarks.spool_outage --outage 20 --max-retry-time 10

The local stand-in runs on 127.0.0.1, answering 503 to everything. A client in a
process of its own (so its RSS is its alone) makes the events as fast as it can,
through a spool in a temporary directory, while it samples its RSS every half
second. After `--outage` seconds (longer than `--max-retry-time`, so the retries
in memory run out and the messages wait on disk) the stand-in answers again.
Reported: the RSS over time and its peak, distinct messageIds the stand-in
applied (all of them), duplicates, and the time from Courier's return until the
last arrived (it includes the parked retries' backoff, which doubles during an
outage up to 5 minutes).

`run()` is also what the scaled-down test calls (tests/spool/test_outage.py),
with `outage=None`: the outage ends once every message waits in the spool.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/spool_outage.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import API_KEY, PAYLOADS, proc_status_kb

#: Seconds between two RSS samples in the client's process.
SAMPLE_EVERY = 0.5
#: The client's max_queue_size: what a tight loop may get ahead of the commits (a
#: loaded machine's worker falls behind it), not what is held during the outage.
QUEUE = 100_000


def child(url: str, spool: str, n: int, max_retry_time: float) -> None:
    """The client's process: make `n` tracks, say when they wait in the spool, deliver."""
    from courier_analytics import Client, RetryPolicy

    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.wait(SAMPLE_EVERY):
            samples.append((round(time.monotonic() - t0, 1), proc_status_kb("VmRSS")))

    threading.Thread(target=sample, daemon=True).start()
    client = Client(
        api_key=API_KEY,
        base_url=url,
        spool=spool,
        retry=RetryPolicy(max_time=max_retry_time),
        max_queue_size=QUEUE,
        flush_at_exit=False,
    )
    properties = PAYLOADS["small"]
    for i in range(n):
        client.track("Order Completed", properties, user_id=f"user-{i % 1000}")
    print("made", round(time.monotonic() - t0, 2), client.stats.dropped, flush=True)
    client.flush(max_retry_time * 10 + 60)  # returns once all wait in the spool
    print("parked", client.stats.pending, flush=True)
    sys.stdin.read()  # the driver closes it once everything arrived
    stop.set()
    client.shutdown(10)
    stats = client.stats
    result = {
        "samples": samples,
        "rss_peak_kb": proc_status_kb("VmHWM"),
        "delivered": stats.delivered,
        "failed": stats.failed,
        "dropped": stats.dropped,
        "pending": stats.pending,
    }
    print("result", json.dumps(result), flush=True)


def run(
    n: int, outage: float | None, max_retry_time: float, timeout: float = 3600
) -> dict[str, Any]:
    """Drive one outage; what it came to (see the module's docstring)."""
    from courier_analytics.devserver import DevServer, Faults

    down = Faults(error_rate=1.0, error_statuses=(503,))
    spool = os.path.join(tempfile.mkdtemp(prefix="bench-outage-"), "spool.db")
    limits = {"max_events": 2 * n, "max_idempotency_records": 2 * n}
    with DevServer(api_key=API_KEY, faults=down, **limits) as server:
        command = [sys.executable, "-m", "benchmarks.spool_outage", "--child"]
        command += [server.base_url, spool, str(n), str(max_retry_time)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}
        env["COURIER_ANALYTICS_ALLOW_INSECURE_HTTP"] = "1"
        root = str(Path(__file__).resolve().parent.parent)
        began = time.monotonic()
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root
        )
        assert process.stdin is not None
        assert process.stdout is not None
        made_line = process.stdout.readline().split()
        made_s = float(made_line[1])
        parked = int(process.stdout.readline().split()[1])  # all wait in the spool now
        if outage is not None:
            time.sleep(max(0.0, began + outage - time.monotonic()))  # the outage's length
        server.set_faults(Faults())
        back = time.monotonic()
        expected = n - int(made_line[2]) if len(made_line) > 2 else n
        arrived = server.wait_for(lambda: server.state.message_ids_applied >= expected, timeout)
        drain_s = time.monotonic() - back
        process.stdin.close()
        line = process.stdout.readline()
        process.stdout.close()
        process.wait(60)
        stats = server.stats()
    result = json.loads(line.split(" ", 1)[1])
    result.update(
        n=n,
        made_s=made_s,
        parked=parked,
        outage_s=back - began,
        all_arrived=arrived,
        distinct=stats["message_ids_applied"],
        duplicates=stats["duplicates"],
        drain_s=drain_s,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, default=100_000, help="events made (100,000)")
    parser.add_argument("--outage", type=float, default=150.0, help="seconds Courier is down")
    parser.add_argument(
        "--max-retry-time", type=float, default=120.0, help="the client's max_retry_time"
    )
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.child:
        url, spool, n, max_retry_time = args.child
        child(url, spool, int(n), float(max_retry_time))
        return 0
    result = run(args.n, args.outage, args.max_retry_time)
    rss = [kb / 1024 for _, kb in result["samples"]]
    peak = result["rss_peak_kb"] / 1024
    print(
        f"{result['n']} made in {result['made_s']:.1f}s; Courier down {result['outage_s']:.0f}s; "
        f"RSS {min(rss):.1f}-{max(rss):.1f} MiB (peak {peak:.1f}); "
        f"{result['distinct']} distinct arrived ({result['duplicates']} duplicates) "
        f"{result['drain_s']:.1f}s after it came back; failed {result['failed']}"
    )
    over_time = " ".join(f"{t:g}:{kb / 1024:.0f}" for t, kb in result["samples"][::10])
    print("RSS over time (s: MiB):", over_time)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0 if result["all_arrived"] and not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
