"""Fixtures shared by the whole suite."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import courier_analytics
from courier_analytics import _default

HERE = Path(__file__).resolve().parent

#: Tests that run something outside this process and wait for it (a browser,
#: gunicorn, a Celery worker, the docs site's build, the benchmark, a whole pytest
#: run, processes killed mid-way and started again, an import of a large export)
#: or push tens of thousands of events: each takes from seconds to minutes on a
#: busy machine, and together most of the suite's time. Marked `slow` here, by
#: path, so that `pytest -m "not slow"` is the quick run while plain `pytest`
#: still runs them all. A file, or a test in it ("file::name", every parameter),
#: relative to tests/.
SLOW = frozenset(
    {
        "devserver/test_devserver_browser.py",
        "integrations/test_gunicorn.py",
        "integrations/test_celery.py",
        "integrations/test_examples.py",
        "test_benchmarks_smoke.py",
        "test_import_bench.py",
        "test_docs_site.py",
        "spool/test_processes.py",
        "spool/test_client.py::test_a_long_outage_holds_no_memory_and_loses_nothing",
        "fleet/test_processes.py",
        "fleet/test_redis.py::test_a_message_past_max_age_becomes_a_dead_letter",
        "test_import.py::test_a_large_export_in_several_files_reaches_courier_once",
        "test_import.py::test_a_killed_import_resumes_after_the_last_line_courier_answered",
        "test_import.py::"
        "test_ctrl_c_stops_reading_finishes_what_is_in_flight_and_the_rerun_sends_the_rest",
        "client/test_delivery.py::test_many_threads_lose_nothing_and_keep_order",
        "e2e/test_bad_input.py::test_any_input_is_sent_as_valid_json_or_refused_at_the_call",
        "e2e/test_end_to_end.py::test_random_5xx_are_survived_with_nothing_lost_or_doubled",
        "testing/test_dev_extra.py::test_fixture_fails_naming_the_extra",
        "testing/test_traceback.py::test_failures_hide_the_kits_frames",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of `SLOW` as `slow`."""
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue
        where = item.path.relative_to(HERE).as_posix()
        name = getattr(item, "originalname", item.name)  # without its parameters
        if where in SLOW or f"{where}::{name}" in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without Courier env vars, settings, default client or its plugins."""
    for name in (
        "COURIER_API_KEY",
        "COURIER_AUTH_TOKEN",
        "COURIER_BASE_URL",
        "COURIER_ANALYTICS_SPOOL",
    ):
        monkeypatch.delenv(name, raising=False)
    saved = {name: getattr(courier_analytics, name) for name in _default.SETTINGS}
    level = logging.getLogger("courier_analytics").level
    yield
    courier_analytics.shutdown(timeout=5)
    _default._plugins.clear()  # module-level plugins and event handlers
    _default._events.clear()
    for name, value in saved.items():
        setattr(courier_analytics, name, value)
    logging.getLogger("courier_analytics").setLevel(level)
