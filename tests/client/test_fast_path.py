"""The callback path: a request started on an idle connection, its answer handled by callback."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from typing import Any

import httpx

from courier_analytics import Client, NotDeliveredError
from courier_analytics._http11 import Http11Pool, _Connection
from courier_analytics._routes import Request
from courier_analytics._transport import NativeSender, Response

from .fakes import Reports
from .test_http11 import OK, RawServer, run

REQUEST = Request("/inbound/courier", b'{"n":1}')


class Answers:
    """Collects what a sender's `start` hands its callback, and says when it came."""

    def __init__(self) -> None:
        self.calls: list[tuple[Response | None, httpx.TransportError | None]] = []
        self.came = asyncio.Event()

    def __call__(self, response: Response | None, error: httpx.TransportError | None) -> None:
        self.calls.append((response, error))
        self.came.set()


async def warmed(base_url: str, timeout: float = 5.0) -> NativeSender:
    """A native sender with one idle keep-alive connection."""
    sender = NativeSender(base_url, "key", timeout=timeout, max_connections=4)
    assert (await sender.send(REQUEST)).status == 202
    return sender


async def start_once(base_url: str, answer_timeout: float | None = None) -> list[Any]:
    """Start one request on a warmed sender's idle connection; what its callback got.

    `answer_timeout` times the answer only, once the connection is open (see test_http11).
    """
    sender = await warmed(base_url, timeout=60)
    if answer_timeout is not None:
        sender._pool._timeout = answer_timeout
    answers = Answers()
    try:
        sender.start(REQUEST, answers)
        assert answers.calls == []  # never from within start
        await asyncio.wait_for(answers.came.wait(), 60)
        return answers.calls
    finally:
        await sender.aclose()


def test_start_opens_a_connection_when_none_is_idle() -> None:
    """With no connection open, start opens one and sends the request on it."""
    server = RawServer(lambda n, raw: OK)

    async def scenario(base_url: str) -> list[Any]:
        sender = NativeSender(base_url, "key", timeout=5, max_connections=4)
        answers = Answers()
        try:
            sender.start(REQUEST, answers)
            assert answers.calls == []  # never from within start
            await asyncio.wait_for(answers.came.wait(), 60)
            return answers.calls
        finally:
            await sender.aclose()

    calls = run(server, scenario)
    assert [(response.status, error) for response, error in calls] == [(202, None)]
    assert (len(server.requests), server.connections) == (1, 1)


def test_start_answers_by_callback_on_the_idle_connection() -> None:
    """The answer comes to the callback from the loop, not from start, on the same connection."""
    server = RawServer(lambda n, raw: OK)

    calls = run(server, start_once)
    assert [(response.status, error) for response, error in calls] == [(202, None)]
    assert server.connections == 1


def test_a_keep_alive_connection_closed_without_an_answer_is_replaced_silently() -> None:
    """A request whose reused connection closes unanswered goes out once more on a new one."""
    server = RawServer(lambda n, raw: None if n == 2 else OK)  # 2nd: closed, unanswered

    calls = run(server, start_once)
    assert [(response.status, error) for response, error in calls] == [(202, None)]
    assert (len(server.requests), server.connections) == (3, 2)  # resent on a new connection


def test_no_answer_by_the_deadline_ends_the_request_with_read_timeout() -> None:
    """A started request whose answer never comes gets ReadTimeout, and its connection closes."""
    server = RawServer(lambda n, raw: OK if n == 1 else b"")

    calls = run(server, lambda base_url: start_once(base_url, answer_timeout=0.05))
    assert [(response, type(error)) for response, error in calls] == [(None, httpx.ReadTimeout)]


class FakeTransport(asyncio.Transport):
    """Takes writes and aborts; nothing goes anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True


def test_the_deadline_timer_follows_the_request_running_when_it_fires() -> None:
    """A timer armed for an earlier request re-arms for a later one still within its deadline."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        connection, transport = _Connection(), FakeTransport()
        connection.connection_made(transport)
        seen: list[Any] = []
        connection.start(b"one", 60, lambda c, r, e: seen.append(e))
        timer = connection._timer
        assert timer is not None
        connection._deadline = loop.time() + 30  # as if a later request had started
        connection._check_deadline()  # the timer fires: not yet this request's deadline
        assert seen == []
        assert not transport.aborted
        assert connection._timer is not None
        assert connection._timer is not timer
        connection._deadline = loop.time() - 1
        connection._check_deadline()
        assert [type(error) for error in seen] == [httpx.ReadTimeout]
        assert transport.aborted
        assert connection._timer is None

    asyncio.run(scenario())


def test_an_idle_connection_keeps_no_timer_after_its_deadline_passes() -> None:
    """Once answered, the connection's timer ends when it fires and nothing is timed out."""

    async def scenario() -> None:
        connection, transport = _Connection(), FakeTransport()
        connection.connection_made(transport)
        seen: list[Any] = []
        connection.start(b"one", 60, lambda c, r, e: seen.append((r, e)))
        connection.data_received(OK)
        connection._check_deadline()
        assert [(r.status, e) for r, e in seen] == [(202, None)]
        assert connection._timer is None
        assert not transport.aborted

    asyncio.run(scenario())


class LoopbackServer(socketserver.ThreadingTCPServer):
    """Answers each request with 202 on keep-alive connections, but from request number
    `hang_from` on: those it holds unanswered until `release` is set."""

    request_queue_size = 256  # the client opens many connections at once
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hang_from: int | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _LoopbackHandler)
        self.hang_from = hang_from
        self.requests = 0
        self.hanging = threading.Event()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _LoopbackHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: LoopbackServer = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        buffer = b""
        while data := sock.recv(65536):
            buffer += data
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) < length:
                    break
                buffer = rest[length:]
                server.requests += 1
                if server.hang_from is not None and server.requests >= server.hang_from:
                    server.hanging.set()
                    server.release.wait(60)
                    return
                sock.sendall(OK)


def test_a_message_in_flight_when_the_client_shuts_down_is_reported_once() -> None:
    """A message sent by callback and unanswered at shutdown is reported not delivered, once."""
    server = LoopbackServer(hang_from=2)  # the first answered, the later ones never
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    reports = Reports()
    client = Client(api_key="k", base_url=server.url, on_error=reports, timeout=60)
    try:
        client.track("First", user_id="u1")
        assert client.flush(30)
        client.track("Second", user_id="u2")  # goes out on the idle connection
        assert server.hanging.wait(30)
        client.shutdown(0.1)
        assert [(type(error), message.event) for error, message in reports.calls] == [
            (NotDeliveredError, "Second")
        ]
        assert client.stats.delivered == 1
        assert client.stats.unaccounted == 0
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def test_http11_pool_never_starts_a_request_on_a_busy_connection() -> None:
    """Two requests started together with one idle connection: the second opens its own."""
    server = RawServer(lambda n, raw: OK)

    async def scenario(base_url: str) -> list[int]:
        pool = Http11Pool(base_url, [], timeout=60, max_idle=4)
        try:
            await pool.send(pool.build("/x", b"{}"))
            answers = await asyncio.gather(*(pool.send(pool.build("/x", b"{}")) for _ in range(2)))
            return [answer.status for answer in answers]
        finally:
            await pool.aclose()

    assert run(server, scenario) == [202, 202]
    assert server.connections == 2


def test_a_nearer_deadline_re_arms_the_timer_sooner() -> None:
    """A request with a shorter timeout than the armed timer's is timed by its own deadline."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        connection, transport = _Connection(), FakeTransport()
        connection.connection_made(transport)
        connection.start(b"one", 60, lambda c, r, e: None)
        connection.data_received(OK)
        before = loop.time()
        connection.start(b"two", 0.5, lambda c, r, e: None)
        timer = connection._timer
        assert timer is not None
        assert timer.when() <= before + 1  # armed for "two", not left at "one"'s (60 s)
        connection.close()

    asyncio.run(scenario())


def test_a_connection_reads_any_number_of_answers_after_interim_ones() -> None:
    """Interim 100 Continue answers before each answer never add up to a refused head."""

    async def scenario() -> list[Any]:
        connection, transport = _Connection(), FakeTransport()
        connection.connection_made(transport)
        outcomes: list[Any] = []
        for _ in range(3000):  # 3000 interim heads: more than one head's 64 KiB bound
            connection.start(b"req", 60, lambda c, r, e: outcomes.append(e or (r and r.status)))
            connection.data_received(b"HTTP/1.1 100 Continue\r\n\r\n")
            connection.data_received(OK)
        connection.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes == [202] * 3000


def test_one_message_object_queued_twice_is_sent_and_counted_twice() -> None:
    """The callback path tells two sends of one Message object apart (nothing is lost)."""
    server = LoopbackServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = Client(api_key="k", base_url=server.url, timeout=60)
    try:
        for n in range(50):  # together: several connections open, then stay idle
            client.track("Warm", user_id=f"u{n}")
        assert client.flush(30)  # the next sends go by callback
        message = client._factory.track(
            "Twice",
            {},
            user_id="u1",
            anonymous_id=None,
            context=None,
            timestamp=None,
            message_id=None,
            integrations=None,
        )
        assert client._worker.put(message)
        assert client._worker.put(message)
        assert client.flush(30)
        assert client.stats.delivered == 52
    finally:
        client.shutdown(5)
        server.shutdown()
        server.server_close()
