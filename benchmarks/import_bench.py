"""Measure `courier-analytics import`: 100,000 identifies from a gzipped export into the sink.

    python -m benchmarks.import_bench               # N=100,000, 3 rounds
    python -m benchmarks.import_bench --n 2000 --rounds 1   # smoke

The export is made once (Segment-spec identifies as Segment's S3 destination
writes them, context and all, over 1,000 users, gzipped). Each round runs the
command as a user would, in its own process, against the Courier sink of
``benchmarks/servers.py`` (which answers as Courier does and counts what it
accepted), with a fresh state file. Reported per round and as medians:

- ``events_per_s``: identifies accepted by the sink / the command's wall time
  (start to exit: interpreter start, reading, gunzip, validation, delivery);
- ``cpu_us_per_event``: the command's CPU (user + system, all threads) / identifies.

Prints one JSON object; the figures belong in docs/performance.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/import_bench.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from benchmarks._common import API_KEY, USERS
from benchmarks.run import ROOT, Server


def write_export(path: Path, n: int) -> None:
    """`n` identifies as JSON lines, gzipped, as Segment's S3 destination writes them."""
    with gzip.open(path, "wb", compresslevel=6) as file:
        for i in range(n):
            message = {
                "type": "identify",
                "messageId": f"bench-{i:08d}",
                "timestamp": "2024-03-01T12:00:00.000Z",
                "userId": f"user-{i % USERS}",
                "traits": {"email": f"user{i % USERS}@example.com", "plan": "pro", "seq": i},
                "context": {"ip": "203.0.113.9", "library": {"name": "analytics.js"}},
                "integrations": {},
                "receivedAt": "2024-03-01T12:00:01.000Z",
                "sentAt": "2024-03-01T12:00:00.900Z",
            }
            file.write(orjson.dumps(message) + b"\n")


def one_round(server: Server, export: Path, n: int, folder: Path) -> dict[str, Any]:
    """Run the command once; its wall time, CPU and what the sink accepted."""
    server.command("reset", target=n)
    state = folder / f"state-{time.monotonic_ns()}.json"
    argv = [sys.executable, "-m", "courier_analytics", "import", str(export),
            "--api-key", API_KEY, "--base-url", server.url, "--state", str(state)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"the import failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    received = server.command("wait", timeout=5)["count"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": round(wall, 3),
        "received": received,
        "events_per_s": round(received / wall),
        "cpu_us_per_event": round(cpu / n * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="identifies in the export")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    server = Server("courier", max_lifetime=1800)
    try:
        with tempfile.TemporaryDirectory(prefix="courier-import-bench-") as name:
            folder = Path(name)
            export = folder / "export.json.gz"
            write_export(export, args.n)
            rounds = [one_round(server, export, args.n, folder) for _ in range(args.rounds)]
    finally:
        server.close()
    if any(r["received"] != args.n for r in rounds):
        raise RuntimeError(f"the sink did not receive every identify: {rounds}")
    result = {
        "n": args.n,
        "rounds": rounds,
        "events_per_s": statistics.median(r["events_per_s"] for r in rounds),
        "cpu_us_per_event": statistics.median(r["cpu_us_per_event"] for r in rounds),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
