"""ASGI: the pure middleware under Starlette and FastAPI, with real clients and the stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

starlette = pytest.importorskip("starlette")
fastapi = pytest.importorskip("fastapi")

from fastapi import Depends, FastAPI, Request  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.authentication import (  # noqa: E402
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
)
from starlette.middleware import Middleware  # noqa: E402
from starlette.middleware.authentication import AuthenticationMiddleware  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402

with warnings.catch_warnings():  # newer Starlette asks for httpx2 and warns on httpx
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient
from starlette.websockets import WebSocket  # noqa: E402

import courier_analytics as analytics  # noqa: E402
from courier_analytics.devserver import DevServer, Faults  # noqa: E402
from courier_analytics.integrations.asgi import CourierAnalyticsMiddleware  # noqa: E402

from .conftest import ANONYMOUS_COOKIE, ANONYMOUS_ID, KEY  # noqa: E402


class HeaderAuth(AuthenticationBackend):  # type: ignore[misc]
    """The test's stand-in for real authentication: X-Test-Login names the user."""

    async def authenticate(self, conn: Any) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("X-Test-Login")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


async def whoami(request: Request) -> JSONResponse:
    analytics.track("Page Served")
    user = analytics.user()
    return JSONResponse({"user_id": user.id, "anonymous_id": user.anonymous_id} if user else {})


async def interleaved(request: Request) -> PlainTextResponse:
    analytics.track("Step", {"n": 1})
    await request.app.state.barrier.wait()
    analytics.track("Step", {"n": 2})
    return PlainTextResponse("ok")


async def streamed(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(3):
            analytics.track("Chunk Sent", {"n": n})
            yield b"chunk\n"

    return StreamingResponse(chunks())


async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    analytics.track("Socket Opened")
    await websocket.send_text("hi")
    await websocket.close()


def starlette_app(courier: DevServer, **options: Any) -> Starlette:
    """A Starlette app: authentication outside, the analytics middleware inside it."""
    analytics.configure(api_key=KEY, base_url=courier.base_url)
    return Starlette(
        routes=[
            Route("/whoami", whoami),
            Route("/interleaved", interleaved),
            Route("/streamed", streamed),
            WebSocketRoute("/socket", socket),
        ],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
            Middleware(CourierAnalyticsMiddleware, **options),
        ],
    )


def delivered(courier: DevServer) -> list[dict[str, Any]]:
    """Flush the default client and return the events the stand-in received."""
    assert analytics.flush(10)
    return courier.events()


def test_the_authenticated_scope_user_and_request_context(courier: DevServer) -> None:
    """scope["user"] set by AuthenticationMiddleware is the userId; context is filled."""
    with TestClient(starlette_app(courier)) as client:
        answer = client.get(
            "/whoami?x=1",
            headers={"X-Test-Login": "ada", "User-Agent": "UA/1", "Accept-Language": "pt-BR"},
        )
    assert answer.json() == {"user_id": "ada", "anonymous_id": None}
    [event] = delivered(courier)
    assert event["user"] == "ada"
    context = event["data"]["context"]
    assert (context["ip"], context["userAgent"], context["locale"]) == (
        "testclient",
        "UA/1",
        "pt-BR",
    )
    assert context["page"] == {
        "path": "/whoami",
        "url": "http://testserver/whoami?x=1",
        "search": "?x=1",
        "referrer": "",
    }


def test_an_async_user_id_callable_is_used_without_an_authenticated_user(
    courier: DevServer,
) -> None:
    """user_id(scope) (here a coroutine) names the user when scope["user"] does not."""

    async def user_id(scope: Any) -> str:
        return "from-callable"

    with TestClient(starlette_app(courier, user_id=user_id)) as client:
        assert client.get("/whoami").json()["user_id"] == "from-callable"
        assert client.get("/whoami", headers={"X-Test-Login": "ada"}).json()["user_id"] == "ada"


def test_a_user_id_callable_returning_an_empty_id_never_breaks_the_request(
    courier: DevServer,
) -> None:
    """user_id(scope) returning "" (no user) answers the request; events carry no user."""
    with TestClient(starlette_app(courier, user_id=lambda scope: "")) as client:
        client.cookies.set("ajs_anonymous_id", ANONYMOUS_COOKIE)
        response = client.get("/whoami")
        assert response.status_code == 200
        assert response.json() == {
            "user_id": None,
            "anonymous_id": ANONYMOUS_ID,
        }


class NoIdentityUser(BaseUser):  # type: ignore[misc]
    """An authenticated user as Starlette's docs write one: no `identity`."""

    @property
    def is_authenticated(self) -> bool:
        return True


def no_identity_client(courier: DevServer, **options: Any) -> TestClient:
    """A client for an app answering `analytics.user()`, behind the middleware, as NoIdentityUser.

    Without lifespan: the test client talks to a bare ASGI callable.
    """

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse(str(analytics.user()))(scope, receive, send)

    async def with_user(scope: Any, receive: Any, send: Any) -> None:
        scope["user"] = NoIdentityUser()
        await middleware(scope, receive, send)

    analytics.configure(api_key=KEY, base_url=courier.base_url)
    middleware = CourierAnalyticsMiddleware(app, **options)
    return TestClient(with_user)


def test_a_scope_user_without_identity_falls_back_to_the_user_id_callable(
    courier: DevServer,
) -> None:
    """scope["user"] whose identity raises NotImplementedError: user_id(scope) names the user."""
    client = no_identity_client(courier, user_id=lambda scope: "from-callable")
    assert "id='from-callable'" in client.get("/").text


def test_a_scope_user_without_identity_and_no_callable_gives_no_user_and_says_so(
    courier: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A user class with no identity and no user_id=: the request goes on, a warning names it."""
    answer = no_identity_client(courier).get("/")
    assert answer.status_code == 200
    assert "id=None" in answer.text
    assert "NoIdentityUser has no identity and no user_id= was given" in caplog.text


def test_starlettes_simple_user_without_identity_is_attributed_by_username(
    courier: DevServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SimpleUser as Starlette shipped it before 2026 (identity raising) still names the user."""
    monkeypatch.setattr(SimpleUser, "identity", BaseUser.identity)
    with TestClient(starlette_app(courier)) as client:
        for _ in range(3):
            answer = client.get("/whoami", headers={"X-Test-Login": "ada"}).json()
            assert answer["user_id"] == "ada"
    assert "raised" not in caplog.text


def test_a_forged_user_cookie_is_ignored_and_the_anonymous_cookie_used(
    courier: DevServer,
) -> None:
    """ajs_user_id never names the user; ajs_anonymous_id (JSON-encoded) is decoded."""
    with TestClient(starlette_app(courier)) as client:
        client.cookies.set("ajs_user_id", "%22victim%22")
        client.cookies.set("ajs_anonymous_id", ANONYMOUS_COOKIE)
        assert client.get("/whoami").json() == {
            "user_id": None,
            "anonymous_id": ANONYMOUS_ID,
        }


def test_a_call_knowing_no_user_is_skipped_and_the_endpoint_answers(courier: DevServer) -> None:
    """No user and no cookie: 200, the event counted skipped."""
    with TestClient(starlette_app(courier)) as client:
        assert client.get("/whoami").status_code == 200
    stats = analytics.stats()
    assert stats is not None
    assert stats.skipped == 1
    assert delivered(courier) == []


def test_forwarded_for_only_from_trusted_proxies(courier: DevServer) -> None:
    """X-Forwarded-For is ignored, unless the peer is a trusted proxy."""

    async def main(app: Any) -> None:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.3", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            await client.get(
                "/whoami", headers={"X-Test-Login": "ada", "X-Forwarded-For": "198.51.100.9"}
            )

    # Both apps first: each configures the default client, and a client rebuilt
    # between the requests would deliver the first one's event in the background.
    plain, trusting = starlette_app(courier), starlette_app(courier, trusted_proxies=["10.0.0.0/8"])
    asyncio.run(main(plain))
    asyncio.run(main(trusting))
    assert [e["data"]["context"]["ip"] for e in delivered(courier)] == ["10.0.0.3", "198.51.100.9"]


def test_interleaved_requests_on_one_loop_keep_their_own_users(courier: DevServer) -> None:
    """Many requests of different users, interleaved on one event loop: no scope leaks."""
    app = starlette_app(courier)
    names = [f"user-{n}" for n in range(10)]

    async def main() -> None:
        app.state.barrier = asyncio.Barrier(len(names))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            answers = await asyncio.gather(
                *(client.get("/interleaved", headers={"X-Test-Login": n}) for n in names)
            )
        assert {a.status_code for a in answers} == {200}

    asyncio.run(main())
    events = delivered(courier)
    assert sorted((e["user"], e["data"]["properties"]["n"]) for e in events) == sorted(
        (name, n) for name in names for n in (1, 2)
    )


def test_events_made_while_streaming_a_response_carry_the_user(courier: DevServer) -> None:
    """Pure ASGI: a streaming body is produced inside the request's scope."""
    with TestClient(starlette_app(courier)) as client:
        assert client.get("/streamed", headers={"X-Test-Login": "ada"}).text == "chunk\n" * 3
    assert [e["user"] for e in delivered(courier)] == ["ada"] * 3


def test_a_websocket_connection_gets_a_scope_too(courier: DevServer) -> None:
    """Events tracked in a WebSocket handler know the connection's user."""
    with (
        TestClient(starlette_app(courier)) as client,
        client.websocket_connect("/socket", headers={"X-Test-Login": "ada"}) as ws,
    ):
        assert ws.receive_text() == "hi"
    [event] = delivered(courier)
    assert event["user"] == "ada"


def test_lifespan_shutdown_flushes_what_the_shutdown_handlers_tracked(courier: DevServer) -> None:
    """At shutdown the middleware awaits aflush after the app's own handlers; nothing is lost."""
    courier.set_faults(Faults(latency_ms=100))
    app = FastAPI(on_shutdown=[lambda: analytics.track("Server Stopped", user_id="ops")])
    app.add_middleware(CourierAnalyticsMiddleware)
    analytics.configure(api_key=KEY, base_url=courier.base_url)
    with TestClient(app):
        analytics.track("Server Started", user_id="ops")
    # No flush here: the shutdown already waited for delivery.
    assert [e["event"] for e in courier.events()] == [
        "Segment-TrackEvent:Server Started",
        "Segment-TrackEvent:Server Stopped",
    ]


def test_a_failed_lifespan_shutdown_still_flushes(courier: DevServer) -> None:
    """A shutdown handler that tracks and then fails: the middleware still flushes."""
    courier.set_faults(Faults(latency_ms=100))
    analytics.configure(api_key=KEY, base_url=courier.base_url)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                analytics.track("Server Stopped", user_id="ops")
                await send({"type": "lifespan.shutdown.failed", "message": "cleanup failed"})
                return

    async def lifespan() -> list[str]:
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> dict[str, str]:
            return incoming.pop(0)

        async def send(message: dict[str, str]) -> None:
            sent.append(message["type"])

        await CourierAnalyticsMiddleware(app)({"type": "lifespan"}, receive, send)
        return sent

    sent = asyncio.run(lifespan())
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.failed"]
    # No flush here: the shutdown already waited for delivery.
    assert [e["event"] for e in courier.events()] == ["Segment-TrackEvent:Server Stopped"]


def test_a_fastapi_dependency_that_identifies_sets_the_user(courier: DevServer) -> None:
    """FastAPI auth as a dependency: its identify() reaches the endpoint's track."""

    def current_user(request: Request) -> str:
        name = request.headers["X-Token"]  # the app's real auth would verify a token here
        analytics.identify(name, {"plan": "pro"})
        return name

    app = FastAPI()
    app.add_middleware(CourierAnalyticsMiddleware)

    @app.post("/exports")
    async def export(user: str = Depends(current_user)) -> dict[str, str]:
        analytics.track("Export Started")
        return {"user": user}

    analytics.configure(api_key=KEY, base_url=courier.base_url)
    with TestClient(app) as client:
        assert client.post("/exports", headers={"X-Token": "grace"}).json() == {"user": "grace"}
    assert [(e["type"], e["user"]) for e in delivered(courier)] == [
        ("identify", "grace"),
        ("track", "grace"),
    ]


def test_other_scope_types_pass_through_untouched() -> None:
    """A scope type the middleware does not know goes to the app as is."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    asyncio.run(CourierAnalyticsMiddleware(app)({"type": "custom"}, None, None))  # type: ignore[arg-type]
    assert seen == ["custom"]


def seen_by_the_app(headers: list[tuple[bytes, bytes]], **options: Any) -> dict[str, Any]:
    """Call the middleware with one raw HTTP request; what the app saw of its scope."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["user"] = analytics.user()
        seen["context"] = (analytics.scope.snapshot() or {}).get("context")

    request = {"type": "http", "path": "/", "headers": headers, "client": ("203.0.113.9", 1)}
    asyncio.run(CourierAnalyticsMiddleware(app, **options)(request, None, None))  # type: ignore[arg-type]
    return seen


def test_repeated_cookie_headers_are_joined_as_one_cookie_list() -> None:
    """HTTP/2 sends each cookie in its own header: the anonymous id in the second is found."""
    seen = seen_by_the_app(
        [(b"cookie", b"session=abc"), (b"cookie", f"ajs_anonymous_id={ANONYMOUS_COOKIE}".encode())]
    )
    assert seen["user"].anonymous_id == ANONYMOUS_ID


class RaisingMiddleware:
    """Placed after the analytics middleware: fails requests that carry X-Test-Boom."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (b"x-test-boom", b"1") in scope.get("headers", ()):
            raise ConnectionResetError("a later middleware failed")
        await self.app(scope, receive, send)


async def boom(request: Request) -> PlainTextResponse:
    analytics.track("Page Served")
    raise ConnectionResetError("the endpoint failed")


@pytest.mark.parametrize("raises", ["the endpoint", "a later middleware"])
def test_an_exception_leaves_no_scope_in_the_task_for_the_next_request(
    courier: DevServer, raises: str
) -> None:
    """The app or a later middleware raises: the next request in the same task is anonymous."""
    analytics.configure(api_key=KEY, base_url=courier.base_url)
    app = Starlette(
        routes=[Route("/whoami", whoami), Route("/boom", boom)],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
            Middleware(CourierAnalyticsMiddleware),
            Middleware(RaisingMiddleware),
        ],
    )
    path, headers = ("/boom", {}) if raises == "the endpoint" else ("/whoami", {"X-Test-Boom": "1"})

    async def main() -> Any:
        # httpx runs an ASGI app in the task that sends the request: one task, reused.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            with pytest.raises(ConnectionResetError):
                await client.get(path, headers={"X-Test-Login": "ada", **headers})
            assert analytics.user() is None
            return (await client.get("/whoami")).json()

    assert asyncio.run(main()) == {"user_id": None, "anonymous_id": None}


def lifespan_startup(app: Any) -> dict[str, Any]:
    """Run an app's lifespan start-up and shutdown as a server does; the start-up answer."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    answers: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        answers.append(message)

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    return answers[0]


def test_a_bad_configuration_fails_the_lifespan_start_up_naming_the_setting() -> None:
    """No API key anywhere: lifespan.startup.failed names it, so the server does not start."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:  # the app's start-up sets the settings
        analytics.configure(region="asia", api_key=KEY)
        yield

    app = Starlette(lifespan=lifespan, middleware=[Middleware(CourierAnalyticsMiddleware)])
    answer = lifespan_startup(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert answer["message"].startswith("courier_analytics.region: region must be one of")
    analytics.configure(region="us", api_key=None)
    answer = lifespan_startup(Starlette(middleware=[Middleware(CourierAnalyticsMiddleware)]))
    assert answer["message"].startswith("courier_analytics.api_key: api_key is required")


def test_a_good_configuration_completes_the_lifespan_start_up() -> None:
    """A valid configuration set by the app's start-up: lifespan.startup.complete."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        analytics.configure(api_key=KEY, send=False)
        yield

    app = Starlette(lifespan=lifespan, middleware=[Middleware(CourierAnalyticsMiddleware)])
    assert lifespan_startup(app) == {"type": "lifespan.startup.complete"}


@pytest.mark.parametrize(("trusted", "expected"), [(["unix"], "198.51.100.23"), ([], None)])
def test_behind_a_proxy_on_a_unix_socket_the_ip_comes_from_forwarded_for_if_opted_in(
    tmp_path: Any, trusted: list[str], expected: str | None
) -> None:
    """uvicorn on a unix socket (nginx in front) gives no peer: "unix" trusts it, else no ip."""
    uvicorn = pytest.importorskip("uvicorn")
    started = threading.Event()

    async def context_ip(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            started.set()
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        ip = ((analytics.scope.snapshot() or {}).get("context") or {}).get("ip")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(ip).encode()})

    analytics.configure(api_key=KEY, send=False)
    path = str(tmp_path / "app.sock")
    app = CourierAnalyticsMiddleware(context_ip, trusted_proxies=trusted)
    server = uvicorn.Server(uvicorn.Config(app, uds=path, log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        assert started.wait(30)
        transport = httpx.HTTPTransport(uds=path)
        with httpx.Client(transport=transport, base_url="http://shop") as client:
            answer = client.get("/", headers={"X-Forwarded-For": "198.51.100.23"})
    finally:
        server.should_exit = True
        thread.join(30)
    assert answer.text == str(expected)
