"""The outage benchmark, scaled down: Courier down, events made, all delivered (counts only)."""

from __future__ import annotations

from benchmarks.spool_outage import run


def test_everything_made_during_an_outage_arrives_once_courier_is_back() -> None:
    """3,000 events made while the stand-in answers 503 all wait on disk, then all arrive."""
    result = run(3000, outage=None, max_retry_time=0.2, timeout=600)
    assert result["parked"] == 3000  # every one waited in the spool, none failed meanwhile
    assert result["all_arrived"]
    assert result["distinct"] == 3000
    assert (result["failed"], result["dropped"], result["pending"]) == (0, 0, 0)
    assert result["delivered"] == 3000
