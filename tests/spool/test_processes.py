"""The spool across real processes: several on one file, SIGKILL at random moments, fork."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from courier_analytics import Client, RetryPolicy
from courier_analytics._messages import _made
from courier_analytics.devserver import DevServer, Faults

from .conftest import KEY
from .helpers import status

PRODUCER = Path(__file__).with_name("producer.py")
#: Instant in-memory retries that give up at once: what fails waits in the spool.
BRIEF = RetryPolicy(max_retries=1, initial_wait=0, max_wait=0, max_time=None)


def start(spool: Path, server: DevServer, count: int, name: str) -> subprocess.Popen[str]:
    """A producer process making `count` tracks through `spool`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}
    command = [sys.executable, str(PRODUCER), str(spool), server.base_url, KEY, str(count), name]
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )


def read_until(process: subprocess.Popen[str], made: int) -> None:
    """Read a producer's progress until it has made `made` messages (or is done)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("done") or int(line.split()[1]) >= made:
            return
    raise AssertionError("the producer ended early")


def in_spool(path: Path) -> set[str]:
    """The messageIds of every message in the spool file."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT type, mid, user_id, anonymous_id, event, data FROM messages")
        return {_made(*row).message_id for row in rows}
    finally:
        db.close()


def delivered(server: DevServer) -> Counter[str]:
    """How often the stand-in received each track's messageId (repeats are duplicates)."""
    return Counter(e["messageId"] for e in server.events() if e["type"] == "track")


def by_producer(server: DevServer) -> dict[str, set[int]]:
    """The `n` of each producer's tracks the stand-in received."""
    seen: dict[str, set[int]] = {}
    for event in server.events():
        properties = event["data"].get("properties", {})
        if "p" in properties:
            seen.setdefault(properties["p"], set()).add(properties["n"])
    return seen


def test_several_processes_share_one_spool(tmp_path: Path, server: DevServer) -> None:
    """Three live processes on one file deliver everything, and empty it."""
    spool = tmp_path / "spool.db"
    producers = [start(spool, server, 1500, f"p{i}") for i in range(3)]
    for process in producers:
        read_until(process, 1500)
    for process in producers:
        process.communicate(timeout=60)  # stdin closed: it shuts down
        assert process.returncode == 0
    seen = delivered(server)
    assert len(seen) == 4500
    # A request that timed out on a busy machine is sent again: Courier sees a repeat.
    print(f"{sum(seen.values()) - len(seen)} duplicates")
    assert status(spool).messages == 0


@pytest.mark.parametrize("weather", ["answering", "slow", "down"])
def test_sigkill_loses_only_what_was_not_committed(
    tmp_path: Path, server: DevServer, weather: str
) -> None:
    """Processes killed at random moments lose nothing committed; a fresh one delivers it all."""
    rng = random.Random(weather)  # random moments, the same on every run
    if weather == "slow":
        server.set_faults(Faults(latency_ms=20))
    elif weather == "down":
        server.set_faults(Faults(error_rate=1.0, error_statuses=(503,)))
    spool = tmp_path / "spool.db"
    producers = [start(spool, server, 5000, f"p{i}") for i in range(3)]
    for process in producers:
        read_until(process, rng.randrange(100, 5000, 100))
        process.kill()
        process.communicate(timeout=30)
    # What was safe when they died: in the spool, or already accepted by Courier.
    committed = in_spool(spool) | set(delivered(server))
    left = len(in_spool(spool))
    server.set_faults(Faults())
    client = Client(api_key=KEY, base_url=server.base_url, spool=spool, retry=BRIEF)
    try:
        assert server.wait_for(lambda: committed <= set(delivered(server)), timeout=300)
        assert client.flush(120)
    finally:
        client.shutdown(10)
    assert client.stats.recovered == left
    seen = delivered(server)
    duplicates = sum(seen.values()) - len(seen)
    print(f"{weather}: {len(seen)} distinct delivered, {duplicates} duplicates, {left} recovered")
    for name, numbers in by_producer(server).items():
        # Commits keep the order of calls: what a SIGKILL lost is the latest calls only.
        assert numbers == set(range(len(numbers))), name
    assert status(spool).messages == 0


def test_a_forked_child_uses_its_own_connection(tmp_path: Path, server: DevServer) -> None:
    """Parent and forked child deliver through one spool file, each with its own connection."""
    spool = tmp_path / "spool.db"
    client = Client(api_key=KEY, base_url=server.base_url, spool=spool)
    for n in range(20):
        client.track("Before", {"n": n}, user_id="parent")
    assert client.flush(30)
    pid = os.fork()
    if pid == 0:  # the child: the same client object, rebuilt after fork
        code = 1
        try:
            for n in range(20):
                client.track("Child", {"n": n}, user_id="child")
            if client.flush(30) and client.stats.delivered == 20:
                code = 0
            client.shutdown(10)
        finally:
            os._exit(code)
    for n in range(20):
        client.track("After", {"n": n}, user_id="parent")
    assert client.flush(30)
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    client.shutdown(10)
    assert len(delivered(server)) == 60
    assert status(spool).messages == 0
