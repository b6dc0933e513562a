"""One client in its own process, so CPU and RSS readings are that client's alone.

Run as ``python -m benchmarks.client '<json spec>'``; prints one JSON line of readings.
Spec fields: ``lib`` (``courier``, ``segment``, ``trycourier``, ``floor``), ``mode``
(``deliver``, ``stall``, ``inline``), ``url``, ``n``, ``warmup``, ``payload``
(``small``/``kb``), ``users`` (how many users the tracks are spread over; 1 is one
busy user), ``timing`` (``each``: also time every call and report percentiles),
``max_in_flight`` and ``event_loop`` (courier only; ``None`` keeps the client's
default), ``settle_s``,
``courier_src`` (a directory holding another ``courier_analytics`` to measure),
``connections`` (floor only), ``noop_plugins`` (courier only: how many no-op
plugins to register), ``in_scope`` (courier only: each call made inside its own
``analytics.scope(user_id=...)`` instead of passing ``user_id=``), ``otel`` (courier
only: metrics recorded through an OpenTelemetry SDK meter provider). An ``https://``
URL is trusted through the CA the harness names in ``SSL_CERT_FILE`` /
``REQUESTS_CA_BUNDLE`` (this process only).

- ``deliver``: ``warmup`` tracks and a flush, then ``n`` tracks timed in the calling
  thread while the background worker delivers, then a flush. Reports the caller's
  wall and CPU time per call, ``t0`` (``time.monotonic()`` before the first timed
  call, compared with the server's receipt time) and process CPU over the whole phase.
- ``stall``: ``n`` tracks against a server that never answers, ``settle_s`` of waiting,
  then RSS (current and peak). The process ends with ``os._exit`` (nothing to flush).
- ``inline``: ``n`` blocking ``trycourier`` ``inbound.track_event`` calls.
- ``sustain``: as ``deliver``, but the ``n`` tracks are made at a steady ``rate``
  (events per second) as a busy application makes them: every millisecond or so,
  the calls that fell due. Also reports ``sockets_end``: the sockets the process
  holds once flushed (the connections it keeps).

The ``floor`` is not a library: the least work Python can do for this job. Its
``n`` requests are built before the clock starts (the same body and headers
courier-analytics sends); the timed part writes them to ``connections``
keep-alive connections, one request at a time per connection, and reads each
answer just far enough to know it is complete (``select`` on blocking sockets,
``ssl`` for https). Its CPU per event is the bar for a client's delivery work.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import socket
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from benchmarks._common import API_KEY, PAYLOADS, USERS, cpu_seconds, proc_status_kb, send_line

QUEUE_SIZE = 1_000_000
#: The producer's tick in ``sustain`` mode (seconds): each tick makes the calls due.
PACE_S = 0.001
FLUSH_TIMEOUT_S = 600.0

Track = Callable[[int], Any]

# Folders this process made (spool files), removed at its end.
_FOLDERS: list[str] = []


def _users(spec: dict[str, Any]) -> list[str]:
    return [f"user-{i}" for i in range(int(spec.get("users") or USERS))]


def _courier(spec: dict[str, Any]) -> tuple[Track, Callable[[], None]]:
    from courier_analytics import Client

    options: dict[str, Any] = {}
    if spec.get("max_in_flight"):
        options["max_in_flight"] = int(spec["max_in_flight"])
    if spec.get("event_loop"):
        options["event_loop"] = spec["event_loop"]
    if spec.get("spool"):  # a fresh spool file, removed before the process ends
        folder = tempfile.mkdtemp(prefix="bench-spool-")
        _FOLDERS.append(folder)
        options["spool"] = os.path.join(folder, "spool.db")
    if spec.get("otel"):  # metrics recorded by the OpenTelemetry SDK, read by no one
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        options["meter_provider"] = MeterProvider(metric_readers=[InMemoryMetricReader()])
    client = Client(
        api_key=API_KEY,
        base_url=spec["url"],
        max_queue_size=QUEUE_SIZE,
        flush_at_exit=False,
        **options,
    )
    properties = PAYLOADS[spec["payload"]]
    users = _users(spec)
    count = len(users)
    for n in range(int(spec.get("noop_plugins") or 0)):  # the cost of a plugin's dispatch
        client.register(_NoopPlugin(f"noop-{n}"))

    def track(i: int) -> Any:
        return client.track("Order Completed", properties, user_id=users[i % count])

    if spec.get("in_scope"):  # the user from a request scope instead of user_id=
        from courier_analytics import scope

        def track(i: int) -> Any:
            with scope(user_id=users[i % count]):
                return client.track("Order Completed", properties)

    def flush() -> None:
        client.flush(FLUSH_TIMEOUT_S)

    return track, flush


class _NoopPlugin:
    """A before plugin that passes every message on unchanged."""

    type = "before"

    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, message: dict[str, Any]) -> dict[str, Any]:
        return message


def _segment(spec: dict[str, Any]) -> tuple[Track, Callable[[], None]]:
    from segment.analytics import Client

    client = Client(write_key=API_KEY, host=spec["url"], max_queue_size=QUEUE_SIZE)
    properties = PAYLOADS[spec["payload"]]
    users = _users(spec)
    count = len(users)

    def track(i: int) -> Any:
        return client.track(users[i % count], "Order Completed", properties)

    def flush() -> None:
        client.flush()  # joins the queue: returns once every batch was answered

    return track, flush


def _trycourier(spec: dict[str, Any]) -> tuple[Track, Callable[[], None]]:
    from courier import Courier

    client = Courier(api_key=API_KEY, base_url=spec["url"])
    properties = PAYLOADS[spec["payload"]]
    users = [f"user-{i}" for i in range(USERS)]

    def track(i: int) -> Any:
        return client.inbound.track_event(
            event="Order Completed",
            message_id=str(uuid.uuid4()),
            properties=properties,
            type="track",
            user_id=users[i % USERS],
        )

    return track, lambda: None


MAKERS = {"courier": _courier, "segment": _segment, "trycourier": _trycourier}


def _timed_calls(track: Track, start: int, n: int) -> tuple[float, float, float]:
    """(t0, wall seconds, calling-thread CPU seconds) for n calls."""
    cpu0 = time.thread_time()
    t0 = time.monotonic()
    p0 = time.perf_counter()
    for i in range(start, start + n):
        track(i)
    wall = time.perf_counter() - p0
    return t0, wall, time.thread_time() - cpu0


def _each_call(track: Track, start: int, n: int) -> tuple[float, float, float, list[int]]:
    """Like ``_timed_calls``, and the wall time of every call (ns): for percentiles.

    Costs two ``perf_counter_ns`` calls and an append per call for both clients alike.
    """
    durations: list[int] = []
    record, clock = durations.append, time.perf_counter_ns
    cpu0 = time.thread_time()
    t0 = time.monotonic()
    p0 = time.perf_counter()
    for i in range(start, start + n):
        before = clock()
        track(i)
        record(clock() - before)
    wall = time.perf_counter() - p0
    return t0, wall, time.thread_time() - cpu0, durations


def _paced_calls(track: Track, start: int, n: int, rate: float) -> tuple[float, float, float]:
    """Like ``_timed_calls``, the calls made at ``rate`` per second (due ones each tick)."""
    cpu0 = time.thread_time()
    t0 = time.monotonic()
    p0 = time.perf_counter()
    made = 0
    while made < n:
        due = min(n, int((time.monotonic() - t0) * rate) + 1)
        for i in range(start + made, start + due):
            track(i)
        made = due
        time.sleep(PACE_S)
    wall = time.perf_counter() - p0
    return t0, wall, time.thread_time() - cpu0


def _sockets() -> int:
    """Sockets this process holds open (Linux; 0 where /proc is missing)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    count = 0
    for name in names:
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
    return count


def _percentile(sorted_ns: list[int], fraction: float) -> float:
    """The value below which ``fraction`` of the calls fall, in microseconds."""
    index = min(len(sorted_ns) - 1, int(fraction * len(sorted_ns)))
    return sorted_ns[index] / 1000


# ------------------------------------------------------------------------ the floor


def _floor_requests(spec: dict[str, Any], count: int) -> list[bytes]:
    """Whole HTTP/1.1 requests as courier-analytics sends tracks on its default route."""
    from courier_analytics import Options

    route = Options(api_key=API_KEY).route
    url = urlsplit(spec["url"])
    users = _users(spec)
    properties = PAYLOADS[spec["payload"]]
    path = "/inbound/courier" if route == "api" else "/inbound/segment"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        "Accept: application/json\r\nUser-Agent: floor\r\n"
    ).encode()
    requests = []
    for i in range(count):
        user, message_id = users[i % len(users)], str(uuid.uuid4())
        if route == "api":
            message: dict[str, Any] = {
                "event": "Segment-TrackEvent:Order Completed",
                "messageId": message_id,
                "type": "track",
                "properties": properties,
                "userId": user,
            }
        else:
            message = {
                "type": "track",
                "event": "Order Completed",
                "userId": user,
                "properties": properties,
                "messageId": message_id,
                "timestamp": "2026-11-28T12:00:00.000000+00:00",
            }
        body = json.dumps(message, separators=(",", ":")).encode()
        requests.append(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return requests


def _floor_connect(url: Any, context: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection((url.hostname, url.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if context is not None:
        return context.wrap_socket(sock, server_hostname=url.hostname)
    return sock


def _floor_connections(spec: dict[str, Any], count: int) -> list[socket.socket]:
    url = urlsplit(spec["url"])
    context = ssl.create_default_context() if url.scheme == "https" else None
    return [_floor_connect(url, context) for _ in range(count)]


def _floor_send(requests: list[bytes], connections: list[socket.socket]) -> None:
    """Write the requests over keep-alive connections and read every answer."""
    selector = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytes] = {}
    pending = iter(requests)
    for sock in connections[: len(requests)]:
        selector.register(sock, selectors.EVENT_READ)
        buffers[sock] = b""
        sock.sendall(next(pending))
    answered = 0
    while answered < len(requests):
        for key, _ in selector.select():
            sock = key.fileobj  # type: ignore[assignment]
            data = sock.recv(65536)  # type: ignore[attr-defined]
            if not data:
                raise RuntimeError("the server closed a connection")
            buffer = buffers[sock] + data
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                buffers[sock] = buffer
                continue
            at = buffer.find(b"content-length:", 0, end)
            length = int(buffer[at + 15 : buffer.find(b"\r\n", at)])
            if len(buffer) < end + 4 + length:
                buffers[sock] = buffer
                continue
            if not buffer.startswith(b"HTTP/1.1 2"):
                raise RuntimeError(f"the server answered {buffer[:40]!r}")
            buffers[sock] = b""
            answered += 1
            request = next(pending, None)
            if request is not None:
                sock.sendall(request)  # type: ignore[attr-defined]
    selector.close()


def _floor_paced(
    requests: list[bytes],
    connections: list[socket.socket],
    rate: float,
    reconnect: Callable[[], socket.socket],
) -> None:
    """Like ``_floor_send``, each request written once due at ``rate`` per second, on
    an idle connection (or, with none idle, as soon as an answer frees one). A
    connection the server closed while idle (its keep-alive timeout) is replaced."""
    selector = selectors.DefaultSelector()
    idle = list(connections)
    buffers: dict[socket.socket, bytes] = dict.fromkeys(connections, b"")
    carrying: dict[socket.socket, bytes] = {}
    t0 = time.monotonic()
    made = answered = 0
    n = len(requests)
    while answered < n:
        due = min(n, int((time.monotonic() - t0) * rate) + 1)
        while made < due and idle:
            # Watched only while a request is out: an idle TLS connection can be
            # readable (session tickets) with no answer to read.
            sock = idle.pop()
            sock.sendall(requests[made])
            carrying[sock] = requests[made]
            selector.register(sock, selectors.EVENT_READ)
            made += 1
        timeout = None if made < due or made == n else max(0.0, t0 + made / rate - time.monotonic())
        for key, _ in selector.select(timeout):
            sock = key.fileobj  # type: ignore[assignment]
            data = sock.recv(65536)  # type: ignore[attr-defined]
            if not data:  # closed by the server while it was idle: the request goes again
                selector.unregister(sock)
                sock.close()  # type: ignore[attr-defined]
                fresh = reconnect()
                fresh.sendall(carrying[sock])  # type: ignore[index]
                carrying[fresh], buffers[fresh] = carrying.pop(sock), b""  # type: ignore[call-overload]
                selector.register(fresh, selectors.EVENT_READ)
                continue
            buffer = buffers[sock] + data
            end = buffer.find(b"\r\n\r\n")
            at = buffer.find(b"content-length:", 0, end) if end >= 0 else -1
            if at < 0 or len(buffer) < end + 4 + int(buffer[at + 15 : buffer.find(b"\r\n", at)]):
                buffers[sock] = buffer
                continue
            buffers[sock] = b""
            answered += 1
            selector.unregister(sock)
            idle.append(sock)  # type: ignore[arg-type]
    selector.close()


def run_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The floor: prebuilt requests on keep-alive connections, nothing else.

    The connections are opened (and warmed up) before the clock starts: the floor
    is the cost per event of a client that already has them.
    """
    n, warmup = int(spec["n"]), int(spec.get("warmup", 0))
    requests = _floor_requests(spec, warmup + n)
    connections = _floor_connections(spec, min(n, int(spec.get("connections") or 32)))
    if warmup:
        _floor_send(requests[:warmup], connections)
    cpu0 = cpu_seconds()
    t0 = time.monotonic()
    if spec["mode"] == "sustain":
        url = urlsplit(spec["url"])
        context = ssl.create_default_context() if url.scheme == "https" else None
        reconnect = lambda: _floor_connect(url, context)  # noqa: E731
        _floor_paced(requests[warmup:], connections, float(spec["rate"]), reconnect)
    else:
        _floor_send(requests[warmup:], connections)
    result = {
        "n": n,
        "t0": t0,
        "t_flushed": time.monotonic(),
        "cpu_s": cpu_seconds() - cpu0,
        "rss_peak_kb": proc_status_kb("VmHWM"),
    }
    if spec["mode"] == "sustain":
        result["sockets_end"] = len(connections)
    for sock in connections:
        sock.close()
    return result


def run(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["lib"] == "floor":
        return run_floor(spec)
    track, flush = MAKERS[spec["lib"]](spec)
    n, warmup, mode = int(spec["n"]), int(spec.get("warmup", 0)), spec["mode"]
    rss_base_kb = proc_status_kb("VmRSS")
    if warmup:
        for i in range(warmup):
            track(i)
        flush()
    cpu0 = cpu_seconds()
    durations: list[int] = []
    if spec.get("timing") == "each":
        t0, wall, thread_cpu, durations = _each_call(track, warmup, n)
    elif mode == "sustain":
        t0, wall, thread_cpu = _paced_calls(track, warmup, n, float(spec["rate"]))
    else:
        t0, wall, thread_cpu = _timed_calls(track, warmup, n)
    result: dict[str, Any] = {
        "n": n,
        "t0": t0,
        "caller_us": wall / n * 1e6,
        "caller_cpu_us": thread_cpu / n * 1e6,
    }
    if durations:
        durations.sort()
        for name, fraction in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
            result[f"caller_{name}_us"] = _percentile(durations, fraction)
        result["caller_max_us"] = durations[-1] / 1000
    if mode == "stall":
        time.sleep(float(spec.get("settle_s", 1.0)))
        result.update(
            rss_base_kb=rss_base_kb,
            rss_kb=proc_status_kb("VmRSS"),
            rss_peak_kb=proc_status_kb("VmHWM"),
        )
        return result
    flush()
    result.update(
        t_flushed=time.monotonic(),
        cpu_s=cpu_seconds() - cpu0,
        rss_peak_kb=proc_status_kb("VmHWM"),
    )
    if mode == "sustain":
        result["sockets_end"] = _sockets()
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("courier_src"):  # measure another copy of courier_analytics (a baseline)
        sys.path.insert(0, spec["courier_src"])
    profile = spec.get("profile")
    if profile:  # cProfile of the calling thread only; prefer py-spy for the worker
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(run, spec)
        profiler.dump_stats(profile)
    else:
        result = run(spec)
    if spec["lib"] == "courier":
        result["courier_file"] = sys.modules["courier_analytics"].__file__
    send_line(sys.stdout, result)
    sys.stderr.flush()
    for folder in _FOLDERS:  # os._exit runs no clean-up of its own
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)  # skip the clients' exit hooks: a stalled server would make them wait


if __name__ == "__main__":
    main()
