"""The spool across real processes: several on one file, SIGKILL at random moments, fork."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from courier_analytics import Client, RetryPolicy
from courier_analytics._messages import _made
from courier_analytics._spool._sqlite import SqliteBackend, unpack
from courier_analytics.devserver import DevServer, Faults
from tests._spool_helpers import by_producer, producer, read_until

from .conftest import KEY
from .helpers import status

#: Instant in-memory retries that give up at once: what fails waits in the spool.
BRIEF = RetryPolicy(max_retries=1, initial_wait=0, max_wait=0, max_time=None)


def start(spool: Path, server: DevServer, count: int, name: str) -> subprocess.Popen[str]:
    """A producer process making and delivering `count` tracks through `spool`."""
    return producer(spool, server, count, name, "deliver")


def in_spool(path: Path) -> set[str]:
    """The messageIds of every message in the spool file."""
    if not path.exists():
        return set()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")  # both tables from one snapshot
        rows = db.execute("SELECT type, mid, user_id, anonymous_id, event, data FROM messages")
        ids = {_made(*row).message_id for row in rows}
        batches = db.execute(
            "SELECT b.done, d.data FROM batches b JOIN bodies d ON d.id = b.id"
        ).fetchall()
    except sqlite3.OperationalError:  # no table yet: the producer is opening it
        return set()
    finally:
        db.close()
    for done, body in batches:  # a batch's messages not yet answered
        for i, message in enumerate(unpack(body)):
            if not (done and done[i >> 3] & (1 << (i & 7))):
                ids.add(message.message_id)
    return ids


def delivered(server: DevServer) -> Counter[str]:
    """How often the stand-in received each track's messageId (repeats are duplicates)."""
    return Counter(e["messageId"] for e in server.events() if e["type"] == "track")


def all_arrived(server: DevServer, wanted: set[str]) -> Callable[[], bool]:
    """A `wait_for` predicate: every one of `wanted` reached the stand-in.

    It runs after each request under the stand-in's lock, so the count is read first
    and the ids (a copy of the whole event log) only once the count allows it.
    """

    def arrived() -> bool:
        if server.stats()["message_ids_applied"] < len(wanted):
            return False
        return wanted <= set(delivered(server))

    return arrived


def write_locked(path: Path) -> bool:
    """Whether a process holds the spool's write lock now."""
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return True
    finally:
        db.close()
    return False


def stop_outside_a_write(process: subprocess.Popen[str], path: Path, server: DevServer) -> None:
    """SIGSTOP a process at a moment it holds no write lock on the spool.

    A process stopped inside a write holds the lock for as long as it is stopped,
    and no other process can take its messages over (see durability.md); its
    writes follow Courier's answers, so it is tried again after the next request.
    """
    for _ in range(50):
        process.send_signal(signal.SIGSTOP)
        os.waitpid(process.pid, os.WUNTRACED)  # returns once it has stopped
        if not write_locked(path):
            return
        process.send_signal(signal.SIGCONT)
        seen = len(server.events())
        server.wait_for(lambda: len(server.events()) > seen, timeout=10)  # noqa: B023
    raise AssertionError("the process held the spool's write lock each time it was stopped")


def test_several_processes_share_one_spool(tmp_path: Path, server: DevServer) -> None:
    """Three live processes on one file deliver everything, and empty it."""
    spool = tmp_path / "spool.db"
    producers = [start(spool, server, 1500, f"p{i}") for i in range(3)]
    for process in producers:
        read_until(process, 1500)
    retried = 0
    for process in producers:
        out, _ = process.communicate(timeout=120)  # stdin closed: it shuts down
        assert process.returncode == 0
        retried += int(out.split()[-1])
    seen = delivered(server)
    assert len(seen) == 4500
    duplicates = sum(seen.values()) - len(seen)
    print(f"{duplicates} duplicates, {retried} retries")
    # A request that timed out on a busy machine is sent again by its own process:
    # Courier sees a repeat. Two processes never send the same message.
    assert duplicates <= retried
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
        process.communicate(timeout=120)
    # What was safe when they died: in the spool, or already accepted by Courier.
    committed = in_spool(spool) | set(delivered(server))
    left = len(in_spool(spool))
    server.set_faults(Faults())
    client = Client(api_key=KEY, base_url=server.base_url, spool=spool, retry=BRIEF)
    try:
        assert server.wait_for(all_arrived(server, committed), timeout=600)
        assert client.flush(300)
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
    assert client.flush(120)
    journal = client._worker.journal
    assert journal is not None
    parents = journal._backend._db  # type: ignore[attr-defined]
    assert parents is not None
    pid = os.fork()
    if pid == 0:  # the child: the same client object, rebuilt after fork
        failed = 1  # the child's exit code says which check failed
        try:
            for n in range(20):
                client.track("Child", {"n": n}, user_id="child")
            if client.flush(120) and client.stats.delivered == 20:
                # Delivered with the spool open in the child (a spool that could not
                # be opened there delivers from memory), on a connection of its own.
                own = client._worker.journal
                assert own is not None
                mine = own._backend._db  # type: ignore[attr-defined]
                failed = 3 if mine is None or mine is parents else 0
            client.shutdown(10)
        finally:
            os._exit(failed)
    for n in range(20):
        client.track("After", {"n": n}, user_id="parent")
    assert client.flush(120)
    _, wait_status = os.waitpid(pid, 0)
    # The child's exit: 1 not delivered, 3 no spool connection of its own.
    assert os.waitstatus_to_exitcode(wait_status) == 0
    client.shutdown(10)
    assert len(delivered(server)) == 60
    assert status(spool).messages == 0


#: Set by every fork of this process (a hook cannot be removed): see the test below.
_forking = threading.Event()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_forking.set)


def test_a_child_forked_during_a_write_can_write(tmp_path: Path, server: DevServer) -> None:
    """A fork while a connection is inside a transaction leaves the child's own connection free."""
    spool = tmp_path / "spool.db"
    writer = SqliteBackend(str(spool), owner="writer", lease=60)
    writer.open()
    inside = threading.Event()
    _forking.clear()

    def write() -> None:  # inside a transaction until fork() begins
        with writer._write():
            inside.set()
            _forking.wait(60)

    thread = threading.Thread(target=write)
    thread.start()
    assert inside.wait(60)
    pid = os.fork()
    if pid == 0:  # the child: a client of its own on the same file
        failed = 1
        try:
            client = Client(api_key=KEY, base_url=server.base_url, spool=spool)
            client.track("Child", user_id="child")
            if client.flush(60) and client.stats.delivered == 1:
                journal = client._worker.journal
                failed = 0 if journal is not None and journal._open else 3
            client.shutdown(10)
        finally:
            os._exit(failed)
    thread.join(60)
    _, wait_status = os.waitpid(pid, 0)
    writer.close()
    # The child's exit: 1 not delivered, 3 its spool could not be written.
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert status(spool).messages == 0


def test_a_process_stalled_past_its_lease_sends_nothing_taken_over(
    tmp_path: Path, server: DevServer
) -> None:
    """A SIGSTOPped holder resumed after another took over its messages sends none of them."""
    spool = tmp_path / "spool.db"
    server.set_faults(Faults(latency_ms=300))  # it holds what it made: one request at a time
    stalled = producer(spool, server, 500, "a", "hold")
    read_until(stalled, 500)
    # Everything made is committed (in the spool, or answered) before the stall.
    assert server.wait_for(lambda: len(in_spool(spool) | set(delivered(server))) == 500, 120)
    stop_outside_a_write(stalled, spool, server)
    try:
        server.set_faults(Faults())
        taker = Client(api_key=KEY, base_url=server.base_url, spool=spool, retry=BRIEF)
        try:  # it takes over once the stalled one's lease (2 s) has expired
            assert server.wait_for(
                lambda: server.stats()["message_ids_applied"] == 500, timeout=120
            )
            assert taker.flush(120)
        finally:
            taker.shutdown(10)
        before = sum(delivered(server).values())
    finally:
        stalled.send_signal(signal.SIGCONT)
    read_until(stalled, 501)  # its flush returned: what it held is settled
    out, _ = stalled.communicate(timeout=120)
    made, sent, failed, taken_over, pending = (int(n) for n in out.split("stats ")[1].split()[:5])
    seen = delivered(server)
    print(f"{taken_over} taken over, {sum(seen.values()) - len(seen)} duplicates in all")
    # The resumed process sends nothing again but, at most, the one request it had
    # decided to send when it stopped (one at a time here; see durability.md).
    assert sum(seen.values()) - before <= 1
    assert taker.stats.recovered >= taken_over > 0
    assert (made, failed, pending) == (500, 0, 0)
    assert made == sent + taken_over
    assert status(spool).messages == 0
