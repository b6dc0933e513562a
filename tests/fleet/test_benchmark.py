"""The fleet benchmark (`benchmarks/fleet.py`) keeps working: a quick run reports every figure.

A smoke test of the command, not a benchmark: it asserts that the figures exist and
that nothing was lost, never how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# CPU is read from /proc in clock ticks (10 ms): a quick run's Redis may spend less.
CPU_FIGURES = ("relay_cpu_us", "redis_cpu_us")


@pytest.mark.slow
def test_the_fleet_benchmark_reports_every_figure(tmp_path: Path) -> None:
    """`python -m benchmarks.fleet --quick` reports throughput and CPU, and loses nothing."""
    pytest.importorskip("uvicorn", reason="the benchmark's sink needs benchmarks/requirements.txt")
    out = tmp_path / "fleet.json"
    command = [sys.executable, "-m", "benchmarks.fleet", "--quick", "--out", str(out)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(out.read_text())["summary"]
    assert set(summary) == {"end_to_end", "drain_1", "drain_2"}
    for name, figures in summary.items():
        assert figures["events_per_s"] > 0, name
        assert all(figures[figure] >= 0 for figure in CPU_FIGURES), name
        assert (figures["lost"], figures["left_in_spool"]) == (0, 0), name
        assert figures["distinct"] == figures["events"], name
    assert summary["end_to_end"]["producer_cpu_us"] > 0
    assert summary["end_to_end"]["dropped"] == 0
    assert "end to end (made -> answered)" in run.stdout
