"""Measure courier-analytics against segment-analytics-python, side by side, in one run.

    python -m benchmarks.run                 # full: N=20,000, 3 rounds (a few minutes)
    python -m benchmarks.run --quick         # smoke: tiny N, 1 round (seconds)
    python -m benchmarks.run --only small_20ms --rounds 5   # one scenario while tuning

Each client runs in its own subprocess (so CPU and RSS are that client's alone)
against a server in another process (so the server never shares its GIL): the
package's Courier stand-in for courier-analytics, a minimal ``/v1/batch`` sink for
Segment's library, both on uvicorn + httptools + uvloop on 127.0.0.1 with the same
added latency per request. Rounds interleave the clients scenario by scenario (and
swap who goes first) so both see the same noise; figures are medians over rounds
and the report is the ratio courier-analytics / segment-analytics-python.

Writes ``benchmarks/results/latest.json`` (``--out``) and a plot for the docs,
``docs/assets/performance.png`` (``--plot``). See ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import payload_bytes

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latest.json"
QUICK_OUT = ROOT / "benchmarks" / "results" / "quick.json"
DEFAULT_PLOT = ROOT / "docs" / "assets" / "performance.png"
QUICK_PLOT = ROOT / "benchmarks" / "results" / "quick.png"

LIBS = ("courier", "segment")
#: How long the server waits for a shortfall of events after the client flushed (s).
SERVER_WAIT_S = 10.0
LIB_NAMES = {
    "courier": "courier-analytics",
    "segment": "segment-analytics-python",
    "trycourier": "trycourier (inline)",
}

#: name -> what the client does, with which payload, against which server behaviour.
SCENARIOS: dict[str, dict[str, Any]] = {
    "small_0ms": {"mode": "deliver", "payload": "small", "latency_ms": 0},
    "small_20ms": {"mode": "deliver", "payload": "small", "latency_ms": 20},
    "small_100ms": {"mode": "deliver", "payload": "small", "latency_ms": 100},
    "kb_0ms": {"mode": "deliver", "payload": "kb", "latency_ms": 0},
    "stalled": {"mode": "stall", "payload": "small", "hang": True},
}
#: trycourier called inline, blocking per call (item 5, a reference, not a target).
REFERENCE: dict[str, dict[str, Any]] = {
    "inline_0ms": {"mode": "inline", "payload": "small", "latency_ms": 0},
    "inline_20ms": {"mode": "inline", "payload": "small", "latency_ms": 20},
}

#: figure -> (scenario, reading, unit, target ratio or None, description)
FIGURES: dict[str, tuple[str, str, str, float | None, str]] = {
    "caller_us_small": ("small_0ms", "caller_us", "us", 0.25, "caller cost per track(), ~100 B"),
    "caller_us_kb": ("kb_0ms", "caller_us", "us", None, "caller cost per track(), ~1 KB"),
    "time_s_0ms": ("small_0ms", "time_s", "s", None, "time until server has N, 0 ms"),
    "time_s_20ms": ("small_20ms", "time_s", "s", 1.0, "time until server has N, 20 ms"),
    "time_s_100ms": ("small_100ms", "time_s", "s", None, "time until server has N, 100 ms"),
    "cpu_us_per_event": ("small_0ms", "cpu_us_per_event", "us", 3.0, "process CPU per event, 0 ms"),
    "cpu_us_per_event_20ms": (
        "small_20ms",
        "cpu_us_per_event",
        "us",
        None,
        "process CPU per event, 20 ms",
    ),
    "rss_peak_mb_stalled": (
        "stalled",
        "rss_peak_mb",
        "MB",
        1.0,
        "peak RSS, queued behind a stalled server",
    ),
}
REFERENCE_FIGURES: dict[str, tuple[str, str, str, str]] = {
    "trycourier_inline_us_0ms": ("inline_0ms", "caller_us", "us", "inline call, 0 ms"),
    "trycourier_inline_us_20ms": ("inline_20ms", "caller_us", "us", "inline call, 20 ms"),
}


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"{time.monotonic() - _T0:7.1f}s {message}", file=sys.stderr, flush=True)


class Server:
    """A server process (``benchmarks.servers``) driven over JSON lines."""

    def __init__(self, kind: str, max_lifetime: float) -> None:
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.servers", "--kind", kind,
             "--max-lifetime", str(max_lifetime)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        self.url: str = self._read(30)["url"]

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the {self.kind} server process did not answer in {timeout}s")
        data: dict[str, Any] = json.loads(line)
        if "error" in data:
            raise RuntimeError(f"the {self.kind} server process: {data['error']}")
        return data

    def command(self, cmd: str, read_timeout: float = 30, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        return self._read(read_timeout)

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # EOF: the server exits by itself
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)


def run_client(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one client subprocess and return its readings."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.client", json.dumps(spec)],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{spec['lib']} {spec['mode']} took more than {timeout}s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{spec['lib']} {spec['mode']} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure(
    lib: str, scenario: dict[str, Any], server: Server, args: argparse.Namespace, n: int
) -> dict[str, Any]:
    """One client, one scenario: the client's and the server's readings combined."""
    mode = scenario["mode"]
    warmup = 0 if mode in ("inline", "stall") else args.warmup  # a stalled flush never ends
    server.command(
        "reset",
        latency_ms=scenario.get("latency_ms", 0),
        hang=scenario.get("hang", False),
        target=warmup + n,
    )
    spec = {
        "lib": lib,
        "mode": mode,
        "url": server.url,
        "n": n,
        "warmup": warmup,
        "payload": scenario["payload"],
        "max_in_flight": args.max_in_flight if lib == "courier" else None,
        "settle_s": args.settle,
        "courier_src": str(args.courier_src) if args.courier_src else None,
    }
    client = run_client(spec, args.timeout)
    if "courier_file" in client:
        args.courier_file = client["courier_file"]
    record: dict[str, Any] = {
        "n": n,
        "caller_us": client["caller_us"],
        "caller_cpu_us": client["caller_cpu_us"],
        "rss_peak_mb": client["rss_peak_kb"] / 1024,
    }
    if mode == "stall":
        record["rss_mb"] = client["rss_kb"] / 1024
        record["rss_base_mb"] = client["rss_base_kb"] / 1024
        return record
    # The client has flushed, so everything is answered; the wait only bounds a shortfall.
    seen = server.command("wait", read_timeout=SERVER_WAIT_S + 30, timeout=SERVER_WAIT_S)
    record["cpu_us_per_event"] = client["cpu_s"] / n * 1e6
    record["server_cpu_us_per_event"] = seen["cpu_s"] / n * 1e6
    record["server_events"] = seen["count"]
    record["server_requests"] = seen["requests"]
    reached = seen["reached_at"]
    record["time_s"] = None if reached is None else reached - client["t0"]
    if reached is None:
        log(f"  ! the server saw {seen['count']} of {warmup + n} events")
    return record


def _median(values: list[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(numbers) if numbers else None


def summarise(rounds: list[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """Medians per scenario, reading and client; then the headline figures and ratios."""
    medians: dict[str, dict[str, dict[str, float | None]]] = {}
    for round_ in rounds:
        for scenario, by_lib in round_.items():
            for lib, record in by_lib.items():
                slot = medians.setdefault(scenario, {}).setdefault(lib, {})
                for key in record:
                    slot[key] = None  # filled below
    for scenario, by_lib in medians.items():
        for lib, slot in by_lib.items():
            for key in slot:
                slot[key] = _median(
                    [r[scenario][lib].get(key) for r in rounds if lib in r.get(scenario, {})]
                )

    def pick(scenario: str, lib: str, reading: str) -> float | None:
        return medians.get(scenario, {}).get(lib, {}).get(reading)

    figures: dict[str, Any] = {}
    for name, (scenario, reading, unit, target, what) in FIGURES.items():
        ours, peer = pick(scenario, "courier", reading), pick(scenario, "segment", reading)
        ratio = ours / peer if ours is not None and peer else None
        figures[name] = {
            "what": what,
            "unit": unit,
            "courier": ours,
            "segment": peer,
            "ratio": ratio,
            "target": target,
            "met": None if ratio is None or target is None else ratio <= target,
        }
    reference: dict[str, Any] = {}
    for name, (scenario, reading, unit, what) in REFERENCE_FIGURES.items():
        reference[name] = {
            "what": what,
            "unit": unit,
            "trycourier": pick(scenario, "trycourier", reading),
        }
    return {"medians": medians, "figures": figures, "reference": reference}


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.2f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(summary: dict[str, Any]) -> str:
    """The headline figures as a Markdown table."""
    lines = [
        "| figure | courier-analytics | segment-analytics-python | ratio | target | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for item in summary["figures"].values():
        target = item["target"]
        met = {True: "yes", False: "**no**", None: ""}[item["met"]]
        lines.append(
            f"| {item['what']} ({item['unit']}) | {_fmt(item['courier'])} | {_fmt(item['segment'])}"
            f" | {_fmt(item['ratio'], 'ratio')} | {'<= ' + str(target) if target else ''} | {met} |"
        )
    for item in summary["reference"].values():
        lines.append(
            f"| trycourier {item['what']} ({item['unit']}) | | | | reference: "
            f"{_fmt(item['trycourier'])} | |"
        )
    return "\n".join(lines)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _dirty() -> bool | None:
    """Whether courier_analytics/ differs from the commit (the figures are then the tree's)."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--", "courier_analytics"], cwd=ROOT,
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(done.stdout.strip()) if done.returncode == 0 else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny N, 1 round: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1)")
    parser.add_argument("--n", type=int, help="tracks per delivery scenario (default 20000)")
    parser.add_argument("--stall-n", type=int, help="messages queued when stalled (100000)")
    parser.add_argument("--inline-n", type=int, help="trycourier inline calls at 0 ms (1000)")
    parser.add_argument("--warmup", type=int, help="untimed tracks before each scenario (200)")
    parser.add_argument("--settle", type=float, help="seconds to wait before reading RSS (1.0)")
    parser.add_argument(
        "--only",
        help="comma-separated scenarios to run: " + ", ".join([*SCENARIOS, *REFERENCE]),
    )
    parser.add_argument(
        "--max-in-flight", type=int, help="courier-analytics max_in_flight (client default)"
    )
    parser.add_argument(
        "--courier-src",
        type=Path,
        help="directory holding the courier_analytics to measure (default: the installed one),"
        " e.g. a baseline from `git archive HEAD courier_analytics | tar -x -C /tmp/base`",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="limit per client run (s)")
    parser.add_argument("--out", type=Path, help=f"JSON result file ({DEFAULT_OUT.name})")
    parser.add_argument("--plot", type=Path, help="PNG plot (docs/assets/performance.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rounds": 1 if quick else 3,
        "n": 300 if quick else 20_000,
        "stall_n": 3_000 if quick else 100_000,
        "inline_n": 20 if quick else 1_000,
        "warmup": 20 if quick else 200,
        "settle": 0.2 if quick else 1.0,
        "out": QUICK_OUT if quick else DEFAULT_OUT,
        "plot": QUICK_PLOT if quick else DEFAULT_PLOT,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.n < 1:
        parser.error("--rounds and --n must be at least 1")
    known = [*SCENARIOS, *REFERENCE]
    args.scenarios = known if not args.only else [s.strip() for s in args.only.split(",")]
    unknown = sorted(set(args.scenarios) - set(known))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return args


def size_for(name: str, args: argparse.Namespace) -> int:
    """Tracks per scenario: N, except the 1 KB caller-cost run (N/4: it times the
    call, which needs no 20,000), the stalled queue and trycourier's blocking calls."""
    if name == "kb_0ms":
        return max(1, int(args.n) // 4)
    if name == "stalled":
        return int(args.stall_n)
    if name == "inline_0ms":
        return int(args.inline_n)
    if name == "inline_20ms":
        return max(1, int(args.inline_n) // 10)
    return int(args.n)


def write_result(
    args: argparse.Namespace,
    argv: list[str] | None,
    rounds: list[dict[str, dict[str, dict[str, Any]]]],
    started: float,
    *,
    complete: bool,
) -> dict[str, Any]:
    """Summarise the rounds so far and write the JSON result (also after each round)."""
    summary = summarise(rounds)
    result = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(
                ["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]
            ),
            "complete": complete,
            "quick": args.quick,
            "rounds": len(rounds),
            "rounds_asked": args.rounds,
            "n": args.n,
            "stall_n": args.stall_n,
            "inline_n": args.inline_n,
            "warmup": args.warmup,
            "max_in_flight": args.max_in_flight,
            "payload_bytes": {"small": payload_bytes("small"), "kb": payload_bytes("kb")},
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "git_commit": _git_commit(),
            "courier_src": str(args.courier_src) if args.courier_src else None,
            "courier_analytics_dirty": None if args.courier_src else _dirty(),
            "courier_analytics_file": getattr(args, "courier_file", None),
            "versions": {
                dist: _version(dist)
                for dist in (
                    "courier-analytics",
                    "segment-analytics-python",
                    "trycourier",
                    "httpx",
                    "httpcore",
                    "requests",
                    "uvicorn",
                )
            },
            "seconds": round(time.monotonic() - started, 1),
        },
        **summary,
        "rounds_raw": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    missing = [d for d in ("segment-analytics-python", "trycourier", "uvicorn") if not _version(d)]
    if missing:
        log(f"missing benchmark dependencies: {', '.join(missing)}; "
            "run: pip install -r benchmarks/requirements.txt")  # fmt: skip
        return 2
    lifetime = args.timeout * 4 + 3600
    servers = {kind: Server(kind, lifetime) for kind in LIBS}
    rounds: list[dict[str, dict[str, dict[str, Any]]]] = []
    try:
        for index in range(args.rounds):
            order = LIBS if index % 2 == 0 else LIBS[::-1]
            this_round: dict[str, dict[str, dict[str, Any]]] = {}
            rounds.append(this_round)
            for name in args.scenarios:
                scenario = SCENARIOS.get(name) or REFERENCE[name]
                libs = ("trycourier",) if name in REFERENCE else order
                for lib in libs:
                    server = servers["segment" if lib == "segment" else "courier"]
                    n = size_for(name, args)
                    record = measure(lib, scenario, server, args, n)
                    this_round.setdefault(name, {})[lib] = record
                    shown = ", ".join(
                        f"{key}={_fmt(record.get(key))}"
                        for key in ("caller_us", "time_s", "cpu_us_per_event", "rss_peak_mb")
                        if record.get(key) is not None
                    )
                    log(f"[round {index + 1}/{args.rounds}] {name:<12} {lib:<10} n={n}: {shown}")
            if index + 1 < args.rounds:  # a partial result survives an interrupted run
                write_result(args, argv, rounds, started, complete=False)
    finally:
        for server in servers.values():
            server.close()

    result = write_result(args, argv, rounds, started, complete=True)
    print(table(result))
    print(f"\n{args.rounds} round(s), N={args.n}, {result['meta']['seconds']} s; wrote {args.out}")
    if not args.no_plot:
        from benchmarks.plot import plot

        if plot(result, args.plot):
            print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
