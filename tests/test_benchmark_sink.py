"""The benchmark's sinks (`benchmarks/_sink.py`, `benchmarks/servers.py`) speak HTTP/1.1 as
both clients need: whole requests however they arrive, answers in order, and refusals
of what they cannot read. Served for real on 127.0.0.1, read with plain sockets.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _sink
from benchmarks._sink import Counter, SinkServer
from benchmarks.servers import CourierSink, SegmentSink

ROOT = Path(__file__).resolve().parent.parent
KEY = b"Authorization: Bearer bench-key\r\n"
#: Seconds a read may wait before the test fails (a bound, never a synchronisation).
LIMIT = 30.0


def request(body: bytes = b'{"messageId":"m1"}', path: bytes = b"/inbound/courier", *,
            fields: bytes = KEY) -> bytes:  # fmt: skip
    """A whole request as courier-analytics writes one."""
    return (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path, fields, len(body), body)
    )


class Reader:
    """Reads whole answers (head and body) from a connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def answer(self) -> tuple[int, dict[bytes, bytes], bytes]:
        """Status, fields (names in lower case) and body of the next answer."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._more(), f"closed mid-answer: {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        line, *lines = head.split(b"\r\n")
        fields = {}
        for field in lines:
            name, _, value = field.partition(b":")
            fields[name.lower()] = value.strip()
        length = int(fields.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            assert self._more(), "closed mid-body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(line.split(b" ")[1]), fields, body

    def closed(self) -> bool:
        """Whether the server closes the connection with nothing more to read."""
        return not self.buffer and not self._more()


class Served:
    """A sink served on 127.0.0.1 from its own thread."""

    def __init__(self, sink: Any, counter: Counter) -> None:
        self.sink, self.counter = sink, counter
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)
        self.port = listening.getsockname()[1]
        self.server = SinkServer(sink, counter)
        self.server.start(listening, None)
        self.clients: list[socket.socket] = []

    def connect(self) -> tuple[socket.socket, Reader]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=LIMIT)
        self.clients.append(sock)
        return sock, Reader(sock)

    def close(self) -> None:
        for sock in self.clients:
            sock.close()
        self.server.close()


@pytest.fixture
def courier() -> Iterator[Served]:
    counter = Counter()
    served = Served(CourierSink(counter), counter)
    yield served
    served.close()


def test_a_request_split_across_reads_is_answered_once_whole(courier: Served) -> None:
    """A request written a byte at a time is answered once, as one request."""
    sock, reader = courier.connect()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    whole = request()
    for at in range(len(whole)):
        sock.sendall(whole[at : at + 1])
    assert reader.answer() == (
        202,
        {b"content-type": b"application/json", b"content-length": b"18"},
        b'{"messageId":"m1"}',
    )
    assert (courier.counter.count, courier.counter.requests) == (1, 1)


def test_requests_in_one_write_are_answered_in_order_though_the_first_waits_longest() -> None:
    """Several requests in one read: each answered, in order, the first's latency the longest."""

    class Slowing(CourierSink):
        latencies = iter((0.2, 0.1, 0.0))

        @property  # type: ignore[override]
        def latency_s(self) -> float:
            return next(self.latencies)

        @latency_s.setter
        def latency_s(self, value: float) -> None:
            pass

    counter = Counter()
    served = Served(Slowing(counter), counter)
    try:
        sock, reader = served.connect()
        sock.sendall(b"".join(request(b'{"messageId":"m%d"}' % i) for i in range(3)))
        bodies = [reader.answer()[2] for _ in range(3)]
        assert bodies == [b'{"messageId":"m%d"}' % i for i in range(3)]
    finally:
        served.close()


def test_a_chunked_body_is_refused_with_411_and_the_connection_closes(courier: Served) -> None:
    """`Transfer-Encoding: chunked` without a length: 411, then the connection closes."""
    sock, reader = courier.connect()
    sock.sendall(
        b"POST /inbound/courier HTTP/1.1\r\nHost: x\r\n" + KEY
        + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + request()
    )  # fmt: skip
    status, fields, _ = reader.answer()
    assert (status, fields[b"connection"]) == (411, b"close")
    assert reader.closed()
    assert courier.counter.count == 0


def test_a_length_and_a_transfer_encoding_together_are_refused_with_400(courier: Served) -> None:
    """Both `Content-Length` and `Transfer-Encoding`: 400 (the body's end is ambiguous)."""
    sock, reader = courier.connect()
    sock.sendall(request(fields=KEY + b"Transfer-Encoding: chunked\r\n"))
    assert reader.answer()[0] == 400
    assert reader.closed()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST /inbound/courier\r\n\r\n", 400),
        (b"POST /inbound/courier HTTP/2.0\r\n\r\n", 505),
        (b"POST /inbound/courier HTTP/1.1\r\nContent-Length: x1\r\n\r\n", 400),
        (b"POST /inbound/courier HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /inbound/courier HTTP/1.1\r\n Folded: x\r\n\r\n", 400),
        (b"POST /inbound/courier HTTP/1.1\r\nExpect: teapot\r\n\r\n", 417),
        (b"POST /inbound/courier HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"POST /inbound/courier HTTP/1.1\r\nX: " + b"x" * _sink.MAX_HEAD, 431),
    ],
)
def test_a_request_the_server_cannot_read_is_refused_and_the_connection_closes(
    courier: Served, head: bytes, status: int
) -> None:
    """A malformed head is answered with its status, and nothing after it is read."""
    sock, reader = courier.connect()
    sock.sendall(head + (b"" if status == 431 else request()))
    assert reader.answer()[0] == status
    assert reader.closed()
    assert courier.counter.count == 0


def test_expect_100_continue_is_answered_before_the_body_comes(courier: Served) -> None:
    """`Expect: 100-continue`: 100 once the head is read, the answer once the body is."""
    sock, reader = courier.connect()
    whole = request(fields=KEY + b"Expect: 100-continue\r\n")
    head_end = whole.index(b"\r\n\r\n") + 4
    sock.sendall(whole[:head_end])
    assert reader.answer()[0] == 100
    sock.sendall(whole[head_end:])
    assert reader.answer()[0] == 202


def test_connection_close_is_answered_then_closed(courier: Served) -> None:
    """`Connection: close`: the answer says so, the connection closes, later bytes unread."""
    sock, reader = courier.connect()
    sock.sendall(request(fields=KEY + b"Connection: close\r\n") + request())
    status, fields, _ = reader.answer()
    assert (status, fields[b"connection"]) == (202, b"close")
    assert reader.closed()
    assert courier.counter.count == 1


@pytest.mark.parametrize(
    ("whole", "status", "body"),
    [
        (request(b"[1]"), 400, b'{"message":"the body is not a JSON object"}'),
        (request(b"{"), 400, b'{"message":"the body is not a JSON object"}'),
        (request(fields=b"Authorization: Bearer other\r\n"), 401, b'{"message":"Unauthorized"}'),
        (request(fields=b""), 401, b'{"message":"Unauthorized"}'),
        (request(path=b"/send"), 404, b'{"message":"not found"}'),
        (request(b'{"profile":{}}', b"/profiles/u1?x=1"), 200, b'{"status":"SUCCESS"}'),
    ],
)
def test_courier_answers_as_before(courier: Served, whole: bytes, status: int, body: bytes) -> None:
    """Courier's sink: 202/200 counted, 400 for a body that is no object, 401, 404."""
    sock, reader = courier.connect()
    sock.sendall(whole + request())
    assert reader.answer()[::2] == (status, body)
    assert reader.answer()[0] == 202  # the connection stays open
    assert courier.counter.count == 1 + (status == 200)


def test_segment_counts_the_events_of_a_batch() -> None:
    """Segment's sink answers `POST /v1/batch` 200 and counts `len(batch)` events."""
    counter = Counter()
    counter.reset(target=3)
    served = Served(SegmentSink(counter), counter)
    try:
        sock, reader = served.connect()
        sock.sendall(request(b'{"batch":[{},{},{}]}', b"/v1/batch", fields=b""))
        assert reader.answer()[::2] == (200, b'{"success":true}')
        assert (counter.count, counter.requests, counter.reached.is_set()) == (3, 1, True)
    finally:
        served.close()


def test_an_answered_event_counts_with_its_time_connection_and_client(courier: Served) -> None:
    """An answer after the latency counts its event: the count, when, the peak, the client."""
    courier.sink.latency_s = 0.05
    courier.counter.reset(target=1)
    sock, reader = courier.connect()
    sock.sendall(request())
    assert reader.answer()[0] == 202
    assert courier.counter.reached.wait(LIMIT)
    assert courier.counter.reached_at is not None
    assert (courier.counter.count, courier.counter.peak, len(courier.counter.clients)) == (1, 1, 1)


def test_a_hanging_request_gets_no_answer_and_is_closed_at_the_limit(
    courier: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hang`: no answer at all; the connection closes at `HANG_LIMIT_S`, nothing counted."""
    monkeypatch.setattr(_sink, "HANG_LIMIT_S", 0.1)
    courier.sink.hang = True
    sock, reader = courier.connect()
    sock.sendall(request())
    assert reader.closed()
    assert courier.counter.count == 0


def test_an_idle_connection_is_closed_after_the_keep_alive(
    courier: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection idle for `KEEP_ALIVE_S` is closed by the server, as uvicorn did."""
    monkeypatch.setattr(_sink, "KEEP_ALIVE_S", 1)
    sock, reader = courier.connect()
    sock.sendall(request())
    assert reader.answer()[0] == 202
    assert reader.closed()


def test_the_process_serves_tls_and_reports_what_it_saw(tmp_path: Path) -> None:
    """`python -m benchmarks.servers --kind courier` over TLS: the `wait` answer's fields."""
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    command = [sys.executable, "-m", "benchmarks.servers", "--kind", "courier",
               "--tls-cert", str(cert_file), "--tls-key", str(key_file)]  # fmt: skip
    with subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None

        def say(**command: Any) -> dict[str, Any]:
            process.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
            answer: dict[str, Any] = json.loads(process.stdout.readline())  # type: ignore[union-attr]
            return answer

        url = json.loads(process.stdout.readline())["url"]
        assert url.startswith("https://127.0.0.1:")
        assert say(cmd="reset", latency_ms=0, target=2) == {"ok": True}
        context = ssl.create_default_context()
        ca.configure_trust(context)
        port = int(url.rsplit(":", 1)[1])
        with context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=LIMIT),
            server_hostname="127.0.0.1",
        ) as sock:
            sock.sendall(request() + request(b'{"messageId":"m2"}'))
            reader = Reader(sock)  # type: ignore[arg-type]
            assert [reader.answer()[0] for _ in range(2)] == [202, 202]
        seen = say(cmd="wait", timeout=LIMIT)
        assert {key: seen[key] for key in ("count", "requests", "connections")} == {
            "count": 2,
            "requests": 2,
            "connections": 1,
        }
        assert (seen["connections_peak"], seen["handshakes"], seen["resumed"]) == (1, 1, 0)
        assert seen["cpu_s"] > 0
        assert seen["reached_at"] > 0
        process.stdin.close()  # EOF: the process exits by itself
        assert process.wait(LIMIT) == 0


@pytest.mark.parametrize(
    "head",
    [
        request(),
        request(fields=b"authorization:Bearer bench-key  \r\nconnection: Keep-Alive, Close\r\n"),
        request(b"{}", b"/v1/batch?x=1", fields=b"Accept-Encoding: gzip, deflate\r\n"),
    ],
)
def test_the_usual_head_reads_as_it_does_line_by_line(head: bytes) -> None:
    """The one-match reading of a usual head gives what the line-by-line reading gives."""
    end = head.index(b"\r\n\r\n")
    usual = _sink.Request(head, 0, end)
    any_head = _sink.Request.__new__(_sink.Request)
    any_head._read_any(head[:end].split(b"\r\n"))
    assert {name: getattr(usual, name) for name in _sink.Request.__slots__} == {
        name: getattr(any_head, name) for name in _sink.Request.__slots__
    }


def test_the_courier_sink_answers_as_an_asgi_app_too() -> None:
    """As an ASGI app (the fleet benchmark's in-process sink) it answers and counts alike."""
    import asyncio

    import httpx

    counter = Counter()
    sink = CourierSink(counter)

    async def send() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=sink)
        async with httpx.AsyncClient(transport=transport, base_url="http://sink") as client:
            headers = {"Authorization": "Bearer bench-key"}
            return [
                await client.post("/inbound/courier", json={"messageId": "m1"}, headers=headers),
                await client.post("/inbound/courier", content=b"[]", headers=headers),
                await client.post("/inbound/courier", json={}),
            ]

    answers = asyncio.run(send())
    assert [(answer.status_code, answer.content) for answer in answers] == [
        (202, b'{"messageId":"m1"}'),
        (400, b'{"message":"the body is not a JSON object"}'),
        (401, b'{"message":"Unauthorized"}'),
    ]
    assert (counter.count, counter.requests) == (1, 1)
