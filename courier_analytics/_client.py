"""The client: its calls validate, make and queue messages; see `_intake` and `_lifecycle`.

`Client` holds the calls (`track`, `identify`, ...), the plugins and event
handlers, and the set-up. A call's message is made by the `MessageFactory`, which
alone decides whether it is a plain call made the short way, and goes to the
worker through `Intake._dispatch`, the one way in; flushing and shutting down are
`Lifecycle`'s.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from courier_analytics._events import Emitter, EventName
from courier_analytics._intake import Outcome, Stats
from courier_analytics._lifecycle import (
    CLIENTS,
    FlushReport,
    Lifecycle,
    begin_exit,
    exit_deadlines,
    shut_down_together,
)
from courier_analytics._message import MAX_REQUEST_BYTES, Message
from courier_analytics._messages import MessageFactory
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

__all__ = [
    "Client",
    "FlushReport",
    "Outcome",
    "Stats",
    "begin_exit",
    "dispatch",
    "exit_deadlines",
    "make_message",
    "shut_down_together",
]

logger = logging.getLogger("courier_analytics")


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


class Client(Lifecycle):
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
            more is faster; close by, the limit grows only while throughput does.
            The cost is connections: each holds a file descriptor and, over HTTPS,
            costs a TLS handshake when it opens and its TLS state while open (the
            Performance page has the figures). Lower it to cap them, for example
            under a preforking server with many processes.
        ordering: `"identify"` (default): a user's `identify`, `alias` and `group`
            go after that user's earlier messages are answered and before any
            later one; a user's tracks between two of them go together (up to half
            of `max_in_flight` at once), and a track waiting to retry holds back
            nothing else. `"strict"`: one message per user at a time, in the order
            made, a retry holding back that user's later messages; it caps one
            user at one event per round trip. See the Delivery page.
        event_loop: `"asyncio"` (default) or `"uvloop"`: the worker's event loop.
            uvloop (`pip install 'courier-analytics[uvloop]'`, not on Windows) cuts
            the worker's CPU per event; see the Performance page.
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
            are recorded through; by default the global one, once the app sets it
            up, before or after the client is made (`pip install
            'courier-analytics[otel]'`). See the Monitoring page.
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
        allow_insecure_http: bool | None = None,
        spool: str | os.PathLike[str] | None = None,
        spool_max_age: float = DEFAULT_MAX_AGE,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        meter_provider: MeterProvider | None = None,
        deliver: bool | None = None,
    ) -> None:
        # The parameters are exactly Options' fields (a test pins it), checked there once.
        given = dict(locals())
        del given["self"]
        self._setup(Options(**given), Plugins(), Emitter())

    @classmethod
    def from_options(cls, options: Options) -> Client:
        """Build a client from an [`Options`][courier_analytics.Options] value."""
        if cls.__init__ is not Client.__init__:
            # A subclass's own __init__ runs, as Client(...) would run it; the options
            # are then checked again (Client's own keeps the value given).
            return cls(**options._values())
        return cls._built(options)

    @classmethod
    def _built(
        cls, options: Options, plugins: Plugins | None = None, events: Emitter | None = None
    ) -> Client:
        """A client of checked `options`, with registries shared with others if given.

        The settings module gives the default client its plugins and handlers here,
        which survive its rebuilds.
        """
        client = cls.__new__(cls)
        client._setup(options, plugins or Plugins(), events or Emitter())
        return client

    def _setup(self, options: Options, plugins: Plugins, events: Emitter) -> None:
        self._plugins = plugins
        self._events = events
        self._open(options)
        if options.debug:
            _enable_debug_logging()
        CLIENTS.add(self)

    def _open(self, options: Options) -> None:
        """The factory, route, counters and worker of `options` (again in a forked child)."""
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
        self._lenient = self._factory.lenient()
        route = _make_route(options)
        self._delivered = frozenset(
            kind
            for kind in ("identify", "track", "group", "page", "screen", "alias")
            if route.delivers(kind)
        )
        self._open_intake(options)
        self._open_lifecycle()
        self._worker = Worker(
            make_sender=self._make_sender,
            route=route,
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
        if worker.journal is not None and options.send:
            worker.start()  # deliver what a process that died left in the spool

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

    def _queued(self, message: Message) -> str:
        """Send a made message on (see `Intake._dispatch`); its id, what each call returns."""
        self._dispatch(message)
        return message.message_id

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
        message = self._factory.identify(
            user_id,
            traits,
            anonymous_id=anonymous_id,
            context=context,
            timestamp=timestamp,
            message_id=message_id,
            integrations=integrations,
        )
        self._dispatch(message)
        return message.message_id

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
        self._dispatch(message)
        return message.message_id

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
        message = factory.track(
            event,
            properties,
            user_id=uid,
            anonymous_id=aid,
            context=ctx,
            timestamp=timestamp,
            message_id=message_id,
            integrations=integrations,
        )
        self._dispatch(message)
        return message.message_id

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
        return self._queued(
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
        return self._queued(
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
        return self._queued(
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
        return self._queued(
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


# The seam for code that wraps a client behind other call signatures (the Segment
# drop-in): make a message as a call would, then send it on as a call would.


def make_message(client: Client, make: Callable[[MessageFactory], Message]) -> Message:
    """`make(factory)` with the client's own message factory (validation, size, plugins).

    Raises what a call of the client raises for bad input.
    """
    return make(client._factory)


def dispatch(client: Client, message: Message) -> Outcome:
    """Queue, skip or drop `message` exactly as the client's calls do; say what became of it.

    What becomes of it is counted in `stats` and passed to `on_error` as for any call.
    """
    not_queued = client._dispatch(message)
    if not_queued is None:
        return Outcome(message.message_id, "accepted")
    return Outcome(message.message_id, *not_queued)


def _enable_debug_logging() -> None:
    logger.setLevel(logging.DEBUG)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
