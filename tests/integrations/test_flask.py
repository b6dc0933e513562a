"""Flask: the extension's request scope, with Flask's test client, against the stand-in."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

flask = pytest.importorskip("flask")
flask_login = pytest.importorskip("flask_login")

import courier_analytics as analytics  # noqa: E402
from courier_analytics.devserver import DevServer  # noqa: E402
from courier_analytics.integrations.flask import CourierAnalytics  # noqa: E402

from .conftest import ANONYMOUS_COOKIE, ANONYMOUS_ID, KEY  # noqa: E402


class User(flask_login.UserMixin):  # type: ignore[misc]
    """A flask-login user whose id is its name."""

    def __init__(self, name: str) -> None:
        self.id = name
        self.email = f"{name}@example.com"


def make_app(courier: DevServer, **extension: Any) -> Any:
    """A Flask app with flask-login (user from the X-Test-Login header) and the extension."""
    app = flask.Flask(__name__)
    app.config["SECRET_KEY"] = "tests-only"
    app.config["COURIER_ANALYTICS"] = {"api_key": KEY, "base_url": courier.base_url}
    login_manager = flask_login.LoginManager(app)

    @login_manager.request_loader
    def load(request: Any) -> User | None:  # the test's stand-in for a session
        name = request.headers.get("X-Test-Login")
        return User(name) if name else None

    barrier = threading.Barrier(2, timeout=30)

    @app.get("/whoami")
    def whoami() -> Any:
        analytics.track("Page Served")
        user = analytics.user()
        return {"user_id": user.id, "anonymous_id": user.anonymous_id} if user else {}

    @app.post("/signin")
    def signin() -> str:
        user = User(flask.request.form["username"])
        flask_login.login_user(user)
        analytics.identify(user.id, {"email": user.email})
        analytics.track("Logged In")
        return "ok"

    @app.get("/interleaved")
    def interleaved() -> str:
        analytics.track("Step", {"n": 1})
        barrier.wait()
        analytics.track("Step", {"n": 2})
        return "ok"

    CourierAnalytics(app, **extension)
    return app


def delivered(courier: DevServer) -> list[dict[str, Any]]:
    """Flush the default client and return the events the stand-in received."""
    assert analytics.flush(10)
    return courier.events()


def test_flask_login_user_and_request_context(courier: DevServer) -> None:
    """current_user's id is the userId; ip, userAgent, locale and page fill the context."""
    client = make_app(courier).test_client()
    answer = client.get(
        "/whoami?q=1",
        headers={
            "X-Test-Login": "ada",
            "User-Agent": "Mozilla/5.0 test",
            "Accept-Language": "de-DE,de;q=0.9",
            "Referer": "https://example.com/",
        },
    )
    assert answer.json == {"user_id": "ada", "anonymous_id": None}
    [event] = delivered(courier)
    assert event["user"] == "ada"
    context = event["data"]["context"]
    assert (context["ip"], context["userAgent"], context["locale"]) == (
        "127.0.0.1",
        "Mozilla/5.0 test",
        "de-DE",
    )
    assert context["page"] == {
        "path": "/whoami",
        "url": "http://localhost/whoami?q=1",
        "search": "?q=1",
        "referrer": "https://example.com/",
    }


def test_a_user_id_callable_wins_over_flask_login(courier: DevServer) -> None:
    """CourierAnalytics(user_id=...) decides who the user is."""
    client = make_app(courier, user_id=lambda: 42).test_client()
    assert client.get("/whoami", headers={"X-Test-Login": "ada"}).json["user_id"] == "42"


def test_a_failing_user_id_callable_never_breaks_the_request(
    courier: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A user_id callable that raises is logged; the request answers, events carry no user."""

    def broken() -> str:
        raise LookupError("db down")

    client = make_app(courier, user_id=broken).test_client()
    client.set_cookie("ajs_anonymous_id", ANONYMOUS_COOKIE)
    with caplog.at_level(logging.WARNING, logger="courier_analytics"):
        assert client.get("/whoami").json == {
            "user_id": None,
            "anonymous_id": ANONYMOUS_ID,
        }
    assert "user_id callable raised LookupError" in caplog.text


def test_a_user_id_callable_returning_an_empty_id_never_breaks_the_request(
    courier: DevServer,
) -> None:
    """A user_id callable returning "" (no user) answers the request; events carry no user."""
    client = make_app(courier, user_id=lambda: "").test_client()
    client.set_cookie("ajs_anonymous_id", ANONYMOUS_COOKIE)
    response = client.get("/whoami")
    assert response.status_code == 200
    assert response.json == {
        "user_id": None,
        "anonymous_id": ANONYMOUS_ID,
    }


def test_anonymous_cookie_is_used_and_a_forged_user_cookie_is_not(courier: DevServer) -> None:
    """ajs_anonymous_id gives the anonymousId; ajs_user_id is ignored."""
    client = make_app(courier).test_client()
    client.set_cookie("ajs_anonymous_id", ANONYMOUS_COOKIE)
    client.set_cookie("ajs_user_id", "%22victim%22")
    assert client.get("/whoami").json == {
        "user_id": None,
        "anonymous_id": ANONYMOUS_ID,
    }
    [event] = delivered(courier)
    assert (event["user"], event["data"].get("userId")) == (
        ANONYMOUS_ID,
        None,
    )


def test_a_call_knowing_no_user_is_skipped_and_the_view_answers(courier: DevServer) -> None:
    """No user, no cookie: 200, and the event is counted as skipped."""
    client = make_app(courier).test_client()
    assert client.get("/whoami").status_code == 200
    assert delivered(courier) == []
    stats = analytics.stats()
    assert stats is not None
    assert stats.skipped == 1


def test_identify_at_login_sets_the_user_for_the_rest_of_the_request(courier: DevServer) -> None:
    """The login view's identify() makes its following track carry the user."""
    client = make_app(courier).test_client()
    assert client.post("/signin", data={"username": "grace"}).status_code == 200
    identify, track = delivered(courier)
    assert [(e["type"], e["user"]) for e in (identify, track)] == [
        ("identify", "grace"),
        ("track", "grace"),
    ]


def test_the_scope_ends_with_the_request(courier: DevServer) -> None:
    """After a request on this thread, no scope is left open on it."""
    client = make_app(courier).test_client()
    client.get("/whoami", headers={"X-Test-Login": "ada"})
    assert analytics.user() is None


def test_interleaved_requests_keep_their_own_users(courier: DevServer) -> None:
    """Two requests in flight at once on two threads: no event gets the other's user."""
    app = make_app(courier)
    errors: list[BaseException] = []

    def request(name: str) -> None:
        try:
            answer = app.test_client().get("/interleaved", headers={"X-Test-Login": name})
            assert answer.status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(name,)) for name in ("ada", "grace")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    events = delivered(courier)
    assert sorted((e["user"], e["data"]["properties"]["n"]) for e in events) == [
        ("ada", 1),
        ("ada", 2),
        ("grace", 1),
        ("grace", 2),
    ]


@pytest.mark.parametrize(
    ("trusted", "peer"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("unix", ""),  # gunicorn on a unix socket: REMOTE_ADDR "", trusted only when opted in
    ],
)
def test_trusted_proxies_from_the_app_config(courier: DevServer, trusted: str, peer: str) -> None:
    """COURIER_ANALYTICS["trusted_proxies"] lets X-Forwarded-For name the client."""
    app = flask.Flask(__name__)
    app.config["COURIER_ANALYTICS"] = {
        "api_key": KEY,
        "base_url": courier.base_url,
        "trusted_proxies": [trusted],
    }

    @app.get("/")
    def index() -> str:
        analytics.track("Page Served", user_id="u1")
        return "ok"

    CourierAnalytics(user_id=lambda: None).init_app(app)
    forwarded = {"X-Forwarded-For": "198.51.100.4"}
    app.test_client().get("/", headers=forwarded, environ_base={"REMOTE_ADDR": peer})
    [event] = delivered(courier)
    assert event["data"]["context"]["ip"] == "198.51.100.4"


def test_bad_configuration_fails_at_init_app() -> None:
    """A misspelt config name or a non-callable user_id is a TypeError naming it."""
    app = flask.Flask(__name__)
    app.config["COURIER_ANALYTICS"] = {"writekey": "x"}
    with pytest.raises(TypeError, match="writekey"):
        CourierAnalytics(app)
    with pytest.raises(TypeError, match="user_id must be a callable"):
        CourierAnalytics(user_id="ada")  # type: ignore[arg-type]


@pytest.mark.parametrize("raising_hook_runs", ["before ours", "after ours"])
def test_a_raising_teardown_hook_never_leaks_the_scope_into_the_next_request(
    courier: DevServer, raising_hook_runs: str
) -> None:
    """Another teardown hook raises: the next request on this thread is not the last user's."""
    app = make_app(courier)

    def flaky_database_close(exc: BaseException | None) -> None:
        if flask.request.headers.get("X-Test-Login"):
            raise ConnectionResetError("database went away")

    if raising_hook_runs == "before ours":  # Flask runs teardown hooks last-registered first
        app.teardown_request(flaky_database_close)
    else:
        app.teardown_request_funcs[None].insert(0, flaky_database_close)
    client = app.test_client()
    with pytest.raises(ConnectionResetError):
        client.get("/whoami", headers={"X-Test-Login": "ada"})
    assert analytics.user() is None
    anonymous = client.get("/whoami").json  # on the same thread
    assert anonymous == {"user_id": None, "anonymous_id": None}
    assert [event["user"] for event in delivered(courier)] == ["ada"]


def test_a_scope_still_open_when_the_app_returns_ends_when_the_body_is_closed() -> None:
    """Flask < 3.1 keeps a streamed request open: its scope ends when the server closes the body."""
    from courier_analytics.integrations.flask import _SCOPE, _EndingScopes

    def streaming_app(environ: dict[str, Any], start_response: Any) -> Any:
        scope = analytics.scope(user_id="ada")
        scope.__enter__()
        environ[_SCOPE] = scope  # as the extension's hook does; teardown deferred

        class Body:
            def __iter__(self) -> Any:
                user = analytics.user()
                yield (user.id if user else "nobody").encode()

            def close(self) -> None:
                raise ConnectionResetError("the body's own close failed")

        return Body()

    answer = _EndingScopes(streaming_app)({}, lambda *args: None)
    assert b"".join(answer) == b"ada"
    with pytest.raises(ConnectionResetError):
        answer.close()  # type: ignore[attr-defined]
    assert analytics.user() is None


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"route": "segment"}, "api_key"),
        ({"api_key": KEY, "region": "asia"}, "region"),
    ],
)
def test_a_bad_setting_value_fails_at_init_app_naming_it(
    config: dict[str, Any], named: str
) -> None:
    """No API key anywhere or "region": "asia": ConfigurationError at init_app, not per request."""
    app = flask.Flask(__name__)
    app.config["COURIER_ANALYTICS"] = config
    with pytest.raises(analytics.ConfigurationError) as caught:
        CourierAnalytics(app)
    assert str(caught.value).startswith(f'app.config["COURIER_ANALYTICS"]["{named}"]: ')
    assert analytics.region == "us"  # nothing applied


def test_a_second_init_app_replaces_the_user_lookup_and_adds_no_second_hooks(
    courier: DevServer,
) -> None:
    """Another CourierAnalytics on the same app: its user_id is used; hooks and wrapper stay one."""
    from courier_analytics.integrations.flask import _EndingScopes

    app = make_app(courier)  # the first extension: flask-login's user
    CourierAnalytics(app, user_id=lambda: "bob")
    assert isinstance(app.wsgi_app, _EndingScopes)
    assert not isinstance(app.wsgi_app.wsgi_app, _EndingScopes)
    assert len(app.before_request_funcs[None]) == len(app.teardown_request_funcs[None]) == 1
    assert app.test_client().get("/whoami").json == {"user_id": "bob", "anonymous_id": None}


def test_a_streamed_body_runs_as_the_docs_say_and_leaves_no_scope(courier: DevServer) -> None:
    """stream_with_context: from Flask 3.1 the body streams after the scope; none is left."""
    from importlib.metadata import version

    app = make_app(courier)

    @app.get("/stream")
    def stream() -> Any:
        def body() -> Any:
            user = analytics.user()
            yield user.id if user and user.id else "nobody"

        return flask.stream_with_context(body())

    client = app.test_client()
    with client.get("/stream", headers={"X-Test-Login": "ada"}) as response:
        streamed = response.data
    flask_major, flask_minor = (int(part) for part in version("flask").split(".")[:2])
    assert streamed == (b"nobody" if (flask_major, flask_minor) >= (3, 1) else b"ada")
    assert analytics.user() is None
    assert client.get("/whoami").json == {"user_id": None, "anonymous_id": None}
