"""The import benchmark (benchmarks/import_bench.py) keeps working: a tiny run reports figures.

A smoke test of the command, not a benchmark: it asserts that the figures exist,
never what they are.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    importlib.util.find_spec("uvicorn") is None, reason="the benchmark's sink needs uvicorn"
)
def test_a_tiny_import_benchmark_reports_rate_and_cpu_per_event() -> None:
    """300 identifies, one round: every one reaches the sink and both figures are given."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.import_bench", "--n", "300", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rounds"][0]["received"] == 300
    assert result["events_per_s"] > 0
    assert result["cpu_us_per_event"] > 0
