"""Fresh-interpreter figures: what a short-lived process (a CLI, a Lambda cold start) pays.

Each reading is one new interpreter running one small script, timed inside it
with ``time.perf_counter()`` from the script's first line (interpreter start-up,
the same for both libraries, is left out), so nothing the harness imports is
already loaded:

- ``import``: ``import courier_analytics`` or ``import segment.analytics``;
- ``cold``: the import, a client with its defaults (pointed at the benchmark's
  sink), one ``track()`` with the small payload and ``flush()``, which returns
  once the event was answered.

Each is read as wall time and as the process's CPU time (every thread's), which a
busy machine inflates less.

Both libraries run from bytecode, as installed packages do: each script runs once
untimed first, with bytecode written to a cache of this run's own
(``PYTHONPYCACHEPREFIX``), even where ``PYTHONDONTWRITEBYTECODE`` is set, which
would leave a source checkout compiling on every import while site-packages had
been compiled at install time.

The parent also times the whole process (start-up and exit included) for
``cold``: ``process_ms``. ``courier_src`` measures another copy of
``courier_analytics`` (its directory goes first on ``sys.path``, before the clock
starts). Run by ``benchmarks.run`` (scenarios ``import`` and ``cold_start``); on
its own: ``python -m benchmarks.cold --repeat 9``, which starts its own sinks.
``--baseline DIR`` adds a row for another copy (say ``main``'s, from
``git archive main courier_analytics | tar -x -C DIR``), interleaved with the others
so that all rows see the same load, and prints each row's ratio to Segment's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/cold.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import API_KEY, PAYLOADS

ROOT = Path(__file__).resolve().parent.parent

IMPORTS = {"courier": "import courier_analytics", "segment": "import segment.analytics"}

COLD = {
    "courier": """
from courier_analytics import Client
client = Client(api_key={key!r}, base_url={url!r})
client.track("Order Completed", {properties!r}, user_id="user-0")
client.flush()
""",
    "segment": """
from segment.analytics import Client
client = Client(write_key={key!r}, host={url!r})
client.track("user-0", "Order Completed", {properties!r})
client.flush()
""",
}

SCRIPT = """
import sys
{path}
import time
_t0, _c0 = time.perf_counter(), time.process_time()
{body}
_ms, _cpu = (time.perf_counter() - _t0) * 1000, (time.process_time() - _c0) * 1000
sys.stdout.write("%r %r\\n" % (_ms, _cpu))
sys.stdout.flush()
"""


def script(lib: str, mode: str, url: str | None = None, courier_src: str | None = None) -> str:
    """The script one fresh interpreter runs for this library and mode."""
    path = f"sys.path.insert(0, {courier_src!r})" if courier_src and lib == "courier" else ""
    if mode == "import":
        body = IMPORTS[lib]
    else:
        body = COLD[lib].format(key=API_KEY, url=url, properties=PAYLOADS["small"])
    return SCRIPT.format(path=path, body=body)


_CACHE = tempfile.TemporaryDirectory(prefix="courier-bench-pyc-")
_ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPYCACHEPREFIX": _CACHE.name,
}


def run_once(code: str, timeout: float) -> tuple[float, float, float]:
    """Milliseconds: wall and CPU (all threads) inside the interpreter, and the whole
    process's wall time seen from here."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=_ENV,
    )  # fmt: skip
    process_ms = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"a fresh interpreter failed (exit {done.returncode}):\n{done.stderr}")
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu), process_ms


def measure(
    lib: str,
    mode: str,
    repeat: int,
    url: str | None = None,
    courier_src: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Medians over ``repeat`` fresh interpreters: ``import_ms`` or ``cold_ms``/``process_ms``.

    One more run goes first, untimed: it writes the bytecode (and, for ``cold``,
    sends one more event).
    """
    code = script(lib, mode, url, courier_src)
    run_once(code, timeout)
    wall, cpu, whole = zip(*(run_once(code, timeout) for _ in range(repeat)), strict=True)
    if mode == "import":
        return {
            "import_ms": statistics.median(wall),
            "import_cpu_ms": statistics.median(cpu),
            "runs": repeat,
        }
    return {
        "cold_ms": statistics.median(wall),
        "cold_cpu_ms": statistics.median(cpu),
        "process_ms": statistics.median(whole),
        "runs": repeat,
    }


def main() -> None:
    from benchmarks.run import Server

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="fresh interpreters per reading")
    parser.add_argument("--courier-src", help="directory holding another courier_analytics")
    parser.add_argument("--baseline", help="directory holding a courier_analytics to compare with")
    args = parser.parse_args()
    servers = {lib: Server(lib, 3600) for lib in IMPORTS}
    # row name -> (library, courier_analytics directory or None for this checkout's)
    rows = {"courier": ("courier", args.courier_src), "segment": ("segment", None)}
    if args.baseline:
        rows = {"baseline": ("courier", args.baseline), **rows}
    try:
        for mode in ("import", "cold"):
            readings: dict[str, dict[str, list[float]]] = {}
            for index in range(args.repeat):  # interleaved, so all rows see the same noise
                for row in list(rows) if index % 2 == 0 else reversed(rows):
                    lib, src = rows[row]
                    record = measure(lib, mode, 1, servers[lib].url, src)
                    for key, value in record.items():
                        readings.setdefault(row, {}).setdefault(key, []).append(value)
            segment = {k: statistics.median(v) for k, v in readings["segment"].items()}
            for row, values in readings.items():
                medians = {k: statistics.median(v) for k, v in values.items() if k != "runs"}
                shown = ", ".join(
                    f"{key} {value:.1f} ({value / segment[key]:.2f}x)"
                    for key, value in medians.items()
                )
                print(f"{mode:<6} {row:<8} {shown}  (medians of {args.repeat})", flush=True)
    finally:
        for server in servers.values():
            server.close()


if __name__ == "__main__":
    main()
