"""ASGI (FastAPI, Starlette, any ASGI app): a request scope per request, a flush at shutdown.

```python
from fastapi import FastAPI
from courier_analytics.integrations.asgi import CourierAnalyticsMiddleware

app = FastAPI()
app.add_middleware(CourierAnalyticsMiddleware)
```

Pure ASGI: it wraps the app without Starlette's `BaseHTTPMiddleware`, so streaming,
background tasks and contextvars behave as without it. See the Integrations
pages of the documentation.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import courier_analytics as analytics
from courier_analytics.integrations._http import (
    ANONYMOUS_ID_COOKIE,
    RequestOptions,
    check_settings,
    client_ip,
    page_context,
    parse_cookie_header,
    request_context,
    user_id_text,
)

__all__ = ["CourierAnalyticsMiddleware"]

logger = logging.getLogger("courier_analytics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UserId = Callable[[Scope], "str | int | Awaitable[str | int | None] | None"]


class CourierAnalyticsMiddleware:
    """Opens a [`scope`][courier_analytics.scope] around each HTTP request and WebSocket.

    The scope's user is `scope["user"]` when an authentication middleware set one
    (Starlette's `AuthenticationMiddleware`: put it *outside* this one) and it is
    authenticated (its `identity`; the `username` of a Starlette `SimpleUser`
    from releases without `identity`), else `user_id(scope)` when given (also
    for a user whose `identity` is not implemented). The anonymous id comes from
    analytics.js's `ajs_anonymous_id` cookie; the context holds `ip` (the socket
    peer, or `X-Forwarded-For` from `trusted_proxies` only), `userAgent`,
    `locale` and `page`. A user id is never read from a cookie or header. Calls
    that know no user are counted as skipped, never raised into the endpoint; an
    `identify()` in the request (a login endpoint, an auth dependency) sets the
    user for the rest of it.

    At `lifespan.startup`, once the app's own start-up handlers have run (they
    may set the settings), it validates the whole configuration as
    `Client(...)` would: a missing API key or a bad value answers
    `lifespan.startup.failed` naming the setting (`courier_analytics.api_key`),
    and the server does not start. On `lifespan.shutdown` it awaits
    `courier_analytics.aflush(flush_timeout)` after the app's own shutdown
    handlers (also when one of them failed), without blocking the event loop.

    Args:
        app: The ASGI app to wrap.
        user_id: Called as `user_id(scope)` (sync or async) for the user's id or
            `None` when no authenticated `scope["user"]` says it.
        trusted_proxies: IP addresses or networks whose `X-Forwarded-For` is believed.
        anonymous_id_cookie: The cookie holding analytics.js's anonymous id (only
            a UUID is taken, as analytics.js writes), or `None` to read none.
        flush_timeout: Seconds the flush at shutdown may take; `None` means the
            default client's `flush_timeout`.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: `trusted_proxies` holds something that is not an address.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        user_id: UserId | None = None,
        trusted_proxies: Iterable[str] = (),
        anonymous_id_cookie: str | None = ANONYMOUS_ID_COOKIE,
        flush_timeout: float | None = 5.0,
    ) -> None:
        if user_id is not None and not callable(user_id):
            raise TypeError(f"user_id must be a callable, not {type(user_id).__name__}")
        self.app = app
        self.user_id = user_id
        self.options = RequestOptions(
            trusted_proxies=trusted_proxies,
            anonymous_id_cookie=anonymous_id_cookie,
        )
        self.flush_timeout = flush_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with self._scope(scope, await self._current_user_id(scope)):
            await self.app(scope, receive, send)

    def _lifespan_send(self, send: Send) -> Send:
        async def send_checked_or_flushed(message: Message) -> None:
            kind = message.get("type")
            if kind == "lifespan.startup.complete":
                # After the app's own start-up, which may set the settings: a bad
                # configuration fails the start (the server exits), not each request.
                try:
                    check_settings("courier_analytics")
                except (TypeError, ValueError) as exc:
                    message = {"type": "lifespan.startup.failed", "message": str(exc)}
            # Failed too: what the shutdown handlers tracked before failing still goes.
            elif kind in (
                "lifespan.shutdown.complete",
                "lifespan.shutdown.failed",
            ) and not await analytics.aflush(self.flush_timeout):
                logger.warning(
                    "courier-analytics: flush at shutdown gave up after %ss", self.flush_timeout
                )
            await send(message)

        return send_checked_or_flushed

    async def _current_user_id(self, scope: Scope) -> str | None:
        user = scope.get("user")
        try:
            if user is not None and getattr(user, "is_authenticated", False):
                try:
                    return user_id_text(user.identity)
                except NotImplementedError:  # Starlette's BaseUser: ask user_id() instead
                    if self.user_id is None:
                        return _username_of_simple_user(user)
            if self.user_id is None:
                return None
            found = self.user_id(scope)
            if inspect.isawaitable(found):
                found = await found
        except Exception as exc:  # a failing lookup never breaks the request
            logger.warning(
                "courier-analytics: looking up the user raised %s; the request's events "
                "carry no user id",
                type(exc).__name__,
            )
            return None
        return user_id_text(found)

    def _scope(self, scope: Scope, user_id: str | None) -> analytics.scope:
        headers = _headers(scope)
        client = scope.get("client")
        path = scope.get("path", "")
        query = scope.get("query_string", b"").decode("latin-1")
        context = request_context(
            ip=client_ip(
                client[0] if client else None,
                headers.get("x-forwarded-for"),
                self.options.trusted_proxies,
            ),
            user_agent=headers.get("user-agent"),
            accept_language=headers.get("accept-language"),
            page=page_context(
                _url(scope, headers, path, query), path, query, headers.get("referer")
            ),
        )
        return analytics.scope(
            user_id=user_id,
            anonymous_id=self.options.anonymous_id(parse_cookie_header(headers.get("cookie", ""))),
            context=context,
            on_missing_identity="skip",
        )


def _username_of_simple_user(user: object) -> str | None:
    """The id of Starlette's `SimpleUser` from releases whose `identity` raised.

    Starlette's `SimpleUser` implemented `identity` (as its username) only in
    2026; before, it raised `NotImplementedError`, and its username is the one id
    it has. Any other user without an identity gives no user id, with a warning
    that says to pass `user_id=`.
    """
    kind = type(user)
    if kind.__module__ == "starlette.authentication" and kind.__name__ == "SimpleUser":
        return user_id_text(getattr(user, "username", None))
    logger.warning(
        "courier-analytics: %s has no identity and no user_id= was given; the "
        "request's events carry no user id",
        kind.__name__,
    )
    return None


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers, lower-cased names; repeated ones joined into one.

    Repeated `cookie` headers are joined with "; " (RFC 9113, 8.2.3: HTTP/2 and
    HTTP/3 clients may send each cookie in a header of its own), others with ", "
    (RFC 9110, 5.3).
    """
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in headers:
            value = f"{headers[name]}{'; ' if name == 'cookie' else ', '}{value}"
        headers[name] = value
    return headers


def _url(scope: Scope, headers: dict[str, str], path: str, query: str) -> str:
    """The request's full URL, as Starlette's `request.url` builds it."""
    scheme = scope.get("scheme", "http")
    host = headers.get("host")
    if host is None:
        server = scope.get("server")
        if server:
            default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme)
            host = server[0] if server[1] == default else f"{server[0]}:{server[1]}"
        else:
            host = "localhost"
    url = f"{scheme}://{host}{scope.get('root_path', '')}{path}"
    return f"{url}?{query}" if query else url
