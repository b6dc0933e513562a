"""The spool's journal driven by hand (no thread): room in memory, order, barriers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from courier_analytics._messages import Message
from courier_analytics._spool import Settings
from courier_analytics._spool._journal import Journal
from courier_analytics._worker import Worker
from tests._spool_helpers import StubWorker

from .helpers import status, track


def journal_for(worker: StubWorker, path: Path) -> Journal:
    journal = Journal(cast(Worker, worker), Settings(str(path), commit_interval=1e-9))
    journal.start()
    return journal


def finish(worker: StubWorker, journal: Journal, message: Message) -> None:
    """End a released message's delivery as the worker's `_finish_lane` does."""
    journal.finished(message)
    worker.held -= 1
    worker.lanes.finish(message)


def identify(n: int, user: str = "u1") -> Message:
    body = f'{{"type":"identify","messageId":"i-{n}","userId":"{user}","traits":{{}}}}'
    return Message("identify", f"i-{n}", user, None, None, body.encode())


def ids(messages: list[Message]) -> list[str]:
    return [m.message_id for m in messages]


def test_messages_beyond_memory_wait_in_the_spool(tmp_path: Path) -> None:
    """Beyond max_queue_size in memory, committed messages are parked, not held."""
    worker = StubWorker(max_queue_size=3)
    journal = journal_for(worker, tmp_path / "s.db")
    worker.queue.extend(track(n) for n in range(10))
    journal.drain()
    assert ids(worker.released) == [f"m-u1-{n}" for n in range(3)]
    assert worker.held == 10
    assert status(tmp_path / "s.db").parked == 7
    journal.stop()


def test_a_message_object_queued_twice_has_a_row_for_each_copy(tmp_path: Path) -> None:
    """One message object queued twice is held twice; each copy's end removes one row."""
    worker = StubWorker(max_queue_size=100)
    journal = journal_for(worker, tmp_path / "s.db")
    message = track(0)
    worker.queue.extend([message, track(1), message])
    journal.drain()
    assert ids(worker.released) == ["m-u1-0", "m-u1-1", "m-u1-0"]
    finish(worker, journal, message)
    journal.drain()
    assert status(tmp_path / "s.db").messages == 2
    finish(worker, journal, message)
    finish(worker, journal, worker.released[1])
    journal.drain()
    assert status(tmp_path / "s.db").messages == 0
    journal.stop()


def test_parked_messages_come_back_in_order_as_room_frees(tmp_path: Path) -> None:
    """As held messages finish, parked ones are claimed oldest first, new ones behind them."""
    worker = StubWorker(max_queue_size=3)
    journal = journal_for(worker, tmp_path / "s.db")
    worker.queue.extend(track(n) for n in range(6))
    journal.drain()
    worker.queue.extend(track(n) for n in range(6, 8))  # while older ones are parked
    journal.drain()
    for _ in range(10):  # rounds: each finishes what is released, then claims more
        for message in list(worker.released[-3:]):
            finish(worker, journal, message)
        journal.drain()
        if len(worker.released) == 8:
            break
    assert ids(worker.released) == [f"m-u1-{n}" for n in range(8)]
    journal.stop()


def test_a_parked_barrier_holds_back_its_users_later_messages(tmp_path: Path) -> None:
    """A user's identify parked for a retry goes before their later track, which waits with it."""
    worker = StubWorker(max_queue_size=100)
    journal = journal_for(worker, tmp_path / "s.db")
    first, later = identify(0), track(1)
    worker.queue.extend([first, later])
    journal.drain()
    assert ids(worker.released) == ["i-0"]  # the track waits for the identify
    assert journal.park(first) is None
    finish(worker, journal, first)
    journal.drain()
    assert ids(worker.released) == ["i-0"]  # neither is due yet
    assert status(tmp_path / "s.db").parked == 2
    journal._clock = lambda: time.time() + 3600
    journal.drain()
    assert ids(worker.released) == ["i-0", "i-0"]  # the identify again, the track behind it
    finish(worker, journal, worker.released[-1])
    assert ids(worker.released) == ["i-0", "i-0", "m-u1-1"]
    journal.stop()


def test_stop_releases_everything_for_the_next_owner(tmp_path: Path) -> None:
    """At stop, held and parked messages stay in the spool, owned by no one."""
    worker = StubWorker(max_queue_size=2)
    journal = journal_for(worker, tmp_path / "s.db")
    worker.queue.extend(track(n) for n in range(5))
    journal.drain()
    for message in worker.lanes.drain():
        journal.keep(message)
    for message in worker.released:
        journal.keep(message)
    worker.held = 0
    journal.stop()
    assert journal.left == 5
    assert status(tmp_path / "s.db").unowned == 5
