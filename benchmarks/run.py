"""Measure courier-analytics against segment-analytics-python, side by side, in one run.

    python -m benchmarks.run                 # full: N=20,000, 3 rounds (a few minutes)
    python -m benchmarks.run --quick         # smoke: tiny N, 1 round (seconds)
    python -m benchmarks.run --only small_20ms --rounds 5   # one scenario while tuning

Each client runs in its own subprocess (so CPU and RSS are that client's alone)
against a server in another process (so the server never shares its GIL): minimal
sinks that do the same little work per request (read and parse the body, count,
answer as the real API does), Courier's endpoints for courier-analytics and
``/v1/batch`` for Segment's library, both on uvicorn + httptools + uvloop on
127.0.0.1 with the same added latency per request. The server shares the two cores
with the client, which the real Courier does not; ``--courier-server standin``
serves courier-analytics from the package's Courier stand-in instead, whose CPU per
request (some 50 us here) then weighs on the client that sends one request per
event. Rounds interleave the clients scenario by scenario (and swap who goes
first) so both see the same noise; figures are medians over rounds
and the report is the ratio courier-analytics / segment-analytics-python.

The ``tls_*`` scenarios use a second pair of servers on https: a throwaway CA and
a certificate for 127.0.0.1 are made at the start of the run (``trustme``) and
trusted by the client processes only, through ``SSL_CERT_FILE`` (courier-analytics,
via httpx's SSL context) and ``REQUESTS_CA_BUNDLE`` (Segment's library, via
requests). The servers report connections and TLS handshakes per scenario.

The ``import`` and ``cold_start`` scenarios run fresh interpreters instead
(``benchmarks/cold.py``): ``import`` alone, and a cold start (import, ``Client()``,
one ``track()``, ``flush()``) against the same sinks, ``--cold-repeat`` of each per
round.

``sustained_tls_20ms`` is a busy application's steady load rather than a burst:
``--rate`` tracks a second for ``--seconds`` over TLS at 20 ms, made at that pace by
the client's own thread (``benchmarks/client.py``, ``sustain`` mode). Besides CPU per
event it reports the connections held: ``connections_peak`` (the server's count of
open connections, at its highest) and ``sockets_end`` (the client's sockets once
flushed), and the TLS handshakes.

``--baseline-src DIR`` adds a third client, ``base``: courier-analytics imported from
``DIR`` (e.g. ``git archive main courier_analytics | tar -x -C /tmp/base``), run in
the same rounds as the tree's, for an A/B side by side; the table then shows
``base`` / tree ratios too.

The ``floor`` is a reference that is not a library (see ``benchmarks/client.py``):
prebuilt requests on keep-alive connections against the same server; the report
gives courier-analytics / floor for CPU per event.

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
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import cold
from benchmarks._common import payload_bytes

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latest.json"
QUICK_OUT = ROOT / "benchmarks" / "results" / "quick.json"
DEFAULT_PLOT = ROOT / "docs" / "assets" / "performance.png"
QUICK_PLOT = ROOT / "benchmarks" / "results" / "quick.png"

LIBS = ("courier", "segment")
#: The floor's keep-alive connections (enough to keep a 0 ms server busy).
FLOOR_CONNECTIONS = 32
#: How long the server waits for a shortfall of events after the client flushed (s).
SERVER_WAIT_S = 10.0
LIB_NAMES = {
    "courier": "courier-analytics",
    "segment": "segment-analytics-python",
    "trycourier": "trycourier (inline)",
    "floor": "floor (prebuilt requests, no library)",
    "base": "courier-analytics baseline (--baseline-src)",
}
#: The sustained scenario's pace (tracks a second) and length (seconds) by default.
SUSTAINED_RATE = 2_000
SUSTAINED_S = 15.0

#: name -> what the client does, with which payload, against which server behaviour.
#: ``floor``: the floor runs too; ``users``: 1 is one busy user; ``timing``: each call.
SCENARIOS: dict[str, dict[str, Any]] = {
    "small_0ms": {"mode": "deliver", "payload": "small", "latency_ms": 0, "floor": True},
    "small_20ms": {"mode": "deliver", "payload": "small", "latency_ms": 20},
    "small_100ms": {"mode": "deliver", "payload": "small", "latency_ms": 100},
    "hot_20ms": {"mode": "deliver", "payload": "small", "latency_ms": 20, "users": 1},
    "kb_0ms": {"mode": "deliver", "payload": "kb", "latency_ms": 0},
    "tail_0ms": {"mode": "deliver", "payload": "small", "latency_ms": 0, "timing": "each"},
    "tls_0ms": {"mode": "deliver", "payload": "small", "latency_ms": 0, "tls": True,
                "floor": True},
    "tls_20ms": {"mode": "deliver", "payload": "small", "latency_ms": 20, "tls": True},
    "stalled": {"mode": "stall", "payload": "small", "hang": True},
    # A steady rate (--rate, --seconds) rather than a burst; the floor paced alike, on
    # 64 connections (Little's law: 2,000/s x 20 ms needs 40).
    "sustained_tls_20ms": {"mode": "sustain", "payload": "small", "latency_ms": 20, "tls": True,
                           "floor": True, "connections": 64},
    # With a durable spool (a SQLite file in a temporary directory): ours only.
    "spool_0ms": {"mode": "deliver", "payload": "small", "latency_ms": 0, "spool": True,
                  "libs": ("courier",)},
    "spool_20ms": {"mode": "deliver", "payload": "small", "latency_ms": 20, "spool": True,
                   "libs": ("courier",)},
    "import": {"mode": "import", "payload": "small"},
    "cold_start": {"mode": "cold", "payload": "small", "latency_ms": 0},
}  # fmt: skip
#: trycourier called inline, blocking per call (item 5, a reference, not a target).
REFERENCE: dict[str, dict[str, Any]] = {
    "inline_0ms": {"mode": "inline", "payload": "small", "latency_ms": 0},
    "inline_20ms": {"mode": "inline", "payload": "small", "latency_ms": 20},
}

#: figure -> (scenario, reading, unit, target ratio or None, description[, peer[, its
#: scenario]]). The ratio is courier-analytics / peer; the peer is Segment's library
#: unless named, in the same scenario unless named.
FIGURES: dict[str, tuple[Any, ...]] = {
    "caller_us_small": ("small_0ms", "caller_us", "us", 0.15, "caller cost per track(), ~100 B"),
    "caller_us_kb": ("kb_0ms", "caller_us", "us", None, "caller cost per track(), ~1 KB"),
    "caller_p99_us": (
        "tail_0ms", "caller_p99_us", "us", 0.5,
        "caller cost p99 while the worker delivers flat out",
    ),
    "time_s_0ms": ("small_0ms", "time_s", "s", 1.0, "20k over 1,000 users, 0 ms (wall)"),
    "time_s_20ms": ("small_20ms", "time_s", "s", 0.4, "20k over 1,000 users, 20 ms"),
    "time_s_100ms": ("small_100ms", "time_s", "s", None, "20k over 1,000 users, 100 ms"),
    "time_s_hot_20ms": ("hot_20ms", "time_s", "s", 1.0, "20k for ONE user, 20 ms"),
    "cpu_us_per_event": ("small_0ms", "cpu_us_per_event", "us", 0.8, "CPU per event, HTTP"),
    "cpu_us_per_event_20ms": (
        "small_20ms", "cpu_us_per_event", "us", None, "CPU per event, HTTP, 20 ms",
    ),
    "cpu_us_per_event_tls": ("tls_0ms", "cpu_us_per_event", "us", 0.9, "CPU per event, TLS"),
    "time_s_tls_20ms": ("tls_20ms", "time_s", "s", 0.5, "20k over 1,000 users, TLS, 20 ms"),
    "handshakes_tls_20ms": (
        "tls_20ms", "handshakes", "count", None, "TLS handshakes for 20k events, 20 ms",
    ),
    "cpu_us_per_event_tls_20ms": (
        "tls_20ms", "cpu_us_per_event", "us", 1.0, "CPU per event, TLS, 20 ms",
    ),
    "rss_peak_mb_tls_20ms": ("tls_20ms", "rss_peak_mb", "MB", 1.5, "peak RSS, TLS, 20 ms"),
    "cpu_us_per_event_sustained": (
        "sustained_tls_20ms", "cpu_us_per_event", "us", 0.8,
        "CPU per event, steady rate, TLS, 20 ms",
    ),
    "connections_peak_sustained": (
        "sustained_tls_20ms", "connections_peak", "count", None,
        "connections open at most, steady rate",
    ),
    "connections_end_sustained": (
        "sustained_tls_20ms", "sockets_end", "count", None,
        "connections held at the end, steady rate",
    ),
    "handshakes_sustained": (
        "sustained_tls_20ms", "handshakes", "count", None, "TLS handshakes, steady rate",
    ),
    "rss_peak_mb_stalled": (
        "stalled", "rss_peak_mb", "MB", 0.4, "peak RSS with 100k queued (stalled server)",
    ),
    "import_ms": ("import", "import_ms", "ms", 0.5, "import alone, fresh interpreter"),
    "import_cpu_ms": ("import", "import_cpu_ms", "ms", None, "import alone, CPU"),
    "cold_start_ms": (
        "cold_start", "cold_ms", "ms", 0.1, "cold start: import, Client(), track(), flush()",
    ),
    "cold_start_cpu_ms": ("cold_start", "cold_cpu_ms", "ms", None, "cold start, CPU"),
    "cold_process_ms": (
        "cold_start", "process_ms", "ms", None, "cold start, whole process (start-up, exit)",
    ),
    "floor_cpu_http": (
        "small_0ms", "cpu_us_per_event", "us", 1.5, "CPU per event, HTTP, vs the floor", "floor",
    ),
    "floor_cpu_tls": (
        "tls_0ms", "cpu_us_per_event", "us", None, "CPU per event, TLS, vs the floor", "floor",
    ),
    "floor_cpu_sustained": (
        "sustained_tls_20ms", "cpu_us_per_event", "us", 1.8,
        "CPU per event, steady rate, vs the floor", "floor",
    ),
    "caller_us_spool": (
        "spool_0ms", "caller_us", "us", None, "caller cost per track(), with a spool",
        "segment", "small_0ms",
    ),
    "cpu_us_per_event_spool": (
        "spool_0ms", "cpu_us_per_event", "us", None, "CPU per event, HTTP, with a spool",
        "segment", "small_0ms",
    ),
    "time_s_spool_20ms": (
        "spool_20ms", "time_s", "s", 0.5, "20k over 1,000 users, 20 ms, with a spool",
        "segment", "small_20ms",
    ),
}  # fmt: skip
#: Ratios of two courier-analytics figures: name -> (figure, over figure, target, what).
SELF_RATIOS: dict[str, tuple[str, str, float, str]] = {
    "hot_vs_spread_20ms": (
        "time_s_hot_20ms", "time_s_20ms", 2.0, "one user / 1,000 users, 20 ms (ours)",
    ),
    "spool_vs_memory_caller": (
        "caller_us_spool", "caller_us_small", 1.1, "caller cost, with a spool / without (ours)",
    ),
    "spool_vs_memory_cpu": (
        "cpu_us_per_event_spool", "cpu_us_per_event", 1.3,
        "CPU per event, with a spool / without (ours)",
    ),
}  # fmt: skip
REFERENCE_FIGURES: dict[str, tuple[str, str, str, str]] = {
    "trycourier_inline_us_0ms": ("inline_0ms", "caller_us", "us", "inline call, 0 ms"),
    "trycourier_inline_us_20ms": ("inline_20ms", "caller_us", "us", "inline call, 20 ms"),
}


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"{time.monotonic() - _T0:7.1f}s {message}", file=sys.stderr, flush=True)


class Server:
    """A server process (``benchmarks.servers``) driven over JSON lines."""

    def __init__(self, kind: str, max_lifetime: float, tls: tuple[Path, Path] | None = None):
        self.kind = kind
        extra = [] if tls is None else ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.servers", "--kind", kind,
             "--max-lifetime", str(max_lifetime), *extra],
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


class ThrowawayCA:
    """A CA and a certificate for 127.0.0.1, in a temporary directory, for one run."""

    def __init__(self) -> None:
        import trustme

        self._dir = tempfile.TemporaryDirectory(prefix="courier-bench-tls-")
        folder = Path(self._dir.name)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = folder / "ca.pem"
        self.cert_file = folder / "server.pem"
        self.key_file = folder / "server.key"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(self.key_file))
        cert.cert_chain_pems[0].write_to_path(str(self.cert_file))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(self.cert_file), append=True)

    def client_env(self) -> dict[str, str]:
        """The environment of a client process that trusts this CA (and only it)."""
        ca = str(self.ca_file)
        return {**os.environ, "SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca}

    def close(self) -> None:
        self._dir.cleanup()


def run_client(
    spec: dict[str, Any], timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one client subprocess and return its readings."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.client", json.dumps(spec)],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env,
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
    lib: str,
    scenario: dict[str, Any],
    server: Server,
    args: argparse.Namespace,
    n: int,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One client, one scenario: the client's and the server's readings combined."""
    mode = scenario["mode"]
    if mode in ("import", "cold"):
        return measure_cold(lib, mode, server, args)
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
        "users": scenario.get("users"),
        "timing": scenario.get("timing"),
        "connections": scenario.get("connections", FLOOR_CONNECTIONS),
        "rate": args.rate,
        "max_in_flight": args.max_in_flight if lib == "courier" else None,
        "event_loop": args.event_loop if lib == "courier" else None,
        "settle_s": args.settle,
        "courier_src": str(args.courier_src) if args.courier_src else None,
        "spool": scenario.get("spool", False),
    }
    if lib == "base":  # the baseline: courier-analytics from --baseline-src
        spec.update(lib="courier", courier_src=str(args.baseline_src))
        spec.update(max_in_flight=args.max_in_flight, event_loop=args.event_loop)
    client = run_client(spec, args.timeout, env)
    if "courier_file" in client:
        args.courier_file = client["courier_file"]
    record: dict[str, Any] = {"n": n, "rss_peak_mb": client["rss_peak_kb"] / 1024}
    for key in (
        "caller_us", "caller_cpu_us", "caller_p50_us", "caller_p99_us", "caller_p999_us",
        "caller_max_us",
    ):  # fmt: skip
        if key in client:
            record[key] = client[key]
    if "sockets_end" in client:
        record["sockets_end"] = client["sockets_end"]
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
    record["connections"] = seen.get("connections")
    record["connections_peak"] = seen.get("connections_peak")
    if seen.get("handshakes") is not None:
        record["handshakes"] = seen["handshakes"]
        record["resumed"] = seen["resumed"]
    reached = seen["reached_at"]
    record["time_s"] = None if reached is None else reached - client["t0"]
    if reached is None:
        log(f"  ! the server saw {seen['count']} of {warmup + n} events")
    return record


def measure_cold(lib: str, mode: str, server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Fresh interpreters (``benchmarks/cold.py``): medians of ``--cold-repeat`` runs."""
    repeat = int(args.cold_repeat)
    if mode == "import":
        return cold.measure(lib, mode, repeat, courier_src=_src(args), timeout=args.timeout)
    server.command("reset", latency_ms=0, hang=False, target=repeat + 1)  # + the untimed run
    record = cold.measure(lib, mode, repeat, server.url, _src(args), args.timeout)
    seen = server.command("wait", read_timeout=SERVER_WAIT_S + 30, timeout=SERVER_WAIT_S)
    if seen["count"] != repeat + 1:
        log(f"  ! the server saw {seen['count']} of {repeat + 1} cold-start events")
    return record


def _src(args: argparse.Namespace) -> str | None:
    return str(args.courier_src) if args.courier_src else None


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
    for name, (scenario, reading, unit, target, what, *rest) in FIGURES.items():
        peer_lib = rest[0] if rest else "segment"
        peer_scenario = rest[1] if len(rest) > 1 else scenario
        ours, peer = pick(scenario, "courier", reading), pick(peer_scenario, peer_lib, reading)
        ratio = ours / peer if ours is not None and peer else None
        base = pick(scenario, "base", reading)
        figures[name] = {
            "what": what,
            "unit": unit,
            "courier": ours,
            "peer": peer_lib,
            peer_lib: peer,
            "ratio": ratio,
            "target": target,
            "met": None if ratio is None or target is None else ratio <= target,
            "base": base,
            "vs_base": ours / base if ours is not None and base else None,
        }
    for name, (figure, over, target, what) in SELF_RATIOS.items():
        top, bottom = figures[figure]["courier"], figures[over]["courier"]
        ratio = top / bottom if top is not None and bottom else None
        figures[name] = {
            "what": what,
            "unit": "ratio",
            "courier": top,
            "peer": "courier",
            "ratio": ratio,
            "target": target,
            "met": None if ratio is None else ratio <= target,
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
        "| figure | courier-analytics | peer | peer's | ratio | target | met |",
        "|---|---:|---|---:|---:|---:|:---:|",
    ]
    for item in summary["figures"].values():
        target = item["target"]
        met = {True: "yes", False: "**no**", None: ""}[item["met"]]
        peer = item["peer"]
        shown = "-" if peer == "courier" else _fmt(item.get(peer))
        lines.append(
            f"| {item['what']} ({item['unit']}) | {_fmt(item['courier'])} | {peer} | {shown}"
            f" | {_fmt(item['ratio'], 'ratio')} | {'<= ' + str(target) if target else ''} | {met} |"
        )
    if any(item.get("base") is not None for item in summary["figures"].values()):
        lines += ["", "| figure | this tree | baseline | ratio |", "|---|---:|---:|---:|"]
        for item in summary["figures"].values():
            if item.get("base") is not None:
                lines.append(
                    f"| {item['what']} ({item['unit']}) | {_fmt(item['courier'])} | "
                    f"{_fmt(item['base'])} | {_fmt(item['vs_base'], 'ratio')} |"
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
        "--cold-repeat", type=int, help="fresh interpreters per import/cold-start reading (7)"
    )
    parser.add_argument(
        "--only",
        help="comma-separated scenarios to run: " + ", ".join([*SCENARIOS, *REFERENCE]),
    )
    parser.add_argument(
        "--max-in-flight", type=int, help="courier-analytics max_in_flight (client default)"
    )
    parser.add_argument(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        help="courier-analytics event_loop (client default: asyncio)",
    )
    parser.add_argument(
        "--courier-src",
        type=Path,
        help="directory holding the courier_analytics to measure (default: the installed one),"
        " e.g. a baseline from `git archive HEAD courier_analytics | tar -x -C /tmp/base`",
    )
    parser.add_argument(
        "--courier-server",
        choices=("sink", "standin"),
        default="sink",
        help="server for courier-analytics and the floor: a minimal sink that does per "
        "request what Segment's sink does (default), or the package's Courier stand-in "
        "(which costs the shared cores some 50 us of CPU per request)",
    )
    parser.add_argument(
        "--rate", type=float, help=f"tracks a second, sustained scenario ({SUSTAINED_RATE})"
    )
    parser.add_argument(
        "--seconds", type=float, help=f"length of the sustained scenario ({SUSTAINED_S:g} s)"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="directory holding a baseline courier_analytics, run as a third client"
        " ('base') in the same rounds: an A/B side by side",
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
        "cold_repeat": 1 if quick else 7,
        "rate": float(SUSTAINED_RATE),
        "seconds": 1.0 if quick else SUSTAINED_S,
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
    if SCENARIOS.get(name, {}).get("mode") == "sustain":
        return max(1, int(args.rate * args.seconds))
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
            "rate": args.rate,
            "sustained_s": args.seconds,
            "baseline_src": str(args.baseline_src) if args.baseline_src else None,
            "stall_n": args.stall_n,
            "inline_n": args.inline_n,
            "warmup": args.warmup,
            "cold_repeat": args.cold_repeat,
            "max_in_flight": args.max_in_flight,
            "event_loop": args.event_loop,
            "courier_server": args.courier_server,
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
                    "trustme",
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
    needed = ("segment-analytics-python", "trycourier", "uvicorn", "trustme")
    missing = [d for d in needed if not _version(d)]
    if missing:
        log(f"missing benchmark dependencies: {', '.join(missing)}; "
            "run: pip install -r benchmarks/requirements.txt")  # fmt: skip
        return 2
    lifetime = args.timeout * 4 + 3600
    tls = any(SCENARIOS.get(name, {}).get("tls") for name in args.scenarios)
    ca = ThrowawayCA() if tls else None
    kinds = {"courier": "courier" if args.courier_server == "sink" else "standin"}
    kinds["segment"] = "segment"
    servers = {lib: Server(kinds[lib], lifetime) for lib in LIBS}
    if ca is not None:
        for lib in LIBS:
            servers[lib + "_tls"] = Server(kinds[lib], lifetime, (ca.cert_file, ca.key_file))
    rounds: list[dict[str, dict[str, dict[str, Any]]]] = []
    try:
        for index in range(args.rounds):
            libs_here = (*LIBS, "base") if args.baseline_src else LIBS
            order = libs_here if index % 2 == 0 else libs_here[::-1]
            this_round: dict[str, dict[str, dict[str, Any]]] = {}
            rounds.append(this_round)
            for name in args.scenarios:
                scenario = SCENARIOS.get(name) or REFERENCE[name]
                libs: tuple[str, ...] = ("trycourier",) if name in REFERENCE else order
                libs = scenario.get("libs", libs)
                if args.baseline_src and "courier" in libs and "base" not in libs:
                    libs = (*libs, "base")
                if scenario.get("floor"):
                    libs = (*libs, "floor")
                suffix, env = "", None
                if scenario.get("tls") and ca is not None:
                    suffix, env = "_tls", ca.client_env()
                for lib in libs:
                    server = servers[("segment" if lib == "segment" else "courier") + suffix]
                    n = size_for(name, args)
                    record = measure(lib, scenario, server, args, n, env)
                    this_round.setdefault(name, {})[lib] = record
                    shown = ", ".join(
                        f"{key}={_fmt(record.get(key))}"
                        for key in (
                            "caller_us",
                            "caller_p99_us",
                            "time_s",
                            "cpu_us_per_event",
                            "rss_peak_mb",
                            "import_ms",
                            "cold_ms",
                            "connections",
                            "connections_peak",
                            "sockets_end",
                            "handshakes",
                        )
                        if record.get(key) is not None
                    )
                    log(f"[round {index + 1}/{args.rounds}] {name:<12} {lib:<10} n={n}: {shown}")
            if index + 1 < args.rounds:  # a partial result survives an interrupted run
                write_result(args, argv, rounds, started, complete=False)
    finally:
        for server in servers.values():
            server.close()
        if ca is not None:
            ca.close()

    result = write_result(args, argv, rounds, started, complete=True)
    if any(SCENARIOS.get(name, {}).get("spool") for name in args.scenarios):
        from benchmarks.spool_disk import measure as measure_disk

        held, through = (4_000, 20_000) if args.quick else (20_000, 200_000)
        result["spool_disk"] = measure_disk(held, through)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    if "spool_disk" in result:
        disk = result["spool_disk"]
        print(
            f"\nspool disk: {disk['bytes_per_event']:.0f} bytes per spooled event "
            f"({disk['data_bytes_per_event']:.0f} of data); {disk['held']:,} held: "
            f"{disk['file_mb_held']:.1f} MB with the WAL; {disk['through']:,} through a window "
            f"of {disk['held']:,}: peak {disk['churn_file_mb_peak']:.1f} MB, "
            f"end {disk['churn_file_mb_end']:.1f} MB"
        )
    print(f"\n{args.rounds} round(s), N={args.n}, {result['meta']['seconds']} s; wrote {args.out}")
    if not args.no_plot:
        from benchmarks.plot import plot

        if plot(result, args.plot):
            print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
