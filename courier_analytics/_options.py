"""Client options: one validated, immutable value (also what module settings map to)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import attrs
import httpx

from courier_analytics._errors import ConfigurationError
from courier_analytics._messages import MAX_REQUEST_BYTES, Message
from courier_analytics._retry import RetryPolicy
from courier_analytics._routes import DEFAULT_EVENT_PREFIX, RouteName
from courier_analytics._transport import AnyTransport, is_loopback

__all__ = ["REGIONS", "ErrorHandler", "Options", "Region"]

Region = Literal["us", "eu"]
ErrorHandler = Callable[[BaseException, Message], Any]

#: Courier's API host for each region.
REGIONS: dict[str, str] = {"us": "https://api.courier.com", "eu": "https://api.eu.courier.com"}


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"{attribute.name} must be a positive number, not {value!r}")


def _one_of(*allowed: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            options = ", ".join(repr(a) for a in allowed)
            raise ConfigurationError(f"{attribute.name} must be one of {options}, not {value!r}")

    return check


def _whole(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{attribute.name} must be a positive int, not {value!r}")


def _instance_or_none(*types: type) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    names = " or ".join(t.__name__ for t in types)

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not isinstance(value, types):
            raise ConfigurationError(
                f"{attribute.name} must be a {names} or None, not {type(value).__name__}"
            )

    return check


def _callable_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigurationError(
            f"{attribute.name} must be a callable (exc, message) or None, "
            f"not {type(value).__name__}"
        )


def _mask(key: str | None) -> str:
    return "None" if key is None else "'***'"


@attrs.frozen(kw_only=True)
class Options:
    """Every setting of a [`Client`][courier_analytics.Client], validated.

    See [`Client`][courier_analytics.Client] for what each option means. `api_key`
    never appears in `repr()`.
    """

    api_key: str | None = attrs.field(default=None, repr=_mask)
    region: Region = attrs.field(default="us", validator=_one_of(*REGIONS))
    base_url: str | None = None
    route: RouteName = attrs.field(default="segment", validator=_one_of(*get_args(RouteName)))
    event_prefix: str = DEFAULT_EVENT_PREFIX
    max_queue_size: int = attrs.field(default=10_000, validator=_whole)
    max_in_flight: int = attrs.field(default=128, validator=_whole)
    flush_interval: float = attrs.field(default=0.5, validator=_positive)
    timeout: float = attrs.field(default=10.0, validator=_positive)
    max_retries: int = 10
    max_retry_time: float | None = 120.0
    retry: RetryPolicy | None = attrs.field(default=None, validator=_instance_or_none(RetryPolicy))
    on_error: ErrorHandler | None = attrs.field(default=None, validator=_callable_or_none)
    sync_mode: bool = False
    send: bool = True
    debug: bool = False
    transport: AnyTransport | None = attrs.field(
        default=None,
        validator=_instance_or_none(httpx.AsyncBaseTransport, httpx.BaseTransport),
    )
    views_as_track: bool = False
    flush_at_exit: bool = True
    exit_timeout: float = attrs.field(default=5.0, validator=_positive)
    flush_timeout: float = attrs.field(default=30.0, validator=_positive)
    max_message_bytes: int = attrs.field(default=MAX_REQUEST_BYTES, validator=_whole)
    allow_insecure_http: bool = False

    def __attrs_post_init__(self) -> None:
        if self.send and not self.resolved_api_key():
            raise ConfigurationError(
                "api_key is required: pass Client(api_key=...), set "
                "courier_analytics.api_key, or set the COURIER_API_KEY environment variable "
                "(send=False needs no key)"
            )
        key = self.resolved_api_key()
        if key is not None and (not key.isascii() or any(c in key for c in "\r\n ")):
            raise ConfigurationError("api_key must be printable ASCII without spaces")
        url = urlsplit(self.resolved_base_url())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigurationError("base_url must be an http:// or https:// URL with a host")
        insecure = url.scheme == "http" and not is_loopback(url.hostname)
        if insecure and not self.allow_insecure_http:
            raise ConfigurationError(
                "base_url uses plain http:// to a host that is not this machine, which "
                "would send the API key unencrypted; use https://, or pass "
                "allow_insecure_http=True if you really mean it"
            )
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ConfigurationError(f"max_retries must be an int, not {self.max_retries!r}")
        if self.max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, not {self.max_retries}")
        if self.max_retry_time is not None and self.max_retry_time < 0:
            raise ConfigurationError("max_retry_time must be >= 0 or None")

    def resolved_api_key(self) -> str | None:
        """The key given, else `COURIER_API_KEY`, else `COURIER_AUTH_TOKEN`."""
        return (
            self.api_key
            or os.environ.get("COURIER_API_KEY")
            or os.environ.get("COURIER_AUTH_TOKEN")
            or None
        )

    def resolved_base_url(self) -> str:
        """`base_url`, else `COURIER_BASE_URL`, else the region's host."""
        return self.base_url or os.environ.get("COURIER_BASE_URL") or REGIONS[self.region]

    def retry_policy(self) -> RetryPolicy:
        """`retry` if given, else the default policy with `max_retries`/`max_retry_time`."""
        if self.retry is not None:
            return self.retry
        return RetryPolicy(max_retries=self.max_retries, max_time=self.max_retry_time)
