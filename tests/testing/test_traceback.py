"""A failed assertion of the kit points at the test's line, not at the kit's frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FAILING_TESTS = """
def test_tracked(courier_analytics_events):
    courier_analytics_events.assert_tracked("Never Sent")

def test_not_tracked(courier_analytics_events):
    import courier_analytics
    courier_analytics.track("Sent", user_id="u1")
    courier_analytics_events.assert_not_tracked("Sent")

def test_count(courier_analytics_events):
    courier_analytics_events.assert_count(3, "identify")
"""


def test_failures_hide_the_kits_frames(tmp_path: Path) -> None:
    """pytest's report of a failed assert_* shows the calling line and no testing.py frame."""
    (tmp_path / "test_app.py").write_text(FAILING_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert "3 failed" in result.stdout, result.stdout
    assert "courier_analytics/testing.py" not in result.stdout
    assert '>       courier_analytics_events.assert_tracked("Never Sent")' in result.stdout
    assert "Expected a track message with event='Never Sent'" in result.stdout
