"""The Redis Streams spool: one store that a fleet of machines shares.

`spool="redis://host:6379/0?stream=NAME&shards=N"` (or `rediss://` for TLS).
Messages are appended to N shard streams, a user's messages always to the same
shard (a CRC-32 of the user), so one stream keeps each user's order.

Who delivers: every consumer (an app process with `deliver=True`, the default,
or a `courier-analytics relay`) registers in a sorted set with an expiry and
takes leases on shards (`SET lease owner NX PX`), at most its fair share
(shards / live consumers, rounded up). A shard is read by its lease holder only,
through the consumer group `courier-analytics`: an entry stays in the group's
pending entries list until Courier answered, then it is acknowledged and
deleted (`XACK` + `XDEL`, one pipeline). One reader per shard is what keeps the
identify barrier of `ordering="identify"` across a fleet: a user's later
messages are never sent by another relay while their identify waits.

A consumer that dies stops renewing its leases; when one expires, a live
consumer takes the shard and first adopts every pending entry of it
(`XAUTOCLAIM` with no minimum idle time: the lease, not the idle time, says the
old reader is gone), then reads new entries. Adopted entries are sent again:
at-least-once, and Courier drops the repeats by `messageId`.

A message whose retries ran out stays pending and is parked in a sorted set by
due time (`due:N`); after `spool_max_age` it fails and is copied to the
dead-letter stream (`NAME:dead`, the last 10 000 kept) that `courier-analytics
spool status` counts.

The bound is on memory: `spool_max_bytes` bounds what the shard streams use as
Redis reports it (`MEMORY USAGE`); beyond it new messages are dropped, counted
and reported. Trimming (`XADD MAXLEN`) was not chosen: it drops the oldest
entries, pending or not, so it would lose messages silently.
"""

from __future__ import annotations

import os
import socket
import zlib
from collections.abc import Callable, Sequence
from itertools import count
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.exceptions import OutOfMemoryError, RedisError

from courier_analytics._messages import Message, _made
from courier_analytics._spool import SpoolError
from courier_analytics._spool._backend import Claimed, OwnerStatus, SpoolStatus

__all__ = ["DEFAULT_SHARDS", "DEFAULT_STREAM", "RedisBackend", "redis_options"]

#: The stream's name when the URL names none (`?stream=`).
DEFAULT_STREAM = "courier-analytics"
#: Shard streams when the URL says nothing (`?shards=`): the most relays that can share work.
DEFAULT_SHARDS = 8
#: The consumer group every consumer reads through.
GROUP = "courier-analytics"
#: Dead letters kept (the oldest go first).
DEAD_KEPT = 10_000
#: Seconds a Redis command may take before it counts as a failure.
TIMEOUT = 5.0
#: Entries one bookkeeping command names at most.
CHUNK = 1000
#: Seconds between two looks for new entries while idle.
POLL = 0.05

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# Bookkeeping writes (registration, leases, due times, dead letters) go through this
# on Redis 7+: each is a few bytes, and they must work while Redis is full
# (`maxmemory`), or the relays that would empty it could not take a shard or park
# what Courier refused. Commits (`XADD` of new messages) never do: those fail.
_ALLOW_OOM = """#!lua flags=allow-oom
return redis.call(unpack(ARGV))
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def redis_options(url: str) -> tuple[str, str, int]:
    """Split a spool URL into the server's URL, the stream's name and the shard count.

    Raises:
        ValueError: a bad `stream` or `shards`, or another query parameter.
    """
    parts = urlsplit(url)
    stream, shards, rest = DEFAULT_STREAM, DEFAULT_SHARDS, []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "stream":
            if not value or any(c.isspace() for c in value):
                raise ValueError("the stream's name must be non-empty, without spaces")
            stream = value
        elif name == "shards":
            if not value.isdigit() or not 1 <= int(value) <= 1024:
                raise ValueError(f"shards must be a whole number from 1 to 1024, not {value!r}")
            shards = int(value)
        else:
            rest.append((name, value))
    server = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    return server, stream, shards


def redacted(url: str) -> str:
    """A spool URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))


def shard_of(user: str, shards: int) -> int:
    """The shard of a user's messages: the same in every process (not Python's `hash`)."""
    return zlib.crc32(user.encode()) % shards


#: A claim's candidate: entry id, its fields (None: deleted meanwhile), tries, was parked.
_Candidate = tuple[bytes, dict[bytes, bytes] | None, int, bool]


def _order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq)


class RedisBackend:
    """A spool in Redis Streams (see the module's docstring).

    Args:
        url: `redis://...` or `rediss://...` with optional `stream` and `shards`.
        owner: This owner's token: its consumer name in the group.
        lease: Seconds a consumer's registration and shard leases last unrenewed.
        deliver: Whether this owner reads from the shards (else it only commits).
        connect: Makes the Redis client from the server's URL (tests pass their own).
    """

    def __init__(
        self,
        url: str,
        *,
        owner: str,
        lease: float,
        deliver: bool = True,
        connect: Callable[[str], Any] | None = None,
    ) -> None:
        self.url, self.stream, self.shards = redis_options(url)
        self.owner = owner
        self.deliver = deliver
        self._lease_ms = max(1, int(lease * 1000))
        self._lease = lease
        self._connect = connect or _connect
        self._redis: Any = None
        self._pid = 0
        self._where = redacted(self.url)
        self._keys = count(1)
        self._by_key: dict[int, tuple[int, bytes]] = {}  # held or parked here
        self._by_entry: dict[tuple[int, bytes], int] = {}
        self._parked_here: set[int] = set()  # keys this owner parked (counted by its journal)
        self._mine: set[int] = set()  # shards whose lease this owner holds
        self._leaving: set[int] = set()  # held beyond the fair share: released once idle
        self._held: set[tuple[int, bytes]] = set()  # (shard, entry) in memory here
        self._allow_oom = False  # Redis 7+: bookkeeping may write while Redis is full

    # ------------------------------------------------------------------ keys

    def _shard(self, shard: int) -> str:
        return f"{self.stream}:{shard}"

    def _due(self, shard: int) -> str:
        return f"{self.stream}:due:{shard}"

    def _tries(self, shard: int) -> str:
        return f"{self.stream}:tries:{shard}"

    def _lease_key(self, shard: int) -> str:
        return f"{self.stream}:lease:{shard}"

    @property
    def _consumers(self) -> str:
        return f"{self.stream}:consumers"

    @property
    def _who(self) -> str:
        return f"{self.stream}:who"

    @property
    def dead_letters(self) -> str:
        """The dead-letter stream's name."""
        return f"{self.stream}:dead"

    # ------------------------------------------------------------ connection

    def open(self) -> None:
        """Connect, make the shard streams and their group, and register this consumer."""
        if self._redis is not None and self._pid == os.getpid():
            return
        self._redis, self._pid = self._connect(self.url), os.getpid()
        self._mine.clear()
        self._leaving.clear()
        self._by_key.clear()
        self._by_entry.clear()
        self._held.clear()
        with self._failing("open"):
            version = str(self._redis.info("server").get("redis_version", "0"))
            self._allow_oom = int(version.partition(".")[0] or 0) >= 7
            pipe = self._redis.pipeline(transaction=False)
            for shard in range(self.shards):
                stream = self._shard(shard)
                self._keep(pipe, stream, "XGROUP", "CREATE", stream, GROUP, "0", "MKSTREAM")
            for result in pipe.execute(raise_on_error=False):
                if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                    raise result
            self._renew = self._redis.register_script(_RENEW)
            self._release = self._redis.register_script(_RELEASE)

    def _keep(self, target: Any, key: str, *command: Any) -> Any:
        """Queue (on a pipeline) or run a bookkeeping write on `key`; see `_ALLOW_OOM`."""
        if self._allow_oom:
            return target.eval(_ALLOW_OOM, 1, key, *command)
        return target.execute_command(*command)

    def _make_due(self, target: Any, shard: int, entry_ids: Sequence[bytes]) -> None:
        """Make entries due at once unless parked already (`ZADD NX`), a chunk at a time."""
        due = self._due(shard)
        for start in range(0, len(entry_ids), CHUNK):  # a script's arguments are bounded
            pairs = [
                part for entry_id in entry_ids[start : start + CHUNK] for part in (0, entry_id)
            ]
            self._keep(target, due, "ZADD", due, "NX", *pairs)

    def close(self) -> None:
        """Drop the connection (the messages stay in Redis)."""
        client, self._redis = self._redis, None
        if client is not None and self._pid == os.getpid():
            client.close()

    def _failing(self, doing: str) -> _Failing:
        if self._redis is None or self._pid != os.getpid():
            raise SpoolError(f"the spool {self._where} is not open in this process")
        return _Failing(f"the spool {self._where} failed to {doing}")

    # -------------------------------------------------------------- messages

    def commit(self, messages: Sequence[Message], made_at: float, parked: bool) -> list[int]:
        """Append messages to their users' shards, in one pipeline; keys for the batch.

        Committed messages belong to the fleet: whoever holds a shard's lease
        delivers its entries, so `parked` makes no difference here.
        """
        with self._failing("commit"):
            # MULTI/EXEC: a batch that Redis refuses (full) leaves no entry behind, so
            # committing it again later makes no second copy.
            pipe = self._redis.pipeline(transaction=True)
            stamp = repr(made_at).encode()
            maker = self.owner.encode()
            shards = self.shards
            for m in messages:
                fields = {b"t": m.type, b"d": m._data, b"k": maker, b"at": stamp}
                if m._mid is not None:
                    fields[b"i"] = m._mid
                if m.user_id is not None:
                    fields[b"u"] = m.user_id
                if m.anonymous_id is not None:
                    fields[b"a"] = m.anonymous_id
                if m.event is not None:
                    fields[b"e"] = m.event
                pipe.xadd(self._shard(shard_of(m.recipient, shards)), fields)
            pipe.execute()
        return [next(self._keys) for _ in messages]

    def claim(
        self, limit: int, now: float, take: Callable[[int, Message], bool] | None = None
    ) -> list[Claimed]:
        """Entries of this owner's shards that are due or new, oldest first per shard.

        A look at every shard this owner holds is one round trip (a relay looks
        twenty times a second while idle); due entries' fields and the writes add
        one each when there are any.
        """
        if not self.deliver or not self._mine:
            return []
        claimed: list[Claimed] = []
        gone: list[tuple[int, bytes]] = []
        try:
            with self._failing("claim"):
                shards = sorted(self._mine - self._leaving)
                found = self._candidates(shards, now, -(-limit // len(shards)))
                pipe = self._redis.pipeline(transaction=False)
                for shard in shards:
                    self._claim_shard(shard, found[shard], limit, take, claimed, pipe)
                    gone.extend((shard, c[0]) for c in found[shard] if c[1] is None)
                pipe.execute()
        except SpoolError:
            # Not handed over: what was read stays pending here, made due again by
            # `_reconcile`; what this owner had parked is still counted as parked.
            for entry in claimed:
                self._held.discard(self._by_key[entry.key])
                if entry.counted:
                    self._parked_here.add(entry.key)
            raise
        for shard, entry_id in gone:
            self._forget(shard, entry_id)
        return claimed

    def _claim_shard(
        self,
        shard: int,
        candidates: list[_Candidate],
        limit: int,
        take: Callable[[int, Message], bool] | None,
        claimed: list[Claimed],
        pipe: Any,
    ) -> None:
        """Hand over a shard's candidates, up to `limit` in all; queue its writes on `pipe`."""
        gone: list[bytes] = []
        wait: list[bytes] = []  # read now but not taken: due at once, next time
        taken: list[bytes] = []
        for entry_id, fields, tries, was_due in candidates:
            if fields is None:  # deleted meanwhile (answered by a reader before us)
                gone.append(entry_id)
                continue
            message = _message(fields) if len(claimed) < limit else None
            key = self._key_of(shard, entry_id) if message is not None else 0
            if message is None or (take is not None and not take(key, message)):
                if not was_due:
                    wait.append(entry_id)
                continue
            counted = key in self._parked_here
            self._parked_here.discard(key)
            self._held.add((shard, entry_id))
            made_at = float(fields.get(b"at", b"0"))
            maker = fields.get(b"k", b"").decode()
            claimed.append(Claimed(key, message, maker, tries, made_at, counted))
            if was_due:
                taken.append(entry_id)
        if taken or gone:
            pipe.zrem(self._due(shard), *taken, *gone)
        self._make_due(pipe, shard, wait)
        if gone:
            pipe.xack(self._shard(shard), GROUP, *gone)

    def _candidates(self, shards: list[int], now: float, new: int) -> dict[int, list[_Candidate]]:
        """Each shard's parked entries due by `now` and up to `new` unread ones, oldest first.

        Each is (entry id, its fields or None if deleted meanwhile, tries, was parked).
        New entries join this owner's pending list as they are read.
        """
        r = self._redis
        pipe = r.pipeline(transaction=False)
        for shard in shards:
            pipe.zrangebyscore(self._due(shard), "-inf", now)
            pipe.xreadgroup(GROUP, self.owner, {self._shard(shard): ">"}, count=new)
        looked = pipe.execute()
        due, read = looked[0::2], looked[1::2]
        for shard, due_ids in zip(shards, due, strict=True):
            for entry_id in due_ids:
                pipe.xrange(self._shard(shard), entry_id, entry_id)
                pipe.hget(self._tries(shard), entry_id)
        fetched = iter(pipe.execute() if any(due) else ())
        found: dict[int, list[_Candidate]] = {}
        for shard, due_ids, entries in zip(shards, due, read, strict=True):
            candidates: list[_Candidate] = []
            for entry_id in due_ids:
                rows, tries = next(fetched), next(fetched)
                candidates.append((entry_id, rows[0][1] if rows else None, int(tries or 0), True))
            for _, fresh in entries or ():
                candidates.extend((entry_id, fields, 0, False) for entry_id, fields in fresh)
            candidates.sort(key=lambda c: _order(c[0]))
            found[shard] = candidates
        return found

    def _key_of(self, shard: int, entry_id: bytes) -> int:
        key = self._by_entry.get((shard, entry_id))
        if key is None:
            key = next(self._keys)
            self._by_entry[(shard, entry_id)] = key
            self._by_key[key] = (shard, entry_id)
        return key

    def _forget(self, shard: int, entry_id: bytes) -> None:
        key = self._by_entry.pop((shard, entry_id), None)
        if key is not None:
            del self._by_key[key]
            self._parked_here.discard(key)

    def _done(self, keys: Sequence[int], pipe: Any) -> list[tuple[int, bytes]]:
        """Acknowledge and delete entries (queued on `pipe`); the entries."""
        entries = [self._by_key[k] for k in keys if k in self._by_key]
        by_shard: dict[int, list[bytes]] = {}
        for shard, entry_id in entries:
            by_shard.setdefault(shard, []).append(entry_id)
        # Four commands a shard, not four a message: Redis's CPU per message is in them.
        for shard, ids in by_shard.items():
            stream = self._shard(shard)
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
            pipe.zrem(self._due(shard), *ids)
            pipe.hdel(self._tries(shard), *ids)
        return entries

    def _settle(self, entries: list[tuple[int, bytes]]) -> None:
        for entry in entries:
            self._forget(*entry)
            self._held.discard(entry)

    def remove(self, keys: Sequence[int]) -> None:
        """Acknowledge answered entries and delete them, in one pipeline."""
        with self._failing("acknowledge"):
            pipe = self._redis.pipeline(transaction=False)
            entries = self._done(keys, pipe)
            pipe.execute()
        self._settle(entries)

    def fail(self, keys: Sequence[int], reason: str) -> None:
        """Move entries that failed for good to the dead-letter stream."""
        with self._failing("move failed messages to the dead letters"):
            r = self._redis
            pipe = r.pipeline(transaction=False)
            entries = [self._by_key[k] for k in keys if k in self._by_key]
            for shard, entry_id in entries:
                pipe.xrange(self._shard(shard), entry_id, entry_id)
            found = pipe.execute() if entries else []
            pipe = r.pipeline(transaction=False)
            for entry in found:
                if entry:
                    fields = dict(entry[0][1])
                    fields[b"why"] = reason.encode()
                    dead = self.dead_letters
                    flat = [part for pair in fields.items() for part in pair]
                    self._keep(pipe, dead, "XADD", dead, "MAXLEN", "~", DEAD_KEPT, "*", *flat)
            self._done(keys, pipe)
            pipe.execute()
        self._settle(entries)

    def park(self, entries: Sequence[tuple[int, float, int]]) -> None:
        """Park held entries (they stay pending here) until their due time."""
        with self._failing("park"):
            pipe = self._redis.pipeline(transaction=False)
            parked: list[int] = []
            for key, due, tries in entries:
                where = self._by_key.get(key)
                if where is None:
                    continue
                shard, entry_id = where
                self._keep(pipe, self._due(shard), "ZADD", self._due(shard), due, entry_id)
                if tries:
                    tries_key = self._tries(shard)
                    self._keep(pipe, tries_key, "HINCRBY", tries_key, entry_id, tries)
                parked.append(key)
            pipe.execute()
        for key in parked:
            self._parked_here.add(key)
            self._held.discard(self._by_key[key])

    # ---------------------------------------------------------------- leases

    def renew(self, now: float) -> bool:
        """Renew this consumer and its shard leases; False when one was lost meanwhile.

        Then everything held here is forgotten (the journal drops it from memory):
        a lost shard's new holder adopts its entries, and what is pending in the
        shards still held is made due again by `_reconcile`.
        """
        if not self.deliver:
            return True
        with self._failing("renew its leases"):
            # A bookkeeping write (see `_ALLOW_OOM`): a full Redis refused a plain ZADD,
            # the upkeep stopped there, and no relay took a shard to drain it.
            until = now + self._lease
            self._keep(self._redis, self._consumers, "ZADD", self._consumers, until, self.owner)
            args = [self.owner, self._lease_ms]
            lost = {s for s in self._mine if not self._renew(keys=[self._lease_key(s)], args=args)}
        self._mine -= lost
        self._leaving -= lost
        for known in (self._by_key, self._by_entry, self._parked_here, self._held) if lost else ():
            known.clear()
        return not lost

    def take_over(self, now: float) -> int:
        """Renew this consumer and its leases, take free shards up to a fair share.

        Returns:
            How many pending entries came with the shards taken (now parked, due at once).
        """
        if not self.deliver:
            return 0
        with self._failing("renew its leases"):
            r = self._redis
            pipe = r.pipeline(transaction=False)
            until = now + self._lease
            self._keep(pipe, self._consumers, "ZADD", self._consumers, until, self.owner)
            where = f"{socket.gethostname()} {os.getpid()}"
            self._keep(pipe, self._who, "HSET", self._who, self.owner, where)
            pipe.zremrangebyscore(self._consumers, "-inf", now)
            pipe.zcard(self._consumers)
            live = max(1, pipe.execute()[-1])
            # Its shard leases were renewed just before, by `renew` (the journal's upkeep).
            share = -(-self.shards // live)
            # Beyond the fair share, shards are read no more, and given up once nothing
            # of theirs is in memory here: the next holder never sends what this one does.
            for shard in sorted(self._mine - self._leaving, reverse=True):
                if len(self._mine) - len(self._leaving) <= share:
                    break
                self._leaving.add(shard)
            busy = {shard for shard, _ in self._held}
            for shard in list(self._leaving):
                if shard not in busy:
                    self._release(keys=[self._lease_key(shard)], args=[self.owner])
                    self._mine.discard(shard)
                    self._leaving.discard(shard)
            for shard in self._mine - self._leaving:
                self._reconcile(shard)
            taken = 0
            start = shard_of(self.owner, self.shards)  # consumers start apart
            for step in range(self.shards):
                if len(self._mine) >= share:
                    break
                shard = (start + step) % self.shards
                if shard in self._mine:
                    continue
                key = self._lease_key(shard)
                if self._keep(r, key, "SET", key, self.owner, "NX", "PX", self._lease_ms):
                    self._mine.add(shard)
                    taken += self._adopt(shard)
        return taken

    def _reconcile(self, shard: int) -> None:
        """Make due again what is pending here but neither in memory nor parked.

        A read whose reply was lost (Redis restarted, a timeout) leaves entries in
        this consumer's pending list that no one would ever send. Parked entries
        keep their due time (`NX`).
        """
        r, stream = self._redis, self._shard(shard)
        lost: list[bytes] = []
        start: Any = "-"
        while True:
            page = r.xpending_range(stream, GROUP, start, "+", 1000, consumername=self.owner)
            lost.extend(p["message_id"] for p in page if (shard, p["message_id"]) not in self._held)
            if len(page) < 1000:
                break
            ms, seq = _order(page[-1]["message_id"])
            start = f"{ms}-{seq + 1}"
        self._make_due(r, shard, lost)

    def _adopt(self, shard: int) -> int:
        """Make every pending entry of a shard just taken this consumer's, due now."""
        r, stream = self._redis, self._shard(shard)
        adopted: list[bytes] = []
        cursor: Any = "0-0"
        while True:
            # Whole entries, not JUSTID: redis-py's parser drops the cursor with JUSTID.
            reply = r.xautoclaim(stream, GROUP, self.owner, 0, cursor, count=1000)
            cursor, ids = reply[0], [entry_id for entry_id, _ in reply[1]]
            adopted.extend(ids)
            if cursor in (b"0-0", "0-0") or not ids:
                break
        self._make_due(r, shard, adopted)
        return len(adopted)

    def release(self) -> int:
        """Give up this consumer's shards and registration (pending entries stay for the next)."""
        if self._redis is None or self._pid != os.getpid():
            return 0
        held = len(self._by_key)
        with self._failing("release its leases"):
            for shard in self._mine:
                self._release(keys=[self._lease_key(shard)], args=[self.owner])
            self._redis.zrem(self._consumers, self.owner)
            self._redis.hdel(self._who, self.owner)
        self._mine.clear()
        self._leaving.clear()
        self._by_key.clear()
        self._by_entry.clear()
        self._held.clear()
        return held

    def next_due(self, after: float) -> float | None:
        """The next look: a parked entry's due time, or soon (new entries may come)."""
        if not self.deliver:
            return None
        soonest = after + POLL
        if not self._mine:
            return soonest
        with self._failing("read due times"):
            pipe = self._redis.pipeline(transaction=False)
            for shard in self._mine:
                pipe.zrangebyscore(
                    self._due(shard), f"({after}", "+inf", start=0, num=1, withscores=True
                )
            for found in pipe.execute():
                if found:
                    soonest = min(soonest, float(found[0][1]))
        return soonest

    def used_bytes(self) -> int:
        """Bytes the shard streams use in Redis (`MEMORY USAGE`)."""
        with self._failing("measure its memory"):
            pipe = self._redis.pipeline(transaction=False)
            for shard in range(self.shards):
                pipe.memory_usage(self._shard(shard))
            return sum(int(n or 0) for n in pipe.execute())

    def tidy(self) -> None:
        """Nothing to do: answered entries are deleted as they are acknowledged."""

    # ---------------------------------------------------------------- status

    def inspect(self, now: float) -> SpoolStatus:
        """`status` without registering as a consumer or changing anything."""
        self._redis, self._pid = self._connect(self.url), os.getpid()
        try:
            return self.status(now)
        finally:
            self.close()

    def status(self, now: float) -> SpoolStatus:
        """What the streams hold, for `courier-analytics spool status`."""
        with self._failing("show its status"):
            r = self._redis
            pipe = r.pipeline(transaction=False)
            for shard in range(self.shards):
                pipe.xlen(self._shard(shard))
                pipe.get(self._lease_key(shard))
                pipe.zcard(self._due(shard))
                pipe.zrangebyscore(
                    self._due(shard), "-inf", "+inf", start=0, num=1, withscores=True
                )
                pipe.xrange(self._shard(shard), "-", "+", count=1)
                pipe.memory_usage(self._shard(shard))
            pipe.zrange(self._consumers, 0, -1, withscores=True)
            pipe.hgetall(self._who)
            pipe.xlen(self.dead_letters)
            results = pipe.execute()
        return _summary(results, self.shards, now)


def _summary(results: list[Any], shards: int, now: float) -> SpoolStatus:
    """The status from `RedisBackend.status`'s pipeline: six replies a shard, then the rest."""
    messages = used = unowned = parked = 0
    oldest: float | None = None
    next_due: float | None = None
    held: dict[str, int] = {}
    for shard in range(shards):
        length, holder, waiting, first_due, first, size = results[shard * 6 : shard * 6 + 6]
        messages += length
        used += int(size or 0)
        parked += waiting
        if holder is None:
            unowned += length
        else:
            held[holder.decode()] = held.get(holder.decode(), 0) + length
        if first_due:
            due = float(first_due[0][1])
            next_due = due if next_due is None else min(next_due, due)
        if first:
            made = float(first[0][1].get(b"at", b"0"))
            oldest = made if oldest is None else min(oldest, made)
    consumers, who, dead = results[shards * 6 :]
    owners = []
    for name, until in consumers:
        owner = name.decode()
        host, _, pid = (who.get(name) or b"? 0").decode().rpartition(" ")
        owners.append(OwnerStatus(owner, host, int(pid or 0), held.get(owner, 0), until - now))
    return SpoolStatus(
        messages=messages,
        bytes=used,
        file_bytes=used,
        oldest_age=None if oldest is None else max(0.0, now - oldest),
        unowned=unowned,
        parked=parked,
        next_retry=None if next_due is None else max(0.0, next_due - now),
        owners=tuple(owners),
        dead=dead,
    )


def _message(fields: dict[bytes, bytes]) -> Message:
    def text(name: bytes) -> str | None:
        value = fields.get(name)
        return None if value is None else value.decode()

    kind = fields[b"t"].decode()
    return _made(kind, text(b"i"), text(b"u"), text(b"a"), text(b"e"), fields[b"d"])


def _connect(url: str) -> Any:
    return redis.Redis.from_url(
        url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, health_check_interval=30
    )


class _Failing:
    """Turns Redis errors into `SpoolError`s (Redis full: `maxmemory` reached)."""

    def __init__(self, doing: str) -> None:
        self._doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or not isinstance(exc, RedisError):
            return
        if isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM"):
            raise SpoolError(f"{self._doing}: Redis is full (maxmemory reached)") from None
        # A pipeline's error names its command, arguments (a message's data) and all:
        # only the server's words are kept, and the chain is cut for the same reason.
        text = str(exc).rpartition("caused error: ")[2]
        raise SpoolError(f"{self._doing}: {type(exc).__name__}: {text}") from None
