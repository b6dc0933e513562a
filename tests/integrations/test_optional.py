"""Integrations are optional: the core neither depends on nor imports any framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("django", "flask", "starlette", "fastapi", "celery", "kombu", "gevent", "gunicorn")


def test_the_core_install_depends_on_no_framework() -> None:
    """pyproject's core dependencies name no framework; each integration has its extra."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert not [name for name in FRAMEWORKS if name in core]
    extras = project["optional-dependencies"]
    assert {"django", "flask", "asgi", "fastapi", "starlette", "celery"} <= set(extras)


def test_importing_the_package_and_lambda_helper_imports_no_framework() -> None:
    """import courier_analytics (and .integrations, .aws_lambda) loads no framework module."""
    code = (
        "import sys, courier_analytics, courier_analytics.integrations, "
        "courier_analytics.integrations.aws_lambda\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
