"""The client: validates calls, queues messages, and reports what became of them."""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from courier_analytics import _capture
from courier_analytics._errors import (
    ClientClosedError,
    ConfigurationError,
    CourierAnalyticsError,
    QueueFullError,
    WorkerUnavailable,
)
from courier_analytics._events import Emitter, EventName
from courier_analytics._messages import (
    ENVELOPE_BYTES,
    MAX_REQUEST_BYTES,
    Message,
    MessageFactory,
    compact,
    new_message_id,
    now_ms,
    pack,
)
from courier_analytics._metrics import recorder_for
from courier_analytics._options import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_QUEUE_BYTES,
    ErrorHandler,
    EventLoop,
    Options,
    Ordering,
    Region,
)
from courier_analytics._outcomes import origin_of
from courier_analytics._plugins import Middleware, Plugin, Plugins
from courier_analytics._retry import RetryPolicy
from courier_analytics._routes import (
    DEFAULT_EVENT_PREFIX,
    ApiRoute,
    Route,
    RouteName,
    SegmentRoute,
)
from courier_analytics._scope import Frame, commit, current_frame
from courier_analytics._spool import DEFAULT_COMMIT_INTERVAL, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    import asyncio

    from opentelemetry.metrics import MeterProvider

    from courier_analytics._transport import AnyTransport, Sender, make_sender
    from courier_analytics._worker import Worker
else:  # the delivery engine (asyncio and all) is imported by the first Client(): see _lazy
    from courier_analytics._lazy import Worker, asyncio, make_sender

__all__ = ["Client", "FlushReport", "Stats", "dispatch", "make_message"]

logger = logging.getLogger("courier_analytics")

_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()

#: Seconds between two warnings about dropped messages (each drop is still reported).
DROP_LOG_INTERVAL = 10.0

#: Seconds that reporting what a stopped client left undelivered may take past its
#: deadline: `on_error` is called once for each, and a slow one must not hold an exit
#: for ever.
REPORT_TIMEOUT = 5.0


@attrs.frozen
class Stats:
    """Counts of what a client did with the messages made through it.

    At any quiet moment (after [`Client.flush`][courier_analytics.Client.flush]),
    `made == delivered + failed + dropped + skipped + pending`.

    Attributes:
        made: Calls that produced a valid message.
        queued: Messages accepted for delivery (made, less skipped, dropped and cancelled).
        delivered: Messages Courier accepted.
        retried: Retry attempts (not messages): a message retried twice counts 2.
        failed: Messages that will not be delivered: refused by Courier, out of
            retries, still pending at shutdown, or cancelled by a `before` plugin
            that raised. Each was passed to `on_error`.
        dropped: Messages refused because the queue was full, the client closed, or
            (module-level calls) the module settings are invalid. Each was passed to
            `on_error`.
        skipped: Messages not sent by design: a type the route does not deliver
            (page, screen, alias; group on route `"api"`), `send=False`,
            captured by [`courier_analytics.testing.capture`][courier_analytics.testing.capture],
            dropped by a plugin or source middleware, turned away by their
            `integrations` (`{"Courier": False}`, `{"All": False}`), or made in a
            scope with `on_missing_identity="skip"` that knew no user.
        pending: Messages queued, being delivered, or waiting in the spool right now.
        spooled: Messages made by this client that are in its spool now (with a
            `spool`; they are also in `pending`, or about to leave it).
        recovered: Messages this client took over from the spool, left there by a
            process (or client) that died or stopped; each ends in `delivered` or
            `failed`, or is still `pending`. With a Redis spool: every message this
            client claimed from the streams to deliver, its own included.
        committed: Messages this client committed to a Redis spool: from then on
            they are the fleet's, delivered by whichever process holds their
            shard (they leave `pending`; those this client delivers come back
            through `recovered`).
    """

    made: int
    queued: int
    delivered: int
    retried: int
    failed: int
    dropped: int
    skipped: int
    pending: int
    spooled: int = 0
    recovered: int = 0
    committed: int = 0

    @property
    def unaccounted(self) -> int:
        """`made + recovered - (delivered + failed + dropped + skipped + pending + committed)`.

        0 when quiet.

        Nonzero only for an instant while a message moves between two counters;
        after [`Client.flush`][courier_analytics.Client.flush] it is always 0. Anything else is a
        bug.
        """
        settled = self.delivered + self.failed + self.dropped + self.skipped + self.pending
        settled += self.committed
        return self.made + self.recovered - settled


_NO_STATS = Stats(
    made=0, queued=0, delivered=0, retried=0, failed=0, dropped=0, skipped=0, pending=0
)


@attrs.frozen
class FlushReport:
    """What became of a client's messages, from one flush to the next.

    [`Client.flush_report`][courier_analytics.Client.flush_report] returns it. The
    counts are of messages settled since the previous `flush()`, `aflush()` or
    `flush_report()` of the client (or since it was made), so a script that flushes
    once learns the fate of everything it sent:

    ```python
    from courier_analytics import Client

    client = Client(api_key="pk_test_123", send=False)
    client.track("Signed Up", user_id="u1")
    report = client.flush_report()
    assert report.done and report.ok
    ```

    Attributes:
        done: What `flush()` returns: `True` when nothing was left pending, each
            message delivered or given up on (failed), before the timeout.
        delivered: Messages Courier accepted since the previous flush.
        failed: Messages that will not be delivered (refused, out of retries,
            cancelled), each also passed to `on_error`.
        dropped: Messages refused at the call (queue full, client closed), each also
            passed to `on_error`.
        pending: Messages still queued or being delivered (0 when `done`, unless
            parked in a spool for a later retry).
    """

    done: bool
    delivered: int
    failed: int
    dropped: int
    pending: int

    @property
    def ok(self) -> bool:
        """Whether all of it was delivered: `done`, nothing failed or was dropped, none pending.

        With a spool `done` is `True` while messages are parked there for a later
        retry (see the Durability page): they are `pending`, so not `ok`.

        Messages not sent by design (skipped: `send=False`, a type the route does
        not deliver, an `integrations` filter) do not make it `False`.
        """
        return self.done and self.failed == 0 and self.dropped == 0 and self.pending == 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """How the worker makes its event loop (`event_loop`, checked by `Options`)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _make_route(options: Options) -> Route:
    if options.route == "api":
        return ApiRoute(event_prefix=options.event_prefix)
    return SegmentRoute()


class Client:
    """Queues analytics calls and delivers them to Courier from a background thread.

    Every call validates its arguments, snapshots them as JSON, queues the message
    and returns its `messageId` in microseconds; bad arguments raise
    `TypeError` or `ValueError` there and then. Delivery problems
    never raise into the caller: they are counted in [`stats`][courier_analytics.Client.stats],
    logged without the payload and passed to `on_error`.

    Example:
        ```python
        from courier_analytics import Client

        with Client(api_key="pk_test_123", send=False) as client:
            message_id = client.track("Order Completed", {"total": 42}, user_id="u1")
        ```

    Args:
        api_key: Courier API key (auth token). Defaults to `COURIER_API_KEY`, then
            `COURIER_AUTH_TOKEN`. Never logged or shown in `repr()`.
        region: `"us"` (`https://api.courier.com`) or `"eu"`
            (`https://api.eu.courier.com`).
        base_url: Courier's URL; wins over `region`. Defaults to `COURIER_BASE_URL`.
            Plain `http://` is refused unless the host is this machine or
            `allow_insecure_http` is set.
        route: `"api"` (the default) applies the meaning of Segment's Courier
            destination on Courier's documented API: identify merges into
            `/profiles/{id}`, track posts to `/inbound/courier`. `"segment"` posts
            the Segment-spec messages themselves to `/inbound/segment`, as the
            destination does (an endpoint Courier does not document), and
            delivers `group` too.
        event_prefix: Put before track event names on route `"api"`.
        max_queue_size: Messages queued or in delivery at most; beyond it new
            messages are dropped (counted and reported, never raised).
        max_queue_bytes: Bytes the client holds at most for undelivered messages:
            queued, in per-user lanes, in flight (with the request's body) or waiting
            to retry. Beyond it new messages are dropped, counted and reported, as
            for `max_queue_size`. At least `max_message_bytes`.
        max_in_flight: The most requests in flight at once, each on its own
            keep-alive connection. A ceiling: the worker finds how many the distance
            to Courier needs (doubling while throughput grows and answers do not
            queue, fewer after errors and 429s) and opens connections only as that
            needs them. The default is 512, or a quarter of the process's soft
            open-file limit (`ulimit -n`) when that is lower (read when the package
            is imported); a value given here is used as given. Far from Courier
            more is faster: 20,000 events 20 ms away took 1.4 s with up to 512 in
            flight and 2.0 s with 256 (plain HTTP).
            Close by, the limit grows only while throughput does. The cost is
            connections: each holds a file descriptor and, over HTTPS, costs a TLS
            handshake when it opens and about 70 KB of TLS state while open (the
            benchmark's client peaked at 85 MB with 512 TLS connections).
            Lower it to cap them, for example under a preforking server with many
            processes.
        ordering: `"identify"` (default): a user's `identify`, `alias` and `group`
            go after that user's earlier messages are answered and before any
            later one; a user's tracks between two of them go together (up to half
            of `max_in_flight` at once), and a track waiting to retry holds back
            nothing else. `"strict"`: one message per user at a time, in the order
            made, a retry holding back that user's later messages; it caps one
            user at one event per round trip. See the Delivery page.
        event_loop: `"asyncio"` (default) or `"uvloop"`: the worker's event loop.
            uvloop (`pip install 'courier-analytics[uvloop]'`, not on Windows) cuts
            the worker's CPU per event by about half; see the Performance page.
        flush_interval: Seconds an idle worker waits before looking at the queue on
            its own; a call normally wakes it at once.
        timeout: Seconds allowed to connect (DNS included), and then to send one request
            and get its whole answer; with a `transport`, httpx's connect, write, read
            and pool timeouts, each.
        max_retries: Retries of a message after its first attempt.
        max_retry_time: Seconds after the first attempt past which no retry starts.
        retry: A full [`RetryPolicy`][courier_analytics.RetryPolicy]; overrides
            `max_retries`/`max_retry_time`.
        on_error: Called as `on_error(exc, message)` for every message that is
            dropped or not delivered; `exc` is a
            [`CourierAnalyticsError`][courier_analytics.CourierAnalyticsError]. Runs on the worker
            thread (or the caller's, for drops): keep it quick.
        sync_mode: Deliver each message before the call returns (scripts, tests).
        send: `False` validates and counts messages (as skipped) but sends nothing.
        debug: Log at DEBUG level to stderr (type, id and size of messages only).
        transport: An httpx transport (sync or async), e.g. for a proxy or tests.
        views_as_track: Send `page`/`screen` calls as track events named
            `Viewed <name> Page` / `Viewed <name> Screen`.
        flush_at_exit: Deliver what is pending when the interpreter exits.
        exit_timeout: Seconds that delivery at exit may take, from when the exit
            began: all clients deliver side by side on that budget.
        flush_timeout: Default timeout of [`flush`][courier_analytics.Client.flush] and
            [`shutdown`][courier_analytics.Client.shutdown].
        max_message_bytes: Largest encoded message accepted at the call.
        allow_insecure_http: Allow a plain `http://` base URL to another host (the
            key would travel unencrypted). Defaults to the
            `COURIER_ANALYTICS_ALLOW_INSECURE_HTTP` environment variable (`1`, `true`,
            `yes` or `on`), else no.
        spool: A file path or `sqlite:///path`: write messages ahead to a durable
            spool (SQLite), so a crash, a SIGKILL, a deploy or a Courier outage
            loses nothing; `None` (the default) keeps them in memory only. Defaults
            to `COURIER_ANALYTICS_SPOOL`. See the Durable delivery page.
        spool_max_age: Seconds a message waits in the spool, retried with backoff
            through an outage, before it fails (default 4 hours).
        spool_max_bytes: The most the spool may hold (default 1 GiB); beyond it new
            messages are dropped, counted and reported.
        spool_commit_interval: Seconds between two commits to the spool under load
            (default 0.02): the most a SIGKILL can lose is what was made in that time.
        meter_provider: The OpenTelemetry `MeterProvider` that the client's metrics
            are recorded through; by default the global one, where the app has set
            OpenTelemetry up before making the client (`pip install
            'courier-analytics[otel]'`), else none are recorded. See the Monitoring page.
        deliver: With a Redis spool, whether this process also delivers from it
            (the default); `False` only commits, and `courier-analytics relay`
            processes deliver. `None` (the default) reads `COURIER_ANALYTICS_DELIVER`
            (`0` for False), else True. See the Fleets page.

    Raises:
        ConfigurationError: An option is invalid, or no API key is set while `send`.
    """

    # Set by the settings module (`_default.py`) on a default client it replaced or
    # built as a stand-in; None on every other client.
    # - `_successor`: a default client retired after a setting changed hands the calls
    #   that still reach it (a thread held it across the rebuild) to the current one.
    # - `_refusal`: why the settings are invalid, on the stand-in that drops each call.
    _successor: Callable[[], Client] | None = None
    _refusal: str | None = None

    def __init__(
        self,
        *,
        api_key: str | None = None,
        region: Region = "us",
        base_url: str | None = None,
        route: RouteName = "api",
        event_prefix: str = DEFAULT_EVENT_PREFIX,
        max_queue_size: int = 10_000,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        ordering: Ordering = "identify",
        event_loop: EventLoop = "asyncio",
        flush_interval: float = 0.5,
        timeout: float = 10.0,
        max_retries: int = 10,
        max_retry_time: float | None = 120.0,
        retry: RetryPolicy | None = None,
        on_error: ErrorHandler | None = None,
        sync_mode: bool = False,
        send: bool = True,
        debug: bool = False,
        transport: AnyTransport | None = None,
        views_as_track: bool = False,
        flush_at_exit: bool = True,
        exit_timeout: float = 5.0,
        flush_timeout: float = 30.0,
        max_message_bytes: int = MAX_REQUEST_BYTES,
        allow_insecure_http: bool | None = None,
        spool: str | os.PathLike[str] | None = None,
        spool_max_age: float = DEFAULT_MAX_AGE,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        meter_provider: MeterProvider | None = None,
        deliver: bool | None = None,
    ) -> None:
        options = Options(
            api_key=api_key,
            region=region,
            base_url=base_url,
            route=route,
            event_prefix=event_prefix,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            max_in_flight=max_in_flight,
            ordering=ordering,
            event_loop=event_loop,
            flush_interval=flush_interval,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_time=max_retry_time,
            retry=retry,
            on_error=on_error,
            sync_mode=sync_mode,
            send=send,
            debug=debug,
            transport=transport,
            views_as_track=views_as_track,
            flush_at_exit=flush_at_exit,
            exit_timeout=exit_timeout,
            flush_timeout=flush_timeout,
            max_message_bytes=max_message_bytes,
            allow_insecure_http=allow_insecure_http,
            spool=spool,
            spool_max_age=spool_max_age,
            spool_max_bytes=spool_max_bytes,
            spool_commit_interval=spool_commit_interval,
            meter_provider=meter_provider,
            deliver=deliver,
        )
        self._plugins = Plugins()
        self._events = Emitter()
        self._init(options)
        if debug:
            _enable_debug_logging()
        _CLIENTS.add(self)

    @classmethod
    def from_options(cls, options: Options) -> Client:
        """Build a client from an [`Options`][courier_analytics.Options] value."""
        return cls(**attrs.asdict(options, recurse=False))

    def _init(self, options: Options) -> None:
        previous = getattr(self, "_worker", None)
        if previous is not None and previous.metrics is not None:
            previous.metrics.close()  # its recorder would count this client twice
        self._options = options
        self._factory = MessageFactory(
            max_bytes=options.max_message_bytes,
            views_as_track=options.views_as_track,
            plugins=self._plugins,
            compact=options.route == "api",
        )
        # For calls in a scope with on_missing_identity="skip" that knows no user.
        self._lenient = attrs.evolve(self._factory, require_identity=False)
        self._route = _make_route(options)
        # Whether a track() may take the short way (see track); plugins, scopes and
        # test capture can come and go, so they are looked at on each call.
        self._quick = not options.sync_mode and options.route == "api"
        #: Room left for the properties and escaped strings of a quick track's body.
        self._quick_room = options.max_message_bytes - ENVELOPE_BYTES
        self._send = options.send
        self._sync_mode = options.sync_mode
        self._lock = threading.Lock()
        # Messages made: one tick each, taken without the lock (`next` on a count is
        # one atomic step, as message ids rely on too); `stats` reads it by taking a
        # tick of its own under the lock, and subtracts the ticks reads took.
        self._made = itertools.count()
        self._made_reads = 0
        self._handed_over = 0  # made here, then passed to the successor, which counts them
        self._dropped = 0
        self._skipped = 0
        self._cancelled = 0
        self._drops_unlogged = 0
        self._drop_logged_at = -DROP_LOG_INTERVAL
        # The counters when the last flush returned: what the next report counts from.
        self._flushed = _NO_STATS
        # (messages made, seconds waited) while flushes time out on the same messages:
        # exit does not wait for them again beyond flush_timeout (see _exit_wait).
        self._gave_up: tuple[int, float] | None = None
        self._worker = Worker(
            make_sender=self._make_sender,
            route=self._route,
            policy=options.retry_policy(),
            max_queue_size=options.max_queue_size,
            max_queue_bytes=options.max_queue_bytes,
            max_in_flight=options.max_in_flight,
            flush_interval=options.flush_interval,
            report=self._report,
            origin=origin_of(options.resolved_base_url()),
            events=self._events,
            strict_order=options.ordering == "strict",
            new_loop=_loop_factory(options.event_loop),
            spool=options.spool_settings(),
        )
        worker = self._worker
        worker.metrics = recorder_for(
            options.meter_provider,
            lambda: self.stats,
            lambda: worker.in_flight,
            options.resolved_base_url(),
        )
        if self._worker.journal is not None and options.send:
            self._worker.start()  # deliver what a process that died left in the spool

    def _make_sender(self) -> Sender:
        options = self._options
        return make_sender(
            options.resolved_base_url(),
            options.resolved_api_key() or "",
            timeout=options.timeout,
            max_connections=options.max_in_flight,
            transport=options.transport,
        )

    def __repr__(self) -> str:
        o = self._options
        return f"<Client route={o.route!r} base_url={o.resolved_base_url()!r}>"

    @property
    def options(self) -> Options:
        """The options this client was built with (the API key masked in `repr()`)."""
        return self._options

    @property
    def stats(self) -> Stats:
        """A snapshot of this client's counters; see [`Stats`][courier_analytics.Stats]."""
        worker = self._worker
        with self._lock:
            made = self._made_now()
            dropped, skipped = self._dropped, self._skipped
            cancelled = self._cancelled
        journal = worker.journal
        if journal is not None:
            dropped += journal.dropped  # the spool was full
        return Stats(
            made=made,
            queued=made - dropped - skipped - cancelled,
            delivered=worker.delivered,
            retried=worker.retried,
            failed=worker.failed + cancelled,
            dropped=dropped,
            skipped=skipped,
            pending=worker.pending,
            spooled=0 if journal is None else journal.spooled,
            recovered=0 if journal is None else journal.recovered,
            committed=0 if journal is None else journal.committed,
        )

    def _made_now(self) -> int:
        """Messages made so far (under `_lock`: reading the count advances it)."""
        made = next(self._made) - self._made_reads - self._handed_over
        self._made_reads += 1
        return made

    # ------------------------------------------------------------------ the calls

    def identify(
        self,
        user_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
    ) -> str:
        """Merge `traits` into the user's Courier profile.

        Args:
            user_id: Whose profile; required unless `anonymous_id` is given or the
                call is made in a [`scope`][courier_analytics.scope], which then
                remembers this user (and merges `traits` into the scope's).
            traits: Profile fields, e.g. `{"email": ..., "phone_number": ...}`.
                A trait set to `None` removes that field from the profile.
            anonymous_id: Used when there is no `user_id`.
            context: Segment `context`; `library` is set on a copy.
            timestamp: When it happened (a `datetime`; naive means local time).
            message_id: A stable id of your own, for idempotent retries; default a UUID4.
            integrations: Segment `integrations` object: `{"Courier": False}` or
                `{"All": False}` skips the message; sent on unchanged otherwise.

        Returns:
            The message's `messageId`.
        """
        frame = current_frame()
        if frame is not None:
            return self._identify_in_scope(
                frame, user_id, traits, anonymous_id, context, timestamp, message_id, integrations
            )
        if (  # The common call, made here in one go, as in track().
            type(user_id) is str
            and anonymous_id is None
            and context is None
            and timestamp is None
            and message_id is None
            and integrations is None
            and self._quick
            and user_id
            and user_id.isascii()
            and (traits is None or type(traits) is dict)
            and not _capture.recorders
            and "identify" not in self._plugins.chains
        ):
            mid = new_message_id()
            data = pack(now_ms(), mid, "traits", traits or {})
            if len(data) + 6 * len(user_id) <= self._quick_room:
                return self._enqueue_quick(compact("identify", user_id, None, None, data), mid)
        return self._dispatch(
            self._factory.identify(
                user_id,
                traits,
                anonymous_id=anonymous_id,
                context=context,
                timestamp=timestamp,
                message_id=message_id,
                integrations=integrations,
            )
        )

    def _identify_in_scope(
        self,
        frame: Frame,
        user_id: object,
        traits: object,
        anonymous_id: object,
        context: object,
        timestamp: object,
        message_id: object,
        integrations: object,
    ) -> str:
        """identify() inside a scope: the scope learns the user once the message is made."""
        before = frame.state
        after, merged = frame.identify(user_id, anonymous_id, traits)
        known = after.user_id is not None or after.anonymous_id is not None
        factory = self._factory if known or not frame.skips_anonymous_calls else self._lenient
        message = factory.identify(
            after.user_id,
            merged,
            anonymous_id=after.anonymous_id,
            context=frame.context(context),
            timestamp=timestamp,
            message_id=message_id,
            integrations=integrations,
        )
        commit(frame, before, after, (user_id, anonymous_id, traits))
        return self._dispatch(message)

    def _scoped(
        self, frame: Frame, user_id: object, anonymous_id: object, context: object
    ) -> tuple[Any, Any, Any, MessageFactory]:
        """A call's ids and context filled in from the scope, and the factory to use."""
        user_id, anonymous_id, context = frame.fill(user_id, anonymous_id, context)
        if user_id is None and anonymous_id is None and frame.skips_anonymous_calls:
            return user_id, anonymous_id, context, self._lenient
        return user_id, anonymous_id, context, self._factory

    def track(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
    ) -> str:
        """Record that the user did `event`; Courier sees `Segment-TrackEvent:<event>`.

        If the event is mapped to a notification in Courier, it is sent to the
        user with the message as its data.

        Args:
            event: The event name, e.g. `"Order Completed"`.
            properties: The event's data.
            user_id: Who did it; required unless `anonymous_id` is given or the
                call is made in a [`scope`][courier_analytics.scope] that knows the user.
            anonymous_id: Used when there is no `user_id`.
            context: Segment `context`; `library` is set on a copy.
            timestamp: When it happened (a `datetime`; naive means local time).
            message_id: A stable id of your own, for idempotent retries; default a UUID4.
            integrations: Segment `integrations` object: `{"Courier": False}` or
                `{"All": False}` skips the message; sent on unchanged otherwise.

        Returns:
            The message's `messageId`.
        """
        factory, uid, aid, ctx = self._factory, user_id, anonymous_id, context
        frame = current_frame()
        if frame is not None:
            uid, aid, ctx, factory = self._scoped(frame, uid, aid, ctx)
        if (  # The common call, made here in one go: the same checks, a compact message.
            type(uid) is str
            and type(event) is str
            and aid is None
            and ctx is None
            and timestamp is None
            and message_id is None
            and integrations is None
            and self._quick
            and uid
            and uid.isascii()
            and event.isascii()
            and event
            and not event.isspace()
            and (properties is None or type(properties) is dict)
            and not _capture.recorders
            and "track" not in self._plugins.chains
        ):
            mid = new_message_id()
            data = pack(now_ms(), mid, "properties", properties or {})
            if len(data) + 6 * (len(uid) + len(event)) <= self._quick_room:
                return self._enqueue_quick(compact("track", uid, None, event, data), mid)
        return self._dispatch(
            factory.track(
                event,
                properties,
                user_id=uid,
                anonymous_id=aid,
                context=ctx,
                timestamp=timestamp,
                message_id=message_id,
                integrations=integrations,
            )
        )

    def group(
        self,
        group_id: str,
        traits: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
    ) -> str:
        """Associate the user with a group (sent on route `"segment"`; Courier logs it).

        Returns:
            The message's `messageId`.
        """
        factory, uid, aid, ctx = self._factory, user_id, anonymous_id, context
        frame = current_frame()
        if frame is not None:
            uid, aid, ctx, factory = self._scoped(frame, uid, aid, ctx)
        return self._dispatch(
            factory.group(
                group_id,
                traits,
                user_id=uid,
                anonymous_id=aid,
                context=ctx,
                timestamp=timestamp,
                message_id=message_id,
                integrations=integrations,
            )
        )

    def page(
        self,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        category: str | None = None,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a page view: validated and skipped, or a track event with `views_as_track`.

        Returns:
            The message's `messageId`.
        """
        factory, uid, aid, ctx = self._factory, user_id, anonymous_id, context
        frame = current_frame()
        if frame is not None:
            uid, aid, ctx, factory = self._scoped(frame, uid, aid, ctx)
        return self._dispatch(
            factory.view(
                "page",
                name,
                properties,
                category=category,
                user_id=uid,
                anonymous_id=aid,
                context=ctx,
                timestamp=timestamp,
                message_id=message_id,
                integrations=integrations,
            )
        )

    def screen(
        self,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        category: str | None = None,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a screen view: validated and skipped, or a track event with `views_as_track`.

        Returns:
            The message's `messageId`.
        """
        factory, uid, aid, ctx = self._factory, user_id, anonymous_id, context
        frame = current_frame()
        if frame is not None:
            uid, aid, ctx, factory = self._scoped(frame, uid, aid, ctx)
        return self._dispatch(
            factory.view(
                "screen",
                name,
                properties,
                category=category,
                user_id=uid,
                anonymous_id=aid,
                context=ctx,
                timestamp=timestamp,
                message_id=message_id,
                integrations=integrations,
            )
        )

    def alias(
        self,
        previous_id: str,
        user_id: str,
        *,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
        integrations: Mapping[str, Any] | None = None,
    ) -> str:
        """Link `previous_id` to `user_id`: validated and skipped (Courier has no alias).

        Returns:
            The message's `messageId`.
        """
        frame = current_frame()
        return self._dispatch(
            self._factory.alias(
                previous_id,
                user_id,
                context=context if frame is None else frame.context(context),
                timestamp=timestamp,
                message_id=message_id,
                integrations=integrations,
            )
        )

    # ------------------------------------------------------- plugins and events

    def register(self, *plugins: Plugin) -> None:
        """Add plugins that transform, enrich or filter this client's messages.

        A plugin is any object with a `name`, a `type` (`"before"` or
        `"enrichment"`) and a method per message type (`track(message)`, ...) or
        one `process(message)`; see [`Plugin`][courier_analytics.Plugin] and the
        guide "Identity, plugins and events". They run in the caller's thread on the
        Segment-spec message dict: every `before` plugin, then every
        `enrichment` one, each group in registration order.

        Raises:
            TypeError: a plugin has no `name` or no method to call.
            ValueError: its `type` is neither `"before"` nor `"enrichment"`, or
                its name is already registered.
        """
        self._plugins.register(*plugins)

    def deregister(self, name: str) -> None:
        """Remove the plugin (or source middleware) registered under `name`.

        Raises:
            ValueError: nothing is registered under `name`.
        """
        self._plugins.deregister(name)

    def add_source_middleware(self, middleware: Middleware) -> str:
        """Add a function that sees each message dict and returns it, a new one, or `None`.

        It runs as a `before` plugin, in the order of registration among them;
        returning `None` drops the message (counted as skipped).

        Returns:
            The name it is registered under, for `deregister()`.

        Raises:
            TypeError: `middleware` is not callable.
        """
        return self._plugins.add_source_middleware(middleware)

    def on(self, name: EventName, handler: Callable[..., Any]) -> Callable[[], None]:
        """Call `handler` whenever event `name` happens; returns a function that unsubscribes.

        The events and their handlers' arguments: `"delivered"(message)`,
        `"error"(exc, message)` (the cases passed to `on_error`),
        `"retry"(exc, message, attempt)`, `"dropped"(exc, message)`,
        `"drained"()` (nothing queued or in flight any more) and
        `"call_after_close"(message)`. `message` is a
        [`MessageView`][courier_analytics.MessageView]. Handlers run on the worker
        thread (or the caller's, for what happens at the call), so keep them quick;
        one that raises is logged once and never stops delivery.

        Raises:
            ValueError: `name` is not one of the events above.
            TypeError: `handler` is not callable.
        """
        return self._events.on(name, handler)

    def _adopt(self, plugins: Plugins, events: Emitter) -> None:
        """Use registries shared with other clients (the default client's survive rebuilds)."""
        self._plugins = plugins
        self._events = events
        self._init(self._options)

    # ------------------------------------------------------------- queue and life

    def _dispatch(self, message: Message) -> str:
        if message._stop is not None:
            if _capture.recorders and isinstance(message._stop, str):
                for recorder in _capture.recorders:  # tests see what was skipped, and why
                    recorder(message, message._stop)
            return self._stopped(message, message._stop)
        if _capture.recorders:
            return self._capture(message)
        if not self._send:
            if self._refusal is not None:
                return self._refuse(message)
            return self._stopped(message, "send=False")
        if not self._route.delivers(message.type):
            return self._stopped(message, f"route {self._route.name!r} does not deliver it")
        done: Future[None] | None = Future() if self._sync_mode else None
        next(self._made)  # before the worker can count it delivered: never negative
        self._put(message, done)
        return message.message_id

    def _enqueue_quick(self, message: Message, mid: str) -> str:
        """`_dispatch` of a message made the short way (see track), whose id is `mid`."""
        if not self._send:
            if self._refusal is not None:
                return self._refuse(message)
            self._stopped(message, "send=False")
            return mid
        next(self._made)  # before the worker can count it delivered: never negative
        self._put(message, None)
        return mid

    def _put(self, message: Message, done: Future[None] | None) -> None:
        """Queue a message counted as made; drop it (counted and reported) if it cannot be."""
        try:
            if self._worker.put(message, done):
                if done is not None:  # sync mode: wait for this message's outcome
                    self._worker.wait_done(message, done, self._options.flush_timeout)
                return
            options = self._options
            self._not_queued(
                message,
                QueueFullError(
                    f"{message.type} {message.message_id} ({len(message._data)} bytes) dropped: "
                    f"the queue is full (at most {options.max_queue_size} messages and "
                    f"{options.max_queue_bytes} bytes pending)"
                ),
            )
        except WorkerUnavailable as exc:
            successor = self._successor
            if successor is not None and self._worker.closed:
                with self._lock:
                    self._handed_over += 1
                successor()._dispatch(message)
                return
            error = ClientClosedError(f"{message.type} {message.message_id} dropped: {exc}")
            self._not_queued(message, error)

    def _refuse(self, message: Message) -> str:
        """Drop a call made while the module settings are invalid (see `_refusal`).

        Counted as made and dropped and passed to `on_error`; the settings module
        logged the problem once, so this logs nothing.
        """
        successor = self._successor
        if successor is not None:  # the settings changed since: the new client takes it
            return successor()._dispatch(message)
        next(self._made)
        error = ConfigurationError(
            f"{message.type} {message.message_id} dropped: the module settings are "
            f"invalid ({self._refusal})"
        )
        self._not_queued(message, error, warn=False)
        return message.message_id

    def _not_queued(
        self, message: Message, error: CourierAnalyticsError, *, warn: bool = True
    ) -> None:
        """Count, log and report a message the worker refused: the queue was full, or closed."""
        with self._lock:
            self._dropped += 1
            drops = self._count_drop() if warn else 0
        if drops:
            logger.warning(
                "courier-analytics: %s (%d message(s) dropped since the last such warning; "
                "each was passed to on_error)",
                error,
                drops,
            )
        if self._events.handlers:
            if self._worker.closed:
                self._events.message("call_after_close", message)
            self._events.failure("dropped", error, message)
        self._report(error, message)

    def _stopped(self, message: Message, why: str | Exception) -> str:
        """Count a message that goes no further than the call: skipped, or cancelled."""
        if isinstance(why, str):
            next(self._made)
            with self._lock:
                self._skipped += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "courier-analytics: skipped %s %s (%s)", message.type, message.message_id, why
                )
            return message.message_id
        next(self._made)
        with self._lock:
            self._cancelled += 1
        logger.warning("courier-analytics: %s (passed to on_error)", why)
        self._report(why, message)
        return message.message_id

    def _count_drop(self) -> int:
        """Count a drop; return how many to log now (0 inside the quiet interval). Locked."""
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._drop_logged_at < DROP_LOG_INTERVAL:
            return 0
        drops, self._drops_unlogged, self._drop_logged_at = self._drops_unlogged, 0, now
        return drops

    def _capture(self, message: Message) -> str:
        """Hand the message to the test recorders instead of sending it (counted as skipped)."""
        for recorder in _capture.recorders:
            recorder(message, None)
        next(self._made)
        with self._lock:
            self._skipped += 1
        return message.message_id

    def _report(self, error: BaseException, message: Message) -> None:
        if self._events.handlers:
            self._events.failure("error", error, message)
        handler = self._options.on_error
        if handler is None:
            return
        try:
            handler(error, message)
        except Exception as exc:
            logger.warning(
                "courier-analytics: on_error raised %s for %s %s; ignored",
                type(exc).__name__,
                message.type,
                message.message_id,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued message is delivered or has failed.

        `True` says that nothing is left pending, not that everything was
        delivered: a message Courier refused (a wrong key: 401) has failed, and
        was passed to `on_error`. To know whether all of it was delivered, use
        [`flush_report`][courier_analytics.Client.flush_report].

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.

        Returns:
            `True` when nothing is left pending, `False` when the timeout passed first.
        """
        return self._flush("flush", timeout).done

    def flush_report(self, timeout: float | None = None) -> FlushReport:
        """Flush, and say what became of the messages since the previous flush.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.

        Returns:
            A [`FlushReport`][courier_analytics.FlushReport]: `report.ok` is `True`
            when everything was delivered; `report.failed` and `report.dropped` count
            what was not (each also passed to `on_error`).
        """
        return self._flush("flush", timeout)

    def _flush(self, name: str, timeout: float | None, done: bool | None = None) -> FlushReport:
        """Wait (unless `done` is given: aflush waited), then report and remember."""
        wait = self._options.flush_timeout if timeout is None else timeout
        if done is None:
            done = self._worker.wait_idle(wait)
        now = self.stats
        with self._lock:
            before, self._flushed = self._flushed, now
            if done:
                self._gave_up = None
            else:
                previous = self._gave_up
                same = previous is not None and previous[0] == now.made
                self._gave_up = (now.made, wait + (previous[1] if previous and same else 0.0))
        if not done:
            logger.info(
                "courier-analytics: %s gave up after %ss with %d message(s) pending",
                name,
                wait,
                now.pending,
            )
        return FlushReport(
            done=done,
            delivered=now.delivered - before.delivered,
            failed=now.failed - before.failed,
            dropped=now.dropped - before.dropped,
            pending=now.pending,
        )

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush, then stop the worker; later calls are dropped and reported.

        What is still pending when `timeout` passes is counted as failed and
        passed to `on_error` as [`NotDeliveredError`][courier_analytics.NotDeliveredError],
        with one WARNING line for them all, before this returns: then
        `stats.pending == 0` and `stats.unaccounted == 0`. Reporting takes what
        `on_error` takes for each message, at most 5 s more (past that an ERROR line
        says so; the counts are settled even then). Calling it again is harmless.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.
        """
        wait = self._options.flush_timeout if timeout is None else timeout
        shut_down_together([(self, time.monotonic() + wait)])

    async def aflush(self, timeout: float | None = None) -> bool:
        """`flush` for async code: awaits delivery while the event loop goes on.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.

        Returns:
            `True` when nothing is left pending, `False` when the timeout passed first.
        """
        wait = self._options.flush_timeout if timeout is None else timeout
        done = await self._worker.wait_idle_async(wait)
        return self._flush("aflush", wait, done).done

    async def ashutdown(self, timeout: float | None = None) -> None:
        """`shutdown` for async code: the event loop goes on while it waits.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.
        """
        self._worker.close()
        wait = self._options.flush_timeout if timeout is None else timeout
        await self._worker.wait_idle_async(wait)
        # Waiting for the reports of what is left blocks: on a thread, not on the loop.
        await asyncio.to_thread(_stop_and_report, [self])

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ashutdown()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def _after_fork_in_child(self) -> None:
        """Start over in a forked child: the parent's queue is the parent's to send."""
        closed = self._worker.closed
        self._init(self._options)
        if closed:
            self._worker.close()

    def _exit_deadline(self, began: float) -> float:
        """When this client's delivery must end if the exit began at `began` (monotonic)."""
        options = self._options
        return began + (self._exit_wait() if options.flush_at_exit else 0.0)

    def _exit_wait(self) -> float:
        """`exit_timeout`, cut so no message is waited for beyond `flush_timeout` in all.

        A script whose `flush()` timed out (a dead URL) and that made nothing since
        would otherwise wait `exit_timeout` more for the same messages at exit.
        """
        options = self._options
        # No lock: this runs in the SIGTERM handler too, which may interrupt a holder
        # of `_lock`; the tuple is replaced whole, so a plain read is consistent.
        gave_up = self._gave_up
        if gave_up is None:
            return options.exit_timeout
        # Nor a wait for it (that holder may be this thread): unknown, the whole wait.
        if not self._lock.acquire(blocking=False):
            return options.exit_timeout
        try:
            made = self._made_now()
        finally:
            self._lock.release()
        if gave_up[0] != made:
            return options.exit_timeout
        return min(options.exit_timeout, max(0.0, options.flush_timeout - gave_up[1]))


# The seam for code that wraps a client behind other call signatures (the Segment
# drop-in): make a message as a call would, then send it on as a call would.


def make_message(client: Client, make: Callable[[MessageFactory], Message]) -> Message:
    """`make(factory)` with the client's own message factory (validation, size, plugins).

    Raises what a call of the client raises for bad input.
    """
    return make(client._factory)


def dispatch(client: Client, message: Message) -> str:
    """Queue, skip or drop `message` exactly as the client's calls do; returns its id.

    What becomes of it is counted in `stats` and passed to `on_error` as for any call.
    """
    return client._dispatch(message)


def _enable_debug_logging() -> None:
    logger.setLevel(logging.DEBUG)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def _after_fork_in_child() -> None:
    global _exit_began
    _exit_began = None  # a child has not begun to exit because its parent had
    for client in list(_CLIENTS):
        client._after_fork_in_child()


def shut_down_together(clients: list[tuple[Client, float]]) -> None:
    """Shut clients down at once, each delivering until its deadline (`time.monotonic()`).

    They deliver side by side, so the slowest deadline bounds the whole, not their sum;
    then each reports what it leaves undelivered (see `Client.shutdown`).
    """
    for client, _ in clients:
        client._worker.close()
    for client, deadline in clients:
        client._worker.wait_idle(max(0.0, deadline - time.monotonic()))
    _stop_and_report([client for client, _ in clients])


def _stop_and_report(clients: list[Client]) -> None:
    """Stop the workers of closed clients and wait for their reports of what is left."""
    for client in clients:
        client._worker.stop()
    # Cancelling what is in flight takes milliseconds; the rest is on_error's time.
    cutoff = time.monotonic() + REPORT_TIMEOUT
    for client in clients:
        worker = client._worker
        if not worker.wait_stopped(max(0.0, cutoff - time.monotonic())):
            logger.error(
                "courier-analytics: on_error was still being called for the messages a "
                "stopped client did not deliver after %ss; they are counted as failed, "
                "and any report not made when the process exits is lost",
                REPORT_TIMEOUT,
            )


#: When the process began to exit (`time.monotonic()`), once it has: a SIGTERM
#: handler (see `handle_sigterm`) and the atexit hook share one exit budget.
_exit_began: float | None = None


def begin_exit() -> float:
    """Note that the process is exiting, if not yet noted; return when it began to."""
    global _exit_began
    if _exit_began is None:
        _exit_began = time.monotonic()
    return _exit_began


def exit_deadlines(began: float) -> list[tuple[Client, float]]:
    """Every live client with the deadline of its delivery at an exit that began at `began`."""
    return [(client, client._exit_deadline(began)) for client in list(_CLIENTS)]


def _flush_all_at_exit() -> None:
    # Every client at once, on one budget: each gets its exit_timeout from when the
    # exit began, side by side (one after another, three took three times as long).
    # Also for a client whose shutdown() runs in another thread: that thread is a
    # daemon and dies with the interpreter, so exit waits here instead.
    try:
        shut_down_together(exit_deadlines(begin_exit()))
    except Exception:  # pragma: no cover - never let exit fail because of analytics
        logger.exception("courier-analytics: flushing at exit failed")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_all_at_exit)
