"""The SQLite spool: one file (WAL mode) that the processes of one host share.

Messages are stored two ways, one table of owners beside them:

- A batch that a process commits to deliver from its memory (the usual case) is
  one row of `batches`, its messages packed into one row of `bodies`: one
  B-tree insert and one delete for the whole batch, where a row per message
  cost SQLite several times as much CPU per message as the rest of the spool.
  The batch's keys are consecutive, from its `id`; `left` and `done` (a bitmap,
  in the small row, so that writing it never rewrites the body) record which
  messages were answered, so that a process that dies re-sends only the rest.
  A batch is only ever held by the process that committed it.
- Every message that needs a state of its own is one row of `messages`: parked
  ones (each with its due time and tries), those of a batch its owner left
  (taken over, released, or one message parked), which the next owner unpacks,
  and the last few of a batch that lingers (one message retrying for minutes
  must not keep a whole body on disk).

Each row names its `maker` (the client that made it) and its `owner` (the client
that may deliver it now); an owner's claim is a lease, renewed by `take_over`
every few seconds. Rows whose owner is gone (its lease expired, or its process on
this host no longer exists) or that nobody owns are taken by the next `take_over`
of a live owner, in one transaction, so one owner takes all of them and each
user's order is kept.

Why these settings:

- WAL: readers never wait for the writer; processes commit one after another.
- `synchronous=NORMAL`: a commit survives the process being killed (not a power
  loss); `FULL` would add an fsync to every commit.
- A busy timeout: several processes write the same file.
- `auto_vacuum=INCREMENTAL` and `journal_size_limit`: under churn the file reuses
  its free pages and gives them back (`tidy`), and the WAL is cut back after
  each checkpoint, so the disk used follows what is stored.
- Keys are assigned here, one above the largest of either table and of `keys`,
  in one write transaction: the order of keys is the order of commits, which
  `claim` keeps. A key taken over is never given again: a process that stalled
  past its lease may still hold keys whose messages another took and finished,
  and must never find them naming a new message of its own. So a take-over
  writes the largest key in `keys` (a commit need not: while its owner holds
  them, its keys are in the tables).

A connection belongs to the process that opened it: a forked child gets its own,
and the parent's, which it inherited, is kept open and never used (closing it in
the child could disturb the parent's locks).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import operator
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import orjson

from courier_analytics._messages import Message, _made
from courier_analytics._spool import SpoolError
from courier_analytics._spool._backend import Claimed, OwnerStatus, SpoolStatus

__all__ = ["SqliteBackend"]

logger = logging.getLogger("courier_analytics")

#: Seconds a write waits for another process's write to end.
BUSY_TIMEOUT = 10.0
#: The WAL is cut back to this size after a checkpoint.
WAL_LIMIT = 4 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    mid TEXT,
    user_id TEXT,
    anonymous_id TEXT,
    event TEXT,
    data BLOB NOT NULL,
    maker TEXT NOT NULL,
    owner TEXT,
    state INTEGER NOT NULL,
    made_at REAL NOT NULL,
    next_at REAL NOT NULL DEFAULT 0,
    tries INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    left INTEGER NOT NULL,
    done BLOB,
    maker TEXT NOT NULL,
    owner TEXT,
    state INTEGER NOT NULL,
    made_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bodies (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    top INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS owners (
    owner TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    lease_until REAL NOT NULL
);
"""
# state: 0 held in its owner's memory; 1 parked by its owner (out of memory,
# claimed when due); 2 loose: taken over or released, not yet counted by its owner.
_HELD, _PARKED, _LOOSE = 0, 1, 2

# A message's own columns, taken in C for a whole batch; the batch's owner, state
# and time are written into the statement (the owner is our own hex token).
_ROW = operator.attrgetter("type", "_mid", "user_id", "anonymous_id", "event", "_data")
# The same, one getter per column, for a packed body (`pack`).
_HEAD = tuple(map(operator.attrgetter, ("type", "_mid", "user_id", "anonymous_id", "event")))
_DATA = operator.attrgetter("_data")
_INSERT = (
    "INSERT INTO messages (id, type, mid, user_id, anonymous_id, event, data, maker, owner, "
    "state, made_at) VALUES (?, ?, ?, ?, ?, ?, ?, '{owner}', '{owner}', {state}, {made_at!r})"
)
_COLUMNS = "id, type, mid, user_id, anonymous_id, event, data, maker, tries, made_at, state"
# A batch's message as a row of `messages` (its key given), once its batch is left.
_UNPACKED = (
    "INSERT OR REPLACE INTO messages (id, type, mid, user_id, anonymous_id, event, data, "
    "maker, owner, state, made_at, next_at, tries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The version of the packed body's format, its first byte.
_PACKED_V1 = 1

# Connections opened by this process, by pid; a forked child moves them to
# `_inherited` and never closes them.
_opened: dict[int, sqlite3.Connection] = {}
_inherited: list[sqlite3.Connection] = []
# Held while a connection of this process works on a spool file, and by fork():
# a fork waits until no connection is inside a transaction. SQLite keeps one record
# per process of the locks its connections hold on a file, shared by all of them;
# a child forked mid-transaction inherits a record of a lock that is never
# released there, and its own connection would find the file locked for good.
_in_use = threading.RLock()  # open() holds it around its first transaction


def _after_fork_in_child() -> None:
    _inherited.extend(_opened.values())
    _opened.clear()
    _in_use.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_in_use.acquire,
        after_in_parent=_in_use.release,
        after_in_child=_after_fork_in_child,
    )


def host_key() -> str:
    """This host and PID namespace: where a pid names the same process as ours."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process, alive
        return True
    return True


class SqliteBackend:
    """A spool in one SQLite file (see the module's docstring).

    Args:
        path: The file; made, with its directory, if missing.
        owner: This owner's token (one per client per process).
        lease: Seconds this owner's claim lasts without a renewal.
        alive: Whether a pid on this host is a live process (tests replace it).
    """

    def __init__(
        self,
        path: str,
        *,
        owner: str,
        lease: float,
        alive: Callable[[int], bool] = _alive,
    ) -> None:
        self.path = path
        self.owner = owner
        self._lease = lease
        self._alive = alive
        self._db: sqlite3.Connection | None = None
        self._host = host_key()
        self._page_size = 4096
        # The batches this owner committed and holds, by first key (sorted in
        # `_firsts`): which of their messages were answered or moved out.
        self._spans: dict[int, _Span] = {}
        self._firsts: list[int] = []

    # ----------------------------------------------------------------- connection

    def open(self) -> None:
        """Open (or create) the file and register this owner with a fresh lease."""
        if self._db is not None:
            return
        with _in_use:
            self._db = self._connect()
        _opened[id(self._db)] = self._db

    def _connect(self) -> sqlite3.Connection:
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the spool {self.path!r}: {exc}") from exc
        try:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file only
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SpoolError(
                    f"the spool {self.path!r} cannot use WAL mode (journal_mode={mode}); "
                    "is it on a network filesystem?"
                )
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            self._page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
            with _transaction(db, self.path):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                self._register(db, time.time())
        except sqlite3.Error as exc:  # e.g. not a database, or a read-only directory
            db.close()
            raise SpoolError(f"cannot open the spool {self.path!r}: {exc}") from exc
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Close the connection (the messages stay)."""
        db, self._db = self._db, None
        if db is None or _opened.pop(id(db), None) is None:
            return  # never opened, or inherited across fork: never closed here
        with _in_use, contextlib.suppress(sqlite3.Error):
            db.close()

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        db = self._db
        if db is None or id(db) not in _opened:
            raise SpoolError("the spool is not open in this process")
        return _transaction(db, self.path)

    def _register(self, db: sqlite3.Connection, now: float) -> None:
        db.execute(
            "INSERT OR REPLACE INTO owners (owner, host, pid, lease_until) VALUES (?, ?, ?, ?)",
            (self.owner, self._host, os.getpid(), now + self._lease),
        )

    # ------------------------------------------------------------------ messages

    def commit(self, messages: Sequence[Message], made_at: float, parked: bool) -> list[int]:
        """Store messages owned by this owner, oldest first; their keys.

        Held ones (delivered from this process's memory) are one batch row; parked
        ones a row each (each has its own due time).
        """
        owner, count = self.owner, len(messages)
        if not count:
            return []
        body = None if parked else pack(messages)
        with self._write() as db:
            first = _top(db) + 1
            if body is None:
                insert = _INSERT.format(owner=owner, state=_PARKED, made_at=float(made_at))
                db.executemany(
                    insert, [(key, *row) for key, row in enumerate(map(_ROW, messages), first)]
                )
            else:
                db.execute(
                    "INSERT INTO batches (id, count, left, maker, owner, state, made_at) "
                    f"VALUES (?, ?, ?, ?, ?, {_HELD}, ?)",
                    (first, count, count, owner, owner, float(made_at)),
                )
                db.execute("INSERT INTO bodies (id, data) VALUES (?, ?)", (first, body))
        if body is not None:
            self._spans[first] = _Span(messages, float(made_at))
            bisect.insort(self._firsts, first)
        return list(range(first, first + count))

    def claim(
        self, limit: int, now: float, take: Callable[[int, Message], bool] | None = None
    ) -> list[Claimed]:
        """This owner's parked messages due by `now`, oldest first, now held.

        Args:
            limit: The most to claim.
            now: Seconds since the epoch.
            take: Asked of each candidate in order; those it refuses stay parked
                (a user whose earlier message waits to retry).
        """
        claimed: list[Claimed] = []
        with self._write() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE owner = ? AND state != {_HELD} "
                "AND next_at <= ? ORDER BY id",
                (self.owner, now),
            )
            for key, kind, mid, user, anonymous, event, data, maker, tries, made, state in rows:
                message = _made(kind, mid, user, anonymous, event, data)
                if take is not None and not take(key, message):
                    continue
                claimed.append(Claimed(key, message, maker, tries, made, state == _PARKED))
                if len(claimed) >= limit:
                    break
            rows.close()
            db.executemany(
                f"UPDATE messages SET state = {_HELD} WHERE id = ?", [(c.key,) for c in claimed]
            )
        return claimed

    def remove(self, keys: Sequence[int]) -> None:
        """Forget answered messages (only while this owner owns them)."""
        owner = self.owner
        rows, members = _sort(keys, self._firsts, self._spans)
        with self._write() as db:
            if rows:
                db.executemany(
                    "DELETE FROM messages WHERE id BETWEEN ? AND ? AND owner = ?",
                    [(first, last, owner) for first, last in _runs(rows)],
                )
            marked = self._mark(db, members)
        self._marked(marked)

    def fail(self, keys: Sequence[int], reason: str) -> None:
        """Forget messages that outlived `spool_max_age` (their failure was reported)."""
        self.remove(keys)

    def park(self, entries: Sequence[tuple[int, float, int]]) -> None:
        """Move held messages out of memory: (key, due time in epoch seconds, tries added).

        A message of a batch moves to a row of its own, which its due time needs;
        its fields are taken from the message in memory (the batch keeps it), so
        parking never reads the batch's body.
        """
        owner = self.owner
        rows, members = _sort([key for key, _, _ in entries], self._firsts, self._spans)
        when = {key: (due, tries) for key, due, tries in entries}
        with self._write() as db:
            db.executemany(
                f"UPDATE messages SET state = {_PARKED}, next_at = ?, tries = tries + ? "
                "WHERE id = ? AND owner = ?",
                [(*when[key], key, owner) for key in rows],
            )
            for first, keys in members.items():
                ours = db.execute(
                    "SELECT 1 FROM batches WHERE id = ? AND owner = ?", (first, owner)
                ).fetchone()
                if ours is None:  # taken over: no longer this owner's to park
                    continue
                span = self._spans[first]
                db.executemany(
                    _UNPACKED,
                    [
                        (key, *_ROW(message), owner, owner, _PARKED, span.made_at) + when[key]
                        for key in keys
                        if (message := span.messages[key - first]) is not None
                    ],
                )
            marked = self._mark(db, members)
        self._marked(marked, moved=True)

    # -------------------------------------------------------------------- batches

    def _mark(self, db: sqlite3.Connection, members: dict[int, list[int]]) -> list[_Marked]:
        """Write which messages of each batch are answered (or moved out); a batch with
        none left goes. The batches' state in memory changes once this commits."""
        owner, marked = self.owner, []
        for first, keys in members.items():
            span = self._spans[first]
            done = bytearray(span.done)
            for key in keys:  # a key marked twice (written again after a failure) counts once
                index = key - first
                done[index >> 3] |= 1 << (index & 7)
            left = span.count - int.from_bytes(done, "little").bit_count()
            if left:
                ours = db.execute(
                    "UPDATE batches SET left = ?, done = ? WHERE id = ? AND owner = ?",
                    (left, bytes(done), first, owner),
                ).rowcount
            else:
                ours = db.execute(
                    "DELETE FROM batches WHERE id = ? AND owner = ?", (first, owner)
                ).rowcount
                if ours:
                    db.execute("DELETE FROM bodies WHERE id = ?", (first,))
            marked.append(_Marked(first, keys, done, left if ours else 0))
        return marked

    def _marked(self, marked: list[_Marked], *, moved: bool = False) -> None:
        """The batches' state in memory, once written (a batch taken over is forgotten)."""
        for first, keys, done, left in marked:
            span = self._spans[first]
            if not left:
                del self._spans[first]
                self._firsts.pop(bisect.bisect_left(self._firsts, first))
                continue
            span.done, span.left = done, left
            messages = span.messages
            for key in keys:  # answered or on a row of their own: not kept here
                messages[key - first] = None
            if moved:
                span.moved.update(key - first for key in keys)

    def _forget_batches(self) -> None:
        """This owner holds no batch any more (released, or taken over)."""
        self._spans.clear()
        self._firsts.clear()

    def _unpack_left(self, db: sqlite3.Connection) -> int:
        """Unpack the batches this owner took (left by others) into rows of their own;
        how many messages they held."""
        owner, count = self.owner, 0
        left = db.execute(
            "SELECT b.id, b.count, b.done, b.maker, b.made_at, d.data FROM batches b "
            f"LEFT JOIN bodies d ON d.id = b.id WHERE b.owner = ? AND b.state = {_LOOSE} "
            "ORDER BY b.id",
            (owner,),
        ).fetchall()
        later: list[tuple[int]] = []
        for first, size, done, maker, made_at, body in left:
            if isinstance(body, bytes) and body and body[0] > _PACKED_V1:  # a later version
                later.append((first,))
                continue
            if done is not None and len(done) < (size + 7) >> 3:
                logger.error(
                    "courier-analytics: the spool %s holds a damaged batch (keys %d to %d): "
                    "all its messages are sent again",
                    self.path,
                    first,
                    first + size - 1,
                )
                done = None
            try:
                messages = unpack(body)
                if len(messages) != size:
                    raise _Damaged(f"{len(messages)} messages where {size} were written")
            except (TypeError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
                logger.error(
                    "courier-analytics: the spool %s holds a damaged batch (keys %d to %d): "
                    "its messages are lost (%s)",
                    self.path,
                    first,
                    first + size - 1,
                    # Only our own words: others' (int(), a codec) may quote the data.
                    exc if isinstance(exc, _Damaged) else type(exc).__name__,
                )
                messages = []
            rows = [
                (first + i, *_ROW(message), maker, owner, _LOOSE, made_at, 0.0, 0)
                for i, message in enumerate(messages)
                if not (done and done[i >> 3] & (1 << (i & 7)))
            ]
            db.executemany(_UNPACKED, rows)
            db.execute("DELETE FROM batches WHERE id = ?", (first,))
            db.execute("DELETE FROM bodies WHERE id = ?", (first,))
            count += len(rows)
        if later:
            db.executemany(f"UPDATE batches SET owner = NULL, state = {_LOOSE} WHERE id = ?", later)
            logger.warning(
                "courier-analytics: the spool %s holds %d batch(es) written by a later version "
                "of courier-analytics; they are left for a process of that version",
                self.path,
                len(later),
            )
        return count

    def renew(self, now: float) -> bool:
        """Renew this owner's lease; False when another took over its rows meanwhile."""
        with self._write() as db:
            return self._renew(db, now)

    def _renew(self, db: sqlite3.Connection, now: float) -> bool:
        renewed = db.execute(
            "UPDATE owners SET lease_until = ? WHERE owner = ?", (now + self._lease, self.owner)
        ).rowcount
        if not renewed:  # taken over while it did not renew (a stalled process)
            self._register(db, now)
            self._forget_batches()
        return bool(renewed)

    def take_over(self, now: float) -> int:
        """Renew this owner's lease; take what gone owners left and what nobody owns.

        A lease found lost takes nothing and is not registered anew: the next `renew`
        says it was lost, and the journal drops the copies it holds (which the taker
        delivers), as it would had the stall come before its last renewal.
        """
        with self._write() as db:
            renewed = db.execute(
                "UPDATE owners SET lease_until = ? WHERE owner = ?", (now + self._lease, self.owner)
            ).rowcount
            if not renewed:
                return 0
            gone = [
                (owner,)
                for owner, host, pid, until in db.execute(
                    "SELECT owner, host, pid, lease_until FROM owners WHERE owner != ?",
                    (self.owner,),
                ).fetchall()
                if until < now or (host == self._host and not self._alive(pid))
            ]
            db.executemany("DELETE FROM owners WHERE owner = ?", gone)
            taken: int = db.execute(
                f"UPDATE messages SET owner = ?, state = {_LOOSE} "
                "WHERE owner IS NULL OR owner NOT IN (SELECT owner FROM owners)",
                (self.owner,),
            ).rowcount
            db.execute(
                f"UPDATE batches SET owner = ?, state = {_LOOSE} "
                "WHERE owner IS NULL OR owner NOT IN (SELECT owner FROM owners)",
                (self.owner,),
            )
            taken += self._unpack_left(db)
            if gone or taken:  # the owners gone may still hold these keys: never give them again
                db.execute("INSERT OR REPLACE INTO keys (id, top) VALUES (0, ?)", (_top(db),))
            lingering = self._spill_lingering(db, now)
        for first in lingering:  # their last messages are rows of their own now
            del self._spans[first]
            self._firsts.pop(bisect.bisect_left(self._firsts, first))
        return taken

    def _spill_lingering(self, db: sqlite3.Connection, now: float) -> list[int]:
        """Move the last messages of this owner's lingering batches (older than an
        upkeep, at most a quarter left) to rows of their own, still held, and drop the
        batches; their first keys.

        A body stays whole until its last message is answered: one message retrying
        for minutes would keep the bytes of thousands answered long ago, which
        `spool_max_bytes` counts. A batch answered promptly is never moved.
        """
        owner, spilled = self.owner, []
        old = now - self._lease / 3
        for first, span in self._spans.items():
            if span.made_at > old or span.left * 4 > span.count:
                continue
            if not db.execute(
                "DELETE FROM batches WHERE id = ? AND owner = ?", (first, owner)
            ).rowcount:
                continue
            db.execute("DELETE FROM bodies WHERE id = ?", (first,))
            db.executemany(
                _UNPACKED,
                [
                    (first + i, *_ROW(message), owner, owner, _HELD, span.made_at, 0.0, 0)
                    for i, message in enumerate(span.messages)
                    if message is not None
                ],
            )
            spilled.append(first)
        return spilled

    def next_due(self, after: float) -> float | None:
        """When this owner's earliest parked message due after `after` is due, or None."""
        with self._write() as db:
            due = db.execute(
                f"SELECT MIN(next_at) FROM messages WHERE owner = ? AND state != {_HELD} "
                "AND next_at > ?",
                (self.owner, after),
            ).fetchone()[0]
        return None if due is None else float(due)

    def used_bytes(self) -> int:
        """Bytes of the file's pages in use (free pages are reused, then given back)."""
        with self._write() as db:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free) * self._page_size

    def tidy(self) -> None:
        """Checkpoint the WAL (cutting it back) and give free pages back to the disk."""
        db = self._db
        if db is None or id(db) not in _opened:
            return
        try:
            with _in_use:
                self._tidy(db)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot tidy the spool {self.path!r}: {exc}") from exc

    @staticmethod
    def _tidy(db: sqlite3.Connection) -> None:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        if free > 64 and free * 4 > pages:  # a quarter free: give it back
            db.executescript("PRAGMA incremental_vacuum")  # stepped to its end
        # After the vacuum: the file shrinks when its pages are checkpointed.
        # PASSIVE: never waits for another process's readers or writer.
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def release(self) -> int:
        """Give up this owner's messages and lease, for the next process to take."""
        with self._write() as db:
            released: int = db.execute(
                f"UPDATE messages SET owner = NULL, state = {_LOOSE} WHERE owner = ?",
                (self.owner,),
            ).rowcount
            released += db.execute(
                "SELECT COALESCE(SUM(left), 0) FROM batches WHERE owner = ?", (self.owner,)
            ).fetchone()[0]
            db.execute(
                f"UPDATE batches SET owner = NULL, state = {_LOOSE} WHERE owner = ?",
                (self.owner,),
            )
            db.execute("DELETE FROM owners WHERE owner = ?", (self.owner,))
        self._forget_batches()
        return released

    def inspect(self, now: float) -> SpoolStatus:
        """`status` of an existing file, without registering as an owner or changing it."""
        if not os.path.exists(self.path):
            raise SpoolError(f"there is no spool at {self.path!r}")
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open the spool {self.path!r}: {exc}") from exc
        self._db = db
        _opened[id(db)] = db
        try:
            _read_as_now(db, self.path)
            return self.status(now)
        finally:
            self.close()

    def status(self, now: float) -> SpoolStatus:
        """What the file holds, for `courier-analytics spool status`."""
        with self._write() as db:
            return _status(db, self.path, now)


class _Span:
    """A batch this owner committed and holds: which of its messages are done."""

    __slots__ = ("count", "done", "left", "made_at", "messages", "moved")

    def __init__(self, messages: Sequence[Message], made_at: float) -> None:
        count = len(messages)
        self.count = count
        self.made_at = made_at
        self.left = count
        # Those not yet answered (held in memory anyway): `park` writes one from here.
        self.messages: list[Message | None] = list(messages)
        # Bit i: message i answered, or moved out to a row of its own (`moved`: parked).
        self.done = bytearray((count + 7) >> 3)
        self.moved: set[int] = set()


class _Marked(NamedTuple):
    """A batch's state as written in a transaction: taken into memory once it commits."""

    first: int
    keys: list[int]
    done: bytearray
    left: int  # 0: the batch is gone (all done, or no longer this owner's)


class _Damaged(ValueError):
    """A batch body that cannot be read, in words that quote none of its data."""


def _sort(
    keys: Iterable[int], firsts: list[int], spans: dict[int, _Span]
) -> tuple[list[int], dict[int, list[int]]]:
    """Keys of rows of their own, and the others by their batch's first key (sorted).

    Answers come back mostly in order: each batch's keys are one slice of the
    sorted keys, found by bisection, never looked at one by one.
    """
    if not firsts:
        return list(keys), {}
    ordered = sorted(keys)
    rows: list[int] = []
    members: dict[int, list[int]] = {}
    at, count = 0, len(ordered)
    while at < count:
        key = ordered[at]
        which = bisect.bisect_right(firsts, key) - 1
        first = firsts[which] if which >= 0 else 0
        span = spans[first] if which >= 0 else None
        if span is None or key >= first + span.count:
            rows.append(key)  # not in a batch: a row of its own
            at += 1
            continue
        end = bisect.bisect_left(ordered, first + span.count, at)
        batch = ordered[at:end]
        at = end
        moved = span.moved
        if moved:  # parked: rows of their own now
            rows.extend(key for key in batch if key - first in moved)
            batch = [key for key in batch if key - first not in moved]
        if batch:
            members[first] = batch
    return rows, members


def pack(messages: Sequence[Message]) -> bytes:
    """Messages as one batch's body: a version byte, the length of the head (4 bytes,
    little-endian), the head (the JSON of each message's fields, the length of its data
    in place of the data), then each message's data."""
    data = list(map(_DATA, messages))
    # Each message's head, its fields then its data's length: tuples zipped in C.
    fields = [map(field, messages) for field in _HEAD]
    head = orjson.dumps(list(zip(*fields, map(len, data), strict=True)))
    return b"".join([bytes((_PACKED_V1,)), len(head).to_bytes(4, "little"), head, *data])


def unpack(body: bytes) -> list[Message]:
    """The messages of a batch's body (`pack`); ValueError if it is damaged."""
    if not body or body[0] != _PACKED_V1:
        raise _Damaged("not a batch body of a known version")
    size = int.from_bytes(body[1:5], "little")
    at = 5 + size
    messages = []
    for kind, mid, user, anonymous, event, length in orjson.loads(body[5:at]):
        messages.append(_made(kind, mid, user, anonymous, event, body[at : at + length]))
        at += length
    if at != len(body):
        raise _Damaged("a batch body's data does not match its head")
    return messages


def _top(db: sqlite3.Connection) -> int:
    """The largest key in either table, or taken over (0 for a new file)."""
    top: int = db.execute(
        "SELECT MAX(COALESCE((SELECT top FROM keys), 0), "
        "COALESCE((SELECT MAX(id) FROM messages), 0), "
        "COALESCE((SELECT id + count - 1 FROM batches ORDER BY id DESC LIMIT 1), 0))"
    ).fetchone()[0]
    return top


def _status(db: sqlite3.Connection, path: str, now: float) -> SpoolStatus:
    """What the file holds (`SqliteBackend.status`), read in the caller's transaction."""
    count, size, oldest, unowned, parked, due = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0), MIN(made_at), "
        "COALESCE(SUM(owner IS NULL OR owner NOT IN (SELECT owner FROM owners)), 0), "
        f"COALESCE(SUM(state = {_PARKED}), 0), "
        f"MIN(CASE WHEN state != {_HELD} THEN next_at END) FROM messages"
    ).fetchone()
    # A batch's bytes: its body's share for the messages it has left.
    in_batches, batch_size, batch_oldest, batch_unowned, released = db.execute(
        "SELECT COALESCE(SUM(b.left), 0), "
        "COALESCE(SUM(LENGTH(d.data) * b.left / b.count), 0), MIN(b.made_at), "
        "COALESCE(SUM(CASE WHEN b.owner IS NULL OR b.owner NOT IN "
        "(SELECT owner FROM owners) THEN b.left ELSE 0 END), 0), "
        f"COALESCE(SUM(b.state = {_LOOSE}), 0) "
        "FROM batches b LEFT JOIN bodies d ON d.id = b.id"
    ).fetchone()
    owners = tuple(
        OwnerStatus(owner, host, pid, held, until - now)
        for owner, host, pid, until, held in db.execute(
            "SELECT o.owner, o.host, o.pid, o.lease_until, "
            "(SELECT COUNT(*) FROM messages m WHERE m.owner = o.owner) + "
            "(SELECT COALESCE(SUM(b.left), 0) FROM batches b WHERE b.owner = o.owner) "
            "FROM owners o ORDER BY o.owner"
        ).fetchall()
    )
    count, size, unowned = count + in_batches, size + batch_size, unowned + batch_unowned
    if batch_oldest is not None:
        oldest = batch_oldest if oldest is None else min(oldest, batch_oldest)
    if released:  # due now for the next owner, as a released row is (next_at 0)
        due = 0.0 if due is None else min(due, 0.0)
    files = sum(
        os.path.getsize(path + suffix)
        for suffix in ("", "-wal", "-shm")
        if os.path.exists(path + suffix)
    )
    return SpoolStatus(
        messages=count,
        bytes=size,
        file_bytes=files,
        oldest_age=None if oldest is None else max(0.0, now - oldest),
        unowned=unowned,
        parked=parked,
        next_retry=None if due is None else max(0.0, due - now),
        owners=owners,
    )


def _read_as_now(db: sqlite3.Connection, path: str) -> None:
    """Let `status` read a file an earlier version wrote (a row per message only)
    without changing it: the tables it lacks are made empty, for this connection only."""
    try:
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        if "messages" not in names:
            return  # not a spool: `status` says what is wrong
        for statement in _SCHEMA.split(";"):
            name = statement.split("(", 1)[0].split()[-1] if statement.strip() else ""
            if name in ("batches", "bodies") and name not in names:
                db.execute(statement.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE"))
    except sqlite3.Error as exc:  # e.g. not a database
        raise SpoolError(f"cannot read the spool {path!r}: {exc}") from exc


def _runs(keys: Sequence[int]) -> list[tuple[int, int]]:
    """Keys as runs of consecutive ones (answers come back mostly in order)."""
    ordered = sorted(keys)
    runs: list[tuple[int, int]] = []
    first = last = ordered[0] if ordered else 0
    for key in ordered[1:]:
        if key != last + 1:
            runs.append((first, last))
            first = key
        last = key
    if ordered:
        runs.append((first, last))
    return runs


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, path: str) -> Iterator[sqlite3.Connection]:
    """One write transaction (`BEGIN IMMEDIATE`: the lock is taken first, so no
    deadlock between two processes upgrading a read); errors as `SpoolError`."""
    with _in_use:  # no fork() meanwhile
        yield from _within(db, path)


def _within(db: sqlite3.Connection, path: str) -> Iterator[sqlite3.Connection]:
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise SpoolError(f"the spool {path!r} is unavailable: {exc}") from exc
    try:
        yield db
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise SpoolError(f"the spool {path!r} failed: {exc}") from exc
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    try:
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise SpoolError(f"the spool {path!r} failed to commit: {exc}") from exc
