"""Django: the middleware's request scope, with Django's test clients, against the stand-in."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402

import courier_analytics as analytics  # noqa: E402
from courier_analytics.devserver import DevServer  # noqa: E402

from .conftest import ANONYMOUS_COOKIE, ANONYMOUS_ID, KEY  # noqa: E402

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "courier_analytics.integrations.django.CourierAnalyticsMiddleware",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A Django project (auth, sessions, this app) on a throwaway SQLite file."""
    if not settings.configured:
        database = Path(tmp_path_factory.mktemp("django")) / "db.sqlite3"
        settings.configure(
            SECRET_KEY="tests-only-" + "x" * 40,
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF="integrations.apps.django_urls",
            INSTALLED_APPS=[
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "django.contrib.sessions",
                "courier_analytics.integrations.django",
            ],
            MIDDLEWARE=MIDDLEWARE,
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}},
            USE_TZ=True,
        )
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


@pytest.fixture
def courier_settings(project: None, courier: DevServer) -> Iterator[dict[str, Any]]:
    """settings.COURIER_ANALYTICS pointing at the stand-in."""
    config = {"api_key": KEY, "base_url": courier.base_url}
    with override_settings(COURIER_ANALYTICS=config):
        yield config


def user(name: str) -> Any:
    """A user named ``name`` (made once), password "pw"."""
    from django.contrib.auth.models import User

    found = User.objects.filter(username=name).first()
    return found or User.objects.create_user(name, f"{name}@example.com", "pw")


async def logged_in(who: Any) -> AsyncClient:
    """An async test client with ``who`` logged in."""
    client = AsyncClient()
    await client.aforce_login(who)
    return client


def delivered(courier: DevServer) -> list[dict[str, Any]]:
    """Flush the default client and return the events the stand-in received."""
    assert analytics.flush(10)
    return courier.events()


def test_an_authenticated_request_attributes_events_to_request_user(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """request.user.pk is the userId; ip, userAgent, locale and page fill the context."""
    client = Client(HTTP_USER_AGENT="Mozilla/5.0 test", HTTP_ACCEPT_LANGUAGE="fr-CH, fr;q=0.9")
    ada = user("ada")
    client.force_login(ada)
    answer = client.get("/whoami?plan=pro", HTTP_REFERER="https://example.com/pricing")
    assert answer.json() == {"user_id": str(ada.pk), "anonymous_id": None}
    [event] = delivered(courier)
    assert event["user"] == str(ada.pk)
    context = event["data"]["context"]
    assert context["ip"] == "127.0.0.1"
    assert context["userAgent"] == "Mozilla/5.0 test"
    assert context["locale"] == "fr-CH"
    assert context["page"] == {
        "path": "/whoami",
        "url": "http://testserver/whoami?plan=pro",
        "search": "?plan=pro",
        "referrer": "https://example.com/pricing",
    }


def test_the_json_encoded_anonymous_id_cookie_is_decoded(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """analytics.js's cookie value %22abc%22 is the anonymousId abc."""
    client = Client()
    client.cookies["ajs_anonymous_id"] = ANONYMOUS_COOKIE
    assert client.get("/whoami").json() == {
        "user_id": None,
        "anonymous_id": ANONYMOUS_ID,
    }
    [event] = delivered(courier)
    assert event["data"]["anonymousId"] == ANONYMOUS_ID
    assert "userId" not in event["data"]


def test_a_forged_user_id_cookie_or_header_attributes_nothing(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """An ajs_user_id cookie (or a header) never makes the request someone else's."""
    client = Client(HTTP_X_USER_ID="victim")
    client.cookies["ajs_user_id"] = "%22victim%22"
    client.cookies["ajs_anonymous_id"] = ANONYMOUS_COOKIE
    assert client.get("/whoami").json() == {
        "user_id": None,
        "anonymous_id": ANONYMOUS_ID,
    }
    [event] = delivered(courier)
    assert event["user"] == ANONYMOUS_ID
    assert "userId" not in event["data"]


def test_a_call_knowing_no_user_is_skipped_not_raised(
    courier_settings: dict[str, Any], courier: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    """No user and no cookie: the view still answers; the event is counted skipped."""
    with caplog.at_level(logging.DEBUG, logger="courier_analytics"):
        assert Client().get("/whoami").status_code == 200
    assert delivered(courier) == []
    stats = analytics.stats()
    assert stats is not None
    assert (stats.skipped, stats.queued) == (1, 0)
    assert "skipped track" in caplog.text


def test_identify_at_login_sets_the_user_for_the_rest_of_the_request(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """A login view's identify() makes the following track carry the user."""
    grace = user("grace")
    client = Client()
    client.cookies["ajs_anonymous_id"] = ANONYMOUS_COOKIE
    assert client.post("/signin", {"username": "grace"}).status_code == 200
    identify, track = delivered(courier)
    assert (identify["type"], identify["user"]) == ("identify", str(grace.pk))
    assert identify["data"]["traits"] == {"email": "grace@example.com"}
    assert (track["type"], track["user"]) == ("track", str(grace.pk))
    assert track["data"]["anonymousId"] == ANONYMOUS_ID


def test_forwarded_for_is_ignored_without_trusted_proxies(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """A client's own X-Forwarded-For does not change context.ip."""
    client = Client(HTTP_X_FORWARDED_FOR="198.51.100.1")
    client.force_login(user("ada"))
    client.get("/whoami")
    [event] = delivered(courier)
    assert event["data"]["context"]["ip"] == "127.0.0.1"


def test_forwarded_for_from_a_trusted_proxy_gives_the_client_ip(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """Behind trusted proxies, the first untrusted address from the right is the client."""
    config = {**courier_settings, "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"]}
    with override_settings(COURIER_ANALYTICS=config):
        client = Client(HTTP_X_FORWARDED_FOR="203.0.113.5, 198.51.100.1, 10.1.2.3")
        client.force_login(user("ada"))
        client.get("/whoami")
    [event] = delivered(courier)
    assert event["data"]["context"]["ip"] == "198.51.100.1"


def test_interleaved_sync_requests_keep_their_own_users(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """Two requests in flight at once on two threads: no event gets the other's user."""
    users = [user("ada"), user("grace")]
    errors: list[BaseException] = []

    def request(who: Any) -> None:
        try:
            client = Client()
            client.force_login(who)
            assert client.get("/interleaved").status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(who,)) for who in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    events = delivered(courier)
    assert sorted((e["user"], e["data"]["properties"]["n"]) for e in events) == sorted(
        (str(who.pk), n) for who in users for n in (1, 2)
    )


def test_interleaved_async_requests_keep_their_own_users(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """Two async requests interleaved on one event loop: each keeps its own scope."""
    from integrations.apps import django_urls

    users = [user("ada"), user("grace")]

    async def main() -> None:
        django_urls.async_barrier = asyncio.Barrier(2)
        clients = [await logged_in(who) for who in users]
        answers = await asyncio.gather(*(c.get("/interleaved-async") for c in clients))
        assert [a.status_code for a in answers] == [200, 200]

    asyncio.run(main())
    events = delivered(courier)
    assert sorted((e["user"], e["data"]["properties"]["n"]) for e in events) == sorted(
        (str(who.pk), n) for who in users for n in (1, 2)
    )


def test_async_views_get_the_scope_through_async_middleware(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """Under ASGI the middleware runs async (auser()) and the view sees the user."""
    ada = user("ada")

    async def main() -> Any:
        return (await (await logged_in(ada)).get("/async-whoami")).json()

    assert asyncio.run(main()) == {"user_id": str(ada.pk)}
    [event] = delivered(courier)
    assert event["user"] == str(ada.pk)


def test_settings_are_applied_once_without_rebuilding_the_client(
    courier_settings: dict[str, Any],
) -> None:
    """Applying the same COURIER_ANALYTICS again (app config, middleware) keeps the client."""
    from courier_analytics.integrations.django import configure_from_settings

    configure_from_settings()
    first = analytics.default_client()
    configure_from_settings()
    assert analytics.default_client() is first
    assert analytics.api_key == KEY


def test_the_app_config_applies_settings_at_start_up(project: None) -> None:
    """The app config's ready() configures the module-level client for non-request code."""
    from django.apps import apps

    with override_settings(COURIER_ANALYTICS={"api_key": "from-settings", "route": "api"}):
        apps.get_app_config("courier_analytics").ready()
    assert (analytics.api_key, analytics.route) == ("from-settings", "api")


def test_an_unknown_setting_is_an_improperly_configured_error(project: None) -> None:
    """A misspelt name in COURIER_ANALYTICS fails at start-up, naming it."""
    from courier_analytics.integrations.django import configure_from_settings

    with (
        override_settings(COURIER_ANALYTICS={"apikey": "x"}),
        pytest.raises(ImproperlyConfigured, match="apikey"),
    ):
        configure_from_settings()


def test_outside_a_request_a_call_without_ids_still_raises(project: None) -> None:
    """The skip rule is the request scope's: plain code keeps its ValueError."""
    analytics.configure(api_key="k", send=False)
    with pytest.raises(ValueError, match="user_id or anonymous_id"):
        analytics.track("Nobody")


def test_a_failing_user_lookup_never_breaks_the_view(
    courier_settings: dict[str, Any], courier: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    """request.user raising (say, the database is down) is logged; the view still runs."""
    from django.contrib.auth import middleware as auth_middleware

    def broken(request: Any) -> Any:
        raise RuntimeError("database unavailable")

    client = Client()
    client.cookies["ajs_anonymous_id"] = ANONYMOUS_COOKIE
    original = auth_middleware.get_user
    auth_middleware.get_user = broken
    try:
        answer = client.get("/whoami")
    finally:
        auth_middleware.get_user = original
    assert answer.json() == {
        "user_id": None,
        "anonymous_id": ANONYMOUS_ID,
    }
    assert "loading request.user raised RuntimeError" in caplog.text


def test_a_failing_view_leaves_no_scope_on_the_thread(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """A sync view that raises: the next request on this thread is anonymous again."""
    client = Client()
    client.force_login(user("ada"))
    with pytest.raises(ConnectionResetError):
        client.get("/boom")
    assert analytics.user() is None
    assert Client().get("/whoami").json() == {"user_id": None, "anonymous_id": None}


def test_a_failing_later_middleware_leaves_no_scope_on_the_thread(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """A middleware after ours raises: the next request on this thread is anonymous again."""
    later = "integrations.apps.django_urls.RaisingMiddleware"
    with override_settings(MIDDLEWARE=[*MIDDLEWARE, later]):
        client = Client()
        client.force_login(user("ada"))
        with pytest.raises(ConnectionResetError):
            client.get("/whoami", HTTP_X_TEST_BOOM="1")
        assert analytics.user() is None
        assert Client().get("/whoami").json() == {"user_id": None, "anonymous_id": None}


def test_a_failing_request_finished_receiver_leaves_no_scope_on_the_thread(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """A request_finished receiver raises: the next request on this thread is anonymous."""
    from django.core.signals import request_finished

    def flaky_cleanup(**_: Any) -> None:
        raise ConnectionResetError("cleanup failed")

    client = Client()
    client.force_login(user("ada"))
    request_finished.connect(flaky_cleanup)
    try:
        with pytest.raises(ConnectionResetError):
            client.get("/whoami")
    finally:
        request_finished.disconnect(flaky_cleanup)
    assert analytics.user() is None
    assert Client().get("/whoami").json() == {"user_id": None, "anonymous_id": None}


def test_a_failing_async_view_leaves_no_scope_in_the_task(
    courier_settings: dict[str, Any], courier: DevServer
) -> None:
    """An async view that raises: the next request handled in the same task is anonymous."""
    ada = user("ada")

    async def main() -> Any:
        with pytest.raises(ConnectionResetError):
            await (await logged_in(ada)).get("/async-boom")
        assert analytics.user() is None
        return (await AsyncClient().get("/async-whoami")).json()

    assert asyncio.run(main()) == {"user_id": None}


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"route": "segment"}, 'COURIER_ANALYTICS["api_key"]'),
        ({"api_key": KEY, "region": "asia"}, 'COURIER_ANALYTICS["region"]'),
        ({"api_key": KEY, "max_queue_size": 0}, 'COURIER_ANALYTICS["max_queue_size"]'),
    ],
)
def test_a_bad_configuration_is_a_system_check_error_naming_the_setting(
    project: None, config: dict[str, Any], named: str
) -> None:
    """No API key anywhere, or a bad value: manage.py check reports courier_analytics.E001."""
    from django.core.checks import run_checks

    with override_settings(COURIER_ANALYTICS=config):
        [error] = [m for m in run_checks() if m.id == "courier_analytics.E001"]
    assert error.msg.startswith(f"{named}: ")
    assert KEY not in error.msg


def test_a_good_configuration_passes_the_system_check(courier_settings: dict[str, Any]) -> None:
    """A valid COURIER_ANALYTICS (or send=False without a key) raises no check error."""
    from django.core.checks import run_checks

    assert [m for m in run_checks() if m.id.startswith("courier_analytics")] == []
    with override_settings(COURIER_ANALYTICS={"send": False}):
        assert [m for m in run_checks() if m.id.startswith("courier_analytics")] == []


def test_a_bad_configuration_stops_the_server_when_it_builds_the_middleware(
    project: None,
) -> None:
    """gunicorn and uvicorn run no system checks: building the middleware refuses it."""
    with (
        override_settings(COURIER_ANALYTICS={"api_key": KEY, "region": "asia"}),
        pytest.raises(ImproperlyConfigured, match=r'COURIER_ANALYTICS\["region"\]'),
    ):
        Client().get("/whoami")
