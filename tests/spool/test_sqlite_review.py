"""A review of the SQLite spool's batch rows: damage, versions, stale keys, cost."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import cast

import pytest

from courier_analytics import _message
from courier_analytics._messages import Message
from courier_analytics._spool import Settings, _sqlite
from courier_analytics._spool._journal import Journal
from courier_analytics._spool._sqlite import SqliteBackend
from courier_analytics._worker import Worker
from tests._spool_helpers import StubWorker
from tests.spool.helpers import backend, rows, status, track


def taken(path: Path, now: float | None = None) -> list[str]:
    """The messageIds a new owner takes over and claims from the file, in order."""
    taker = backend(path, "taker")
    when = time.time() if now is None else now
    taker.take_over(when)
    claimed = taker.claim(100_000, when)
    taker.close()
    return [c.message.message_id for c in claimed]


def write(path: Path, statement: str, *args: object) -> None:
    """Change the file behind the backends' backs (damage, or an older writer)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(statement, args)
    finally:
        db.close()


def big(n: int, size: int = 1000) -> Message:
    """A track numbered `n` whose data is about `size` bytes."""
    body = f'{{"type":"track","messageId":"b-{n}","userId":"u{n}","event":"E",'
    body += f'"properties":{{"pad":"{"x" * size}"}}}}'
    return Message("track", f"b-{n}", f"u{n}", None, "E", body.encode())


def journal_for(worker: StubWorker, path: Path, lease: float = 60.0) -> Journal:
    """A journal driven by hand (no thread), committing at every drain."""
    journal = Journal(cast(Worker, worker), Settings(str(path), commit_interval=1e-9, lease=lease))
    journal.start()
    return journal


# ------------------------------------------------------------------ damage


def test_a_damaged_body_never_escapes_the_journal_when_a_member_is_parked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Parking a member of a batch whose body is damaged never raises out of `drain`."""
    worker = StubWorker(max_queue_size=100)
    journal = journal_for(worker, tmp_path / "s.db")
    worker.queue.extend(track(n, user=f"u{n}") for n in range(3))
    journal.drain()
    write(tmp_path / "s.db", "UPDATE bodies SET data = x'01ffff'")
    assert journal.park(worker.released[1]) is None
    with caplog.at_level(logging.ERROR, logger="courier_analytics"):
        journal.drain()  # ValueError before the fix: it ends the worker thread
    assert "m-u" not in caplog.text
    journal.stop()


def test_a_damaged_bitmap_is_read_as_nothing_answered(tmp_path: Path) -> None:
    """A batch whose `done` bitmap is too short is re-sent whole, not an IndexError."""
    dead = backend(tmp_path / "s.db", "dead", lease=-1.0)
    keys = dead.commit([track(n) for n in range(20)], time.time(), False)
    dead.remove(keys[:1])
    dead.close()
    write(tmp_path / "s.db", "UPDATE batches SET done = x'01'")
    assert len(taken(tmp_path / "s.db")) == 20


def test_a_damaged_compact_message_is_logged_without_its_payload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line of a damaged batch names its keys, never the text of what was damaged."""
    data = _message.pack(
        1765000000000, "c-1", "properties", {"email": "secret@example.com", "n": 1}
    )
    message = _message.compact("track", "u1", None, "E", data, "c-1")
    dead = backend(tmp_path / "s.db", "dead", lease=-1.0)
    dead.commit([message], time.time(), False)
    dead.close()
    # One byte flipped: the comma after the timestamp.
    write(
        tmp_path / "s.db",
        "UPDATE bodies SET data = CAST(replace(data, ?, ?) AS BLOB)",
        b'0,"c-1"',
        b'0;"c-1"',
    )
    with caplog.at_level(logging.ERROR, logger="courier_analytics"):
        assert taken(tmp_path / "s.db") == []
    assert "damaged batch" in caplog.text
    assert "secret" not in caplog.text


# ---------------------------------------------------------------- versions


def test_a_body_of_a_newer_version_is_left_in_the_file(tmp_path: Path) -> None:
    """A batch body this version cannot read (a later format) is left for one that can."""
    dead = backend(tmp_path / "s.db", "dead", lease=-1.0)
    dead.commit([track(n) for n in range(3)], time.time(), False)
    dead.close()
    write(tmp_path / "s.db", "UPDATE bodies SET data = CAST(x'02' || substr(data, 2) AS BLOB)")
    taken(tmp_path / "s.db")
    assert (rows(tmp_path / "s.db", "batches"), rows(tmp_path / "s.db", "bodies")) == (1, 1)


def test_status_reads_a_file_of_the_earlier_form(tmp_path: Path) -> None:
    """`spool status` reads a file an earlier version wrote (no `batches` table)."""
    message = track(7)
    write(
        tmp_path / "s.db",
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, type TEXT NOT NULL, mid TEXT, "
        "user_id TEXT, anonymous_id TEXT, event TEXT, data BLOB NOT NULL, maker TEXT NOT NULL, "
        "owner TEXT, state INTEGER NOT NULL, made_at REAL NOT NULL, "
        "next_at REAL NOT NULL DEFAULT 0, tries INTEGER NOT NULL DEFAULT 0)",
    )
    write(
        tmp_path / "s.db",
        "CREATE TABLE owners (owner TEXT PRIMARY KEY, host TEXT NOT NULL, "
        "pid INTEGER NOT NULL, lease_until REAL NOT NULL)",
    )
    write(
        tmp_path / "s.db",
        "INSERT INTO messages (type, mid, user_id, anonymous_id, event, data, maker, owner, "
        "state, made_at) VALUES ('track', ?, 'u1', NULL, 'E', ?, 'old', NULL, 2, ?)",
        message._mid,
        message._data,
        time.time(),
    )
    assert status(tmp_path / "s.db").messages == 1


@pytest.mark.xfail(
    strict=True,
    reason="not fixed: the row-per-message form was never released; a file shared with it "
    "is not supported (its keys ignore `batches`), and INSERT OR REPLACE hides the clash",
)
def test_an_earlier_writers_row_is_never_replaced_by_a_batch_member(tmp_path: Path) -> None:
    """A row an earlier version committed (keys from `messages` only) survives a park."""
    spool = backend(tmp_path / "s.db", "new")
    keys = spool.commit([track(n) for n in range(3)], time.time(), False)
    old = track(9, user="old")
    # The earlier version's commit: SQLite gives one more than the largest id of `messages`.
    write(
        tmp_path / "s.db",
        "INSERT INTO messages (type, mid, user_id, anonymous_id, event, data, maker, owner, "
        "state, made_at) VALUES ('track', ?, 'old', NULL, 'E', ?, 'old', 'old', 0, ?)",
        old._mid,
        old._data,
        time.time(),
    )
    spool.park([(keys[0], time.time(), 1)])
    with sqlite3.connect(tmp_path / "s.db") as db:
        makers = [m for (m,) in db.execute("SELECT maker FROM messages ORDER BY id")]
    assert "old" in makers


# -------------------------------------------------------------------- keys


def test_an_empty_held_commit_does_not_block_later_commits(tmp_path: Path) -> None:
    """Committing no held messages leaves no batch row whose key the next commit reuses."""
    spool = backend(tmp_path / "s.db", "a")
    assert spool.commit([], time.time(), False) == []
    keys = spool.commit([track(1)], time.time(), False)  # SpoolError: UNIQUE constraint
    assert len(keys) == 1


def stalled_in_take_over(path: Path) -> tuple[StubWorker, Journal]:
    """A journal holding three messages whose upkeep is hit by SIGSTOP between its renew and
    its take-over, for longer than the lease: meanwhile another process takes over and
    delivers all it held."""
    worker = StubWorker(max_queue_size=100)
    journal = journal_for(worker, path, lease=30.0)
    worker.queue.extend(track(n) for n in range(3))
    journal.drain()
    stalled = cast(SqliteBackend, journal._backend)
    real_take_over = stalled.take_over

    def stall_then_take_over(now: float) -> int:
        later = now + 3600
        journal._lease.safe_until -= 3600  # the monotonic clock ran on through the stall
        other = backend(path, "other")
        other.take_over(later)
        other.remove([c.key for c in other.claim(100, later)])
        other.close()
        return real_take_over(later)

    stalled.take_over = stall_then_take_over  # type: ignore[method-assign]
    journal._lease.next_upkeep = 0.0  # the heartbeat: renew, then take over
    journal.drain()
    stalled.take_over = real_take_over  # type: ignore[method-assign]
    return worker, journal


def test_a_lease_lost_between_renew_and_take_over_never_marks_a_new_message(
    tmp_path: Path,
) -> None:
    """Keys of messages another owner took and finished are never given to new messages."""
    path = tmp_path / "s.db"
    worker, journal = stalled_in_take_over(path)
    worker.queue.extend(track(n) for n in range(10, 13))  # new messages
    journal.drain()
    journal.finished(worker.released[0])  # an old copy's answer arrives
    journal.drain()
    cast(SqliteBackend, journal._backend).close()  # SIGKILL: nothing released
    assert taken(path, time.time() + 7200) == ["m-u1-10", "m-u1-11", "m-u1-12"]


def test_a_lease_lost_between_renew_and_take_over_drops_the_copies_held(tmp_path: Path) -> None:
    """A lease the upkeep's take-over finds lost drops what was held, as a failed renew does."""
    path = tmp_path / "s.db"
    worker, journal = stalled_in_take_over(path)
    assert journal.taken(worker.released[0])  # else sent again beside the taker's copy


# -------------------------------------------------------------------- cost


def test_parking_members_one_at_a_time_decodes_each_body_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parking a batch's members in separate writes does not unpack the whole body each time."""
    decoded = 0
    unpack = _sqlite.unpack

    def counting(body: bytes) -> list[Message]:
        nonlocal decoded
        messages = unpack(body)
        decoded += len(messages)
        return messages

    monkeypatch.setattr(_sqlite, "unpack", counting)
    spool = backend(tmp_path / "s.db", "a")
    keys = spool.commit([track(n, user=f"u{n}") for n in range(200)], time.time(), False)
    for key in keys:
        spool.park([(key, time.time() + 60, 1)])
    assert decoded <= 2 * len(keys)  # 40,000 before: the whole body at each park


def test_an_answered_batch_does_not_pin_its_bytes_for_one_straggler(tmp_path: Path) -> None:
    """With all but one message of a batch answered, the used bytes fall back by the next upkeep."""
    spool = backend(tmp_path / "s.db", "a")
    keys = spool.commit([big(n) for n in range(2000)], time.time(), False)
    full = spool.used_bytes()
    spool.remove(keys[1:])  # one straggler, still retrying in memory (up to max_retry_time)
    spool.take_over(time.time() + 60)  # the upkeep, a lease later
    assert spool.used_bytes() < full // 4


def test_a_straggler_moved_out_of_its_batch_is_still_answered_once(tmp_path: Path) -> None:
    """The last messages of a lingering batch stay this owner's: parked, answered, or left."""
    spool = backend(tmp_path / "s.db", "a", lease=-1.0)
    keys = spool.commit([track(n) for n in range(8)], time.time() - 60, False)
    spool.remove(keys[:6])
    spool.take_over(time.time())
    spool.park([(keys[6], time.time() + 3600, 1)])
    spool.remove([keys[7]])
    assert (status(tmp_path / "s.db").messages, status(tmp_path / "s.db").parked) == (1, 1)
    spool.close()
    assert taken(tmp_path / "s.db", time.time() + 7200) == ["m-u1-6"]


def test_a_released_batch_shows_as_due_in_status(tmp_path: Path) -> None:
    """Messages released at a clean stop are due now for the next owner, as rows were."""
    spool = backend(tmp_path / "s.db", "a")
    spool.commit([track(n) for n in range(2)], time.time(), False)
    spool.release()
    spool.close()
    assert status(tmp_path / "s.db").next_retry == 0.0
