"""What every web integration reads from a request: the Segment context and the anonymous id.

Shared by the Django, Flask and ASGI integrations, so that they agree on the
security rules:

- The *user id* never comes from anything the client sends (no `ajs_user_id`
  cookie, no header): only from the framework's authenticated user. A forged
  cookie must not attribute events, and so notifications, to someone else.
- The *anonymous id* may come from analytics.js's `ajs_anonymous_id` cookie: it
  names a browser, not an account. The visitor controls it, so only a UUID (what
  analytics.js writes) is taken: a forged `"1"` or an email address is ignored,
  and cannot name a user's profile. Route `"api"` also files anonymous messages
  under `anonymous:<id>`, apart from every user's profile.
- `ip` is the socket peer. `X-Forwarded-For` is read only when the peer is one of
  the `trusted_proxies` the app configured, and then only up to the first
  address that is not a trusted proxy (the client as the last trusted proxy saw it).
  A server listening on a unix socket (gunicorn or uvicorn behind nginx) sees no
  peer address: such a peer is a trusted proxy only if `trusted_proxies` holds
  `"unix"`, because only the app's operator knows who may write to the socket.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal
from urllib.parse import unquote

import attrs
import orjson

import courier_analytics
from courier_analytics import _default
from courier_analytics._errors import ConfigurationError
from courier_analytics._options import Options

__all__ = [
    "ANONYMOUS_ID_COOKIE",
    "OPTIONS",
    "UNIX_SOCKET",
    "RequestOptions",
    "anonymous_id_from_cookie",
    "apply_config",
    "check_settings",
    "client_ip",
    "locale_from",
    "page_context",
    "parse_cookie_header",
    "request_context",
    "user_id_text",
]

logger = logging.getLogger("courier_analytics")

#: The cookie in which analytics.js keeps its anonymous id (JSON-encoded).
ANONYMOUS_ID_COOKIE: Final = "ajs_anonymous_id"

#: An anonymous id as analytics.js writes one: a UUID (it writes v4, lower-case; any is taken).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

#: The `trusted_proxies` entry that trusts a peer on a unix socket (one with no address).
UNIX_SOCKET: Final = "unix"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: A trusted proxy: a network, or `UNIX_SOCKET`.
Proxy = _Network | Literal["unix"]
#: What werkzeug's server gives as `REMOTE_ADDR` for a peer on a unix socket.
_WERKZEUG_UNIX_PEER: Final = "<local>"
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")


def _proxies(value: object) -> tuple[Proxy, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(
            "trusted_proxies must be a list of IP addresses or networks "
            f'(e.g. ["10.0.0.0/8"]), not {type(value).__name__}'
        )
    proxies: list[Proxy] = []
    for item in value:
        if not isinstance(item, str):
            raise TypeError(
                f"trusted_proxies entries must be strings, not {type(item).__name__}: {item!r}"
            )
        if item.strip() == UNIX_SOCKET:
            proxies.append(UNIX_SOCKET)
            continue
        try:
            proxies.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f'trusted_proxies: {item!r} is not an IP address or network (or "unix")'
            ) from None
    return tuple(proxies)


def _cookie_name(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"anonymous_id_cookie must be a non-empty str or None, not {value!r}")
    return value


@attrs.frozen
class RequestOptions:
    """How an integration reads requests (the options beside the module-level settings).

    Attributes:
        trusted_proxies: Networks whose `X-Forwarded-For` is believed (empty:
            none), and `"unix"` if a peer on a unix socket is a trusted proxy.
        anonymous_id_cookie: The cookie holding analytics.js's anonymous id, or
            `None` to read no anonymous id from requests.
    """

    trusted_proxies: tuple[Proxy, ...] = attrs.field(default=(), converter=_proxies)
    anonymous_id_cookie: str | None = attrs.field(
        default=ANONYMOUS_ID_COOKIE, converter=_cookie_name
    )

    def anonymous_id(self, cookies: Mapping[str, str]) -> str | None:
        """The anonymous id in a request's cookies, or `None` (none, not a UUID, or reading off)."""
        if self.anonymous_id_cookie is None:
            return None
        return anonymous_id_from_cookie(cookies.get(self.anonymous_id_cookie))


#: Names an integration's configuration may hold besides the module-level settings.
OPTIONS: Final = frozenset(field.name for field in attrs.fields(RequestOptions))


def apply_config(config: object, where: str) -> RequestOptions:
    """Apply a framework's `COURIER_ANALYTICS` configuration; return its request options.

    Module-level settings (`api_key`, `route`, ...) are assigned to
    `courier_analytics` only where they differ from the current value, so applying
    the same configuration twice (app config, then middleware) builds no new client.

    Args:
        config: A mapping of setting names to values, or `None` for none.
        where: Where it came from, for error messages (`settings.COURIER_ANALYTICS`).

    Raises:
        TypeError: `config` is not a mapping, or it has a name that is neither a
            setting nor a request option.
        ValueError: A request option's value is invalid.
    """
    options, settings = _parse(config, where)
    changed = {
        name: value for name, value in settings.items() if getattr(courier_analytics, name) != value
    }
    if changed:
        _default.configure(**changed)
    return options


def _parse(config: object, where: str) -> tuple[RequestOptions, dict[str, Any]]:
    """A configuration's request options and its module-level settings, checked for shape."""
    if config is None:
        return RequestOptions(), {}
    if not isinstance(config, Mapping):
        raise TypeError(f"{where} must be a dict, not {type(config).__name__}")
    unknown = sorted(set(config) - _default.SETTINGS - OPTIONS)
    if unknown:
        names = ", ".join(sorted(_default.SETTINGS | OPTIONS))
        raise TypeError(f"{where}: unknown name(s) {', '.join(unknown)}; known names: {names}")
    options = RequestOptions(**{name: config[name] for name in OPTIONS if name in config})
    return options, {name: config[name] for name in _default.SETTINGS if name in config}


def check_settings(where: str, config: object = None) -> None:
    """Validate, now, the whole configuration the default client will be built from.

    The module-level settings, with `config`'s over them (not applied), are
    validated as `Client(...)` validates them (through `Options`), so that a
    missing API key or a bad value stops the app where its framework starts,
    instead of failing calls inside requests later.

    Args:
        where: How the user names the configuration: `COURIER_ANALYTICS` (Django),
            `app.config["COURIER_ANALYTICS"]` (Flask), or `courier_analytics` for
            the module-level settings; a problem with one setting names it
            (`COURIER_ANALYTICS["api_key"]`, `courier_analytics.region`).
        config: A framework's configuration mapping, or `None`.

    Raises:
        TypeError: `config` is not a mapping or has an unknown name.
        ValueError: A request option's value is invalid.
        ConfigurationError: A setting is missing or invalid.
    """
    _, given = _parse(config, where)
    settings = {name: getattr(courier_analytics, name) for name in _default.SETTINGS}
    try:
        Options(**{**settings, **given})
    except ConfigurationError as exc:
        # Options' messages start with the setting's name ("region must be one
        # of ..."), or with where a value came from ("the COURIER_API_KEY ...").
        text = str(exc)
        name = text.split(" ", 1)[0]
        if name not in _default.SETTINGS:
            label = where
        elif where == "courier_analytics":
            label = f"courier_analytics.{name}"
        else:
            label = f'{where}["{name}"]'
        raise ConfigurationError(f"{label}: {text}") from None


def _address(text: str) -> _Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:443"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: _Address, proxies: tuple[Proxy, ...]) -> bool:
    return any(address in proxy for proxy in proxies if proxy != UNIX_SOCKET)


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[Proxy, ...]
) -> str | None:
    """The client's IP address: the socket peer, or what trusted proxies say it was.

    `X-Forwarded-For` is read right to left (each proxy appends the address it
    saw) while the addresses are trusted proxies; the first one that is not is the
    client. An entry that is not an IP address ends the walk at the last address
    known good. Without `trusted_proxies`, or from a peer that is not one of them,
    the header is ignored: any client can send it.

    A peer without an address (the server listens on a unix socket: `None`
    from ASGI servers, `""` from gunicorn, `"<local>"` from werkzeug's server)
    is a trusted proxy only with `"unix"` in `trusted_proxies`; else there is no
    address to give.
    """
    if not peer or peer == _WERKZEUG_UNIX_PEER:
        if UNIX_SOCKET not in trusted_proxies or not forwarded_for:
            return None
        nearest: _Address | None = None
    else:
        nearest = _address(peer)
        if not forwarded_for or nearest is None or not _trusted(nearest, trusted_proxies):
            return peer
    for hop in reversed(forwarded_for.split(",")):
        address = _address(hop)
        if address is None:
            break
        nearest = address
        if not _trusted(address, trusted_proxies):
            break
    return None if nearest is None else str(nearest)


def user_id_text(found: object) -> str | None:
    """A user lookup's answer as a scope's `user_id`: `None` for no user, or an empty id.

    An app's lookup may answer `""` for "nobody" (an empty session value); that is
    no user, not an error that would break the request.
    """
    if found is None:
        return None
    return str(found) or None


def anonymous_id_from_cookie(value: str | None) -> str | None:
    """The anonymous id in analytics.js's cookie value, or `None` if there is none usable.

    analytics.js writes a UUID, JSON-encoded and URL-escaped (`%22<uuid>%22`);
    older versions stored it bare. Anything that is not a UUID is ignored: the
    visitor sets this cookie, and a value such as `"1"` could otherwise name a
    user's profile (Courier files a message without a user id under its
    anonymous id), merging traits into it and triggering notifications to it.
    """
    if not value:
        return None
    text = unquote(value).strip()
    if text.startswith('"'):
        try:
            decoded = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(decoded, str):
            return None
        text = decoded.strip()
    return text if _UUID.fullmatch(text) else None


def parse_cookie_header(header: str) -> dict[str, str]:
    """Name -> raw value of a `Cookie` header (lenient, like browsers and Django)."""
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        if sep and name.strip():
            cookies.setdefault(name.strip(), value.strip())
    return cookies


def locale_from(accept_language: str | None) -> str | None:
    """The preferred language tag of an `Accept-Language` header (`"en-US"`), or `None`."""
    if not accept_language:
        return None
    best, best_q = None, 0.0
    for item in accept_language.split(","):
        tag, _, params = item.strip().partition(";")
        tag = tag.strip()
        if not _LANGUAGE_TAG.fullmatch(tag) or len(tag) > 35:
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
        if q > best_q:
            best, best_q = tag, q
    return best


def page_context(url: str, path: str, query: str, referrer: str | None) -> dict[str, str]:
    """Segment's `context.page` for a request: `path`, `url`, `search`, `referrer`."""
    return {
        "path": path,
        "url": url,
        "search": f"?{query}" if query else "",
        "referrer": referrer or "",
    }


def request_context(
    *,
    ip: str | None,
    user_agent: str | None,
    accept_language: str | None,
    page: Mapping[str, Any],
) -> dict[str, Any]:
    """The Segment `context` of a request's messages (keys without a value left out)."""
    context: dict[str, Any] = {"page": dict(page)}
    if ip:
        context["ip"] = ip
    if user_agent:
        context["userAgent"] = user_agent
    locale = locale_from(accept_language)
    if locale:
        context["locale"] = locale
    return context
