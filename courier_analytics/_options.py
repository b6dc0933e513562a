"""Client options: one validated, immutable value (also what module settings map to)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast, get_args
from urllib.parse import SplitResult, urlsplit

from courier_analytics._errors import ConfigurationError
from courier_analytics._lazy import is_loopback
from courier_analytics._message import MAX_REQUEST_BYTES, Message
from courier_analytics._retry import RetryPolicy
from courier_analytics._routes import DEFAULT_EVENT_PREFIX, RouteName
from courier_analytics._spool import (
    DEFAULT_COMMIT_INTERVAL,
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_BYTES,
    parse_spool,
)
from courier_analytics._spool import Settings as SpoolSettings
from courier_analytics._value import Value

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from courier_analytics._transport import AnyTransport

__all__ = [
    "ALLOW_INSECURE_HTTP_VARIABLE",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_QUEUE_BYTES",
    "REGIONS",
    "ErrorHandler",
    "EventLoop",
    "MissingApiKeyError",
    "Options",
    "Ordering",
    "Region",
    "default_max_in_flight",
]

Region = Literal["us", "eu"]
#: How a user's messages are ordered on the way out (see `Client`'s ``ordering``).
Ordering = Literal["identify", "strict"]
#: The worker's event loop (see `Client`'s ``event_loop``).
EventLoop = Literal["asyncio", "uvloop"]
ErrorHandler = Callable[[BaseException, Message], Any]

#: Courier's API host for each region.
REGIONS: dict[str, str] = {"us": "https://api.courier.com", "eu": "https://api.eu.courier.com"}

#: The default `max_queue_bytes`: what the client may hold for undelivered messages.
#: Ten messages of the largest size Courier takes, or 64,000 events of 1 KB.
DEFAULT_MAX_QUEUE_BYTES = 64 * 1000 * 1000

#: The default ceiling on requests in flight, before the open-file limit caps it.
MAX_IN_FLIGHT = 512


def default_max_in_flight() -> int:
    """The default `max_in_flight`: 512, or a quarter of the open-file limit if lower.

    Each request in flight holds a connection, so a process with a low soft limit on
    open files (`ulimit -n`, 256 on macOS, often 1024 on Linux) keeps three quarters
    of it for everything else. Where `resource` is missing (Windows), 512.
    """
    try:
        import resource
    except ImportError:
        return MAX_IN_FLIGHT
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return MAX_IN_FLIGHT
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return MAX_IN_FLIGHT
    return max(1, min(MAX_IN_FLIGHT, soft // 4))


#: `max_in_flight` when none is given, read once when the package is imported.
DEFAULT_MAX_IN_FLIGHT = default_max_in_flight()

#: Where `allow_insecure_http` comes from when it is not given: a container pointed at a
#: stand-in service (`http://courier-dev:8000`) is configured without a code change.
ALLOW_INSECURE_HTTP_VARIABLE = "COURIER_ANALYTICS_ALLOW_INSECURE_HTTP"
_FLAG_VALUES = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off", ""), False),
}


def _flag_from_environment(name: str) -> bool | None:
    """A yes/no environment variable; `None` when unset; bad values raise."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        return _FLAG_VALUES[raw.strip().lower()]
    except KeyError:
        raise ConfigurationError(
            f"the {name} environment variable must be 1, true, yes or on (or 0, false, "
            f"no, off), not {raw!r}"
        ) from None


#: A field's check: raises ConfigurationError naming the field (`name`) if `value` is bad.
Check = Callable[[str, Any], None]


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number, not {value!r}")


def _one_of(*allowed: str) -> Check:
    def check(name: str, value: Any) -> None:
        if value not in allowed:
            options = ", ".join(repr(a) for a in allowed)
            raise ConfigurationError(f"{name} must be one of {options}, not {value!r}")

    return check


def _loop_available(name: str, value: Any) -> None:
    _one_of(*get_args(EventLoop))(name, value)
    if value != "uvloop":
        return
    import importlib.util  # asked only by a client that wants uvloop

    if importlib.util.find_spec("uvloop") is None:
        raise ConfigurationError(
            "event_loop='uvloop' needs the uvloop package (not on Windows): "
            "pip install 'courier-analytics[uvloop]', or leave event_loop='asyncio'"
        )


def _whole(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive int, not {value!r}")


def _instance_or_none(*types: type) -> Check:
    names = " or ".join(t.__name__ for t in types)

    def check(name: str, value: Any) -> None:
        if value is not None and not isinstance(value, types):
            raise ConfigurationError(
                f"{name} must be a {names} or None, not {type(value).__name__}"
            )

    return check


def _transport_or_none(name: str, value: Any) -> None:
    if value is None:
        return
    import httpx  # only here: whoever passes a transport has imported httpx already

    _instance_or_none(httpx.AsyncBaseTransport, httpx.BaseTransport)(name, value)


def _meter_provider_or_none(name: str, value: Any) -> None:
    if value is not None and not callable(getattr(value, "get_meter", None)):
        raise ConfigurationError(
            f"{name} must be an OpenTelemetry MeterProvider or None, not {type(value).__name__}"
        )


def _callable_or_none(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigurationError(
            f"{name} must be a callable (exc, message) or None, not {type(value).__name__}"
        )


def _mask(key: str | None) -> str:
    return "None" if key is None else "'***'"


def _check_api_key(key: object, source: str) -> None:
    """Refuse a key that is not printable ASCII without spaces, never echoing it.

    Such a key cannot be a Courier key, and sent in a header it would end up in
    error texts and httpcore's debug logs.
    """
    if key is None:
        return
    if not isinstance(key, str):
        raise ConfigurationError(f"{source} must be a str, not {type(key).__name__}")
    if key.isascii() and key.isprintable() and " " not in key:
        return
    for position, char in enumerate(key, 1):
        if not "!" <= char <= "~":
            if char == " ":
                what = "a space"
            elif char.isascii() or not char.isprintable():
                what = f"a control character (U+{ord(char):04X})"
            else:
                what = "a character that is not ASCII"
            raise ConfigurationError(
                f"{source} has {what} at position {position}: a Courier API key is printable "
                "ASCII without spaces (a stray newline or quote from copying it?)"
            )


def _idna_labels(host: str) -> None:
    """Raise UnicodeError as `host.encode("idna")` would: an empty or overlong label.

    An ASCII host is checked here, without the IDNA codec (and the `unicodedata`
    and `stringprep` it imports on first use): most hosts are ASCII.
    """
    if not host.isascii():
        host.encode("idna")
        return
    labels = host.split(".")
    if labels[-1] == "":  # a trailing dot: the root, allowed
        labels.pop()
    if not labels or any(not 0 < len(label) <= 63 for label in labels):
        raise UnicodeError("label empty or too long")


def _check_base_url(url: object, source: str) -> SplitResult:
    """Refuse a base URL that every request would send wrongly, or partly drop.

    The URL is not echoed: it may carry credentials or a key.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"{source} must be a str, not {type(url).__name__}")
    if not url.isascii():
        hint = ""
        try:
            host = urlsplit(url).hostname or ""
            if not host.isascii():
                hint = f"; its host in IDNA form is {host.encode('idna').decode('ascii')!r}"
        except (UnicodeError, ValueError):
            pass
        raise ConfigurationError(
            f"{source} must be ASCII: write a non-ASCII host in its IDNA (xn--) form and "
            f"percent-encode the path{hint}"
        )
    if not url.isprintable() or " " in url:
        raise ConfigurationError(
            f"{source} must not contain spaces or control characters (percent-encode them)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ConfigurationError(
            f"{source} is not a valid URL (check the port and any [IPv6] brackets)"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{source} must be an http:// or https:// URL with a host")
    try:
        _idna_labels(parts.hostname)  # what the request's Host header is made of
    except UnicodeError:
        raise ConfigurationError(
            f"{source} is not a valid host name (an empty label, or one over 63 characters)"
        ) from None
    if "@" in parts.netloc:
        raise ConfigurationError(
            f"{source} must not carry credentials (user:password@host); Courier takes the "
            "key as api_key"
        )
    if parts.query or "?" in url:
        raise ConfigurationError(
            f"{source} must not have a query string (?...): requests would not carry it"
        )
    if parts.fragment or "#" in url:
        raise ConfigurationError(f"{source} must not have a fragment (#...)")
    return parts


class MissingApiKeyError(ConfigurationError):
    """No API key was given or found while the client sends (the drop-in words it its way)."""


class _Resolved(NamedTuple):
    """What the options resolved from the environment, once, when they were built."""

    api_key: str | None
    base_url: str
    allow_insecure_http: bool
    spool: SpoolSettings | None


#: Each option's check, in the options' order: raises ConfigurationError naming it.
_CHECKS: dict[str, Check] = {
    "region": _one_of(*REGIONS),
    "route": _one_of(*get_args(RouteName)),
    "max_queue_size": _whole,
    "max_queue_bytes": _whole,
    "max_in_flight": _whole,
    "ordering": _one_of(*get_args(Ordering)),
    "event_loop": _loop_available,
    "flush_interval": _positive,
    "timeout": _positive,
    "retry": _instance_or_none(RetryPolicy),
    "on_error": _callable_or_none,
    "transport": _transport_or_none,
    "exit_timeout": _positive,
    "flush_timeout": _positive,
    "max_message_bytes": _whole,
    "allow_insecure_http": _instance_or_none(bool),
    "spool_max_age": _positive,
    "spool_max_bytes": _whole,
    "spool_commit_interval": _positive,
    "meter_provider": _meter_provider_or_none,
}


# Not slotted: the values resolved from the environment are kept beside the fields
# (`_resolved`), not as a field, so the fields stay exactly the client's options.
class Options(Value):
    """Every setting of a [`Client`][courier_analytics.Client], validated.

    See [`Client`][courier_analytics.Client] for what each option means. `api_key`
    never appears in `repr()`. The environment variables that stand in for options
    not given (`COURIER_API_KEY`, `COURIER_BASE_URL`, ...) are read once, when the
    value is built.
    """

    api_key: str | None
    region: Region
    base_url: str | None
    route: RouteName
    event_prefix: str
    max_queue_size: int
    max_queue_bytes: int
    max_in_flight: int
    ordering: Ordering
    event_loop: EventLoop
    flush_interval: float
    timeout: float
    max_retries: int
    max_retry_time: float | None
    retry: RetryPolicy | None
    on_error: ErrorHandler | None
    sync_mode: bool
    send: bool
    debug: bool
    transport: AnyTransport | None
    views_as_track: bool
    flush_at_exit: bool
    exit_timeout: float
    flush_timeout: float
    max_message_bytes: int
    allow_insecure_http: bool | None
    spool: str | os.PathLike[str] | None
    spool_max_age: float
    spool_max_bytes: int
    spool_commit_interval: float
    meter_provider: MeterProvider | None
    deliver: bool | None

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
        # The parameters are the fields (`__match_args__`, in order: a test pins it).
        given = locals()
        self._assign(*(given[name] for name in self.__match_args__))
        self._check()

    def __repr__(self) -> str:
        values = {name: repr(getattr(self, name)) for name in self.__match_args__}
        values["api_key"] = _mask(self.api_key)  # a repr may end up in a log or an error text
        return f"Options({', '.join(f'{name}={value}' for name, value in values.items())})"

    def _check(self) -> None:
        """Check each option, then resolve what the environment stands in for."""
        for name, check in _CHECKS.items():
            check(name, getattr(self, name))
        # The environment is read here, once: the key checked is the key sent, and
        # a variable changed later cannot split them (nor the URL from its check).
        key, key_source = self._api_key_and_source()
        if self.send and not key:
            raise MissingApiKeyError(
                "api_key is required: pass Client(api_key=...), set "
                "courier_analytics.api_key, or set the COURIER_API_KEY environment variable "
                "(send=False needs no key)"
            )
        _check_api_key(key, key_source)
        base_url, url_source = self._base_url_and_source()
        url = _check_base_url(base_url, url_source)
        allow_insecure = self._allow_insecure_http()
        insecure = url.scheme == "http" and not is_loopback(url.hostname or "")
        if insecure and not allow_insecure:
            raise ConfigurationError(
                "base_url uses plain http:// to a host that is not this machine, which "
                "would send the API key unencrypted; use https://, or if you really mean "
                f"it pass allow_insecure_http=True or set {ALLOW_INSECURE_HTTP_VARIABLE}=1"
            )
        self._check_limits()
        deliver = self._deliver()
        spool = self._spool_settings(deliver)  # a bad spool setting raises, naming its source
        if self.send and spool is None and not deliver:
            raise ConfigurationError(
                "deliver=False needs a Redis spool (spool='redis://host:6379/0') for "
                "relays to deliver from"
            )
        resolved = _Resolved(cast(str | None, key), cast(str, base_url), allow_insecure, spool)
        object.__setattr__(self, "_env", resolved)

    @property
    def _resolved(self) -> _Resolved:
        resolved: _Resolved = self.__dict__["_env"]
        return resolved

    def _check_limits(self) -> None:
        if self.max_queue_bytes < self.max_message_bytes:
            raise ConfigurationError(
                f"max_queue_bytes ({self.max_queue_bytes:,}) must be at least "
                f"max_message_bytes ({self.max_message_bytes:,}): a message of the largest "
                "size accepted would never fit in the queue"
            )
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ConfigurationError(f"max_retries must be an int, not {self.max_retries!r}")
        if self.max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, not {self.max_retries}")
        if self.max_retry_time is not None and self.max_retry_time < 0:
            raise ConfigurationError("max_retry_time must be >= 0 or None")

    def spool_settings(self) -> SpoolSettings | None:
        """The spool to use: `spool`, else `COURIER_ANALYTICS_SPOOL` if it sends; None for none."""
        return self._resolved.spool

    def _spool_settings(self, deliver: bool) -> SpoolSettings | None:
        if self.spool is not None:
            path = parse_spool(self.spool, "spool")
        # A client that sends nothing queues nothing: the environment's spool is not its
        # own (the stand-in of invalid module settings must build when it is the problem).
        elif self.send and os.environ.get("COURIER_ANALYTICS_SPOOL"):
            source = "the COURIER_ANALYTICS_SPOOL environment variable"
            path = parse_spool(os.environ["COURIER_ANALYTICS_SPOOL"], source)
        else:
            return None
        if path is None:
            return None
        settings = SpoolSettings(
            path,
            max_age=self.spool_max_age,
            max_bytes=self.spool_max_bytes,
            commit_interval=self.spool_commit_interval,
            deliver=deliver,
        )
        if not settings.deliver and not settings.shared:
            raise ConfigurationError(
                "deliver=False needs a spool a relay can read from: a Redis spool "
                "('redis://host:6379/0'), not a file"
            )
        return settings

    def _deliver(self) -> bool:
        """`deliver`, else `COURIER_ANALYTICS_DELIVER`, else True."""
        if self.deliver is not None:
            if not isinstance(self.deliver, bool):
                raise ConfigurationError(f"deliver must be True or False, not {self.deliver!r}")
            return self.deliver
        value = os.environ.get("COURIER_ANALYTICS_DELIVER", "").strip().lower()
        if value in ("", "1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(
            f"the COURIER_ANALYTICS_DELIVER environment variable must be 0 or 1, not {value!r}"
        )

    def _api_key_and_source(self) -> tuple[object, str]:
        for value, source in (
            (self.api_key, "api_key"),
            (os.environ.get("COURIER_API_KEY"), "the COURIER_API_KEY environment variable"),
            (os.environ.get("COURIER_AUTH_TOKEN"), "the COURIER_AUTH_TOKEN environment variable"),
        ):
            if value:
                return value, source
        return None, "api_key"

    def _base_url_and_source(self) -> tuple[object, str]:
        if self.base_url:
            return self.base_url, "base_url"
        if os.environ.get("COURIER_BASE_URL"):
            return os.environ["COURIER_BASE_URL"], "the COURIER_BASE_URL environment variable"
        return REGIONS[self.region], "region"

    def _allow_insecure_http(self) -> bool:
        if self.allow_insecure_http is not None:
            return self.allow_insecure_http
        return bool(_flag_from_environment(ALLOW_INSECURE_HTTP_VARIABLE))

    def _values(self) -> dict[str, Any]:
        """The options as keyword arguments: `Options(**options._values())` equals it."""
        return dict(zip(self.__match_args__, self._fields(), strict=True))

    def resolved_api_key(self) -> str | None:
        """The key given, else `COURIER_API_KEY`, else `COURIER_AUTH_TOKEN` (read when built)."""
        return self._resolved.api_key

    def resolved_base_url(self) -> str:
        """`base_url`, else `COURIER_BASE_URL`, else the region's host (read when built)."""
        return self._resolved.base_url

    def resolved_allow_insecure_http(self) -> bool:
        """`allow_insecure_http` if given, else `COURIER_ANALYTICS_ALLOW_INSECURE_HTTP`, else no."""
        return self._resolved.allow_insecure_http

    def retry_policy(self) -> RetryPolicy:
        """`retry` if given, else the default policy with `max_retries`/`max_retry_time`."""
        if self.retry is not None:
            return self.retry
        return RetryPolicy(max_retries=self.max_retries, max_time=self.max_retry_time)


# Options' fields, in order: its annotations, which are also its __init__'s keyword
# parameters (a test pins it), and what eq, hash, repr and pickling go by.
setattr(Options, "__match_args__", tuple(Options.__annotations__))  # noqa: B010 - mypy refuses it
