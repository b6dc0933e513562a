"""The client: validates calls, queues messages, and reports what became of them."""

from __future__ import annotations

import asyncio
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
from typing import Any

import attrs

from courier_analytics import _capture
from courier_analytics._errors import ClientClosedError, CourierAnalyticsError, QueueFullError
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
from courier_analytics._transport import AnyTransport, Sender, make_sender
from courier_analytics._worker import Worker, WorkerUnavailable

__all__ = ["Client", "Stats", "dispatch", "make_message"]

logger = logging.getLogger("courier_analytics")

_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()

#: Seconds between two warnings about dropped messages (each drop is still reported).
DROP_LOG_INTERVAL = 10.0


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
        dropped: Messages refused because the queue was full or the client closed.
            Each was passed to `on_error`.
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
        exit_timeout: Seconds that delivery at exit may take.
        flush_timeout: Default timeout of [`flush`][courier_analytics.Client.flush] and
            [`shutdown`][courier_analytics.Client.shutdown].
        max_message_bytes: Largest encoded message accepted at the call.
        allow_insecure_http: Allow a plain `http://` base URL to another host.
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
        deliver: With a Redis spool, whether this process also delivers from it
            (the default); `False` only commits, and `courier-analytics relay`
            processes deliver. `None` (the default) reads `COURIER_ANALYTICS_DELIVER`
            (`0` for False), else True. See the Fleets page.

    Raises:
        ConfigurationError: An option is invalid, or no API key is set while `send`.
    """

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
        allow_insecure_http: bool = False,
        spool: str | os.PathLike[str] | None = None,
        spool_max_age: float = DEFAULT_MAX_AGE,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_commit_interval: float = DEFAULT_COMMIT_INTERVAL,
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
        self._dropped = 0
        self._skipped = 0
        self._cancelled = 0
        self._drops_unlogged = 0
        self._drop_logged_at = -DROP_LOG_INTERVAL
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
            made = next(self._made) - self._made_reads
            self._made_reads += 1
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
            return self._stopped(message, message._stop)
        if _capture.recorders:
            return self._capture(message)
        if not self._send:
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
            self._not_queued(message, None)
        except WorkerUnavailable as exc:
            self._not_queued(message, exc)

    def _not_queued(self, message: Message, closed: WorkerUnavailable | None) -> None:
        """Count, log and report a message the worker refused: the queue was full, or closed."""
        error: CourierAnalyticsError
        if closed is None:
            options = self._options
            error = QueueFullError(
                f"{message.type} {message.message_id} ({len(message._data)} bytes) dropped: "
                f"the queue is full (at most {options.max_queue_size} messages and "
                f"{options.max_queue_bytes} bytes pending)"
            )
        else:
            error = ClientClosedError(f"{message.type} {message.message_id} dropped: {closed}")
        with self._lock:
            self._dropped += 1
            drops = self._count_drop()
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
            recorder(message)
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

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.

        Returns:
            `True` when nothing is left pending, `False` when the timeout passed first.
        """
        wait = self._options.flush_timeout if timeout is None else timeout
        done = self._worker.wait_idle(wait)
        if not done:
            logger.info(
                "courier-analytics: flush gave up after %ss with %d message(s) pending",
                wait,
                self._worker.pending,
            )
        return done

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush, then stop the worker; later calls are dropped and reported.

        What is still pending when `timeout` passes is counted as failed and
        passed to `on_error` as [`NotDeliveredError`][courier_analytics.NotDeliveredError]. Calling
        it again is harmless.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.
        """
        self._worker.close()
        wait = self._options.flush_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        self._worker.wait_idle(wait)
        # Cancelling what is in flight takes milliseconds; a short floor lets the
        # reports of what was not delivered land before this returns.
        self._worker.stop(max(0.2, deadline - time.monotonic()))

    async def aflush(self, timeout: float | None = None) -> bool:
        """`flush` for async code: awaits delivery while the event loop goes on.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.

        Returns:
            `True` when nothing is left pending, `False` when the timeout passed first.
        """
        wait = self._options.flush_timeout if timeout is None else timeout
        done = await self._worker.wait_idle_async(wait)
        if not done:
            logger.info(
                "courier-analytics: aflush gave up after %ss with %d message(s) pending",
                wait,
                self._worker.pending,
            )
        return done

    async def ashutdown(self, timeout: float | None = None) -> None:
        """`shutdown` for async code: the event loop goes on while it waits.

        Args:
            timeout: Seconds to wait at most; default the client's `flush_timeout`.
        """
        self._worker.close()
        wait = self._options.flush_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        await self._worker.wait_idle_async(wait)
        # Stopping joins the worker thread (milliseconds): on a thread, not on the loop.
        await asyncio.to_thread(self._worker.stop, max(0.2, deadline - time.monotonic()))

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

    def _at_exit(self) -> None:
        # Also for a client whose shutdown() runs in another thread: that thread is a
        # daemon and dies with the interpreter, so exit waits here instead.
        options = self._options
        self.shutdown(options.exit_timeout if options.flush_at_exit else 0.0)


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
    for client in list(_CLIENTS):
        client._after_fork_in_child()


def _flush_all_at_exit() -> None:
    for client in list(_CLIENTS):
        try:
            client._at_exit()
        except Exception:  # pragma: no cover - never let exit fail because of analytics
            logger.exception("courier-analytics: flushing at exit failed")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_all_at_exit)
