"""Without the [dev] extra, the stand-in and its fixture say which extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Makes `import jsonpatch` raise ModuleNotFoundError, as in an environment without it.
WITHOUT_JSONPATCH = "import sys; sys.modules['jsonpatch'] = None\n"


def test_devserver_import_names_the_extra() -> None:
    """Importing the stand-in without jsonpatch names the [dev] extra and the missing module."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_JSONPATCH + "import courier_analytics.devserver"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: the local Courier stand-in")
    assert "[dev] extra" in last
    assert "jsonpatch is missing" in last
    assert "pip install 'courier-analytics[dev]'" in last


def test_fixture_fails_naming_the_extra(tmp_path: Path) -> None:
    """A test using courier_dev_server fails with the extra's name, not a bare import error."""
    (tmp_path / "conftest.py").write_text(WITHOUT_JSONPATCH)
    (tmp_path / "test_app.py").write_text(
        "def test_uses_the_stand_in(courier_dev_server):\n    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout
    assert "courier_dev_server: the local Courier stand-in" in result.stdout
    assert "pip install 'courier-analytics[dev]'" in result.stdout
    assert "Traceback" not in result.stdout
