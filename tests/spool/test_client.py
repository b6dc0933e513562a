"""The durable spool, in one process: write-ahead, recovery, outages, shutdown, options."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from client.fakes import FakeCourier, Reports, accept, balanced, make_client

import courier_analytics
from courier_analytics import (
    Client,
    ConfigurationError,
    NotDeliveredError,
    QueueFullError,
    RetriesExhaustedError,
    RetryPolicy,
    Stats,
)
from courier_analytics._client import Outcome, dispatch, make_message

from .helpers import leave, status, track

#: One retry, no wait: a message's in-memory retries run out at once.
ONE_RETRY = RetryPolicy(max_retries=1, initial_wait=0, max_wait=0, max_time=None)


class Arrivals(FakeCourier):
    """A fake Courier that tells when `count` requests have arrived (before its gate)."""

    def __init__(self, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = count
        self.arrived = threading.Event()
        self._seen = 0
        self._seen_lock = threading.Lock()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with self._seen_lock:
            self._seen += 1
            if self._seen == self.count:
                self.arrived.set()
        return await super().handle_async_request(request)


def test_a_message_is_in_the_spool_before_it_is_sent(tmp_path: Path) -> None:
    """The worker commits a message to the spool before its request goes out."""
    courier = Arrivals(1)
    courier.gate.clear()
    client = make_client(courier, spool=tmp_path / "spool.db")
    client.track("Signed Up", user_id="u1")
    assert courier.arrived.wait(60)
    assert status(tmp_path / "spool.db").messages == 1
    courier.gate.set()
    assert client.flush(60)
    client.shutdown()


def test_a_delivered_message_leaves_the_spool(tmp_path: Path) -> None:
    """Once Courier accepts them, messages are removed from the spool."""
    client = make_client(FakeCourier(), spool=tmp_path / "spool.db")
    for n in range(300):
        client.track("E", {"n": n}, user_id=f"u{n % 7}")
    assert client.flush(60)
    assert status(tmp_path / "spool.db").messages == 0
    stats = client.stats
    assert (stats.delivered, stats.spooled, stats.pending) == (300, 0, 0)
    assert balanced(client)
    client.shutdown()


def test_a_rejected_message_leaves_the_spool(tmp_path: Path) -> None:
    """A message that fails for good (400) is reported and removed, not kept."""
    courier = FakeCourier(lambda request, body, attempt: httpx.Response(400, json={}))
    reports = Reports()
    client = make_client(courier, spool=tmp_path / "spool.db", on_error=reports)
    client.track("E", user_id="u1")
    assert client.flush(60)
    assert client.stats.failed == 1
    assert status(tmp_path / "spool.db").messages == 0
    client.shutdown()


def test_a_new_client_delivers_what_a_dead_process_left(tmp_path: Path) -> None:
    """What a dead owner left is delivered with the same messageIds, counted as recovered."""
    left = [track(n) for n in range(5)]
    leave(tmp_path / "spool.db", left)
    courier = FakeCourier()
    client = make_client(courier, spool=tmp_path / "spool.db")
    assert client.flush(60)
    assert [body["messageId"] for body in courier.bodies] == [m.message_id for m in left]
    stats = client.stats
    assert (stats.made, stats.recovered, stats.delivered) == (0, 5, 5)
    assert balanced(client)
    assert status(tmp_path / "spool.db").messages == 0
    client.shutdown()


def test_recovery_keeps_each_users_order(tmp_path: Path) -> None:
    """Recovered messages go out in each user's order (strict ordering, shuffled answers)."""
    left = [track(n, user=f"u{n % 3}") for n in range(60)]
    leave(tmp_path / "spool.db", left)
    courier = FakeCourier(shuffle=True)
    client = make_client(courier, spool=tmp_path / "spool.db", ordering="strict")
    assert client.flush(60)
    for user in ("u0", "u1", "u2"):
        sent = [b["properties"]["n"] for b in courier.bodies if b["userId"] == user]
        assert sent == sorted(sent)
        assert len(sent) == 20
    client.shutdown()


def test_an_outage_parks_messages_instead_of_failing_them(tmp_path: Path) -> None:
    """Retries that run out on 503 leave the message parked in the spool, not failed."""
    down = threading.Event()
    down.set()

    def rule(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        return httpx.Response(503, json={}) if down.is_set() else accept(request, body, attempt)

    reports = Reports()
    client = make_client(
        FakeCourier(rule), spool=tmp_path / "spool.db", retry=ONE_RETRY, on_error=reports
    )
    for n in range(50):
        client.track("E", {"n": n}, user_id=f"u{n % 5}")
    assert client.flush(60)  # returns once all wait in the spool, none due yet
    stats = client.stats
    assert (stats.failed, stats.pending, stats.spooled) == (0, 50, 50)
    assert reports.errors == []
    journal = client._worker.journal
    assert journal is not None
    assert client._worker.held == journal._parked  # nothing held in memory
    assert status(tmp_path / "spool.db").parked == 50
    down.clear()
    journal._clock = lambda: time.time() + 3600  # an hour later: every retry is due
    assert client.flush(60)
    assert client.stats.delivered == 50
    assert balanced(client)
    client.shutdown()


def test_a_long_outage_holds_no_memory_and_loses_nothing(tmp_path: Path) -> None:
    """Courier down while 12,000 events are made: all wait on disk, then all are delivered."""
    down = threading.Event()
    down.set()

    def rule(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        return httpx.Response(503, json={}) if down.is_set() else accept(request, body, attempt)

    courier = FakeCourier(rule)
    client = make_client(courier, spool=tmp_path / "spool.db", retry=ONE_RETRY)
    journal = client._worker.journal
    assert journal is not None
    for chunk in range(6):
        for n in range(2000):
            client.track("Outage", {"n": chunk * 2000 + n}, user_id=f"u{n % 100}")
        assert client.flush(300)  # returns once every message waits in the spool
        assert client._worker.held == journal._parked  # none of them in memory
        assert not journal._holdings
        assert client._worker.held_bytes == 0  # so max_queue_bytes drops none
    stats = client.stats
    assert (stats.failed, stats.dropped, stats.pending) == (0, 0, 12_000)
    tried = len(courier.requests)
    assert tried < 3 * 2000  # once Courier is known down, only a few are tried (not 24,000)
    down.clear()
    journal._clock = lambda: time.time() + 3600  # later: every retry is due
    assert client.flush(300)
    assert client.stats.delivered == 12_000
    assert len({body["messageId"] for body in courier.bodies}) == 12_000
    assert status(tmp_path / "spool.db").messages == 0
    assert balanced(client)
    client.shutdown()


def test_a_message_older_than_spool_max_age_fails(tmp_path: Path) -> None:
    """A message still failing after spool_max_age is reported and leaves the spool."""
    courier = FakeCourier(lambda request, body, attempt: httpx.Response(503, json={}))
    reports = Reports()
    client = make_client(
        courier,
        spool=tmp_path / "spool.db",
        retry=ONE_RETRY,
        spool_max_age=0.001,
        on_error=reports,
    )
    client.track("E", user_id="u1")
    assert client.flush(60)
    assert client.stats.failed == 1
    [error] = reports.errors
    assert isinstance(error, RetriesExhaustedError)
    assert "spool_max_age" in str(error)
    assert status(tmp_path / "spool.db").messages == 0
    client.shutdown()


def test_shutdown_keeps_what_is_pending_for_the_next_process(tmp_path: Path) -> None:
    """At shutdown pending messages stay in the spool, unreported; a later client sends them."""
    courier = Arrivals(10)
    courier.gate.clear()
    reports = Reports()
    client = make_client(courier, spool=tmp_path / "spool.db", on_error=reports)
    for n in range(10):
        client.track("E", {"n": n}, user_id="u1")
    assert courier.arrived.wait(60)
    for n in range(10, 15):  # queued behind the ones in flight
        client.track("E", {"n": n}, user_id="u1")
    client.shutdown(timeout=0.1)
    courier.gate.set()
    stats = client.stats
    assert (stats.failed, stats.pending) == (0, 15)
    assert not [e for e in reports.errors if isinstance(e, NotDeliveredError)]
    assert status(tmp_path / "spool.db").unowned == 15
    later = FakeCourier()
    client2 = make_client(later, spool=tmp_path / "spool.db")
    assert client2.flush(60)
    assert client2.stats.recovered == 15
    assert {b["properties"]["n"] for b in later.bodies} == set(range(15))
    client2.shutdown()


def test_a_sync_mode_call_kept_in_the_spool_at_shutdown_returns_accepted(tmp_path: Path) -> None:
    """Shut down while a sync-mode call waits: its message stays in the spool; the call returns.

    The call waited out its flush_timeout (30 s): nothing settled its wait once the
    message was kept.
    """
    courier = Arrivals(1)
    courier.gate.clear()
    reports = Reports()
    client = make_client(courier, spool=tmp_path / "spool.db", sync_mode=True, on_error=reports)
    message = make_message(client, lambda f: f.track("E", {}, user_id="u1", anonymous_id=None))
    outcomes: list[Outcome] = []
    call = threading.Thread(target=lambda: outcomes.append(dispatch(client, message)), daemon=True)
    call.start()
    assert courier.arrived.wait(60)
    client.shutdown(timeout=0.1)
    courier.gate.set()
    call.join(10)
    assert not call.is_alive(), "the sync-mode call still waits"
    assert outcomes == [Outcome(message.message_id, "accepted")]  # the next process sends it
    assert (client.stats.failed, client.stats.pending) == (0, 1)
    assert reports.errors == []
    assert status(tmp_path / "spool.db").unowned == 1


def test_a_full_spool_drops_new_messages(tmp_path: Path) -> None:
    """Beyond spool_max_bytes new messages are dropped, counted and reported."""
    reports = Reports()
    client = make_client(
        FakeCourier(), spool=tmp_path / "spool.db", spool_max_bytes=1, on_error=reports
    )
    client.track("E", user_id="u1")
    assert client.flush(60)
    assert client.stats.dropped == 1
    [error] = reports.errors
    assert isinstance(error, QueueFullError)
    assert "spool_max_bytes" in str(error)
    assert balanced(client)
    client.shutdown()


def test_the_spool_can_be_given_as_a_sqlite_url(tmp_path: Path) -> None:
    """`sqlite:////abs/path` names the same file as the path."""
    client = make_client(FakeCourier(), spool=f"sqlite:///{tmp_path}/spool.db")
    client.track("E", user_id="u1")
    assert client.flush(60)
    assert (tmp_path / "spool.db").exists()
    client.shutdown()


def test_the_environment_variable_selects_a_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COURIER_ANALYTICS_SPOOL names the spool when no `spool` is given."""
    monkeypatch.setenv("COURIER_ANALYTICS_SPOOL", str(tmp_path / "env.db"))
    client = make_client(FakeCourier())
    settings = client.options.spool_settings()
    assert settings is not None
    assert settings.path == str(tmp_path / "env.db")
    client.shutdown()
    assert Client(api_key="k", send=False).options.spool_settings() is None  # sends nothing


def test_the_module_setting_selects_a_spool(tmp_path: Path) -> None:
    """`courier_analytics.spool` gives the default client a spool."""
    courier_analytics.api_key = "k"
    courier_analytics.transport = FakeCourier()
    courier_analytics.spool = str(tmp_path / "module.db")
    courier_analytics.track("E", user_id="u1")
    assert courier_analytics.flush(10)
    assert courier_analytics.default_client()._worker.journal is not None
    assert (tmp_path / "module.db").exists()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"spool": 42}, "spool must be a path"),
        ({"spool": ""}, "spool must not be empty"),
        ({"spool": "ftp://localhost/x"}, "spool must be a file path"),
        ({"spool": "sqlite://host/x"}, "spool:"),
        ({"spool": "x.db", "spool_max_age": 0}, "spool_max_age"),
        ({"spool": "x.db", "spool_max_bytes": -1}, "spool_max_bytes"),
        ({"spool": "x.db", "spool_commit_interval": "1"}, "spool_commit_interval"),
    ],
)
def test_bad_spool_options_are_refused_by_name(options: dict[str, Any], named: str) -> None:
    """A bad spool option raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=named):
        Client(api_key="k", **options)


def test_a_bad_environment_spool_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad COURIER_ANALYTICS_SPOOL is refused naming the variable."""
    monkeypatch.setenv("COURIER_ANALYTICS_SPOOL", "ftp://localhost/x")
    with pytest.raises(ConfigurationError, match="COURIER_ANALYTICS_SPOOL"):
        Client(api_key="k")


def test_an_unusable_spool_falls_back_to_memory(tmp_path: Path) -> None:
    """A spool that cannot be opened is logged; messages are still delivered from memory."""
    (tmp_path / "not-a-db").write_bytes(b"this is not a database" * 100)
    client = make_client(FakeCourier(), spool=tmp_path / "not-a-db")
    client.track("E", user_id="u1")
    assert client.flush(60)
    assert client.stats.delivered == 1
    client.shutdown()


def test_shutdown_returns_after_the_spool_is_written_and_closed(tmp_path: Path) -> None:
    """shutdown() waits for the spool's last commit: a SIGTERM or exit right after loses nothing."""
    courier = Arrivals(1)
    courier.gate.clear()
    client = make_client(courier, spool=tmp_path / "spool.db")
    client.track("E", user_id="u1")
    assert courier.arrived.wait(10)
    worker, journal = client._worker, client._worker.journal
    assert journal is not None
    order: list[str] = []
    stop = journal.stop

    def recorded_stop() -> None:
        stop()
        order.append("spool closed")

    class Ended(threading.Event):
        def set(self) -> None:
            order.append("ended")
            super().set()

    journal.stop = recorded_stop  # type: ignore[method-assign]
    worker._ended = Ended()
    thread = worker._thread
    assert thread is not None
    client.shutdown(timeout=0)
    courier.gate.set()
    thread.join(10)
    assert order[0] == "spool closed"


def test_a_flush_report_is_not_ok_while_messages_wait_in_the_spool(tmp_path: Path) -> None:
    """flush() returns with a message parked for a later retry, but its report says not ok."""
    courier = FakeCourier(lambda *_: httpx.Response(503))
    client = make_client(courier, spool=tmp_path / "spool.db", retry=ONE_RETRY)
    client.track("E", user_id="u1")
    report = client.flush_report(10)
    assert (report.done, report.failed, report.pending) == (True, 0, 1)
    assert not report.ok
    client.shutdown(timeout=0)


def test_pending_counts_what_waits_in_the_spool_through_an_outage_and_a_restart(
    tmp_path: Path,
) -> None:
    """made == delivered + failed + dropped + skipped + pending, with parked and left messages."""
    down = threading.Event()
    down.set()

    def rule(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        return httpx.Response(503, json={}) if down.is_set() else accept(request, body, attempt)

    def settled(stats: Stats) -> int:
        return stats.delivered + stats.failed + stats.dropped + stats.skipped + stats.pending

    client = make_client(FakeCourier(rule), spool=tmp_path / "spool.db", retry=ONE_RETRY)
    for n in range(30):
        client.track("E", {"n": n}, user_id=f"u{n % 3}")
    assert client.flush(60)  # all parked: Courier is down
    stats = client.stats
    assert (stats.made, stats.pending, stats.spooled) == (30, 30, 30)
    assert settled(stats) == stats.made
    down.clear()  # Courier is back, but the parked retries are not due yet
    for n in range(30, 40):
        client.track("E", {"n": n}, user_id=f"u{n % 3}")
    assert client.flush(60)
    client.shutdown(timeout=0)  # what waits in the spool stays there, pending
    stats = client.stats
    assert settled(stats) == stats.made == 40
    assert stats.pending == 40 - stats.delivered
    courier = FakeCourier()
    restarted = make_client(courier, spool=tmp_path / "spool.db")
    restarted.track("E", {"n": 40}, user_id="u0")
    assert restarted.flush(60)
    stats = restarted.stats
    assert (stats.made, stats.recovered, stats.delivered, stats.pending) == (
        1,
        40 - client.stats.delivered,
        41 - client.stats.delivered,
        0,
    )
    assert balanced(restarted)
    assert len({body["messageId"] for body in courier.bodies}) == stats.delivered
    restarted.shutdown()
