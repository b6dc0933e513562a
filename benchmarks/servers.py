"""The benchmark's server process: a Courier sink, the Courier stand-in, or a Segment sink.

Run as ``python -m benchmarks.servers --kind courier|standin|segment [--tls-cert F --tls-key F]``.

``courier`` and ``segment`` are minimal sinks that do the same little work per request
(read the body, parse its JSON, check the path, count, answer as the real API does), so
that the server, which shares the machine's two cores with the client, costs both
clients alike per request: the real Courier's CPU is not on the user's machine.
``standin`` is the package's Courier stand-in (validation, idempotency store, Data
Logs), which costs some 45-60 us of CPU per request here: against it, a client that
sends one request per event competes with the server for the cores.
It binds 127.0.0.1 on a free port, serves with uvicorn (httptools, uvloop: the same
stack for both kinds; TLS through uvicorn's ``ssl`` when a certificate is given) in a
thread, prints ``{"url": ...}`` and then obeys JSON-line commands on stdin:

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
import asyncio
import contextlib
import importlib.util
import os
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvicorn

from benchmarks._common import API_KEY, cpu_seconds, send_line

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[Any]]

#: Longest a hanging request is held (the stalled-server scenario), seconds.
HANG_LIMIT_S = 300.0
COURIER_PATHS = frozenset({"/inbound/segment", "/inbound/courier"})


class Counter:
    """Events received, and when the count reached its target (thread-safe enough:
    only the server's event loop writes; the control thread reads)."""

    def __init__(self) -> None:
        self.open_now: Callable[[], int] = lambda: 0  # connections open (the server's)
        self.reset(0)

    def reset(self, target: int) -> None:
        self.peak = 0
        self.count = 0
        self.requests = 0
        self.clients: set[Any] = set()
        self.target = target
        self.reached_at: float | None = None
        self.reached = threading.Event()

    def add(self, events: int, client: Any) -> None:
        self.requests += 1
        self.clients.add(client)
        self.peak = max(self.peak, self.open_now())
        self.count += events
        if self.reached_at is None and self.count >= self.target > 0:
            self.reached_at = time.monotonic()
            self.reached.set()


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _hang(receive: Receive) -> None:
    """Hold the request until the client goes away (bounded)."""

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(until_disconnect(), HANG_LIMIT_S)


class _Sink:
    """A minimal server: reads the body, waits the added latency (or hangs), then
    answers what `answer` says and counts its events."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.latency_s = 0.0
        self.hang = False

    def answer(self, scope: Scope, body: bytes) -> tuple[int, bytes, int]:
        """Status, body and events counted for a request."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if self.hang:
            await _hang(receive)
            return
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        status, answer, events = self.answer(scope, body)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        if events:
            self.counter.add(events, scope.get("client"))


class SegmentSink(_Sink):
    """Answers ``POST /v1/batch`` like Segment's API (200 ``{"success": true}``)."""

    def answer(self, scope: Scope, body: bytes) -> tuple[int, bytes, int]:
        if scope["path"] == "/v1/batch" and scope["method"] == "POST":
            return 200, b'{"success":true}', len(orjson.loads(body).get("batch", ()))
        return 404, b'{"message":"not found"}', 0


class CourierSink(_Sink):
    """Answers Courier's endpoints the client uses, as Courier does, doing no more than
    `SegmentSink` per request: ``POST /inbound/courier`` and ``/inbound/segment`` 202,
    ``POST /profiles/{id}`` 200; a wrong key 401; anything else 404."""

    authorization = b"Bearer " + API_KEY.encode()

    def answer(self, scope: Scope, body: bytes) -> tuple[int, bytes, int]:
        path = scope["path"]
        if (b"authorization", self.authorization) not in scope["headers"]:
            return 401, b'{"message":"Unauthorized"}', 0
        if scope["method"] == "POST" and path in COURIER_PATHS:
            message_id = orjson.loads(body).get("messageId", "")
            return 202, orjson.dumps({"messageId": message_id}), 1
        if scope["method"] == "POST" and path.startswith("/profiles/"):
            orjson.loads(body)
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
    courier = CourierStandIn(counter) if args.kind == "standin" else None
    sink: _Sink | None = None
    if args.kind != "standin":
        sink = SegmentSink(counter) if args.kind == "segment" else CourierSink(counter)
    app: App = courier if courier is not None else sink  # type: ignore[assignment]

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    server = uvicorn.Server(_config(app, args.tls_cert, args.tls_key))
    counter.open_now = lambda: len(server.server_state.connections)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        send_line(sys.stdout, {"error": "server did not start"})
        os._exit(2)
    scheme = "https" if args.tls_cert else "http"
    send_line(sys.stdout, {"url": f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"})

    def tls_counts() -> tuple[int, int] | None:
        context = server.config.ssl
        if context is None:
            return None
        stats = context.session_stats()
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
