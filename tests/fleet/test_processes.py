"""A fleet of real processes on a real Redis: producers, relays, SIGKILLs, a Redis restart."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from courier_analytics._spool._redis import DEFAULT_STREAM
from courier_analytics.devserver import DevServer, Faults
from tests._spool_helpers import by_producer, environment, read_until
from tests._spool_helpers import producer as start

from .conftest import KEY, RedisServer


def producer(url: str, server: DevServer, count: int, name: str) -> subprocess.Popen[str]:
    """An app process committing `count` tracks to the spool at `url` (deliver=False)."""
    return start(url, server, count, name, "commit")


def relay(url: str, server: DevServer, log: Path) -> subprocess.Popen[str]:
    """A `courier-analytics relay` process delivering from the spool at `url`, logging to `log`."""
    command = [sys.executable, "-m", "courier_analytics", "relay", "--spool", url]
    command += ["--base-url", server.base_url, "--api-key", KEY, "--timeout", "10"]
    with log.open("a") as out:
        return subprocess.Popen(command, stdout=out, stderr=out, env=environment())


def test_a_fleet_loses_nothing_through_kills_and_a_redis_restart(
    redis_server: RedisServer, server: DevServer
) -> None:
    """Producers and relays SIGKILLed, Redis restarted: every committed message arrives once."""
    server.set_faults(Faults(latency_ms=2))
    url = redis_server.url(shards=6)
    count = 3000
    producers = {f"p{i}": producer(url, server, count, f"p{i}") for i in range(4)}
    log = redis_server.folder / "relays.log"
    relays = [relay(url, server, log) for _ in range(3)]
    # A producer is killed once it has committed 1000; what it committed must arrive.
    killed_after = read_until(producers["p0"], 1000)
    producers["p0"].kill()
    relays[0].kill()  # a relay dies holding entries it read and never acknowledged
    read_until(producers["p1"], 1500)
    redis_server.restart()  # mid-run: producers and relays see Redis go away and return
    relays.append(relay(url, server, log))
    read_until(producers["p2"], 2000)
    producers["p1"].kill()  # killed after the restart: it committed at least 1500
    relays[1].send_signal(signal.SIGKILL)
    for name in ("p2", "p3"):
        assert read_until(producers[name], count + 1) == -1  # to its end
        producers[name].communicate(timeout=120)  # stdin closed: it shuts down
        assert producers[name].returncode == 0
    for process in producers.values():
        process.communicate(timeout=30)  # closes its pipes (the killed ones' too)

    # At least what the producers are known to have committed (a cheap check, run by
    # the stand-in after each request), then an empty spool: nothing committed is left.
    least = 2 * count + killed_after + 1500
    try:
        applied = lambda: server.stats()["message_ids_applied"] >= least  # noqa: E731
        assert server.wait_for(applied, timeout=600), describe(server, url, killed_after, log)
        # The last acknowledgements: each XDEL wakes the wait, which looks again.
        empty = lambda r: sum(r.xlen(f"{DEFAULT_STREAM}:{n}") for n in range(6)) == 0  # noqa: E731
        assert redis_server.wait_for(empty, f"{DEFAULT_STREAM}:*", "t", timeout=300), describe(
            server, url, killed_after, log
        )
        assert spool_messages(url) == 0
    finally:
        for process in relays:
            process.terminate()
        for process in relays:
            process.wait(timeout=30)
    seen = by_producer(server)
    for name, numbers in seen.items():
        # A producer's commits keep the order of its calls: a SIGKILL loses only its
        # latest, uncommitted calls; nothing in between.
        assert numbers == set(range(len(numbers))), name
    assert len(seen["p1"]) >= 1500
    ids = [e["messageId"] for e in server.events()]
    print(f"{len(set(ids))} distinct messages, {len(ids) - len(set(ids))} repeats")


def describe(server: DevServer, url: str, killed_after: int, log: Path) -> str:
    """What arrived and what the spool holds (for a failure's message)."""
    from courier_analytics._spool._redis import RedisBackend

    seen = {name: len(numbers) for name, numbers in by_producer(server).items()}
    now = RedisBackend(url, owner="reader", lease=1, deliver=False).inspect(time.time())
    tail = [line for line in log.read_text().splitlines() if "relay:" not in line][-30:]
    return f"arrived {seen} (p0 committed {killed_after}); spool {now}; relays said " + "\n".join(
        tail
    )


def spool_messages(url: str) -> int:
    """Messages in the spool's streams now."""
    from courier_analytics._spool._redis import RedisBackend

    return RedisBackend(url, owner="reader", lease=1, deliver=False).inspect(time.time()).messages
