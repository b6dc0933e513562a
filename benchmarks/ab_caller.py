"""Caller cost, side by side: a baseline copy of courier_analytics against this one.

    python -m benchmarks.ab_caller --baseline /tmp/base --rounds 5 --n 20000

``--baseline`` is a directory holding another ``courier_analytics`` (for example
``git archive <commit> courier_analytics | tar -x -C /tmp/base``). Each round runs
every variant once, in a rotating order, each in its own process against one
Courier stand-in process on 127.0.0.1 (0 ms added latency), as ``benchmarks.run``
does: ``warmup`` tracks and a flush, then ``n`` timed ``track()`` calls while the
worker delivers. Variants:

- ``baseline``: the baseline copy;
- ``current``: this checkout, nothing registered, no scope;
- ``noop_plugin``: this checkout with one no-op ``before`` plugin registered;
- ``scope``: this checkout, each call inside its own ``analytics.scope(user_id=...)``
  (opening and leaving the scope included);
- ``otel``: this checkout recording OpenTelemetry metrics through the SDK (a
  ``MeterProvider`` with an in-memory reader); ``current`` records through the
  global provider, a no-op unless the app set one, when opentelemetry-api is
  installed.

``--only`` runs a subset of the variants (``baseline`` always runs).

Prints the median wall and CPU time per call of each variant over the rounds,
each variant's difference from ``baseline``, and the process's CPU per event
(caller and worker) over the timed calls and their delivery.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/ab_caller.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import Server, log, run_client

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "current": {},
    "noop_plugin": {"noop_plugins": 1},
    "scope": {"in_scope": True},
    "otel": {"otel": True},
}


CALLS = r"""
import json, sys, time
if sys.argv[1] != "-":
    sys.path.insert(0, sys.argv[1])
from courier_analytics import Client
from benchmarks._common import PAYLOADS

class Noop:
    name = "noop"
    type = "before"
    def process(self, message):
        return message

properties = PAYLOADS[sys.argv[2]]
users = [f"user-{i}" for i in range(200)]
variants = {"plain": Client(api_key="k", send=False, flush_at_exit=False)}
if sys.argv[1] == "-":
    variants["noop_plugin"] = Client(api_key="k", send=False, flush_at_exit=False)
    variants["noop_plugin"].register(Noop())
    from courier_analytics import scope
    variants["scope"] = variants["plain"]

def loop(name):
    track = variants[name].track
    if name == "scope":
        with scope(user_id="user-1"):
            start = time.perf_counter()
            for i in range(200):
                track("Order Completed", properties)
            return (time.perf_counter() - start) / 200
    start = time.perf_counter()
    for i in range(200):
        track("Order Completed", properties, user_id=users[i])
    return (time.perf_counter() - start) / 200

best = {name: 1.0 for name in variants}
for _ in range(int(sys.argv[3])):
    for name in variants:
        best[name] = min(best[name], loop(name))
print(json.dumps({name: value * 1e6 for name, value in best.items()}))
"""


def calls(args: argparse.Namespace) -> None:
    """The `--calls` measurement: the call path alone, no server, no worker."""
    import json
    import subprocess

    root = Path(__file__).resolve().parent.parent
    readings: dict[str, list[float]] = {"baseline": []}
    for round_ in range(args.rounds):
        for src in (str(args.baseline), "-") if round_ % 2 == 0 else ("-", str(args.baseline)):
            done = subprocess.run(
                [sys.executable, "-c", CALLS, src, args.payload, str(args.loops)],
                cwd=root, capture_output=True, text=True, check=True, timeout=args.timeout,
            )  # fmt: skip
            result = json.loads(done.stdout)
            if src != "-":
                readings["baseline"].append(result["plain"])
                continue
            for name, value in result.items():
                readings.setdefault("current" if name == "plain" else name, []).append(value)
        log(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in readings.items()))
    base = statistics.median(readings["baseline"])
    print(f"{'variant':<12} {'us/call':>8} {'vs baseline':>12}   (medians of {args.rounds} rounds)")
    for name, values in readings.items():
        value = statistics.median(values)
        print(
            f"{name:<12} {value:>8.2f} {value - base:>+9.2f} us ({(value / base - 1) * 100:+.1f}%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="dir with courier_analytics")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--payload", choices=("small", "kb"), default="small")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--calls", action="store_true", help="the call path alone (see above)")
    parser.add_argument("--only", help="comma-separated variants besides baseline")
    parser.add_argument("--loops", type=int, default=1500, help="loops per variant (--calls)")
    args = parser.parse_args()
    if not (args.baseline / "courier_analytics" / "__init__.py").is_file():
        parser.error(f"{args.baseline} holds no courier_analytics package")
    if args.calls:
        calls(args)
        return
    server = Server("courier", max_lifetime=args.rounds * len(VARIANTS) * args.timeout)
    names = ["baseline", *(n for n in VARIANTS if n != "baseline")]
    if args.only:
        names = ["baseline", *(n.strip() for n in args.only.split(","))]
    readings: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                server.command("reset", latency_ms=0, hang=False, target=args.warmup + args.n)
                spec: dict[str, Any] = {
                    "lib": "courier",
                    "mode": "deliver",
                    "url": server.url,
                    "n": args.n,
                    "warmup": args.warmup,
                    "payload": args.payload,
                    "courier_src": str(args.baseline) if name == "baseline" else None,
                    **VARIANTS[name],
                }
                result = run_client(spec, args.timeout)
                server.command("wait", read_timeout=60, timeout=30)
                readings[name].append(result)
                log(f"round {round_ + 1} {name}: {result['caller_us']:.2f} us/call")
    finally:
        server.close()
    base = statistics.median(r["caller_us"] for r in readings["baseline"])
    base_cpu = statistics.median(r["caller_cpu_us"] for r in readings["baseline"])
    base_event = statistics.median(r["cpu_s"] / args.n * 1e6 for r in readings["baseline"])
    print(
        f"{'variant':<12} {'wall us/call':>13} {'vs baseline':>12} {'cpu us/call':>12} "
        f"{'vs':>8} {'cpu us/event':>13} {'vs':>8}"
    )
    for name, results in readings.items():
        wall = statistics.median(r["caller_us"] for r in results)
        cpu = statistics.median(r["caller_cpu_us"] for r in results)
        event = statistics.median(r["cpu_s"] / args.n * 1e6 for r in results)
        print(
            f"{name:<12} {wall:>13.2f} {wall - base:>+9.2f} us {cpu:>12.2f} "
            f"{(cpu / base_cpu - 1) * 100:>+7.1f}% {event:>13.1f} "
            f"{(event / base_event - 1) * 100:>+7.1f}%"
        )


if __name__ == "__main__":
    main()
