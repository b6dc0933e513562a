"""The benchmark's server process: a Courier sink, the Courier stand-in, or a Segment sink.

Run as ``python -m benchmarks.servers --kind courier|standin|segment [--tls-cert F --tls-key F]``.

``courier`` and ``segment`` are minimal sinks that do the same little work per request
(read the body, parse its JSON, check the path, count, answer as the real API does), so
that the server, which shares the machine's two cores with the client, costs both
clients alike per request: the real Courier's CPU is not on the user's machine. As
courier-analytics sends one request per event and Segment's library one per hundred,
the server around them is as lean as it can be: `benchmarks._sink`, an HTTP/1.1
protocol on uvloop (no ASGI, no task per request; TLS through uvloop's own, with the
context made as uvicorn made it). ``standin`` is the package's Courier stand-in
(validation, idempotency store, Data Logs), served by uvicorn (httptools, uvloop):
against it, a client that sends one request per event competes with the server for
the cores. The server binds 127.0.0.1 on a free port, serves from a thread, prints
``{"url": ...}`` and then obeys JSON-line commands on stdin:

- ``{"cmd": "reset", "latency_ms": 20, "hang": false, "target": 20100}``: forget
  counts, set the added latency (or hang every request), and the event count to time;
- ``{"cmd": "wait", "timeout": 5}``: wait until ``target`` events were received and
  answer ``{"count", "reached_at", "cpu_s", "requests", "connections", "connections_peak",
  "handshakes", "resumed"}`` (connections: distinct client addresses seen since the
  reset; connections_peak: the most connections open at once when a request was answered;
  handshakes and resumed: TLS handshakes completed since the reset, read from
  OpenSSL's counters of the server's context, ``None`` without TLS);
- ``{"cmd": "stop"}``.

Events are counted on the server side when their request is answered with 2xx:
one per request for Courier, ``len(batch)`` per request for Segment. ``reached_at``
is ``time.monotonic()`` (system-wide on Linux, so comparable with the client's
clock) when the count reached ``target``. The process exits when stdin closes, on
``stop``, or after ``--max-lifetime`` seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from benchmarks._common import API_KEY, cpu_seconds, send_line
from benchmarks._sink import Answer, Counter, SinkServer, tls_context

if TYPE_CHECKING:
    import ssl

    import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[Any]]

COURIER_PATHS = frozenset({"/inbound/segment", "/inbound/courier"})
_COURIER_PATHS = frozenset(path.encode() for path in COURIER_PATHS)


def _json_object(body: bytes) -> dict[str, Any]:
    """The body's JSON object (`ValueError` if it is none: the server answers 400)."""
    value = orjson.loads(body)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


class _Sink:
    """A minimal API: what it answers a request, served by `benchmarks._sink`, or as an
    ASGI app (the in-process sink of `benchmarks.fleet`, which answers at once)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.latency_s = 0.0
        self.hang = False

    def answer(
        self, method: bytes, path: bytes, authorization: bytes | None, body: bytes
    ) -> Answer:
        """Status, body and events counted for a request."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        authorization = dict(scope["headers"]).get(b"authorization")
        method, path = scope["method"].encode(), scope["path"].encode()
        try:
            status, answer, events = self.answer(method, path, authorization, b"".join(chunks))
        except ValueError:
            status, answer, events = 400, b'{"message":"the body is not a JSON object"}', 0
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        if events:
            self.counter.add(events, scope.get("client"))


class SegmentSink(_Sink):
    """Answers ``POST /v1/batch`` like Segment's API (200 ``{"success": true}``)."""

    def answer(
        self, method: bytes, path: bytes, authorization: bytes | None, body: bytes
    ) -> Answer:
        if path == b"/v1/batch" and method == b"POST":
            return 200, b'{"success":true}', len(_json_object(body).get("batch", ()))
        return 404, b'{"message":"not found"}', 0


class CourierSink(_Sink):
    """Answers Courier's endpoints the client uses, as Courier does, doing no more than
    `SegmentSink` per request: ``POST /inbound/courier`` and ``/inbound/segment`` 202,
    ``POST /profiles/{id}`` 200; a wrong key 401; anything else 404."""

    authorization = b"Bearer " + API_KEY.encode()

    def answer(
        self, method: bytes, path: bytes, authorization: bytes | None, body: bytes
    ) -> Answer:
        if authorization != self.authorization:
            return 401, b'{"message":"Unauthorized"}', 0
        if method == b"POST" and path in _COURIER_PATHS:
            message_id = _json_object(body).get("messageId", "")
            return 202, orjson.dumps({"messageId": message_id}), 1
        if method == b"POST" and path.startswith(b"/profiles/"):
            _json_object(body)
            return 200, b'{"status":"SUCCESS"}', 1
        return 404, b'{"message":"not found"}', 0


class CourierStandIn:
    """The package's Courier stand-in, wrapped to count the events it accepts."""

    def __init__(self, counter: Counter) -> None:
        from courier_analytics.devserver import DevState, create_app

        self.counter = counter
        self.state = DevState(api_key=API_KEY)
        self.app = create_app(self.state)

    def configure(self, latency_ms: float, hang: bool) -> None:
        from courier_analytics.devserver import Faults

        self.state.reset()
        self.state.set_faults(Faults(hang_rate=1.0) if hang else Faults(latency_ms=latency_ms))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] != "http" or scope["path"] not in COURIER_PATHS:
            return await self.app(scope, receive, send)
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        result = await self.app(scope, receive, watch)
        if 200 <= status < 300:
            self.counter.add(1, scope.get("client"))
        return result


def _config(app: App, cert: str | None, key: str | None) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        app,
        ssl_certfile=cert,
        ssl_keyfile=key,
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        lifespan="off",
        access_log=False,
        server_header=False,
        date_header=False,
        log_level="warning",
    )


def _serve_standin(
    app: App, sock: socket.socket, args: argparse.Namespace
) -> ssl.SSLContext | None:
    """Serve the stand-in with uvicorn in a thread; its TLS context, if any."""
    import uvicorn

    server = uvicorn.Server(_config(app, args.tls_cert, args.tls_key))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        raise RuntimeError("server did not start")
    context: ssl.SSLContext | None = server.config.ssl
    return context


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("courier", "standin", "segment"), required=True)
    parser.add_argument("--max-lifetime", type=float, default=1800.0)
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve https")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = parser.parse_args(argv)

    watchdog = threading.Timer(args.max_lifetime, os._exit, (3,))
    watchdog.daemon = True
    watchdog.start()

    counter = Counter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    courier: CourierStandIn | None = None
    sink: _Sink | None = None
    try:
        if args.kind == "standin":
            courier = CourierStandIn(counter)
            tls = _serve_standin(courier, sock, args)
        else:
            sink = SegmentSink(counter) if args.kind == "segment" else CourierSink(counter)
            tls = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
            SinkServer(sink, counter).start(sock, tls)
    except Exception as exc:  # told to the harness, which is waiting for a line
        send_line(sys.stdout, {"error": f"server did not start: {exc!r}"})
        os._exit(2)
    scheme = "https" if args.tls_cert else "http"
    send_line(sys.stdout, {"url": f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"})

    def tls_counts() -> tuple[int, int] | None:
        if tls is None:
            return None
        stats = tls.session_stats()
        return stats["accept_good"], stats["hits"]

    cpu_at_reset = cpu_seconds()
    tls_at_reset = tls_counts()
    for line in sys.stdin:  # EOF (the harness went away) ends the process
        command = orjson.loads(line)
        cmd = command["cmd"]
        if cmd == "reset":
            latency_ms, hang = float(command.get("latency_ms", 0)), bool(command.get("hang"))
            if courier is not None:
                courier.configure(latency_ms, hang)
            if sink is not None:
                sink.latency_s, sink.hang = latency_ms / 1000, hang
            counter.reset(int(command.get("target", 0)))
            cpu_at_reset = cpu_seconds()
            tls_at_reset = tls_counts()
            send_line(sys.stdout, {"ok": True})
        elif cmd == "wait":
            counter.reached.wait(float(command.get("timeout", 5)))
            tls_now = tls_counts()
            handshakes = resumed = None
            if tls_now is not None and tls_at_reset is not None:
                handshakes = tls_now[0] - tls_at_reset[0]
                resumed = tls_now[1] - tls_at_reset[1]
            send_line(
                sys.stdout,
                {
                    "count": counter.count,
                    "requests": counter.requests,
                    "reached_at": counter.reached_at,
                    "cpu_s": cpu_seconds() - cpu_at_reset,
                    "connections": len(counter.clients),
                    "connections_peak": counter.peak,
                    "handshakes": handshakes,
                    "resumed": resumed,
                },
            )
        elif cmd == "stop":
            break
    os._exit(0)


if __name__ == "__main__":
    main()
