"""The Redis spool in one process against a real redis-server: commit, relay, outages, bounds."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import cast

import orjson
import pytest

from courier_analytics import Client, ConfigurationError, QueueFullError, RetryPolicy
from courier_analytics._cli import main
from courier_analytics._spool import Settings, _health
from courier_analytics._spool._journal import Journal
from courier_analytics._spool._redis import RedisBackend, shard_of
from courier_analytics._worker import Worker
from courier_analytics.devserver import DevServer, Faults
from tests._spool_helpers import StubWorker
from tests.spool.helpers import track

from .conftest import KEY, RedisServer

#: One retry, no wait: what fails waits in the spool at once.
ONE_RETRY = RetryPolicy(max_retries=1, initial_wait=0, max_wait=0, max_time=None)


def status(redis_server: RedisServer, **query: object) -> object:
    """What the spool holds, read as `courier-analytics spool status` does."""
    backend = RedisBackend(redis_server.url(**query), owner="reader", lease=1, deliver=False)
    return backend.inspect(time.time())


def delivered(server: DevServer) -> Counter[str]:
    """How often the stand-in received each track's messageId."""
    return Counter(e["messageId"] for e in server.events() if e["type"] == "track")


def client(server: DevServer, spool: str, **options: object) -> Client:
    """A client on the stand-in with a Redis spool."""
    return Client(api_key=KEY, base_url=server.base_url, spool=spool, **options)  # type: ignore[arg-type]


def commit_tracks(server: DevServer, url: str, count: int) -> None:
    """A deliver=False client commits `count` tracks, each of its own user, and stops."""
    producer = client(server, url, deliver=False)
    for n in range(count):
        producer.track("E", {"n": n}, user_id=f"u{n}")
    assert producer.flush(30)
    producer.shutdown(10)


def test_a_client_commits_then_delivers_what_it_claims(
    redis_server: RedisServer, server: DevServer
) -> None:
    """With deliver on (the default), a client's messages go through Redis to Courier once each."""
    app = client(server, redis_server.url())
    for n in range(300):
        app.track("E", {"n": n}, user_id=f"u{n % 13}")
    assert server.wait_for(lambda: len(delivered(server)) == 300, timeout=60)
    assert app.flush(30)
    app.shutdown(10)
    stats = app.stats
    assert (stats.committed, stats.recovered, stats.delivered, stats.pending) == (300, 300, 300, 0)
    assert stats.unaccounted == 0
    assert sum(delivered(server).values()) == 300
    assert status(redis_server).messages == 0  # acknowledged and deleted


def test_deliver_false_only_commits(redis_server: RedisServer, server: DevServer) -> None:
    """deliver=False commits to Redis and sends nothing; flush returns once committed."""
    app = client(server, redis_server.url(), deliver=False)
    for n in range(50):
        app.track("E", {"n": n}, user_id="u1")
    assert app.flush(30)
    app.shutdown(10)
    assert app.stats.committed == 50
    assert app.stats.pending == 0
    assert server.events() == []
    assert status(redis_server).messages == 50


def test_a_relay_delivers_what_producers_committed(
    redis_server: RedisServer, server: DevServer
) -> None:
    """A delivering client (a relay) delivers what a deliver=False client committed."""
    producer = client(server, redis_server.url(), deliver=False)
    for n in range(200):
        producer.track("E", {"n": n}, user_id=f"u{n % 5}")
    assert producer.flush(30)
    producer.shutdown(10)
    relay = client(server, redis_server.url(), flush_interval=0.05)
    assert server.wait_for(lambda: len(delivered(server)) == 200, timeout=60)
    relay.shutdown(10)
    assert relay.stats.recovered == relay.stats.delivered == 200
    assert status(redis_server).messages == 0


def test_the_environment_turns_delivery_off(
    redis_server: RedisServer, server: DevServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COURIER_ANALYTICS_DELIVER=0 makes a client only commit; deliver=True overrides it."""
    monkeypatch.setenv("COURIER_ANALYTICS_DELIVER", "0")
    quiet, loud = (
        client(server, redis_server.url()),
        client(server, redis_server.url(), deliver=True),
    )
    try:
        assert not quiet.options.spool_settings().deliver  # type: ignore[union-attr]
        assert loud.options.spool_settings().deliver  # type: ignore[union-attr]
    finally:
        quiet.shutdown(5)
        loud.shutdown(5)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"deliver": False}, "deliver=False needs a Redis spool"),
        ({"deliver": False, "spool": "x.db"}, "deliver=False needs a spool a relay"),
        ({"deliver": "no", "spool": "redis://localhost"}, "deliver must be True or False"),
        ({"spool": "redis://localhost/0?shards=0"}, "shards"),
        ({"spool": "redis://localhost/0?stream="}, "stream"),
        ({"spool": "redis://"}, "no Redis host"),
    ],
)
def test_bad_fleet_options_are_refused_by_name(options: dict[str, object], named: str) -> None:
    """A bad deliver or Redis spool setting raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=named):
        Client(api_key="k", **options)  # type: ignore[arg-type]


def test_a_bad_environment_deliver_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A COURIER_ANALYTICS_DELIVER that is not 0 or 1 is refused, naming the variable."""
    monkeypatch.setenv("COURIER_ANALYTICS_DELIVER", "maybe")
    with pytest.raises(ConfigurationError, match="COURIER_ANALYTICS_DELIVER"):
        Client(api_key="k", spool="redis://localhost")


def test_the_password_never_reaches_a_log_line(
    server: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An unreachable Redis is logged by host, with the URL's password masked."""
    url = "redis://user:s3cret-pw@127.0.0.1:1/0"
    app = client(server, url, deliver=False)
    app.track("E", user_id="u1")
    # Nothing can commit: shutdown waits out its timeout, then logs the loss, host named.
    app.shutdown(0.5)
    text = caplog.text + "".join(str(r.exc_info) for r in caplog.records)
    assert "127.0.0.1:1" in text
    assert "s3cret-pw" not in text


def test_messages_wait_in_memory_while_redis_is_away(
    tmp_path: Path, server: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis away: calls never raise, messages wait in memory, logged once, committed on return."""
    folder = tmp_path / "redis"
    folder.mkdir()
    redis_server = RedisServer(folder)  # not started yet
    app = client(server, redis_server.url(), deliver=False)
    for n in range(100):
        app.track("E", {"n": n}, user_id="u1")
    assert not app.flush(0.5)
    assert app.stats.pending == 100
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "keeping new messages in memory" in errors[0].getMessage()
    redis_server.start()
    try:
        assert app.flush(30)
        assert app.stats.committed == 100
        app.shutdown(10)
        assert status(redis_server).messages == 100
    finally:
        redis_server.stop()


def test_memory_is_bounded_while_redis_is_away(tmp_path: Path, server: DevServer) -> None:
    """Redis unreachable: beyond max_queue_size new messages are dropped, counted, reported."""
    errors: list[BaseException] = []
    app = client(
        server,
        RedisServer(tmp_path).url(),
        deliver=False,
        max_queue_size=10,
        on_error=lambda error, message: errors.append(error),
    )
    for n in range(30):
        app.track("E", {"n": n}, user_id="u1")
    assert app.stats.dropped >= 20
    assert len(errors) == app.stats.dropped
    assert all(isinstance(error, QueueFullError) for error in errors)
    app.shutdown(1)


def test_nothing_committed_is_lost_when_redis_restarts(
    redis_server: RedisServer, server: DevServer
) -> None:
    """Committed messages survive a Redis restart (AOF); the client commits again afterwards."""
    app = client(server, redis_server.url(), deliver=False)
    for n in range(100):
        app.track("E", {"n": n}, user_id=f"u{n % 3}")
    assert app.flush(30)
    redis_server.restart()
    for n in range(100, 200):
        app.track("E", {"n": n}, user_id=f"u{n % 3}")
    assert app.flush(30)
    app.shutdown(10)
    assert status(redis_server).messages == 200
    relay = client(server, redis_server.url(), flush_interval=0.05)
    assert server.wait_for(lambda: len(delivered(server)) == 200, timeout=60)
    relay.shutdown(10)


def test_nothing_committed_is_lost_when_redis_is_killed(
    redis_server: RedisServer, server: DevServer
) -> None:
    """A SIGKILLed Redis (AOF, everysec) keeps every batch it acknowledged: it was written."""
    app = client(server, redis_server.url(), deliver=False)
    for n in range(300):
        app.track("E", {"n": n}, user_id=f"u{n % 5}")
    assert app.flush(30)
    redis_server.restart(crash=True)
    assert status(redis_server).messages == 300
    for n in range(300, 400):  # and the client commits again once it is back
        app.track("E", {"n": n}, user_id=f"u{n % 5}")
    assert app.flush(30)
    app.shutdown(10)
    assert status(redis_server).messages == 400


def test_a_full_redis_is_counted_and_reported(tmp_path: Path, server: DevServer) -> None:
    """Redis at maxmemory (OOM): messages wait in memory, then are dropped, counted, reported."""
    folder = tmp_path / "redis"
    folder.mkdir()
    full = RedisServer(folder, "--maxmemory", "1mb", "--maxmemory-policy", "noeviction")
    full.start()
    errors: list[BaseException] = []
    try:
        app = client(
            server,
            full.url(),
            deliver=False,
            max_queue_size=200,
            on_error=lambda error, message: errors.append(error),
        )
        pad = "x" * 2000
        for n in range(2000):
            app.track("E", {"n": n, "pad": pad}, user_id="u1")
        app.flush(1)
        stats = app.stats
        assert stats.dropped > 0
        assert stats.committed + stats.dropped + stats.pending == 2000
        assert len(errors) == stats.dropped
        app.shutdown(1)
    finally:
        full.stop()


def test_spool_max_bytes_bounds_the_streams(redis_server: RedisServer, server: DevServer) -> None:
    """Beyond spool_max_bytes of stream memory, new messages are dropped, counted, reported."""
    errors: list[BaseException] = []
    app = client(
        server,
        redis_server.url(),
        deliver=False,
        spool_max_bytes=200_000,
        on_error=lambda error, message: errors.append(error),
    )
    pad = "x" * 1000
    for n in range(1000):
        app.track("E", {"n": n, "pad": pad}, user_id=f"u{n % 4}")
    assert app.flush(30)
    app.shutdown(10)
    assert app.stats.dropped > 0
    assert app.stats.committed + app.stats.dropped == 1000
    assert all("spool is full" in str(error) for error in errors)
    assert status(redis_server).messages == app.stats.committed


def test_a_message_past_max_age_becomes_a_dead_letter(
    redis_server: RedisServer, server: DevServer
) -> None:
    """A message still failing after spool_max_age fails and is kept in the dead-letter stream."""
    server.set_faults(Faults(error_rate=1.0, error_statuses=(503,)))
    failed = threading.Event()  # on_error is the client's: no request wakes server.wait_for
    app = client(
        server,
        redis_server.url(),
        retry=ONE_RETRY,
        spool_max_age=0.5,
        on_error=lambda error, message: failed.set(),
    )
    app.track("E", user_id="u1")
    assert failed.wait(timeout=30)
    assert app.flush(10)
    app.shutdown(10)
    assert app.stats.failed == 1
    now = status(redis_server)
    assert (now.messages, now.dead) == (0, 1)  # type: ignore[attr-defined]


def test_each_shard_has_one_reader(redis_server: RedisServer) -> None:
    """Consumers take disjoint shards, together all of them, and a user maps to one shard."""
    url = redis_server.url(shards=8)
    readers = [RedisBackend(url, owner=f"c{n}", lease=30) for n in range(3)]
    now = time.time()
    for reader in readers:
        reader.open()
        reader.take_over(now)
    for reader in readers:
        reader.take_over(now)  # a second round: each sees three live consumers
    held = [reader._mine for reader in readers]
    assert set().union(*held) == set(range(8))
    assert sum(len(shards) for shards in held) == 8
    assert all(len(shards) <= 3 for shards in held[1:])
    assert shard_of("user-1", 8) == shard_of("user-1", 8)
    for reader in readers:
        reader.release()
        reader.close()


def test_a_dead_consumers_shard_and_pending_entries_pass_on(
    redis_server: RedisServer, server: DevServer
) -> None:
    """A consumer that stops renewing loses its shards; the next takes its pending entries."""
    url = redis_server.url(shards=2)
    commit_tracks(server, url, 20)
    dead = RedisBackend(url, owner="dead", lease=0.05)
    dead.open()
    dead.take_over(time.time())
    taken = dead.claim(100, time.time())
    assert len(taken) == 20  # read: in its pending list, never acknowledged
    leases = [dead._lease_key(shard) for shard in range(2)]
    # It dies (no release); Redis ends its leases, and tells of each expiry.
    gone = lambda r: r.exists(*leases) == 0  # noqa: E731
    assert redis_server.wait_for(gone, dead._lease_key(0)[:-1] + "*", "x", timeout=30)
    dead.close()
    live = RedisBackend(url, owner="live", lease=30)
    live.open()
    later = time.time() + 1  # its registration is over too
    assert live.take_over(later) == 20
    again = live.claim(100, later)
    assert sorted(c.message.message_id for c in again) == sorted(
        c.message.message_id for c in taken
    )
    live.remove([c.key for c in again])
    live.release()
    live.close()
    assert status(redis_server, shards=2).messages == 0


def test_committed_messages_free_their_bytes(redis_server: RedisServer, server: DevServer) -> None:
    """Messages handed to Redis leave memory: a producer never fills max_queue_bytes with them."""
    app = client(
        server, redis_server.url(), deliver=False, max_queue_bytes=20_000, max_message_bytes=1_000
    )
    for n in range(50):
        app.track("E", {"n": n}, user_id="u1")
    assert app.flush(30)
    assert app._worker.held_bytes == 0
    for n in range(50, 300):  # far more bytes in all than max_queue_bytes
        app.track("E", {"n": n}, user_id="u1")
        if n % 50 == 0:
            assert app.flush(30)
    assert app.flush(30)
    app.shutdown(10)
    assert (app.stats.committed, app.stats.dropped) == (300, 0)


def test_committed_messages_keep_no_metrics_start_time(
    redis_server: RedisServer, server: DevServer
) -> None:
    """A producer's metrics hold nothing for what it handed to Redis (they would grow forever)."""
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider

    provider = MeterProvider()
    app = client(server, redis_server.url(), deliver=False, meter_provider=provider)
    for n in range(20):
        app.track("E", {"n": n}, user_id="u1")
    assert app.flush(30)
    recorder = app._worker.metrics
    assert recorder is not None
    assert recorder._made == {}
    app.shutdown(10)
    provider.shutdown()


def test_relays_drain_a_full_redis_and_producers_commit_again(
    tmp_path: Path, server: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis at maxmemory: the oldest messages are kept, a relay drains it, commits resume."""
    folder = tmp_path / "redis"
    folder.mkdir()
    full = RedisServer(folder, "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    full.start()
    errors: list[BaseException] = []
    try:
        app = client(
            server,
            full.url(),
            deliver=False,
            max_queue_size=100,
            on_error=lambda error, message: errors.append(error),
        )
        pad, made = "x" * 2000, 0
        while app.flush(5):  # committed: Redis still has room
            for _ in range(50):
                app.track("E", {"n": made, "pad": pad}, user_id=f"u{made % 7}")
                made += 1
        assert "Redis is full" in caplog.text
        assert "XADD" not in caplog.text  # no command, so no message's data, in the log
        assert status(full).messages == app.stats.committed  # a refused batch left no copy
        for _ in range(200):  # beyond max_queue_size: the newest are dropped
            app.track("E", {"n": made, "pad": pad}, user_id=f"u{made % 7}")
            made += 1
        assert app.stats.dropped > 0
        relay = client(server, full.url(), flush_interval=0.05)
        assert app.flush(60)  # the relay made room: what waited is committed
        made -= app.stats.dropped
        assert app.stats.committed == made
        assert server.wait_for(lambda: len(delivered(server)) == made, timeout=120)
        app.shutdown(10)
        relay.shutdown(10)
    finally:
        full.stop()
    arrived = {e["data"]["properties"]["n"] for e in server.events() if e["type"] == "track"}
    assert arrived == set(range(made))  # the newest were dropped, never the oldest
    assert len(errors) == app.stats.dropped


def test_a_relay_renews_its_leases_while_redis_is_full(redis_server: RedisServer) -> None:
    """A relay's lease renewal writes through a full Redis (else no relay could drain it)."""
    import redis

    relay = RedisBackend(redis_server.url(shards=2), owner="relay-a", lease=30)
    relay.open()
    now = time.time()
    relay.take_over(now)
    filler = redis.Redis(port=redis_server.port)
    # Full for good: a limit under what it uses (filling up to it is not, the query
    # buffers that overshoot it are freed after the refused command).
    filler.config_set("maxmemory", filler.info("memory")["used_memory"] // 2)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        filler.zadd("probe", {"a": 1})
    assert relay.renew(now + 10)
    assert filler.zscore(f"{relay.stream}:consumers", "relay-a") == now + 40
    assert filler.get(f"{relay.stream}:lease:0") == b"relay-a"
    relay.close()
    filler.close()


@pytest.mark.parametrize("deliver", [False, True], ids=["producer", "delivering"])
def test_a_full_redis_is_logged_once_until_commits_work_again(
    redis_server: RedisServer,
    deliver: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full Redis: one ERROR, however many upkeeps read or renew; one INFO once commits work."""
    import redis

    monkeypatch.setattr(_health, "RETRY_SPOOL", 0.0)  # each drain retries and runs the upkeep
    caplog.set_level(logging.INFO, logger="courier_analytics")
    worker = StubWorker(max_queue_size=100)
    settings = Settings(redis_server.url(), commit_interval=1e-9, deliver=deliver)
    journal = Journal(cast(Worker, worker), settings)
    journal.start()
    admin = redis.Redis(port=redis_server.port)
    admin.config_set("maxmemory", admin.info("memory")["used_memory"] // 2)  # full for good
    for n in range(5):
        worker.queue.append(track(n))
        journal.drain()  # a refused commit, then an upkeep: reads, and with deliver lease writes
    assert len(worker.queue) == 5  # none committed: all wait in memory
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "Redis is full" in caplog.records[0].getMessage()
    admin.config_set("maxmemory", 0)
    journal.drain()
    assert not worker.queue  # committed
    assert [r.levelname for r in caplog.records] == ["ERROR", "INFO"]
    assert "works again" in caplog.records[1].getMessage()
    journal.stop()
    admin.close()


def test_spool_status_shows_dead_letters_and_relay_leases(
    redis_server: RedisServer, server: DevServer
) -> None:
    """`spool status redis://... [--json]` shows backlog, dead letters and each relay's lease."""
    url = redis_server.url(shards=2)
    commit_tracks(server, url, 3)
    relay = RedisBackend(url, owner="relay-a", lease=30)
    relay.open()
    relay.take_over(time.time())
    first = relay.claim(1, time.time())
    relay.fail([first[0].key], "it waited in the spool for spool_max_age")
    out = io.StringIO()
    assert main(["spool", "status", "--json", url], out=out) == 0
    shown = orjson.loads(out.getvalue())
    assert (shown["messages"], shown["dead"], shown["unowned"]) == (2, 1, 0)
    (owner,) = shown["owners"]
    assert (owner["owner"], owner["messages"]) == ("relay-a", 2)
    assert 0 < owner["lease_left_s"] <= 30
    out = io.StringIO()
    assert main(["spool", "status", url], out=out) == 0
    assert "dead       1 " in out.getvalue()
    assert "2 messages, lease" in out.getvalue()
    relay.release()
    relay.close()
