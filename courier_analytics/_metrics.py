"""OpenTelemetry metrics of clients, through the `[otel]` extra (opentelemetry-api).

Counts already kept by the client (`Stats`) are read when the app's reader collects
(observable instruments): they cost the calls and the worker nothing. Only the two
histograms are recorded as things happen, on the worker thread, from timestamps it
takes anyway. One set of instruments per meter provider serves every client that
records through it; their counts are summed. The names and attributes are listed on
the Monitoring page (docs/monitoring.md); `INSTRUMENTS` below is that list.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from courier_analytics._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

    from courier_analytics._client import Stats

__all__ = [
    "INSTRUMENTS",
    "METER_NAME",
    "Recorder",
    "after_fork_in_child",
    "global_provider_wanted",
    "recorder_for",
]

#: The instrumentation scope (meter) name.
METER_NAME = "courier_analytics"

#: name -> (kind, unit, description): every instrument this module makes.
INSTRUMENTS: dict[str, tuple[str, str, str]] = {
    "courier_analytics.messages": (
        "counter", "{message}",
        "Messages finished, by outcome: delivered, failed, dropped or skipped.",
    ),
    "courier_analytics.retries": (
        "counter", "{retry}", "Retry attempts (a message retried twice counts 2).",
    ),
    "courier_analytics.pending": (
        "updowncounter", "{message}", "Messages queued or being delivered.",
    ),
    "courier_analytics.spooled": (
        "updowncounter", "{message}", "Messages held in the client's spool.",
    ),
    "http.client.active_requests": (
        "updowncounter", "{request}", "Requests to Courier in flight.",
    ),
    "courier_analytics.delivery.duration": (
        "histogram", "s", "From the call that made a message to Courier's acceptance of it.",
    ),
    "http.client.request.duration": (
        "histogram", "s", "Duration of each request to Courier, retries each counted.",
    ),
}  # fmt: skip

#: The outcomes `courier_analytics.messages` counts, each a `Stats` field.
OUTCOMES = ("delivered", "failed", "dropped", "skipped")

#: OpenTelemetry's advised buckets for `http.client.request.duration` (seconds).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
#: A delivery may wait out retries (up to `max_retry_time`, 120 s by default).
DELIVERY_BUCKETS = (*REQUEST_BUCKETS, 30, 60, 120, 300)


class _Instruments:
    """One meter's instruments, shared by the clients recording through it."""

    def __init__(self, provider: MeterProvider) -> None:
        from opentelemetry.metrics import Observation

        self._observation = Observation
        self.recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()
        # The last counts of clients rebuilt in place (a module setting changed), so
        # that the counters, which sum the clients' counts, never go back.
        self.retired: dict[str, int] = dict.fromkeys((*OUTCOMES, "retried"), 0)
        meter = provider.get_meter(METER_NAME, __version__)

        def describe(name: str) -> dict[str, str]:
            _kind, unit, description = INSTRUMENTS[name]
            return {"unit": unit, "description": description}

        meter.create_observable_counter(
            "courier_analytics.messages", [self._messages], **describe("courier_analytics.messages")
        )
        meter.create_observable_counter(
            "courier_analytics.retries",
            [self._field("retried")],
            **describe("courier_analytics.retries"),
        )
        meter.create_observable_up_down_counter(
            "courier_analytics.pending",
            [self._field("pending")],
            **describe("courier_analytics.pending"),
        )
        meter.create_observable_up_down_counter(
            "courier_analytics.spooled",
            [self._field("spooled")],
            **describe("courier_analytics.spooled"),
        )
        meter.create_observable_up_down_counter(
            "http.client.active_requests",
            [self._in_flight],
            **describe("http.client.active_requests"),
        )
        self.delivery: Histogram = meter.create_histogram(
            "courier_analytics.delivery.duration",
            explicit_bucket_boundaries_advisory=DELIVERY_BUCKETS,
            **describe("courier_analytics.delivery.duration"),
        )
        self.request: Histogram = meter.create_histogram(
            "http.client.request.duration",
            explicit_bucket_boundaries_advisory=REQUEST_BUCKETS,
            **describe("http.client.request.duration"),
        )

    def _stats(self) -> list[Stats]:
        return [recorder.stats() for recorder in list(self.recorders)]

    def _messages(self, options: CallbackOptions) -> Iterator[Observation]:
        stats = self._stats()
        for outcome in OUTCOMES:
            total = sum(getattr(s, outcome) for s in stats) + self.retired[outcome]
            yield self._observation(total, {"outcome": outcome})

    def _field(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            # `spooled` is read only from a Stats that has it (the spool is optional).
            values = [getattr(s, name) for s in self._stats() if hasattr(s, name)]
            if values:
                yield self._observation(sum(values) + self.retired.get(name, 0))

        return observe

    def _in_flight(self, options: CallbackOptions) -> Iterator[Observation]:
        by_origin: dict[tuple[tuple[str, Any], ...], int] = {}
        for recorder in list(self.recorders):
            key = tuple(recorder.server.items())
            by_origin[key] = by_origin.get(key, 0) + recorder.in_flight()
        for key, count in by_origin.items():
            yield self._observation(count, dict(key))


_instruments: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def after_fork_in_child() -> None:
    """A fresh lock in a forked child, before its clients make their recorders anew.

    A thread of the parent may have held it (a worker attaching, see `_Deferred`):
    that thread is gone from the child, and the lock would be held for ever.
    """
    global _lock
    _lock = threading.Lock()


class _GlobalKey:
    """The key of the global provider's instruments in `_instruments`."""


#: Before the app sets a provider, OpenTelemetry's global one is a proxy that hands
#: the instruments made on it to the real one once set. Instruments made then on the
#: real one too would be a second registration of the same names, which the SDK
#: ignores (warning): clients made after would record nothing. So the global
#: provider's instruments are made once, on whichever it was first.
_GLOBAL = _GlobalKey()


class Recorder:
    """A client's link to its instruments; the worker calls it where it takes timestamps.

    Args:
        instruments: The meter's instruments.
        stats: The client's counters, read when the app's reader collects.
        in_flight: How many of its requests are in flight, likewise.
        server: `server.address` and `server.port` of Courier's URL.
    """

    def __init__(
        self,
        instruments: _Instruments,
        stats: Callable[[], Stats],
        in_flight: Callable[[], int],
        server: dict[str, Any],
    ) -> None:
        self.stats, self.in_flight, self.server = stats, in_flight, server
        self._instruments = instruments
        self._pid = os.getpid()
        self._delivery = instruments.delivery.record
        self._request = instruments.request.record
        self._made: dict[int, float] = {}  # id(message) -> when it was queued (monotonic)
        self._base = {"http.request.method": "POST", **server}
        self._by_status: dict[int, dict[str, Any]] = {}
        self._by_error: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        """Observe this client no more: it was rebuilt (`Client._init`) with a new recorder.

        Its counts so far stay in the counters' sums, unless this is a forked child,
        whose counts start from nothing.
        """
        stats = self.stats() if os.getpid() == self._pid else None
        instruments = self._instruments
        with _lock:
            if self not in instruments.recorders:
                return  # closed already: its counts are in `retired` once
            instruments.recorders.discard(self)
            if stats is not None:
                for name in instruments.retired:
                    instruments.retired[name] += getattr(stats, name)

    def queued(self, key: int) -> None:
        """A message was queued (called on the caller's thread, under the queue's lock)."""
        self._made[key] = time.monotonic()

    def delivered(self, key: int, now: float) -> None:
        """A message was accepted at `now` (monotonic): its delivery duration."""
        made = self._made.pop(key, None)
        if made is not None:
            self._delivery(now - made)

    def forget(self, key: int) -> None:
        """A message ended without delivery: no duration of it is kept."""
        self._made.pop(key, None)

    def request(self, seconds: float, status: int | None, error: BaseException | None) -> None:
        """One request ended: with an answer's `status`, or with `error`."""
        if status is not None:
            attributes = self._by_status.get(status)
            if attributes is None:
                attributes = {**self._base, "http.response.status_code": status}
                if status >= 400:
                    attributes["error.type"] = str(status)
                self._by_status[status] = attributes
        else:
            name = type(error).__name__
            attributes = self._by_error.get(name)
            if attributes is None:
                attributes = self._by_error[name] = {**self._base, "error.type": name}
        self._request(seconds, attributes)


def global_provider_wanted() -> bool:
    """Whether a client given no provider should look up OpenTelemetry's global one now.

    Where the app has set OpenTelemetry up: `opentelemetry.metrics` is already imported
    (setting a provider imports it, as do the SDK and `opentelemetry-instrument`), or
    `OTEL_PYTHON_METER_PROVIDER` names a provider for the API to load. Elsewhere the
    client waits for that module to appear (`_Deferred`) rather than import the API in
    every `Client()` wherever another package happened to install it.
    """
    if "opentelemetry.metrics" in sys.modules:
        return True
    return bool(os.environ.get("OTEL_PYTHON_METER_PROVIDER"))


def recorder_for(
    provider: MeterProvider | None,
    stats: Callable[[], Stats],
    in_flight: Callable[[], int],
    base_url: str,
) -> Recorder | None:
    """A recorder of one client's metrics through `provider` (the global one if None).

    Where no provider is given and the app has set none up yet (see
    `global_provider_wanted`), the recorder attaches once it has: see `_Deferred`.
    Returns None where the variable names a provider but opentelemetry-api is absent.
    """
    if provider is None:
        if not global_provider_wanted():
            return _Deferred(stats, in_flight, base_url)
        try:
            from opentelemetry import metrics  # noqa: F401 - the variable's provider loads
        except ImportError:  # the variable is set where opentelemetry-api is not installed
            return None
    return _attach(provider, stats, in_flight, base_url)


def _instruments_of(provider: MeterProvider | None) -> _Instruments:
    """The instruments of `provider` (None: the global one), made once each. Locked."""
    instruments = None if provider is None else _instruments.get(provider)
    if instruments is not None:
        return instruments
    from opentelemetry import metrics

    current = metrics.get_meter_provider()
    if provider is not None and provider is not current:
        instruments = _instruments[provider] = _Instruments(provider)
        return instruments
    # The global provider (or one the app both set and gave): see `_GLOBAL`.
    instruments = _instruments.get(_GLOBAL) or _instruments.get(current)
    if instruments is None:
        instruments = _Instruments(current)
    _instruments[_GLOBAL] = _instruments[current] = instruments
    return instruments


def _attach(
    provider: MeterProvider | None,
    stats: Callable[[], Stats],
    in_flight: Callable[[], int],
    base_url: str,
) -> Recorder:
    with _lock:
        instruments = _instruments_of(provider)
        url = urlsplit(base_url)
        server = {
            "server.address": url.hostname or "",
            "server.port": url.port or (443 if url.scheme == "https" else 80),
        }
        recorder = Recorder(instruments, stats, in_flight, server)
        instruments.recorders.add(recorder)
    return recorder


class _Deferred(Recorder):
    """The recorder of a client made before the app set OpenTelemetry up.

    Setting a global provider imports `opentelemetry.metrics`, so until that module is
    loaded there is no provider to record to (OpenTelemetry's own proxy instruments
    record nothing before one is set either). The worker's calls look for it, a dict
    lookup each, and the first to find it attaches a real `Recorder` to the global
    provider. The caller's `queued` never attaches: it runs under the queue's lock.
    """

    def __init__(
        self, stats: Callable[[], Stats], in_flight: Callable[[], int], base_url: str
    ) -> None:
        self._args = (stats, in_flight, base_url)
        self._real: Recorder | None = None
        self._closed = False
        self._attaching = threading.Lock()

    def _attached(self) -> Recorder | None:
        real = self._real
        if real is None and not self._closed and "opentelemetry.metrics" in sys.modules:
            with self._attaching:
                if self._real is None and not self._closed:
                    self._real = _attach(None, *self._args)
                    if self._closed:  # close() ran meanwhile, and may not have seen it
                        self._real.close()
                real = self._real
        return real

    def close(self) -> None:
        # Without `_attaching`: a worker attaching holds it, and this may run in a
        # forked child, where that worker is gone. Either this or `_attached` closes
        # the real recorder, or both (closing is idempotent).
        self._closed = True
        real = self._real
        if real is not None:
            real.close()

    def queued(self, key: int) -> None:
        real = self._real
        if real is not None:
            real.queued(key)

    def delivered(self, key: int, now: float) -> None:
        real = self._attached()
        if real is not None:
            real.delivered(key, now)

    def forget(self, key: int) -> None:
        real = self._real
        if real is not None:
            real.forget(key)

    def request(self, seconds: float, status: int | None, error: BaseException | None) -> None:
        real = self._attached()
        if real is not None:
            real.request(seconds, status, error)
