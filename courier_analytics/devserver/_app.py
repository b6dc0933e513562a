"""The raw ASGI application: HTTP in, `_courier` logic, faults, HTTP out.

No framework, on purpose: per request this does one header scan, one
`orjson.loads`, one locked state update and one `orjson.dumps`, which keeps
the stand-in far faster than any client it is used to measure.

Routes: Courier's (`/inbound/segment`, `/inbound/courier`, `/profiles/{id}`),
which need the bearer key and are subject to faults; and the stand-in's own
(`/` and `/__dev/*`), which need no key and are never faulted.

Web pages must not drive it: a request whose `Host` is a name other than
`localhost` or the bound host (DNS rebinding) is refused, and so is a
state-changing `/__dev/*` request whose `Origin` is another site's.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from courier_analytics.devserver import _courier
from courier_analytics.devserver._courier import INVALID_JSON, error, json_answer
from courier_analytics.devserver._faults import FaultAction, Faults
from courier_analytics.devserver._page import render_page
from courier_analytics.devserver._state import Answer, DevState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROFILE_PREFIX = "/profiles/"
PROFILE_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
INBOUND_ROUTES = {
    "/inbound/segment": "POST /inbound/segment",
    "/inbound/courier": "POST /inbound/courier",
}
SLOW_BODY_CHUNKS = 8
PAGE_EVENTS = 500
#: Characters of each event's data the page fetches (it shows 300).
PAGE_PREVIEW_CHARS = 300
#: Largest body accepted by the stand-in's own routes (`/__dev/faults` is tiny).
MAX_DEV_BODY_BYTES = 64 * 1024

# An ASGI app that returns a value makes uvicorn close the connection without
# writing a byte: exactly a dropped connection. uvicorn logs that as an error;
# `_QuietDrops` hides the log line for the drops we make on purpose.
_DROP = "dropped on purpose by the Courier stand-in"
_dropping: contextvars.ContextVar[bool] = contextvars.ContextVar("_dropping", default=False)


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _dropping.get()


_quiet_drops = _QuietDrops()

FORBIDDEN_HOST = error(
    403,
    "Forbidden: the Host names another site (a DNS-rebinding page?); use localhost or an IP, "
    "or start the stand-in with --allow-host <name> (DevServer(allowed_hosts=...))",
)
FORBIDDEN_ORIGIN = error(403, "Forbidden: a page from another origin cannot change the stand-in")
TOO_LARGE_FOR_DEV = error(413, "Request Entity Too Large: the stand-in's own routes take 64 KiB")


def _without_dot_segments(path: str) -> str:
    """`path` with `.` and `..` segments resolved, as servers and proxies resolve them."""
    segments = path.split("/")
    if "." not in segments and ".." not in segments:
        return path
    kept: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    trailing = segments[-1] in (".", "..")
    return "/" + "/".join(kept) + ("/" if trailing and kept else "")


def _route_of(method: str, raw_path: bytes) -> tuple[str, str | None]:
    """The stats key of a Courier route and the profile's user id, if any."""
    path = _without_dot_segments(raw_path.decode("latin-1").split("?", 1)[0])
    inbound = INBOUND_ROUTES.get(path)
    if inbound is not None:
        return (inbound, None) if method == "POST" else ("method not allowed", None)
    if path.startswith(PROFILE_PREFIX):
        user_id = unquote(path[len(PROFILE_PREFIX) :])
        if user_id and "/" not in path[len(PROFILE_PREFIX) :]:
            if method not in PROFILE_METHODS:
                return "method not allowed", None
            return f"{method} /profiles/{{user_id}}", user_id
    return "not found", None


def _host_name(host_header: bytes) -> str:
    """The name or address in a `Host` header, without port, brackets or final dot."""
    host = host_header.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")


def host_allowed(host_header: bytes | None, names: frozenset[str]) -> bool:
    """Whether a request with this `Host` may be answered.

    An IP address (any: the stand-in may be bound to one) or one of `names`
    (`localhost` and the bound host). Any other name is what a DNS-rebinding
    page sends, its own name resolving to this machine. No header (HTTP/1.0) is
    not a browser's request.
    """
    if host_header is None:
        return True
    name = _host_name(host_header)
    if name in names or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _parse(body: bytes) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return INVALID_JSON


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or `None` when it is larger than `limit` bytes."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body if len(body) <= limit else None
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _send_answer(send: Send, answer: Answer, *, close: bool = False) -> None:
    headers = [(b"content-length", b"%d" % len(answer.body))]
    if answer.body:
        headers.append((b"content-type", b"application/json"))
    headers.extend(answer.headers)
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


class DevApp:
    """The stand-in as an ASGI 3 application over one `DevState`."""

    def __init__(self, state: DevState, *, host_names: frozenset[str] = frozenset()) -> None:
        """Serve `state`; `host_names` are names besides `localhost` to answer to."""
        self.state = state
        self.host_names = frozenset({"localhost", *(name.lower() for name in host_names)})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None
        logging.getLogger("uvicorn.error").addFilter(_quiet_drops)

    def release_hanging(self) -> None:
        """Make every hanging request give up (thread-safe; used on shutdown)."""
        loop, closing = self._loop, self._closing
        if loop is not None and closing is not None and not loop.is_closed():
            loop.call_soon_threadsafe(closing.set)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        """Handle one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return None
        if scope["type"] != "http":
            return None
        if not host_allowed(_header(scope, b"host"), self.host_names):
            await _send_answer(send, FORBIDDEN_HOST)
            return None
        path: str = scope["path"]
        if path == "/" or path.startswith("/__dev/"):
            await self._dev(scope, receive, send)
            return None
        return await self._courier(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- Courier's routes ------------------------------------------------------

    async def _courier(self, scope: Scope, receive: Receive, send: Send) -> Any:
        state = self.state
        method: str = scope["method"]
        route, user_id = _route_of(method, scope.get("raw_path") or scope["path"].encode())
        authorization = idempotency_key = None
        declared_length = 0
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"idempotency-key":
                idempotency_key = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                declared_length = int(value)
        body = (
            None
            if declared_length > state.max_body_bytes
            else await _read_body(receive, state.max_body_bytes)
        )
        if body is None:
            with state.lock:
                state.count_request(route, "413")
            await _send_answer(send, _courier.TOO_LARGE, close=True)
            return None
        payload = _parse(body)
        message_id = idempotency_key
        if isinstance(payload, dict) and isinstance(payload.get("messageId"), str):
            message_id = payload["messageId"]

        with state.lock:
            delay = state.injector.latency_s()
            action = state.injector.decide(message_id)
            apply_first = state.injector.faults.apply_first
        if delay:
            await asyncio.sleep(delay)

        applies = action is None or action.kind == "slow_body" or apply_first
        with state.lock:
            answer = None
            if applies:
                state.current_body = body
                try:
                    answer = self._handle(
                        method, route, user_id, authorization, idempotency_key, payload
                    )
                finally:
                    state.current_body = None
            if action is not None:
                state.count_fault(action)
                if action.kind == "error" and (action.status or 500) >= 500:
                    self._remember_server_error(action, method, idempotency_key, authorization)
            state.count_request(route, _outcome(action, answer))
        if action is None and answer is not None:
            await _send_answer(send, answer)
            return None
        assert action is not None
        return await self._fault(action, answer, receive, send)

    def _handle(
        self,
        method: str,
        route: str,
        user_id: str | None,
        authorization: bytes | None,
        idempotency_key: str | None,
        payload: Any,
    ) -> Answer:
        """The answer Courier would give (caller holds the lock)."""
        state = self.state
        if not _courier.is_authorized(state, authorization):
            return _courier.UNAUTHORIZED
        if route == "not found":
            return _courier.NOT_FOUND
        if route == "method not allowed":
            return error(405, "Method Not Allowed")
        if payload is INVALID_JSON:
            return _courier.invalid("the body is not valid JSON")
        if method == "POST" and idempotency_key:
            stored = state.idempotent_answers.get(idempotency_key)
            if stored is not None:
                state.duplicates += 1
                return stored
        answer = self._dispatch(method, route, user_id, payload)
        if method == "POST" and idempotency_key and answer.status != 400:
            # As Courier: the first answer, whatever it was, except a validation failure.
            state.idempotent_answers.add(idempotency_key, answer)
        return answer

    def _remember_server_error(
        self,
        action: FaultAction,
        method: str,
        idempotency_key: str | None,
        authorization: bytes | None,
    ) -> None:
        """Keep an injected 5xx as its key's first answer, as Courier keeps a 500 (locked)."""
        state = self.state
        if method != "POST" or not idempotency_key:
            return
        if not _courier.is_authorized(state, authorization):
            return
        answer = error(action.status or 500, "Internal Server Error", "api_error")
        state.idempotent_answers.add(idempotency_key, answer)  # an earlier answer stays

    def _dispatch(self, method: str, route: str, user_id: str | None, payload: Any) -> Answer:
        if route == "POST /inbound/segment":
            return _courier.inbound_segment(self.state, payload)
        if route == "POST /inbound/courier":
            return _courier.inbound_courier(self.state, payload)
        assert user_id is not None  # every other known route is a profile route
        return _courier.profiles(self.state, method, user_id, payload)

    # -- faults -------------------------------------------------------------------

    async def _fault(
        self, action: FaultAction, answer: Answer | None, receive: Receive, send: Send
    ) -> Any:
        if action.kind == "error":
            status = action.status or 500
            if status < 500:  # an injected rejection, worded as Courier words a bad request
                answer_ = error(status, "Injected fault: request rejected", "invalid_request_error")
            else:
                answer_ = error(status, "Internal Server Error", "api_error")
            await _send_answer(send, answer_)
        elif action.kind == "rate_limit":
            headers = ((b"retry-after", action.retry_after.encode()),) if action.retry_after else ()
            body = error(429, "Too Many Requests", "rate_limit_error").body
            await _send_answer(send, Answer(429, body, headers))
        elif action.kind == "slow_body" and answer is not None:
            await self._send_slowly(send, answer)
        else:
            if action.kind == "hang":
                await self._hang(receive)
            _dropping.set(True)
            return _DROP
        return None

    async def _send_slowly(self, send: Send, answer: Answer) -> None:
        headers = [
            (b"content-length", b"%d" % len(answer.body)),
            (b"content-type", b"application/json"),
            *answer.headers,
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        size = -(-len(answer.body) // SLOW_BODY_CHUNKS) or 1
        chunks = [answer.body[i : i + size] for i in range(0, len(answer.body), size)] or [b""]
        with self.state.lock:
            pause = self.state.injector.faults.slow_body_ms / 1000 / len(chunks)
        for chunk in chunks:
            await asyncio.sleep(pause)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _hang(self, receive: Receive) -> None:
        """Wait until the client disconnects or the server stops."""
        closing = self._closing_event()
        stopping = asyncio.ensure_future(closing.wait())
        try:
            while not closing.is_set():
                message = asyncio.ensure_future(receive())
                await asyncio.wait({message, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not message.done():
                    message.cancel()
                    return
                if message.result()["type"] == "http.disconnect":
                    return
        finally:
            stopping.cancel()

    def _closing_event(self) -> asyncio.Event:
        if self._closing is None:
            self._loop = asyncio.get_running_loop()
            self._closing = asyncio.Event()
        return self._closing

    # -- the stand-in's own routes --------------------------------------------------

    async def _dev(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._closing_event()
        method, path = scope["method"], scope["path"]
        if method != "GET" and not _same_origin(scope):
            await _send_answer(send, FORBIDDEN_ORIGIN, close=True)
            return
        body = await _read_body(receive, MAX_DEV_BODY_BYTES)
        if body is None:  # answered before anything changes
            await _send_answer(send, TOO_LARGE_FOR_DEV, close=True)
            return
        if method == "GET" and path == "/":
            events = self.state.recent_events_json(PAGE_EVENTS, preview=PAGE_PREVIEW_CHARS)
            page, csp = render_page(orjson.loads(events))
            headers = [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", b"%d" % len(page)),
                (b"content-security-policy", csp),
                (b"cache-control", b"no-store"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": page})
            return
        answer = self._dev_answer(method, path, scope.get("query_string", b""), body or b"")
        await _send_answer(send, answer)

    def _dev_answer(self, method: str, path: str, query: bytes, body: bytes) -> Answer:
        state = self.state
        if method == "GET":
            if path == "/__dev/events":
                limit, preview = _limit(query, "limit"), _limit(query, "preview")
                return Answer(200, state.recent_events_json(limit, preview=preview))
            if path == "/__dev/profiles":
                return json_answer(200, state.profiles())
            if path == "/__dev/stats":
                return json_answer(200, state.stats())
            if path == "/__dev/sends":
                return json_answer(200, state.sends())
            if path == "/__dev/faults":
                return json_answer(200, state.faults().to_dict())
        elif method == "POST":
            if path == "/__dev/reset":
                state.reset()
                return json_answer(200, {"status": "reset"})
            if path == "/__dev/faults":
                return self._set_faults(body)
        return _courier.NOT_FOUND

    def _set_faults(self, body: bytes) -> Answer:
        data = _parse(body) if body else {}
        if not isinstance(data, dict):
            return _courier.invalid("the body must be a JSON object of fault fields")
        try:
            faults = Faults.from_dict(data)
        except ValueError as exc:
            return _courier.invalid(str(exc))
        self.state.set_faults(faults)
        return json_answer(200, faults.to_dict())


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _outcome(action: FaultAction | None, answer: Answer | None) -> str:
    """How a request ended, for the stats: its status, or the fault's name."""
    if answer is not None and (action is None or action.kind == "slow_body"):
        return str(answer.status)
    if action is not None:
        return str(action.status) if action.status else action.kind
    return "unknown"


def _limit(query: bytes, name: str) -> int | None:
    values = parse_qs(query.decode("latin-1")).get(name)
    return int(values[0]) if values and values[0].isdigit() else None


def _same_origin(scope: Scope) -> bool:
    """Whether a request comes from no page (no `Origin`) or from the stand-in's own."""
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    host = _header(scope, b"host")
    return host is not None and origin.lower() == b"http://" + host.lower()


def create_app(state: DevState, *, host_names: frozenset[str] = frozenset()) -> DevApp:
    """Build the ASGI application serving `state` (for any ASGI server, in-process).

    `host_names`: names besides `localhost` (and any IP address) that clients may
    use in `Host`, such as the name the server is bound to.
    """
    return DevApp(state, host_names=host_names)
