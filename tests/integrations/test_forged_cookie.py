"""A forged ajs_anonymous_id cookie reaches no user's profile or notifications, on both routes.

Courier files a message without a user id under its anonymous id, and the
visitor sets the cookie: each framework's integration, on each route, against the
stand-in (whose mapping of "Export Finished" makes a notification).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

flask = pytest.importorskip("flask")
pytest.importorskip("django")
starlette = pytest.importorskip("starlette")

from django.test import Client as DjangoClient  # noqa: E402
from django.test import override_settings  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

import courier_analytics as analytics  # noqa: E402
from courier_analytics.devserver import DevServer  # noqa: E402
from courier_analytics.integrations.asgi import CourierAnalyticsMiddleware  # noqa: E402
from courier_analytics.integrations.flask import CourierAnalytics  # noqa: E402

from .conftest import KEY  # noqa: E402
from .test_django import project  # noqa: E402, F401  (the Django project fixture)

FRAMEWORKS = ["flask", "django", "asgi"]
ROUTES = ["segment", "api"]


def visit() -> dict[str, Any]:
    """An anonymous visitor's request: identify traits, track a mapped event."""
    analytics.identify(traits={"email": "visitor@example.com"})
    analytics.track("Export Finished", {"report": 7})
    user = analytics.user()
    return {"anonymous_id": user.anonymous_id if user else None}


def request_with_cookie(
    framework: str, courier: DevServer, route: str, cookie: str, **options: Any
) -> Any:
    """GET /visit through ``framework``'s integration with ``ajs_anonymous_id=cookie``.

    ``options`` are request options (``anonymous_id_cookie``): in the framework's
    configuration, or the ASGI middleware's arguments.
    """
    config = {"api_key": KEY, "base_url": courier.base_url, "route": route, **options}
    if framework == "flask":
        app = flask.Flask(__name__)
        app.config["COURIER_ANALYTICS"] = config
        app.get("/visit")(visit)
        CourierAnalytics(app)
        client = app.test_client()
        client.set_cookie("ajs_anonymous_id", cookie)
        return client.get("/visit").json
    if framework == "django":
        with override_settings(COURIER_ANALYTICS=config):
            client = DjangoClient()
            client.cookies["ajs_anonymous_id"] = cookie
            return client.get("/visit").json()
    analytics.configure(api_key=KEY, base_url=courier.base_url, route=route)

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse(visit())

    asgi = Starlette(
        routes=[Route("/visit", endpoint)],
        middleware=[Middleware(CourierAnalyticsMiddleware, **options)],
    )

    async def main() -> Any:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            return (
                await client.get("/visit", headers={"Cookie": f"ajs_anonymous_id={cookie}"})
            ).json()

    return asyncio.run(main())


def a_user_with_a_profile(courier: DevServer, route: str, user_id: str) -> None:
    """``user_id`` has a profile at the stand-in, made by the app itself."""
    analytics.configure(api_key=KEY, base_url=courier.base_url, route=route)
    analytics.identify(user_id, {"email": "owner@example.com"})
    assert analytics.flush(10)


def untouched(courier: DevServer, user_id: str) -> bool:
    """``user_id``'s profile is as the app made it, and no notification went to them."""
    assert analytics.flush(10)
    sends = [send for send in courier.sends() if send["recipient"] == user_id]
    return courier.profiles()[user_id] == {"email": "owner@example.com"} and sends == []


@pytest.mark.usefixtures("project")
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_forged_cookie_of_a_user_id_changes_nothing_of_that_user(
    courier: DevServer, framework: str, route: str
) -> None:
    """ajs_anonymous_id="1" (JSON-encoded, as analytics.js stores it) is no anonymous id at all."""
    a_user_with_a_profile(courier, route, "1")
    assert request_with_cookie(framework, courier, route, "%221%22") == {"anonymous_id": None}
    assert untouched(courier, "1")
    stats = analytics.stats()
    assert stats is not None
    assert stats.skipped == 2  # the visitor's identify and track: no one to file them under


@pytest.mark.usefixtures("project")
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_on_route_api_a_cookie_equal_to_a_uuid_user_id_stays_anonymous(
    courier: DevServer, framework: str
) -> None:
    """A user id that is a UUID, forged as the cookie: route api files it as anonymous:<id>."""
    victim = "3d5f8a10-7c2b-4e9d-8f61-0a1b2c3d4e5f"
    a_user_with_a_profile(courier, "api", victim)
    answer = request_with_cookie(framework, courier, "api", f"%22{victim}%22")
    assert answer == {"anonymous_id": victim}
    assert untouched(courier, victim)
    anonymous = f"anonymous:{victim}"
    assert courier.profiles()[anonymous] == {"email": "visitor@example.com"}
    assert [send["recipient"] for send in courier.sends()] == [anonymous]


@pytest.mark.usefixtures("project")
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_anonymous_id_cookie_none_reads_no_anonymous_id(courier: DevServer, framework: str) -> None:
    """anonymous_id_cookie=None: even analytics.js's own UUID cookie is not read."""
    cookie = "%226f0d6a3e-84b1-4c1e-9a57-2b3c4d5e6f70%22"
    answer = request_with_cookie(framework, courier, "api", cookie, anonymous_id_cookie=None)
    assert answer == {"anonymous_id": None}
