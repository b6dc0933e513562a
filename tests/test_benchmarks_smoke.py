"""The benchmark harness (``benchmarks/``) keeps working: a quick run reports every figure.

This is a smoke test of the command, not a benchmark: it asserts that figures exist,
never what they are. It needs the benchmark-only dependencies
(``pip install -r benchmarks/requirements.txt``) and is skipped without them.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The headline figures: each has a value for courier-analytics, one for its peer
#: (Segment's library, or the floor) and a ratio ours / peer.
FIGURES = (
    "caller_us_small",
    "caller_us_kb",
    "caller_p99_us",
    "time_s_0ms",
    "time_s_20ms",
    "time_s_100ms",
    "time_s_hot_20ms",
    "cpu_us_per_event",
    "cpu_us_per_event_20ms",
    "cpu_us_per_event_tls",
    "time_s_tls_20ms",
    "handshakes_tls_20ms",
    "cpu_us_per_event_tls_20ms",
    "rss_peak_mb_tls_20ms",
    "cpu_us_per_event_sustained",
    "connections_peak_sustained",
    "connections_end_sustained",
    "handshakes_sustained",
    "rss_peak_mb_stalled",
    "import_ms",
    "import_cpu_ms",
    "cold_start_ms",
    "cold_start_cpu_ms",
    "cold_process_ms",
    "floor_cpu_http",
    "floor_cpu_tls",
    "floor_cpu_sustained",
    "caller_us_spool",
    "cpu_us_per_event_spool",
    "time_s_spool_20ms",
)
#: Ratios of two courier-analytics figures.
SELF_RATIOS = ("hot_vs_spread_20ms", "spool_vs_memory_caller", "spool_vs_memory_cpu")
REFERENCE = ("trycourier_inline_us_0ms", "trycourier_inline_us_20ms")
NEEDED = {
    "segment": "segment-analytics-python",
    "courier": "trycourier",
    "uvicorn": "uvicorn",
    "httptools": "httptools",
    "trustme": "trustme",
}


def _is_positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    """`python -m benchmarks.run --quick` writes a JSON result with every figure and ratio."""
    missing = [dist for module, dist in NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing:
        pytest.skip(
            f"benchmark-only dependencies not installed ({', '.join(missing)}): "
            "pip install -r benchmarks/requirements.txt"
        )
    out, plot = tmp_path / "quick.json", tmp_path / "quick.png"

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out), "--plot", str(plot)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    figures = result["figures"]
    incomplete = [
        f"{name}.{key}"
        for name in FIGURES
        for key in ("courier", figures.get(name, {}).get("peer", "peer"), "ratio")
        if not _is_positive_number(figures.get(name, {}).get(key))
    ]
    incomplete += [
        f"{name}.ratio"
        for name in SELF_RATIOS
        if not _is_positive_number(figures.get(name, {}).get("ratio"))
    ]
    incomplete += [
        f"{name}.trycourier"
        for name in REFERENCE
        if not _is_positive_number(result["reference"].get(name, {}).get("trycourier"))
    ]
    assert incomplete == []
    assert figures["floor_cpu_tls"]["peer"] == "floor"
    assert result["meta"]["quick"] is True
    assert result["rounds_raw"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert plot.stat().st_size > 0
