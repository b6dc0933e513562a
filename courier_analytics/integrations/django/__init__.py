"""Django: a request scope per request, and configuration from `settings.COURIER_ANALYTICS`.

```text
pip install 'courier-analytics[django]'
```

```python
# settings.py
INSTALLED_APPS = [..., "courier_analytics.integrations.django"]
MIDDLEWARE = [
    ...,
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "courier_analytics.integrations.django.CourierAnalyticsMiddleware",
]
COURIER_ANALYTICS = {"api_key": env("COURIER_API_KEY"), "route": "segment"}
```

Inside every request, `analytics.track("Order Completed", {...})` needs no ids:
the user is `request.user.pk` when authenticated, else analytics.js's anonymous id
(the `ajs_anonymous_id` cookie); `context` carries `ip`, `userAgent`, `locale` and
`page`. See the Integrations pages of the documentation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core import checks
from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase

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

__all__ = ["CourierAnalyticsMiddleware", "check_configuration", "configure_from_settings"]

logger = logging.getLogger("courier_analytics")

GetResponse = Callable[[HttpRequest], Any]


def configure_from_settings() -> RequestOptions:
    """Apply `settings.COURIER_ANALYTICS` to the module-level settings (once; repeats are no-ops).

    Called by the middleware when Django builds it and by the app config's
    `ready()`; call it yourself from a script that tracks outside both.

    Raises:
        ImproperlyConfigured: `COURIER_ANALYTICS` is not a dict or has an unknown name.
    """
    try:
        return apply_config(
            getattr(settings, "COURIER_ANALYTICS", None), "settings.COURIER_ANALYTICS"
        )
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(str(exc)) from exc


def check_configuration(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Django system check: `settings.COURIER_ANALYTICS` makes a valid client (`manage.py check`).

    The whole configuration is validated as `Client(...)` validates it: the
    settings in `COURIER_ANALYTICS` over the module-level ones and the
    environment (`COURIER_API_KEY`). A missing key or a bad value is error
    `courier_analytics.E001`, naming the setting (`COURIER_ANALYTICS["api_key"]`),
    so that `runserver`, `migrate` and deploy checks stop on it instead of every
    call in a view failing later. Registered by the app config.
    """
    try:
        check_settings("COURIER_ANALYTICS", getattr(settings, "COURIER_ANALYTICS", None))
    except (TypeError, ValueError) as exc:  # ConfigurationError is a ValueError
        return [checks.Error(str(exc), hint=_HINT, id="courier_analytics.E001")]
    return []


_HINT = (
    'Fix the setting in COURIER_ANALYTICS. The API key may come from COURIER_ANALYTICS["api_key"] '
    'or the COURIER_API_KEY environment variable; with "send": False (tests, local development) '
    "none is needed."
)


class CourierAnalyticsMiddleware:
    """Opens a [`scope`][courier_analytics.scope] around each request (sync and async).

    Place it after `AuthenticationMiddleware`, so that it sees `request.user`. The
    scope's user is `request.user.pk` when authenticated; its anonymous id comes
    from analytics.js's `ajs_anonymous_id` cookie; its context holds `ip` (the
    socket peer, or `X-Forwarded-For` from `trusted_proxies` only), `userAgent`,
    `locale` (from `Accept-Language`) and `page` (`path`, `url`, `search`,
    `referrer`). A user id is never read from a cookie or header.

    Calls in the request that know neither a user nor an anonymous id are counted
    as skipped (reason at DEBUG), never raised into the view; an `identify()` in
    the request (at login) sets the user for the rest of it.

    Args:
        get_response: The next middleware or view (Django passes it).

    Raises:
        ImproperlyConfigured: `COURIER_ANALYTICS` (with the module-level settings
            and the environment) does not make a valid client: no API key
            anywhere, or a bad value. Django builds middleware when the server
            starts, so the server does not start.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        # Django builds middleware when the server starts (gunicorn, uwsgi and
        # uvicorn run no system checks): a bad configuration stops it there.
        try:
            check_settings("COURIER_ANALYTICS", getattr(settings, "COURIER_ANALYTICS", None))
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(str(exc)) from None
        self.options = configure_from_settings()
        self._warned = False
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self.__acall__(request)
        if hasattr(request, "user"):
            user_id = _safely(lambda: _user_id(request.user))
        else:
            user_id = self._no_user()
        with self._scope(request, user_id):
            return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        auser: Callable[[], Awaitable[Any]] | None = getattr(request, "auser", None)
        try:
            if auser is not None:  # Django 5+: the user loaded without blocking the loop
                user_id = _user_id(await auser())
            elif hasattr(request, "user"):
                user_id = await sync_to_async(_user_id)(request.user)
            else:
                user_id = self._no_user()
        except Exception as exc:
            _lookup_failed(exc)
            user_id = None
        with self._scope(request, user_id):
            response: HttpResponseBase = await self.get_response(request)
            return response

    def _no_user(self) -> str | None:
        """No `request.user`: warn once that the middleware sits before authentication."""
        if not self._warned:
            self._warned = True
            logger.warning(
                "courier-analytics: request.user is not set; put CourierAnalyticsMiddleware "
                "after django.contrib.auth's AuthenticationMiddleware to attribute events "
                "to logged-in users"
            )
        return None

    def _scope(self, request: HttpRequest, user_id: str | None) -> analytics.scope:
        meta = request.META
        try:
            url = request.build_absolute_uri()
        except DisallowedHost:  # Django answers 400 itself; analytics never breaks the view
            url = request.get_full_path()
        query = meta.get("QUERY_STRING", "")
        context = request_context(
            ip=client_ip(
                meta.get("REMOTE_ADDR"),
                meta.get("HTTP_X_FORWARDED_FOR"),
                self.options.trusted_proxies,
            ),
            user_agent=meta.get("HTTP_USER_AGENT"),
            accept_language=meta.get("HTTP_ACCEPT_LANGUAGE"),
            page=page_context(url, request.path, query, meta.get("HTTP_REFERER")),
        )
        return analytics.scope(
            user_id=user_id,
            anonymous_id=self.options.anonymous_id(request.COOKIES),
            context=context,
            on_missing_identity="skip",
        )


def _safely(lookup: Callable[[], str | None]) -> str | None:
    """`lookup()`, or `None` (logged) if it raises: analytics never breaks the view."""
    try:
        return lookup()
    except Exception as exc:
        _lookup_failed(exc)
        return None


def _lookup_failed(exc: Exception) -> None:
    logger.warning(
        "courier-analytics: loading request.user raised %s; the request's events carry no user id",
        type(exc).__name__,
    )


def _user_id(user: Any) -> str | None:
    """The id of Django's `request.user` when authenticated, else `None`."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user_id_text(getattr(user, "pk", None))
