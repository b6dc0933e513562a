"""Drop-in replacement for Segment's `segment-analytics-python` 2.x, delivering to Courier.

Change one import line and set your Courier API key; the rest of the code stays:

```python
# was: import segment.analytics as analytics
import courier_analytics.segment as analytics

# your Courier API key (or the COURIER_API_KEY variable)
analytics.write_key = "..."
analytics.identify("user_123", {"email": "carrier.pigeon@example.com"})
analytics.track("user_123", "Order Completed", {"total": 42})
analytics.flush()
```

The module-level settings (`write_key`, `host`, `on_error`, `debug`, `send`,
`sync_mode`, `max_queue_size`, `gzip`, `timeout`, `max_retries`,
`log_handler`, the `oauth_*` ones, ...), the functions with Segment's positional
signatures, their `(success, message)` return values and the
[`Client`][courier_analytics.segment.Client] constructor are Segment's. Underneath runs a
[`courier_analytics.Client`][courier_analytics.Client]. Options that mean nothing for Courier
(`gzip`, `oauth_*`, `thread`, `upload_size`, `max_rate_limit_duration`) are accepted and ignored.
See [Migrating from Segment][migrating-from-segment] for the full table.

Bad arguments raise [`InvalidArgumentError`][courier_analytics.segment.InvalidArgumentError], which
is an `AssertionError` (what Segment's `require()` raises) as well as a `TypeError` and a
`ValueError` (what courier-analytics raises), so `except` clauses written for either keep working.
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
import numbers
import re
import threading
import uuid
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from courier_analytics import _errors
from courier_analytics._client import Client as CourierClient
from courier_analytics._client import Stats, dispatch, make_message
from courier_analytics._default import DefaultClient, install, proxy
from courier_analytics._message import Message
from courier_analytics._messages import MessageFactory
from courier_analytics._options import MissingApiKeyError, Options
from courier_analytics._version import __version__

if TYPE_CHECKING:
    import httpx
else:
    from courier_analytics._lazy import httpx

__all__ = [
    "SETTINGS",
    "Client",
    "InvalidArgumentError",
    "MessageTooLargeError",
    "SegmentErrorHandler",
    "__version__",
    "alias",
    "debug",
    "default_client",
    "flush",
    "group",
    "gzip",
    "host",
    "identify",
    "join",
    "log_handler",
    "max_queue_size",
    "max_retries",
    "oauth_auth_server",
    "oauth_client_id",
    "oauth_client_key",
    "oauth_key_id",
    "oauth_scope",
    "on_error",
    "page",
    "screen",
    "send",
    "shutdown",
    "sync_mode",
    "timeout",
    "track",
    "write_key",
]

logger = logging.getLogger("courier_analytics")

#: Segment's error callback: ``on_error(exception, batch)`` with ``batch`` a list of
#: Segment message dicts (here always a list of one).
SegmentErrorHandler = Callable[[BaseException, list[dict[str, Any]]], Any]

_UTC: Final = _dt.timezone.utc
#: Segment's own hosts: a ``host`` left pointing at Segment selects Courier's region.
_SEGMENT_HOSTS: Final = {"api.segment.io": "us", "events.eu1.segmentapis.com": "eu"}

#: Keys of Segment's message dict per type (Segment returns them even when ``None``).
_SEGMENT_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "identify": ("anonymousId", "userId", "traits"),
    "track": ("anonymousId", "userId", "event", "properties"),
    "alias": ("userId", "previousId"),
    "group": ("anonymousId", "userId", "groupId", "traits"),
    "page": ("anonymousId", "userId", "category", "name", "properties"),
    "screen": ("anonymousId", "userId", "category", "name", "properties"),
}


class InvalidArgumentError(AssertionError, TypeError, ValueError):
    """A call or the client got a bad argument; raised at once, nothing is queued.

    It is an `AssertionError` (what Segment's library raises for bad
    arguments), a `TypeError` and a `ValueError` (what
    courier-analytics raises), so existing `except` clauses keep working. The
    original courier-analytics error, if any, is its `__cause__`.
    """


class MessageTooLargeError(_errors.MessageTooLargeError, RuntimeError):
    """The message is larger than Courier accepts (6 MB); a `RuntimeError` as in Segment."""


# --------------------------------------------------------------------- helpers


def _id(value: object) -> object:
    """Segment's id rules: empty means absent, numbers and UUIDs become strings."""
    if value is None or value == "":
        return None
    if isinstance(value, (numbers.Number, uuid.UUID)) and not isinstance(value, str):
        return str(value)
    return value


def _timestamp(value: object) -> object:
    """Segment's reading of a naive datetime: local if within 5 s of now, else UTC."""
    if isinstance(value, _dt.datetime) and value.utcoffset() is None:
        if (_dt.datetime.now() - value).total_seconds() < 5:
            return value.astimezone()
        return value.replace(tzinfo=_UTC)
    return value


def _message_id(value: object) -> object:
    return None if value is None else str(value)


def _or_none(value: object) -> object:
    """Segment treats every falsy value (`{}`, `""`, `None`) as absent."""
    return value or None


def _clean(value: object) -> object:
    """A copy of the caller's value as Segment's `clean()` returns it, Python types kept.

    Dicts and lists are copied (sets and tuples become lists), `Decimal` becomes a
    float and an `Enum` its value; dates, numbers, strings and anything else stay as
    given. The message was validated before this runs: no cycles, bounded depth.
    """
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (str, bool, numbers.Number, _dt.date)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(item) for item in value]
    if isinstance(value, enum.Enum):
        return _clean(value.value)
    return value


def _segment_dict(message: Message, given: Mapping[str, object] | None = None) -> dict[str, Any]:
    """The message as Segment's library returns it: its keys present even when empty.

    With `given`, the caller's own mappings (`traits`, `properties`, `context`,
    `integrations`), those fields hold copies of the caller's Python values, as
    Segment returns them (a `date` stays a `date`); the rest, and what was sent, is
    the JSON snapshot taken at the call.
    """
    data = message.to_dict()
    for key in _SEGMENT_KEYS.get(message.type, ()):
        data.setdefault(key, None)
    data.setdefault("integrations", {})
    for key, value in (given or {}).items():
        if not value:
            continue
        cleaned = _clean(value)
        if key == "context" and isinstance(cleaned, dict):
            cleaned["library"] = data["context"]["library"]
        data[key] = cleaned
    return data


def _proxy_transport(proxies: object, base_url: str) -> httpx.AsyncHTTPTransport | None:
    """Turn requests-style `proxies` (a dict by scheme, or one URL) into an httpx transport."""
    if not proxies:
        return None
    where = "proxies"
    if isinstance(proxies, str):
        url: object = proxies
    elif isinstance(proxies, Mapping):
        scheme = urlsplit(base_url).scheme
        for key in (scheme, f"{scheme}://", "all"):
            url = proxies.get(key)
            if url:
                where = f"proxies[{key!r}]"
                break
    else:
        raise InvalidArgumentError(
            f"proxies must be a dict such as {{'https': 'http://proxy:3128'}} or a URL, "
            f"not {type(proxies).__name__}"
        )
    if not url:
        return None
    proxy = _proxy_url(where, url)
    try:
        return httpx.AsyncHTTPTransport(proxy=proxy)
    except (ValueError, ImportError, httpx.InvalidURL) as exc:  # httpx masks passwords
        raise InvalidArgumentError(f"{where} is not a usable proxy URL: {exc}") from exc


def _proxy_url(where: str, value: object) -> str:
    """A proxy URL as requests reads it: without a scheme it is `http://`."""
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f"{where} must be a proxy URL such as 'http://proxy:3128', not {type(value).__name__}"
        )
    url = value.strip()
    if "://" not in url:
        url = "http://" + url  # requests' prepend_scheme_if_needed(proxy, "http")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or too big
    except ValueError as exc:
        raise InvalidArgumentError(f"{where} is not a valid proxy URL: {exc}") from None
    if not parts.hostname or any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidArgumentError(
            f"{where} is not a valid proxy URL: give host:port or scheme://host:port, "
            "e.g. 'http://proxy.internal:3128'"
        )
    return url


def _core_settings(client: Client, courier_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `courier_analytics.Client` options of a drop-in client's settings."""
    settings: dict[str, Any] = {
        "api_key": client.write_key or None,
        "debug": client.debug,
        "max_queue_size": client.max_queue_size,
        "send": client.send,
        "on_error": client._report,
        "max_retries": client.max_retries,
        "sync_mode": client.sync_mode,
        "timeout": client.timeout,
        "max_retry_time": client.max_total_backoff_duration,
        **_host(client.host),
    }
    if client.upload_interval and client.upload_interval > 0:
        settings["flush_interval"] = client.upload_interval
    settings.update(courier_options or {})
    return settings


def _host(host: str | None) -> dict[str, Any]:
    """Core options for Segment's `host`: Courier's URL, or a region for a Segment host."""
    if not host:
        return {}
    hostname = urlsplit(host if "://" in host else f"https://{host}").hostname or ""
    if hostname in _SEGMENT_HOSTS or hostname.endswith((".segment.io", ".segmentapis.com")):
        logger.info("courier-analytics: host %s is Segment's; using Courier's API host", hostname)
        return {"region": _SEGMENT_HOSTS.get(hostname, "us")}
    return {"base_url": (host if "://" in host else f"https://{host}").rstrip("/")}


#: Core option names in error texts, and what the drop-in's users set instead.
_SHIM_NAMES = (
    ("api_key", "write_key"),
    ("base_url", "host"),
    ("allow_insecure_http=True", "courier_options={'allow_insecure_http': True}"),
)


def _in_shim_words(text: str, given: Collection[str]) -> str:
    """A core error text in the drop-in's names: `write_key`, `host`, `courier_options`.

    A name the user passed through `courier_options` stays the core's: that is what
    they wrote. `courier_analytics.api_key` (the core module's setting) is left alone.
    """
    for core, shim in _SHIM_NAMES:
        if core.partition("=")[0] in given:
            continue
        text = re.sub(rf"(?<![.\w]){re.escape(core)}(?!\w)", shim, text)
    return text


# ---------------------------------------------------------------------- client


class _QueueView:
    """What Segment code reads of `client.queue`: `qsize()`, `empty()`, `full()`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def maxsize(self) -> int:
        """The queue's capacity (`max_queue_size`)."""
        return self._client.max_queue_size

    def qsize(self) -> int:
        """Messages queued or being delivered now."""
        return self._client.stats.pending

    def empty(self) -> bool:
        """Whether nothing is pending."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether new messages would be dropped."""
        return self.qsize() >= self.maxsize


class Client:
    """Segment's `Client`, same constructor and methods, delivering to Courier.

    Every method returns `(success, message)` like Segment's: `success` is
    `False` when the message was dropped (queue full) or, in `sync_mode`, not
    delivered; `message` is the Segment-spec dict, holding copies of your own
    values as Segment's does (what is sent is the JSON snapshot taken at the
    call). Nothing is raised for
    run-time problems; bad arguments raise
    [`InvalidArgumentError`][courier_analytics.segment.InvalidArgumentError].

    Example:
        ```python
        from courier_analytics.segment import Client

        client = Client("pk_test_123", send=False)
        ok, msg = client.track("u1", "Order Completed", {"total": 42})
        assert (ok, msg["event"]) == (True, "Order Completed")
        ```

    Args:
        write_key: Your Courier API key. Defaults to `COURIER_API_KEY`.
        host: Courier's URL (the client's `base_url`). Segment's own hosts are
            recognised and select Courier's US or EU host.
        debug: Log at DEBUG level (type, id and size of messages, never payloads).
        max_queue_size: Messages pending at most; beyond it calls return `(False, msg)`.
        send: `False` validates and returns messages but sends nothing.
        on_error: Called as `on_error(exception, [message_dict])` for every
            message that was dropped or not delivered.
        gzip: Accepted and ignored: each Courier request carries one small message.
        max_retries: Retries of a message after its first attempt.
        sync_mode: Deliver each message before the call returns.
        timeout: Seconds allowed for each of connect, write and read of a request.
        proxies: A requests-style dict (`{"https": "http://proxy:3128"}`) or a
            proxy URL; requests go through it. Without a scheme a proxy is
            `http://`, as requests reads it.
        thread: Accepted and ignored: one worker keeps many requests in flight
            (the core client's `max_in_flight`).
        upload_size: Accepted and ignored: Courier has no batch endpoint.
        upload_interval: Seconds an idle worker waits before looking at the queue
            on its own (`flush_interval`); calls wake it at once anyway.
        log_handler: A `logging.Handler` added to the `courier_analytics` logger.
        oauth_client_id: Accepted and ignored: Courier authenticates with the API key.
        oauth_client_key: Accepted and ignored.
        oauth_key_id: Accepted and ignored.
        oauth_auth_server: Accepted and ignored.
        oauth_scope: Accepted and ignored.
        max_total_backoff_duration: Seconds after the first attempt past which no
            retry starts (`max_retry_time`).
        max_rate_limit_duration: Accepted and ignored: a 429 is retried under the
            same limits as other retryable answers, honouring `Retry-After`.
        courier_options: Further [`courier_analytics.Client`][courier_analytics.Client] options
            (e.g. `region`, `route`, `transport`); they win over the ones above.

    Raises:
        InvalidArgumentError: An option is invalid, or no API key is set while `send`.
    """

    # Segment's attributes, one per argument, as given; the courier-analytics
    # client's options are made from them once, in __init__.
    write_key: str | None
    host: str | None
    debug: bool
    max_queue_size: int
    send: bool
    on_error: SegmentErrorHandler | None
    gzip: bool
    max_retries: int
    sync_mode: bool
    timeout: float
    proxies: Mapping[str, str] | str | None
    thread: int
    upload_size: int
    upload_interval: float
    oauth_client_id: str | None
    oauth_client_key: str | None
    oauth_key_id: str | None
    oauth_auth_server: str
    oauth_scope: str
    max_total_backoff_duration: float
    max_rate_limit_duration: float

    def __init__(
        self,
        write_key: str | None = None,
        host: str | None = None,
        debug: bool = False,
        max_queue_size: int = 10000,
        send: bool = True,
        on_error: SegmentErrorHandler | None = None,
        gzip: bool = False,
        max_retries: int = 10,
        sync_mode: bool = False,
        timeout: float = 15,
        proxies: Mapping[str, str] | str | None = None,
        thread: int = 1,
        upload_size: int = 100,
        upload_interval: float = 0.5,
        log_handler: logging.Handler | None = None,
        oauth_client_id: str | None = None,
        oauth_client_key: str | None = None,
        oauth_key_id: str | None = None,
        oauth_auth_server: str = "https://oauth2.segment.io",
        oauth_scope: str = "tracking_api:write",
        max_total_backoff_duration: float = 43200,
        max_rate_limit_duration: float = 1800,
        *,
        courier_options: Mapping[str, Any] | None = None,
    ) -> None:
        given = dict(locals())
        if write_key is not None and not isinstance(write_key, str):
            raise InvalidArgumentError(f"write_key must be a str, not {type(write_key).__name__}")
        for name, value in (
            ("max_total_backoff_duration", max_total_backoff_duration),
            ("max_rate_limit_duration", max_rate_limit_duration),
        ):
            if value is None or value < 0:
                raise InvalidArgumentError(f"{name} must be a non-negative number")
        # Segment's attributes: each argument under its own name, but these two.
        for name in ("self", "log_handler", "courier_options"):
            del given[name]
        self.__dict__.update(given)
        self.queue = _QueueView(self)
        self.log = logger
        if log_handler is not None and log_handler not in logger.handlers:
            logger.addHandler(log_handler)
        self._settings = _core_settings(self, courier_options)
        # Options set through courier_options keep the core's names in error texts.
        self._given = frozenset(courier_options or ())
        self._lock = threading.Lock()
        self._engine: CourierClient | None = None
        self._engine = self._build()  # checks the options now, as Segment does

    def _build(self) -> CourierClient:
        """The courier-analytics client of these settings, its options built once."""
        settings = self._settings
        try:
            options = Options(**settings)
            if "transport" not in settings and self.proxies:
                # The proxy is chosen by the scheme of the URL the options resolved: only
                # then is the transport known, so these options are built a second time.
                transport = _proxy_transport(self.proxies, options.resolved_base_url())
                options = Options(**{**options._values(), "transport": transport})
        except MissingApiKeyError as exc:
            raise InvalidArgumentError(
                "write_key is required: set analytics.write_key or Client(write_key=...) "
                "to your Courier API key, or set the COURIER_API_KEY environment variable "
                "(send=False needs no key)"
            ) from exc
        except _errors.ConfigurationError as exc:
            raise InvalidArgumentError(_in_shim_words(str(exc), self._given)) from exc
        return CourierClient.from_options(options)

    @property
    def courier_client(self) -> CourierClient:
        """The [`courier_analytics.Client`][courier_analytics.Client] doing the work.

        It is rebuilt after [`join`][courier_analytics.segment.Client.join].
        """
        engine = self._engine
        if engine is not None:
            return engine
        with self._lock:
            if self._engine is None:
                self._engine = self._build()
            return self._engine

    @property
    def stats(self) -> Stats:
        """Counts of what this client did.

        See [`courier_analytics.Stats`][courier_analytics.Stats].
        """
        return self.courier_client.stats

    def _report(self, error: BaseException, message: Message) -> None:
        """The engine's `on_error`: the user's, with Segment's arguments."""
        handler = self.on_error
        if handler is not None:
            handler(error, [_segment_dict(message)])

    def _enqueue(
        self, kind: str, make: Callable[[MessageFactory], Message], given: Mapping[str, object]
    ) -> tuple[bool, dict[str, Any]]:
        """Make and send a message; `given` holds the caller's own mappings, by Segment key."""
        engine = self.courier_client
        try:
            message = make_message(engine, make)
        except _errors.MessageTooLargeError as exc:
            raise MessageTooLargeError(str(exc)) from exc
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(str(exc)) from exc
        # As in Segment's library, a call fails for a message it did not queue
        # (dropped, or cancelled by a plugin) and, in sync mode only, for one not
        # delivered; a failure in the background never changes what a call returns.
        ok = dispatch(engine, message).ok
        return ok, _segment_dict(message, given if message.type == kind else None)

    # ------------------------------------------------------------- the calls

    def identify(
        self,
        user_id: object = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: _dt.datetime | None = None,
        anonymous_id: object = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: object = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Merge `traits` into the user's Courier profile.

        Args:
            user_id: Whose profile (str or number); required unless `anonymous_id`.
            traits: Profile fields, e.g. `{"email": ...}`.
            context: Segment `context`; `library` is set on a copy.
            timestamp: A `datetime`; a naive one is read as Segment reads it.
            anonymous_id: Used when there is no `user_id`.
            integrations: Segment `integrations` object, passed through.
            message_id: Your own id for the message; default a UUID4.

        Returns:
            `(success, message)`: see [`Client`][courier_analytics.segment.Client].
        """
        return self._enqueue(
            "identify",
            lambda f: f.identify(
                _id(user_id),
                _or_none(traits),
                anonymous_id=_id(anonymous_id),
                context=_or_none(context),
                timestamp=_timestamp(timestamp),
                message_id=_message_id(message_id),
                integrations=_or_none(integrations),
            ),
            {"traits": traits, "context": context, "integrations": integrations},
        )

    def track(
        self,
        user_id: object = None,
        event: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: _dt.datetime | None = None,
        anonymous_id: object = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: object = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Record that the user did `event`; Courier sees `Segment-TrackEvent:<event>`.

        Args:
            user_id: Who did it (str or number); required unless `anonymous_id`.
            event: The event name, e.g. `"Order Completed"`.
            properties: The event's data.
            context: Segment `context`; `library` is set on a copy.
            timestamp: A `datetime`; a naive one is read as Segment reads it.
            anonymous_id: Used when there is no `user_id`.
            integrations: Segment `integrations` object, passed through.
            message_id: Your own id for the message; default a UUID4.

        Returns:
            `(success, message)`: see [`Client`][courier_analytics.segment.Client].
        """
        return self._enqueue(
            "track",
            lambda f: f.track(
                event,
                _or_none(properties),
                user_id=_id(user_id),
                anonymous_id=_id(anonymous_id),
                context=_or_none(context),
                timestamp=_timestamp(timestamp),
                message_id=_message_id(message_id),
                integrations=_or_none(integrations),
            ),
            {"properties": properties, "context": context, "integrations": integrations},
        )

    def alias(
        self,
        previous_id: object = None,
        user_id: object = None,
        context: Mapping[str, Any] | None = None,
        timestamp: _dt.datetime | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: object = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Link `previous_id` to `user_id`: validated, not delivered (Courier has no alias).

        Returns:
            `(success, message)`: see [`Client`][courier_analytics.segment.Client].
        """
        return self._enqueue(
            "alias",
            lambda f: f.alias(
                _id(previous_id),
                _id(user_id),
                context=_or_none(context),
                timestamp=_timestamp(timestamp),
                message_id=_message_id(message_id),
                integrations=_or_none(integrations),
            ),
            {"context": context, "integrations": integrations},
        )

    def group(
        self,
        user_id: object = None,
        group_id: object = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: _dt.datetime | None = None,
        anonymous_id: object = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: object = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Associate the user with a group: sent on route `"segment"` only (Courier logs it).

        Returns:
            `(success, message)`: see [`Client`][courier_analytics.segment.Client].
        """
        return self._enqueue(
            "group",
            lambda f: f.group(
                _id(group_id),
                _or_none(traits),
                user_id=_id(user_id),
                anonymous_id=_id(anonymous_id),
                context=_or_none(context),
                timestamp=_timestamp(timestamp),
                message_id=_message_id(message_id),
                integrations=_or_none(integrations),
            ),
            {"traits": traits, "context": context, "integrations": integrations},
        )

    def page(
        self,
        user_id: object = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: _dt.datetime | None = None,
        anonymous_id: object = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: object = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Record a page view: validated, not delivered (Courier does not take page calls).

        Returns:
            `(success, message)`: see [`Client`][courier_analytics.segment.Client].
        """
        view = (category, name, properties, context, timestamp)
        return self._view("page", user_id, *view, anonymous_id, integrations, message_id)

    def screen(
        self,
        user_id: object = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: _dt.datetime | None = None,
        anonymous_id: object = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: object = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Record a screen view: validated, not delivered (Courier does not take screen calls).

        Returns:
            `(success, message)`: see [`Client`][courier_analytics.segment.Client].
        """
        view = (category, name, properties, context, timestamp)
        return self._view("screen", user_id, *view, anonymous_id, integrations, message_id)

    def _view(
        self,
        kind: str,
        user_id: object,
        category: object,
        name: object,
        properties: object,
        context: object,
        timestamp: object,
        anonymous_id: object,
        integrations: object,
        message_id: object,
    ) -> tuple[bool, dict[str, Any]]:
        return self._enqueue(
            kind,
            lambda f: f.view(
                kind,
                _or_none(name),
                _or_none(properties),
                category=_or_none(category),
                user_id=_id(user_id),
                anonymous_id=_id(anonymous_id),
                context=_or_none(context),
                timestamp=_timestamp(timestamp),
                message_id=_message_id(message_id),
                integrations=_or_none(integrations),
            ),
            {"properties": properties, "context": context, "integrations": integrations},
        )

    # ------------------------------------------------------------- lifecycle

    def flush(self) -> bool:
        """Wait until every queued message is delivered or has failed.

        Returns:
            `True` when nothing is left pending (Segment returned `None`).
        """
        engine = self._engine
        return True if engine is None else engine.flush()

    def join(self) -> None:
        """Deliver what is pending, then stop the worker; works in `sync_mode` too.

        A later call starts a fresh worker, so nothing made after `join()` is lost.
        """
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()

    def shutdown(self) -> None:
        """Flush all messages and stop the worker (a later call starts a new one)."""
        self.flush()
        self.join()


# ------------------------------------------------------------ module settings

#: Names of the module-level settings: assigning one rebuilds the default client.
SETTINGS: Final = frozenset(
    {
        "write_key",
        "host",
        "on_error",
        "debug",
        "log_handler",
        "send",
        "sync_mode",
        "max_queue_size",
        "gzip",
        "timeout",
        "max_retries",
        "proxies",
        "thread",
        "upload_size",
        "upload_interval",
        "max_total_backoff_duration",
        "max_rate_limit_duration",
        "oauth_client_id",
        "oauth_client_key",
        "oauth_key_id",
        "oauth_auth_server",
        "oauth_scope",
        "courier_options",
    }
)

write_key: str | None = None
host: str | None = None
on_error: SegmentErrorHandler | None = None
debug: bool = False
log_handler: logging.Handler | None = None
send: bool = True
sync_mode: bool = False
max_queue_size: int = 10000
gzip: bool = False
timeout: float = 15
max_retries: int = 10
proxies: Mapping[str, str] | str | None = None
thread: int = 1
upload_size: int = 100
upload_interval: float = 0.5
max_total_backoff_duration: float = 43200
max_rate_limit_duration: float = 1800
oauth_client_id: str | None = None
oauth_client_key: str | None = None
oauth_key_id: str | None = None
oauth_auth_server: str = "https://oauth2.segment.io"
oauth_scope: str = "tracking_api:write"
courier_options: Mapping[str, Any] | None = None

#: The client behind the module-level functions, built on the first call from the
#: settings above (``None`` until then; assigning ``None`` makes the next call rebuild,
#: assigning a `Client` makes the module functions use it).
default_client: Client | None = None

_defaults: DefaultClient[Client] = DefaultClient(
    __name__, SETTINGS, Client, published="default_client"
)

# As in Segment's library, every module function (flush, join and shutdown too)
# builds the default client from the settings when there is none.
identify = proxy(Client.identify, _defaults)
"""Send an identify call on the default client; see `Client.identify`."""
track = proxy(Client.track, _defaults)
"""Send a track call on the default client; see `Client.track`."""
group = proxy(Client.group, _defaults)
"""Send a group call on the default client; see `Client.group`."""
alias = proxy(Client.alias, _defaults)
"""Send an alias call on the default client; see `Client.alias`."""
page = proxy(Client.page, _defaults)
"""Send a page call on the default client; see `Client.page`."""
screen = proxy(Client.screen, _defaults)
"""Send a screen call on the default client; see `Client.screen`."""
flush = proxy(Client.flush, _defaults)
"""Wait until the default client has delivered what is pending; see `Client.flush`."""
join = proxy(Client.join, _defaults)
"""Deliver what is pending and stop the default client's worker; see `Client.join`."""
shutdown = proxy(Client.shutdown, _defaults)
"""Flush, then stop the default client's worker; see `Client.shutdown`."""

install(_defaults)
