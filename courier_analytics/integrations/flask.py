"""Flask: a request scope per request, and configuration from `app.config["COURIER_ANALYTICS"]`.

```text
pip install 'courier-analytics[flask]'
```

```python
from flask import Flask
from courier_analytics.integrations.flask import CourierAnalytics

app = Flask(__name__)
app.config["COURIER_ANALYTICS"] = {"api_key": "pk_prod_..."}
CourierAnalytics(app)  # or CourierAnalytics(user_id=...).init_app(app) in a factory
```

Inside every request, `analytics.track("Order Completed", {...})` needs no ids.
See the Integrations pages of the documentation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import flask

import courier_analytics as analytics
from courier_analytics.integrations._http import (
    RequestOptions,
    apply_config,
    check_settings,
    client_ip,
    page_context,
    request_context,
    user_id_text,
)

__all__ = ["CourierAnalytics"]

logger = logging.getLogger("courier_analytics")

#: Where a request's open scope is kept: its WSGI environ, which outlives Flask's contexts.
_SCOPE = "courier_analytics.scope"
#: The app's extension (the last to call `init_app`): its `user_id` is the one asked.
_EXTENSION = "courier_analytics.extension"
UserId = Callable[[], "str | int | None"]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class CourierAnalytics:
    """The Flask extension: opens a [`scope`][courier_analytics.scope] around each request.

    The scope's user is `user_id()` (flask-login's `current_user` by default, when
    flask-login is set up on the app); its anonymous id comes from analytics.js's
    `ajs_anonymous_id` cookie; its context holds `ip` (the socket peer, or
    `X-Forwarded-For` from `trusted_proxies` only), `userAgent`, `locale` and
    `page`. A user id is never read from a cookie or header. Calls that know
    neither a user nor an anonymous id are counted as skipped, never raised into
    the view; an `identify()` in the request (at login) sets the user for the rest
    of it.

    `app.config["COURIER_ANALYTICS"]` is a dict of module-level settings
    (`api_key`, `route`, `region`, ...) and of `trusted_proxies` and
    `anonymous_id_cookie`; it is validated whole (with the module-level settings
    and environment variables it does not set) and applied when the extension is
    initialised.

    Args:
        app: The app, or `None` to call `init_app` later (app factories).
        user_id: A zero-argument callable returning the current user's id or
            `None`, called once at the start of each request.

    Raises:
        TypeError: `user_id` is not callable, or the config has an unknown name.
        ConfigurationError: A setting is missing or invalid (with `app`).
    """

    def __init__(self, app: flask.Flask | None = None, *, user_id: UserId | None = None) -> None:
        if user_id is not None and not callable(user_id):
            raise TypeError(f"user_id must be a callable, not {type(user_id).__name__}")
        self.user_id = user_id
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Apply the app's `COURIER_ANALYTICS` config and open a scope in each of its requests.

        Called again for the same app (by this extension or another), it replaces
        the options and the `user_id` lookup; the app keeps one set of hooks.

        Raises:
            TypeError: The config is not a dict, or has an unknown name.
            ConfigurationError: A setting is missing or invalid (no API key
                anywhere, `"region": "asia"`): found here, at start-up, instead
                of in every request.
        """
        config = app.config.get("COURIER_ANALYTICS")
        where = 'app.config["COURIER_ANALYTICS"]'
        check_settings(where, config)
        options = apply_config(config, where)
        initialised = "courier_analytics" in app.extensions
        app.extensions["courier_analytics"] = options
        app.extensions[_EXTENSION] = self  # whose user_id the hooks call
        if initialised:  # a second init_app() replaces the options and user_id, not the hooks
            return
        # First to open, last to close: the app's own hooks run inside the scope.
        app.before_request_funcs.setdefault(None, []).insert(0, self._open)
        app.teardown_request_funcs.setdefault(None, []).insert(0, self._close)
        # Flask stops running teardown hooks at the first that raises, so ours may
        # never run: the WSGI call ends the scope too, whatever raised.
        app.wsgi_app = _EndingScopes(app.wsgi_app)  # type: ignore[method-assign]

    def _open(self) -> None:
        request = flask.request
        options: RequestOptions = flask.current_app.extensions["courier_analytics"]
        context = request_context(
            ip=client_ip(
                request.remote_addr, request.headers.get("X-Forwarded-For"), options.trusted_proxies
            ),
            user_agent=request.headers.get("User-Agent"),
            accept_language=request.headers.get("Accept-Language"),
            page=page_context(
                request.url,
                request.path,
                request.query_string.decode("latin-1"),
                request.referrer,
            ),
        )
        extension: CourierAnalytics = flask.current_app.extensions[_EXTENSION]
        scope = analytics.scope(
            user_id=extension._current_user_id(),
            anonymous_id=options.anonymous_id(request.cookies),
            context=context,
            on_missing_identity="skip",
        )
        scope.__enter__()
        request.environ[_SCOPE] = scope

    def _close(self, exc: BaseException | None) -> None:
        _end_scope(flask.request.environ)

    def _current_user_id(self) -> str | None:
        """The current user's id, or `None`; a failing lookup never breaks the request."""
        try:
            found = self.user_id() if self.user_id is not None else _flask_login_user_id()
        except Exception as exc:
            logger.warning(
                "courier-analytics: the user_id callable raised %s; the request's events "
                "carry no user id",
                type(exc).__name__,
            )
            return None
        return user_id_text(found)


def _flask_login_user_id() -> str | None:
    """flask-login's `current_user.get_id()` when it is installed and set up on the app."""
    if getattr(flask.current_app, "login_manager", None) is None:
        return None
    from flask_login import current_user

    if not current_user.is_authenticated:
        return None
    return user_id_text(current_user.get_id())


def _end_scope(environ: dict[str, Any]) -> None:
    """End the request's scope if it is still open (the first caller ends it)."""
    scope: analytics.scope | None = environ.pop(_SCOPE, None)
    if scope is not None:
        scope.__exit__(None, None, None)


class _EndingScopes:
    """The app's WSGI callable, wrapped: a request's scope ends with its request.

    Usually our teardown hook has ended it already. If another teardown hook
    raised first, Flask skipped ours and the scope would stay in the thread's
    context, so that the next request on the thread (gunicorn's sync and gthread
    workers, uwsgi) ran as the previous user: it ends here instead. Before Flask
    3.1, a response streamed with `stream_with_context` keeps its request (and
    scope) open until the server closes the body; from 3.1 on, Flask ends the
    request before the body streams, and the scope with it.
    """

    def __init__(self, wsgi_app: WSGIApp) -> None:
        self.wsgi_app = wsgi_app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        try:
            body = self.wsgi_app(environ, start_response)
        except BaseException:
            _end_scope(environ)
            raise
        if _SCOPE not in environ:  # ended with the request: the body is passed as it is
            return body
        return _EndingWithBody(body, environ)


class _EndingWithBody:
    """A streamed body that ends the request's scope when the server closes it."""

    def __init__(self, body: Iterable[bytes], environ: dict[str, Any]) -> None:
        self._body = body
        self._chunks = iter(body)
        self._environ = environ

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            _end_scope(self._environ)
