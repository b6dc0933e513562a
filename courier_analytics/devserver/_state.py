"""The stand-in's memory: profiles, the event log, sends, stats and idempotency.

Everything lives in one `DevState` guarded by one lock, so a test thread can read
it while the server's event loop writes it. Writers (`_courier.py`) take
`state.lock` around a whole request; readers use the snapshot methods, which
return copies. Stored profiles and events are never mutated in place after they
are published (updates build new dicts), so shallow copies are safe snapshots.

Memory is bounded: an event keeps its request body as the bytes received (up to
`max_event_bytes`; beyond, a preview and a `truncated` marker), not as Python
objects; profiles are kept as their JSON, up to `max_profiles` of them and
`max_profile_bytes` in all, the least recently written going first; idempotency
records are kept up to a count and for 24 h, as Courier keeps them. What is
stored is what was accepted; what is shown (the events API, the page,
`events()`) is cut at `RENDER_DEPTH` levels, so nesting a client may send never
breaks a view.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Generic, NamedTuple, TypeVar, overload

import orjson

from courier_analytics.devserver._faults import FaultAction, FaultInjector, Faults

DEFAULT_API_KEY = "dev-key"
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024
DEFAULT_MAX_EVENTS = 10_000
#: Request bodies kept whole per event; a larger one keeps a preview and a marker.
DEFAULT_MAX_EVENT_BYTES = 64 * 1024
#: Characters of a body kept (and shown) when it is larger than `max_event_bytes`.
TRUNCATED_PREVIEW_CHARS = 2048
#: Profiles kept at most, and bytes of their JSON in all (the least recently written
#: go first): a profile as large as Courier takes (6 MB) fits ten times over.
DEFAULT_MAX_PROFILES = 100_000
DEFAULT_MAX_PROFILE_BYTES = 64 * 1024 * 1024
#: Idempotency records kept at most (the oldest go first), and for how long.
DEFAULT_MAX_IDEMPOTENCY_RECORDS = 100_000
IDEMPOTENCY_TTL_S = 24 * 3600.0
#: Levels of a body shown; deeper values are replaced by a marker string.
RENDER_DEPTH = 100
SEGMENT_PREFIX = "Segment-TrackEvent:"
_T = TypeVar("_T")
_V = TypeVar("_V")

logger = logging.getLogger("courier_analytics.devserver")


def _exact(data: bytes) -> bytes:
    """An exact-size copy: orjson's bytes keep a ~4 KB allocation however short they are."""
    return bytes(memoryview(data))


def capped(value: Any, depth: int = RENDER_DEPTH) -> Any:
    """`value` with everything nested deeper than `depth` levels replaced by a marker."""
    marker = f"\u2026 nested deeper than {depth} levels"

    def cut(item: Any, level: int) -> Any:
        if isinstance(item, dict):
            return marker if level >= depth else {k: cut(v, level + 1) for k, v in item.items()}
        if isinstance(item, list):
            return marker if level >= depth else [cut(v, level + 1) for v in item]
        return item

    return cut(value, 0)


def _render(body: bytes) -> bytes:
    """A stored body as shown: itself, unless it may nest deeper than `RENDER_DEPTH`."""
    if body.count(b"{") + body.count(b"[") <= RENDER_DEPTH:  # cannot be deeper
        return body
    return orjson.dumps(capped(orjson.loads(body)))


class _StoredEvent(NamedTuple):
    """An event as kept: its small fields as JSON, the body as received, the send."""

    head: bytes  # JSON object of the small fields
    body: bytes  # the request body (JSON), or a preview string when truncated
    send: bytes  # JSON of the send, or b"null"

    def to_json(self, *, preview: int | None = None) -> bytes:
        """The event as JSON; with `preview`, `data` is its first characters and no send."""
        if preview is None:
            return b'%s,"data":%s,"send":%s}' % (self.head[:-1], _render(self.body), self.send)
        text = self.body[: preview * 4].decode("utf-8", "replace")
        if len(text) > preview:
            text = text[:preview] + "\u2026"
        return b'%s,"data":%s,"send":null}' % (self.head[:-1], orjson.dumps(text))


class Records(Generic[_V]):
    """Records by key, bounded by count (oldest out first) and by age.

    Args:
        max_count: Most records kept.
        ttl_s: Seconds a record is kept.
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(self, max_count: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self.max_count = max_count
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: collections.OrderedDict[str, tuple[float, _V]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> _V | None:
        """The record for `key`, unless it is absent or expired."""
        self._expire()
        item = self._items.get(key)
        return None if item is None else item[1]

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def add(self, key: str, value: _V) -> None:
        """Keep `value` for `key` (a key already kept keeps its first value)."""
        self._expire()
        if key in self._items:
            return
        self._items[key] = (self._clock(), value)
        while len(self._items) > self.max_count:
            self._items.popitem(last=False)

    def _expire(self) -> None:
        oldest = self._clock() - self.ttl_s
        items = self._items
        while items:
            stored_at, _ = next(iter(items.values()))
            if stored_at > oldest:
                return
            items.popitem(last=False)


class Profiles:
    """Profiles by user id, kept as JSON and bounded by count and by bytes.

    Reads decode a fresh dict (so callers may change what they get); writes encode
    it and make the profile the newest. Beyond `max_count` profiles or `max_bytes`
    of JSON, the least recently written are forgotten (`evicted` counts them); a
    profile larger than `max_bytes` alone is not kept at all.

    Args:
        max_count: Most profiles kept.
        max_bytes: Most bytes of JSON kept, all profiles together.
    """

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evicted = 0
        self._items: collections.OrderedDict[str, bytes] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    @overload
    def get(self, user_id: str) -> dict[str, Any] | None: ...

    @overload
    def get(self, user_id: str, default: _T) -> dict[str, Any] | _T: ...

    def get(self, user_id: str, default: object = None) -> object:
        """The profile of `user_id` (a fresh dict), else `default`."""
        data = self._items.get(user_id)
        if data is None:
            return default
        profile: dict[str, Any] = orjson.loads(data)
        return profile

    def __setitem__(self, user_id: str, profile: Mapping[str, Any]) -> None:
        data = _encoded(profile)
        replaced = self._items.pop(user_id, None)
        if replaced is not None:
            self.bytes -= len(replaced)
        if len(data) > self.max_bytes:
            self.evicted += 1
            logger.warning(
                "courier-analytics devserver: a profile of %d bytes is over max_profile_bytes "
                "(%d) and is not kept",
                len(data),
                self.max_bytes,
            )
            return
        self._items[user_id] = data
        self.bytes += len(data)
        while len(self._items) > self.max_count or self.bytes > self.max_bytes:
            _, oldest = self._items.popitem(last=False)
            self.bytes -= len(oldest)
            self.evicted += 1

    def pop(self, user_id: str, default: object = None) -> object:
        """Forget the profile of `user_id`; it, or `default` if there was none."""
        data = self._items.pop(user_id, None)
        if data is None:
            return default
        self.bytes -= len(data)
        profile: dict[str, Any] = orjson.loads(data)
        return profile

    def json(self) -> bytes:
        """Every profile as one JSON object, user id -> profile, oldest written first."""
        return b"{%s}" % b",".join(
            orjson.dumps(user_id) + b":" + data for user_id, data in self._items.items()
        )


def _encoded(value: Any) -> bytes:
    """`value` as exact-size JSON, cut at `RENDER_DEPTH` if it nests too deep to encode."""
    try:
        return _exact(orjson.dumps(value))
    except orjson.JSONEncodeError:
        return _exact(orjson.dumps(capped(value)))


def _text(body: bytes) -> str:
    text = body[: TRUNCATED_PREVIEW_CHARS * 4].decode("utf-8", "replace")
    return text[:TRUNCATED_PREVIEW_CHARS] + "\u2026"


def _preview(body: bytes) -> bytes:
    """A body too large to keep: its first characters, as a JSON string."""
    return _exact(orjson.dumps(_text(body)))


class Answer(NamedTuple):
    """An HTTP answer: status, JSON body bytes, extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


class DevState:
    """All the state of one stand-in, safe to read from other threads.

    Args:
        api_key: The key clients must send as `Authorization: Bearer <key>`.
        accept_any_key: Accept any non-empty bearer key (still 401 without one).
        mappings: Event name -> template id. Keys may be Courier's full name
            (`Segment-TrackEvent:Order Completed`) or the short one (`Order Completed`).
        faults: The faults to inject from the start (none by default).
        max_body_bytes: Larger request bodies are answered 413 (Courier: 6 MB).
        max_events: How many events (and sends) to keep; older ones are forgotten.
        max_event_bytes: Bodies (and sends) kept whole per event; a larger one keeps
            its first `TRUNCATED_PREVIEW_CHARS` characters and `truncated: {"bytes": n}`.
        max_idempotency_records: Idempotency records (Idempotency-Keys, and
            messageIds for deduplication) kept at most; each is kept 24 h.
        max_profiles: Profiles kept at most; the least recently written go first.
        max_profile_bytes: Bytes of profiles' JSON kept at most, all together; the
            least recently written go first, and a larger profile is not kept.
        clock: Monotonic seconds, for the records' age (injectable for tests).
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        accept_any_key: bool = False,
        mappings: Mapping[str, str] | None = None,
        faults: Faults | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_idempotency_records: int = DEFAULT_MAX_IDEMPOTENCY_RECORDS,
        max_profiles: int = DEFAULT_MAX_PROFILES,
        max_profile_bytes: int = DEFAULT_MAX_PROFILE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_key and not accept_any_key:
            raise ValueError("api_key must be non-empty (or pass accept_any_key=True).")
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.api_key = api_key
        self.accept_any_key = accept_any_key
        self.mappings: dict[str, str] = dict(mappings or {})
        self.max_body_bytes = max_body_bytes
        self.max_events = max_events
        self.max_event_bytes = max_event_bytes
        self.max_idempotency_records = max_idempotency_records
        self.max_profiles = max_profiles
        self.max_profile_bytes = max_profile_bytes
        self.clock = clock
        #: The body of the request being handled (set by the app, under the lock).
        self.current_body: bytes | None = None
        self.injector = FaultInjector(faults or Faults())
        self._clear()

    def _records(self) -> Records[Any]:
        return Records(self.max_idempotency_records, IDEMPOTENCY_TTL_S, self.clock)

    def _clear(self) -> None:
        self.profiles_by_id = Profiles(self.max_profiles, self.max_profile_bytes)
        self.event_log: collections.deque[_StoredEvent] = collections.deque(maxlen=self.max_events)
        self.send_log: collections.deque[bytes] = collections.deque(maxlen=self.max_events)
        self.segment_answers: Records[Answer] = self._records()
        self.courier_message_ids: Records[bool] = self._records()
        self.idempotent_answers: Records[Answer] = self._records()
        self.requests: dict[str, dict[str, int]] = {}
        self.message_ids_applied = 0
        self.duplicates = 0
        self.faults_injected: dict[str, int] = {}
        self.next_event_id = 1

    # -- writers (call with self.lock held) ---------------------------------

    def count_request(self, route: str, outcome: str) -> None:
        """Count one request to `route` ending in `outcome` (a status or fault word)."""
        by_outcome = self.requests.get(route)
        if by_outcome is None:
            by_outcome = self.requests[route] = {}
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
        self.changed.notify_all()

    def count_fault(self, action: FaultAction) -> None:
        """Count one injected fault."""
        self.faults_injected[action.kind] = self.faults_injected.get(action.kind, 0) + 1

    def log_event(self, *, data: Any, send: dict[str, Any] | None, **fields: Any) -> None:
        """Append an event to the log (adds `id` and `received`).

        `data` is the request body: kept as the bytes received (`current_body`),
        else encoded; `send` is encoded. Either, when larger than
        `max_event_bytes`, keeps a preview and a `truncated` marker.
        """
        event = {
            "id": self.next_event_id,
            "received": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            **fields,
        }
        self.next_event_id += 1
        body = self.current_body if data is not None and self.current_body else _encoded(data)
        truncated = {}
        if len(body) > self.max_event_bytes:
            truncated["bytes"] = len(body)
            body = _preview(body)
        send_json = b"null"
        if send is not None:
            send_json = _encoded(send)
            if len(send_json) > self.max_event_bytes:
                truncated["send_bytes"] = len(send_json)
                send_json = _exact(orjson.dumps({"truncated": True, "preview": _text(send_json)}))
            self.send_log.append(send_json)
        if truncated:
            event["truncated"] = truncated
        self.event_log.append(_StoredEvent(_exact(orjson.dumps(event)), body, send_json))

    def template_for(self, courier_name: str, short_name: str) -> str | None:
        """The template an event is mapped to, by Courier's name or its short name."""
        template = self.mappings.get(courier_name)
        if template is None and short_name != courier_name:
            template = self.mappings.get(short_name)
        return template

    # -- readers (thread-safe snapshots) -------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """The event log, oldest first (`/__dev/events` serves it newest first)."""
        with self.lock:
            events = list(self.event_log)
        return [orjson.loads(event.to_json()) for event in events]

    def recent_events_json(self, limit: int | None = None, *, preview: int | None = None) -> bytes:
        """The newest `limit` events (all when `None`), NEWEST first, as a JSON array.

        With `preview`, each event's `data` is its first `preview` characters and
        its `send` is left out, which bounds what the page fetches.
        """
        with self.lock:
            count = len(self.event_log) if limit is None else min(limit, len(self.event_log))
            events = [self.event_log[-1 - index] for index in range(count)]
        return b"[" + b",".join(event.to_json(preview=preview) for event in events) + b"]"

    def recent_events(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest `limit` events (all when `None`), NEWEST first."""
        events: list[dict[str, Any]] = orjson.loads(self.recent_events_json(limit))
        return events

    def profiles(self) -> dict[str, dict[str, Any]]:
        """Stored profiles, user id -> profile (a deep copy, cut at `RENDER_DEPTH`)."""
        with self.lock:
            data = self.profiles_by_id.json()
        profiles: dict[str, dict[str, Any]] = orjson.loads(data)
        return profiles

    def sends(self) -> list[dict[str, Any]]:
        """The sends that mapped track events made, oldest first."""
        with self.lock:
            sends = list(self.send_log)
        return [orjson.loads(send) for send in sends]

    def stats(self) -> dict[str, Any]:
        """Counters: requests by route and outcome, messageIds applied, duplicates, faults."""
        with self.lock:
            return {
                "requests": {route: dict(counts) for route, counts in self.requests.items()},
                "requests_total": sum(sum(counts.values()) for counts in self.requests.values()),
                "message_ids_applied": self.message_ids_applied,
                "duplicates": self.duplicates,
                "faults_injected": dict(self.faults_injected),
                "events_logged": self.next_event_id - 1,
                "sends": len(self.send_log),
                "profiles": len(self.profiles_by_id),
                "profile_bytes": self.profiles_by_id.bytes,
                "profiles_evicted": self.profiles_by_id.evicted,
            }

    def faults(self) -> Faults:
        """The faults currently injected."""
        with self.lock:
            return self.injector.faults

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until `predicate()` is true, re-checking after every request.

        `predicate` runs with the state lock held (re-entrant, so it may call the
        snapshot methods). Returns whether it became true before `timeout` seconds.
        """
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    # -- control --------------------------------------------------------------

    def set_faults(self, faults: Faults) -> None:
        """Inject `faults` from now on (resets fault counters and reseeds the RNG)."""
        with self.lock:
            self.injector.configure(faults)

    def reset(self) -> None:
        """Forget profiles, events, sends, stats and idempotency records.

        The configuration (key, mappings, faults) stays; the fault counters restart.
        """
        with self.lock:
            self._clear()
            self.injector.configure(self.injector.faults)
