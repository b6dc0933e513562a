"""The SQLite backend's storage: a held batch is one row, and what it leaves is unpacked."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from tests.spool.helpers import backend, rows, status, track


def taken(path: Path) -> list[tuple[int, str]]:
    """What a new owner takes over and claims from the file: (key, messageId) in order."""
    taker = backend(path, "taker")
    taker.take_over(time.time())
    claimed = taker.claim(1000, time.time())
    taker.close()
    return [(c.key, c.message._mid) for c in claimed]


def test_a_held_batch_is_one_row_with_consecutive_keys(tmp_path: Path) -> None:
    """Committing held messages writes one batch row and gives them consecutive keys."""
    spool = backend(tmp_path / "s.db", "a")
    keys = spool.commit([track(n) for n in range(5)], time.time(), False)
    assert keys == list(range(keys[0], keys[0] + 5))
    assert (rows(tmp_path / "s.db", "batches"), rows(tmp_path / "s.db", "messages")) == (1, 0)


def test_keys_keep_rising_across_batches_and_rows(tmp_path: Path) -> None:
    """A commit's keys come after every key already stored, batched or not."""
    spool = backend(tmp_path / "s.db", "a")
    first = spool.commit([track(n) for n in range(3)], time.time(), False)
    parked = spool.commit([track(3)], time.time(), True)
    last = spool.commit([track(4), track(5)], time.time(), False)
    assert first + parked + last == list(range(first[0], first[0] + 6))


def test_a_dead_owners_partly_answered_batch_leaves_only_the_rest(tmp_path: Path) -> None:
    """The next owner takes only the messages of a batch that were not answered, in order."""
    dead = backend(tmp_path / "s.db", "dead", lease=-1.0)
    keys = dead.commit([track(n) for n in range(6)], time.time(), False)
    dead.remove([keys[0], keys[2], keys[5]])
    dead.close()
    assert taken(tmp_path / "s.db") == [(keys[n], f"m-u1-{n}") for n in (1, 3, 4)]


def test_an_answered_batch_leaves_nothing(tmp_path: Path) -> None:
    """Once every message of a batch is answered, its row and body are gone."""
    spool = backend(tmp_path / "s.db", "a")
    keys = spool.commit([track(n) for n in range(4)], time.time(), False)
    spool.remove(keys[:2])
    spool.remove(keys[2:])
    assert (rows(tmp_path / "s.db", "batches"), rows(tmp_path / "s.db", "bodies")) == (0, 0)


def test_a_message_answered_again_counts_once(tmp_path: Path) -> None:
    """Removing a key again does not count down its batch twice (which would drop others)."""
    dead = backend(tmp_path / "s.db", "dead", lease=-1.0)
    keys = dead.commit([track(n) for n in range(3)], time.time(), False)
    for _ in range(3):
        dead.remove([keys[0]])
    dead.close()
    assert [mid for _, mid in taken(tmp_path / "s.db")] == ["m-u1-1", "m-u1-2"]


def test_a_parked_batch_member_gets_a_row_of_its_own(tmp_path: Path) -> None:
    """Parking one message of a batch moves it to its own row, due when it was parked to."""
    spool = backend(tmp_path / "s.db", "a")
    keys = spool.commit([track(n) for n in range(3)], time.time(), False)
    due = time.time() + 30
    spool.park([(keys[1], due, 2)])
    assert spool.claim(10, due - 1) == []
    (claimed,) = spool.claim(10, due)
    assert (claimed.key, claimed.message._mid, claimed.tries) == (keys[1], "m-u1-1", 2)
    assert status(tmp_path / "s.db").messages == 3


def test_a_parked_member_answered_leaves_its_batch_alone(tmp_path: Path) -> None:
    """Answering a parked member removes its row; the batch still holds the others."""
    spool = backend(tmp_path / "s.db", "a", lease=-1.0)
    keys = spool.commit([track(n) for n in range(3)], time.time(), False)
    spool.park([(keys[1], time.time(), 1)])
    spool.remove([keys[1]])
    spool.close()
    assert [mid for _, mid in taken(tmp_path / "s.db")] == ["m-u1-0", "m-u1-2"]


def test_a_released_spool_goes_whole_to_the_next_owner_in_order(tmp_path: Path) -> None:
    """After a clean stop the next owner takes batches and parked rows in key order."""
    spool = backend(tmp_path / "s.db", "a")
    held = spool.commit([track(n) for n in range(2)], time.time(), False)
    parked = spool.commit([track(2)], time.time(), True)
    more = spool.commit([track(3)], time.time(), False)
    assert spool.release() == 4
    spool.close()
    assert [key for key, _ in taken(tmp_path / "s.db")] == held + parked + more


def test_status_counts_batches_and_rows(tmp_path: Path) -> None:
    """Status counts what batches have left beside the rows, and each owner's share."""
    spool = backend(tmp_path / "s.db", "a")
    keys = spool.commit([track(n) for n in range(4)], time.time(), False)
    spool.commit([track(4)], time.time() + 60, True)
    spool.remove([keys[0]])
    seen = status(tmp_path / "s.db")
    assert (seen.messages, seen.parked, seen.unowned) == (4, 1, 0)
    assert [(o.owner, o.messages) for o in seen.owners] == [("a", 4)]
    assert seen.bytes > 0


def test_an_owner_taken_over_cannot_touch_what_was_taken(tmp_path: Path) -> None:
    """A stalled owner's late answer does not remove messages another owner took over."""
    stalled = backend(tmp_path / "s.db", "stalled", lease=-1.0)
    keys = stalled.commit([track(n) for n in range(2)], time.time(), False)
    taker = backend(tmp_path / "s.db", "taker")
    assert taker.take_over(time.time()) == 2
    stalled.remove(keys)
    assert status(tmp_path / "s.db").messages == 2


def test_a_damaged_batch_is_reported_and_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch whose body cannot be read is logged as lost, and the rest is still taken."""
    dead = backend(tmp_path / "s.db", "dead", lease=-1.0)
    bad = dead.commit([track(n) for n in range(3)], time.time(), False)
    good = dead.commit([track(3)], time.time(), False)
    dead.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("UPDATE bodies SET data = x'01ffff' WHERE id = ?", (bad[0],))
    with caplog.at_level(logging.ERROR, logger="courier_analytics"):
        assert taken(tmp_path / "s.db") == [(good[0], "m-u1-3")]
    assert f"damaged batch (keys {bad[0]} to {bad[-1]})" in caplog.text
    assert "m-u1-" not in caplog.text


def test_rows_of_the_earlier_form_are_still_taken(tmp_path: Path) -> None:
    """A file whose messages are a row each (as earlier versions wrote them) is delivered."""
    message = track(7)
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, type TEXT NOT NULL, mid TEXT, "
            "user_id TEXT, anonymous_id TEXT, event TEXT, data BLOB NOT NULL, maker TEXT NOT NULL, "
            "owner TEXT, state INTEGER NOT NULL, made_at REAL NOT NULL, "
            "next_at REAL NOT NULL DEFAULT 0, tries INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute(
            "INSERT INTO messages (id, type, mid, user_id, anonymous_id, event, data, maker, "
            "owner, state, made_at) "
            "VALUES (41, 'track', ?, 'u1', NULL, 'E', ?, 'old', 'old', 0, ?)",
            (message._mid, message._data, time.time()),
        )
    assert taken(tmp_path / "s.db") == [(41, "m-u1-7")]
