"""A fleet on Redis Streams: producer processes commit, relay processes deliver.

    python -m benchmarks.fleet                 # 4 producers x 10,000 tracks, 3 rounds
    python -m benchmarks.fleet --quick         # smoke: tiny counts, 1 round
    python -m benchmarks.fleet --out fleet.json --rounds 5

Everything runs on this machine: a real `redis-server` (a temporary folder, a free
port, AOF on with `appendfsync everysec`, as docs/fleets.md recommends), the minimal
Courier sink of `benchmarks/servers.py` (or the package's stand-in, `--sink
standin`) on 127.0.0.1 in this process's own thread, and processes:

- **End to end.** Two `courier-analytics relay --spool redis://...` processes are
  started and left to share the shards; then four producer processes
  (`deliver=False`), ready and waiting, are told to go, and each makes its tracks
  over 1,000 users as fast as it can. Throughput is events from "go" until the
  sink has answered the last one; CPU per event is read per process (producers:
  their own `getrusage` around making and committing; relays and Redis: their
  `/proc/PID/stat` over the same window; the sink: this process).
- **Drain rate by relays.** 1, 2 and 4 relays share the shards of an empty stream;
  then a backlog committed beforehand to another stream appears at once (its shards
  are renamed into place, consumer group and all) and the relays drain it.

The sink records every messageId it is sent: each run checks that every message
arrived (distinct ids) and counts repeats. Rounds interleave the scenarios; the
report is medians. Figures belong in docs/fleets.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):  # `python benchmarks/fleet.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import API_KEY, PAYLOADS, USERS, cpu_seconds, send_line
from benchmarks.servers import COURIER_PATHS, CourierSink, CourierStandIn
from benchmarks.servers import Counter as SinkCounter

#: Shard streams (the library's default): the most relays that can share work.
SHARDS = 8
PRODUCERS = 4
E2E_RELAYS = 2
#: Seconds a phase may take before it counts as failed (a loaded machine is slow).
PHASE_LIMIT = 600.0
#: Seconds between two looks at Redis while relays settle (this harness's own wait).
LOOK = 0.05


# ------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def process_cpu(pid: int) -> float:
    """User + system CPU seconds a live process has used (Linux `/proc/PID/stat`)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _environment() -> dict[str, str]:
    """This environment without COURIER_ settings (the run passes its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}


class RedisProcess:
    """A `redis-server` on 127.0.0.1 with AOF on, in `folder`; `stop()` ends it."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(folder), "--save", ""]
        command += ["--appendonly", "yes", "--appendfsync", "everysec"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError(f"redis-server ended early (exit {self.process.wait()})")

    def url(self, stream: str) -> str:
        """The spool URL of `stream` on this server."""
        return f"redis://127.0.0.1:{self.port}/0?stream={stream}&shards={SHARDS}"

    def stop(self) -> None:
        """SIGTERM (it writes its AOF and exits), and wait."""
        self.process.terminate()
        self.process.communicate(timeout=60)


def start_relays(url: str, base_url: str, count: int, log: Path) -> list[subprocess.Popen[str]]:
    """`count` `courier-analytics relay` processes on the spool at `url`."""
    command = [sys.executable, "-m", "courier_analytics", "relay", "--spool", url]
    command += ["--base-url", base_url, "--api-key", API_KEY]
    with log.open("a") as out:
        return [
            subprocess.Popen(command, stdout=out, stderr=out, env=_environment())
            for _ in range(count)
        ]


def stop_all(processes: list[subprocess.Popen[str]]) -> None:
    """SIGTERM each (a relay releases its shards) and wait for all."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=60)


def start_producers(url: str, base_url: str, count: int) -> list[subprocess.Popen[str]]:
    """The producer processes, started and ready (imported, client made) for `go`."""
    producers = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet", "--producer", url, base_url,
             str(count), f"p{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_environment(),
            cwd=Path(__file__).resolve().parent.parent,
        )
        for n in range(PRODUCERS)
    ]  # fmt: skip
    for process in producers:
        assert process.stdout is not None
        if not orjson.loads(process.stdout.readline()).get("ready"):
            raise RuntimeError("a producer did not start")
    return producers


def producer_main(url: str, base_url: str, count: int, name: str) -> None:
    """A producer process: wait for `go`, make `count` tracks, flush; report in JSON."""
    from courier_analytics import Client

    client = Client(
        api_key=API_KEY,
        base_url=base_url,
        spool=url,
        deliver=False,
        max_queue_size=max(count, 10_000),  # as fast as it can, nothing dropped
        flush_at_exit=False,
    )
    properties = PAYLOADS["small"]
    send_line(sys.stdout, {"ready": True})
    sys.stdin.readline()
    started, cpu = time.monotonic(), cpu_seconds()
    for n in range(count):
        client.track("Order Completed", properties, user_id=f"{name}-u{n % USERS}")
    flushed = client.flush(PHASE_LIMIT)
    report = {
        "flushed": flushed,
        "started": started,
        "ended": time.monotonic(),
        "cpu_s": cpu_seconds() - cpu,
        "committed": client.stats.committed,
        "dropped": client.stats.dropped,
    }
    send_line(sys.stdout, report)
    sys.stdin.readline()  # stdin closes: done
    client.shutdown(30)


# ------------------------------------------------------------------------ sink


class RecordingSink:
    """An ASGI wrapper that records each messageId sent to Courier's inbound paths.

    `target` distinct ids set `reached` (and `reached_at`, `time.monotonic()`).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.reset(0)

    def reset(self, target: int) -> None:
        """Forget what was seen; wait for `target` distinct ids."""
        self.ids: Counter[str] = Counter()
        self.target = target
        self.reached_at: float | None = None
        self.reached = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "http" or scope["path"] not in COURIER_PATHS:
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []

        async def tap() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            chunks.append(message.get("body", b""))
            return message

        result = await self.app(scope, tap, send)
        self.ids[orjson.loads(b"".join(chunks)).get("messageId", "")] += 1
        if self.reached_at is None and len(self.ids) >= self.target > 0:
            self.reached_at = time.monotonic()
            self.reached.set()
        return result


@contextlib.contextmanager
def serving(kind: str) -> Iterator[tuple[str, RecordingSink]]:
    """The sink on 127.0.0.1 in a thread of this process: its base URL and recorder."""
    import uvicorn

    from benchmarks.servers import _config

    inner: Any = CourierStandIn(SinkCounter()) if kind == "standin" else CourierSink(SinkCounter())
    sink = RecordingSink(inner)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    server = uvicorn.Server(_config(sink, None, None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(LOOK)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", sink
    finally:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------------- phases


def _redis_client(port: int) -> Any:
    import redis

    return redis.Redis(port=port)


def wait_balanced(r: Any, stream: str, relays: int) -> None:
    """Wait until `relays` relays are registered and hold every shard, their share each."""
    share = -(-SHARDS // relays)
    deadline = time.monotonic() + PHASE_LIMIT
    while time.monotonic() < deadline:
        holders = r.mget([f"{stream}:lease:{shard}" for shard in range(SHARDS)])
        held = Counter(holders)
        if (
            r.zcard(f"{stream}:consumers") == relays
            and None not in held
            and len(held) == relays
            and max(held.values()) <= share
        ):
            return
        time.sleep(LOOK)
    raise RuntimeError(f"{relays} relays did not share the shards of {stream}")


def wait_empty(r: Any, stream: str) -> int:
    """Wait until the streams are empty (the last acknowledgements); what is left."""
    deadline = time.monotonic() + 60
    left = -1
    while time.monotonic() < deadline:
        left = sum(r.xlen(f"{stream}:{shard}") for shard in range(SHARDS))
        if left == 0:
            break
        time.sleep(LOOK)
    return left


def _cpu(pids: list[int]) -> list[float]:
    return [process_cpu(pid) for pid in pids]


def end_to_end(ctx: dict[str, Any], stream: str, count: int) -> dict[str, Any]:
    """Four producers make `count` tracks each; two relays deliver them to the sink."""
    redis_server, base_url, sink = ctx["redis"], ctx["base_url"], ctx["sink"]
    url, r = redis_server.url(stream), ctx["r"]
    relays = start_relays(url, base_url, E2E_RELAYS, ctx["log"])
    producers: list[subprocess.Popen[str]] = []
    try:
        wait_balanced(r, stream, E2E_RELAYS)
        producers = start_producers(url, base_url, count)
        total = count * PRODUCERS
        sink.reset(total)
        watched = [p.pid for p in relays] + [redis_server.process.pid]
        before, sink_before = _cpu(watched), cpu_seconds()
        go = time.monotonic()
        for process in producers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = [orjson.loads(p.stdout.readline()) for p in producers]  # type: ignore[union-attr]
        sink.reached.wait(PHASE_LIMIT)
        after, sink_after = _cpu(watched), cpu_seconds()
        for process in producers:
            process.communicate(timeout=60)
        left = wait_empty(r, stream)
    finally:
        for process in producers:
            process.kill()  # only those still running (an interrupted run)
            process.communicate()
        stop_all(relays)
    spent = [b - a for a, b in zip(before, after, strict=True)]
    done = sink.reached_at
    committed_at = max(report["ended"] for report in reports)
    return {
        "events": total,
        "events_per_s": total / (done - go) if done else 0.0,
        "commit_events_per_s": total / (committed_at - go),
        "producer_cpu_us": 1e6 * sum(rep["cpu_s"] for rep in reports) / total,
        "relay_cpu_us": 1e6 * sum(spent[:E2E_RELAYS]) / total,
        "redis_cpu_us": 1e6 * spent[-1] / total,
        "sink_cpu_us": 1e6 * (sink_after - sink_before) / total,
        **_arrivals(sink, total, left),
        "dropped": sum(rep["dropped"] for rep in reports),
    }


def _arrivals(sink: RecordingSink, expected: int, left: int) -> dict[str, int]:
    """What the sink saw: distinct ids, repeats, and what never arrived."""
    distinct = len(sink.ids)
    return {
        "distinct": distinct,
        "duplicates": sum(sink.ids.values()) - distinct,
        "lost": max(0, expected - distinct),
        "left_in_spool": left,
    }


def prefill(redis_server: RedisProcess, stream: str, count: int) -> None:
    """Commit `count` tracks to `stream`'s shards, as producers would, in batches."""
    from courier_analytics._messages import compact, new_message_id, now_ms, pack
    from courier_analytics._spool._redis import RedisBackend

    backend = RedisBackend(redis_server.url(stream), owner="prefill", lease=60, deliver=False)
    backend.open()
    payload = PAYLOADS["small"]
    for start in range(0, count, 2000):
        batch = [
            compact("track", f"user-{n % USERS}", None, "Order Completed",
                    pack(now_ms(), new_message_id(), "properties", payload))
            for n in range(start, min(count, start + 2000))
        ]  # fmt: skip
        backend.commit(batch, time.time(), True)
    backend.close()


def drain(ctx: dict[str, Any], stream: str, relays_count: int, backlog: int) -> dict[str, Any]:
    """`relays_count` relays, settled, drain a backlog of `backlog` that appears at once."""
    redis_server, sink, r = ctx["redis"], ctx["sink"], ctx["r"]
    filled = f"{stream}-fill"
    prefill(redis_server, filled, backlog)
    relays = start_relays(redis_server.url(stream), ctx["base_url"], relays_count, ctx["log"])
    try:
        wait_balanced(r, stream, relays_count)
        sink.reset(backlog)
        watched = [p.pid for p in relays] + [redis_server.process.pid]
        before = _cpu(watched)
        pipe = r.pipeline(transaction=True)
        for shard in range(SHARDS):
            pipe.rename(f"{filled}:{shard}", f"{stream}:{shard}")
        pipe.execute()
        started = time.monotonic()
        sink.reached.wait(PHASE_LIMIT)
        after = _cpu(watched)
        left = wait_empty(r, stream)
    finally:
        stop_all(relays)
    spent = [b - a for a, b in zip(before, after, strict=True)]
    done = sink.reached_at
    return {
        "relays": relays_count,
        "events": backlog,
        "events_per_s": backlog / (done - started) if done else 0.0,
        "relay_cpu_us": 1e6 * sum(spent[:-1]) / backlog,
        "redis_cpu_us": 1e6 * spent[-1] / backlog,
        **_arrivals(sink, backlog, left),
    }


# ---------------------------------------------------------------------- report


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of each figure, per scenario."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for result in rounds:
        by_name.setdefault(result["scenario"], []).append(result)
    summary: dict[str, Any] = {}
    for name, results in by_name.items():
        keys = [k for k, v in results[0].items() if isinstance(v, int | float)]
        summary[name] = {k: statistics.median(r[k] for r in results) for k in keys}
        for k in ("duplicates", "lost", "left_in_spool", "dropped"):
            if k in summary[name]:  # a total over rounds, not a median: none may hide
                summary[name][k] = sum(r[k] for r in results)
    return summary


def table(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The report, as text."""
    e2e = summary["end_to_end"]
    lines = [
        f"fleet: {PRODUCERS} producers x {meta['events']:,} tracks, {E2E_RELAYS} relays, "
        f"{SHARDS} shards, sink={meta['sink']}, {meta['rounds']} round(s), medians",
        f"load {meta['load_before']} -> {meta['load_after']} (1/5/15 min), {meta['cpus']} CPUs",
        "",
        f"end to end (made -> answered)  {e2e['events_per_s']:>9,.0f} events/s"
        f"   (committed: {e2e['commit_events_per_s']:,.0f} events/s)",
        f"CPU per event (us)             producer {e2e['producer_cpu_us']:.1f}, "
        f"relay {e2e['relay_cpu_us']:.1f}, redis {e2e['redis_cpu_us']:.1f}, "
        f"sink {e2e['sink_cpu_us']:.1f}",
        "",
        f"drain of a {meta['backlog']:,} backlog  events/s   vs 1 relay  "
        "relay CPU us/event  redis us/event",
    ]
    one = summary.get("drain_1", {}).get("events_per_s") or 0.0
    for name, figures in summary.items():
        if not name.startswith("drain_"):
            continue
        ratio = figures["events_per_s"] / one if one else 0.0
        lines.append(
            f"  {int(figures['relays'])} relay(s)               {figures['events_per_s']:>9,.0f}"
            f"   x{ratio:<9.2f} {figures['relay_cpu_us']:>17.1f}  {figures['redis_cpu_us']:>14.1f}"
        )
    checks = {k: sum(f.get(k, 0) for f in summary.values()) for k in ("lost", "duplicates")}
    lines += [
        "",
        f"every message arrived: lost {checks['lost']}, repeats {checks['duplicates']}, "
        f"left in the spool {sum(f.get('left_in_spool', 0) for f in summary.values())}, "
        f"dropped by producers {e2e.get('dropped', 0)}",
    ]
    return "\n".join(lines)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every round of every scenario; the results and their medians."""
    meta = {
        "events": args.events,
        "backlog": args.backlog,
        "relays": args.relays,
        "rounds": args.rounds,
        "sink": args.sink,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_before": _load(),
        "command": " ".join(["python -m benchmarks.fleet", *sys.argv[1:]]),
    }
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder, serving(args.sink) as (base_url, sink):
        redis_server = RedisProcess(Path(folder))
        ctx = {"redis": redis_server, "base_url": base_url, "sink": sink}
        ctx["r"], ctx["log"] = _redis_client(redis_server.port), Path(folder) / "relays.log"
        try:
            for n in range(args.rounds):
                result = end_to_end(ctx, f"e2e-{n}", args.events)
                rounds.append({"scenario": "end_to_end", "round": n, **result})
                print(orjson.dumps(rounds[-1]).decode(), file=sys.stderr, flush=True)
                for relays in args.relays:
                    result = drain(ctx, f"drain-{n}-{relays}", relays, args.backlog)
                    rounds.append({"scenario": f"drain_{relays}", "round": n, **result})
                    print(orjson.dumps(rounds[-1]).decode(), file=sys.stderr, flush=True)
        finally:
            ctx["r"].close()
            redis_server.stop()
    meta["load_after"] = _load()
    return {"meta": meta, "rounds": rounds, "summary": summarise(rounds)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--producer"]:
        url, base_url, count, name = argv[1:5]
        producer_main(url, base_url, int(count), name)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke: tiny counts, 1 round")
    parser.add_argument("--events", type=int, default=10_000, help="tracks per producer")
    parser.add_argument("--backlog", type=int, default=20_000, help="the drained backlog")
    parser.add_argument("--relays", default="1,2,4", help="relay counts for the drain rate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sink", choices=("courier", "standin"), default="courier")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    args.relays = [int(n) for n in args.relays.split(",")]
    if args.quick:
        args.events, args.backlog, args.rounds, args.relays = 250, 1000, 1, [1, 2]
    if shutil.which("redis-server") is None:
        print(
            "benchmarks.fleet needs redis-server (Debian's redis-server package)", file=sys.stderr
        )
        return 2
    results = run(args)
    print(table(results["summary"], results["meta"]))
    if args.out is not None:
        args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    lost = sum(f.get("lost", 0) for f in results["summary"].values())
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
