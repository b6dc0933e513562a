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
from collections.abc import Callable

import flask

import courier_analytics as analytics
from courier_analytics.integrations._http import (
    RequestOptions,
    anonymous_id_from_cookie,
    apply_config,
    client_ip,
    page_context,
    request_context,
    user_id_text,
)

__all__ = ["CourierAnalytics"]

logger = logging.getLogger("courier_analytics")

_SCOPE = "_courier_analytics_scope"
UserId = Callable[[], "str | int | None"]


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
    `anonymous_id_cookie`; it is applied when the extension is initialised.

    Args:
        app: The app, or `None` to call `init_app` later (app factories).
        user_id: A zero-argument callable returning the current user's id or
            `None`, called once at the start of each request.

    Raises:
        TypeError: `user_id` is not callable, or the config has an unknown name.
    """

    def __init__(self, app: flask.Flask | None = None, *, user_id: UserId | None = None) -> None:
        if user_id is not None and not callable(user_id):
            raise TypeError(f"user_id must be a callable, not {type(user_id).__name__}")
        self.user_id = user_id
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Apply the app's `COURIER_ANALYTICS` config and open a scope in each of its requests."""
        options = apply_config(
            app.config.get("COURIER_ANALYTICS"), 'app.config["COURIER_ANALYTICS"]'
        )
        app.extensions["courier_analytics"] = options
        # First to open, last to close: the app's own hooks run inside the scope.
        app.before_request_funcs.setdefault(None, []).insert(0, self._open)
        app.teardown_request_funcs.setdefault(None, []).insert(0, self._close)

    def _open(self) -> None:
        request = flask.request
        options: RequestOptions = flask.current_app.extensions["courier_analytics"]
        cookie = request.cookies.get(options.anonymous_id_cookie)
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
        scope = analytics.scope(
            user_id=self._current_user_id(),
            anonymous_id=anonymous_id_from_cookie(cookie),
            context=context,
            on_missing_identity="skip",
        )
        scope.__enter__()
        setattr(flask.g, _SCOPE, scope)

    def _close(self, exc: BaseException | None) -> None:
        scope: analytics.scope | None = flask.g.pop(_SCOPE, None)
        if scope is not None:
            scope.__exit__(None, None, None)

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
