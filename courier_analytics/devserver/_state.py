"""The stand-in's memory: profiles, the event log, sends, stats and idempotency.

Everything lives in one `DevState` guarded by one lock, so a test thread can read
it while the server's event loop writes it. Writers (`_courier.py`) take
`state.lock` around a whole request; readers use the snapshot methods, which
return copies. Stored profiles and events are never mutated in place after they
are published (updates build new dicts), so shallow copies are safe snapshots.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

import orjson

from courier_analytics.devserver._faults import FaultAction, FaultInjector, Faults

DEFAULT_API_KEY = "dev-key"
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024
DEFAULT_MAX_EVENTS = 10_000
SEGMENT_PREFIX = "Segment-TrackEvent:"
_T = TypeVar("_T")


def _deep_copy(value: _T) -> _T:
    """A deep copy of JSON data (stored items are never mutated, so no lock needed)."""
    copied: _T = orjson.loads(orjson.dumps(value))
    return copied


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
        self.injector = FaultInjector(faults or Faults())
        self._clear()

    def _clear(self) -> None:
        self.profiles_by_id: dict[str, dict[str, Any]] = {}
        self.event_log: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.max_events
        )
        self.send_log: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.max_events)
        self.segment_answers: dict[str, Answer] = {}
        self.courier_message_ids: set[str] = set()
        self.idempotent_answers: dict[str, Answer] = {}
        self.requests: dict[str, dict[str, int]] = {}
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

    def log_event(self, **fields: Any) -> dict[str, Any]:
        """Append an event to the log (adds `id` and `received`) and return it."""
        event = {
            "id": self.next_event_id,
            "received": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            **fields,
        }
        self.next_event_id += 1
        self.event_log.append(event)
        if event.get("send") is not None:
            self.send_log.append(event["send"])
        return event

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
        return _deep_copy(events)

    def recent_events(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest `limit` events (all when `None`), NEWEST first."""
        with self.lock:
            count = len(self.event_log) if limit is None else min(limit, len(self.event_log))
            events = [self.event_log[-1 - index] for index in range(count)]
        return _deep_copy(events)

    def profiles(self) -> dict[str, dict[str, Any]]:
        """Stored profiles, user id -> profile (a deep copy)."""
        with self.lock:
            profiles = dict(self.profiles_by_id)
        return _deep_copy(profiles)

    def sends(self) -> list[dict[str, Any]]:
        """The sends that mapped track events made, oldest first."""
        with self.lock:
            sends = list(self.send_log)
        return _deep_copy(sends)

    def stats(self) -> dict[str, Any]:
        """Counters: requests by route and outcome, messageIds applied, duplicates, faults."""
        with self.lock:
            return {
                "requests": {route: dict(counts) for route, counts in self.requests.items()},
                "requests_total": sum(sum(counts.values()) for counts in self.requests.values()),
                "message_ids_applied": len(self.segment_answers) + len(self.courier_message_ids),
                "duplicates": self.duplicates,
                "faults_injected": dict(self.faults_injected),
                "events_logged": self.next_event_id - 1,
                "sends": len(self.send_log),
                "profiles": len(self.profiles_by_id),
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
