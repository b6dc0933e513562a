"""An in-memory Courier for client tests: an httpx transport with scripted answers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socketserver
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import orjson

from courier_analytics import Client, RetryPolicy

Answer = httpx.Response | Exception
Rule = Callable[[httpx.Request, dict[str, Any], int], Answer]

#: Retries with no waiting, so tests that retry stay instant.
NO_WAIT = RetryPolicy(max_retries=3, initial_wait=0, max_wait=0, max_time=None)


def accept(request: httpx.Request, body: dict[str, Any], attempt: int) -> Answer:
    """Answer as Courier does when all is well."""
    return httpx.Response(202, json={"messageId": body.get("messageId", "")})


def message_id_of(request: httpx.Request, body: dict[str, Any]) -> str:
    """The messageId in the body (/inbound/*), else path and body (/profiles has no id)."""
    return str(body.get("messageId") or request.url.path + request.content.decode())


class FakeCourier(httpx.AsyncBaseTransport):
    """Records every request and answers it with ``rule(request, body, attempt)``.

    ``attempt`` counts the requests seen for the same messageId, from 1. With
    ``shuffle`` the handler yields to the event loop a random number of times, so
    concurrent requests finish in scrambled order (no wall-clock waiting).
    A closed ``gate`` holds every request until it is opened.
    """

    def __init__(self, rule: Rule = accept, *, shuffle: bool = False, seed: int = 0) -> None:
        self.rule = rule
        self.requests: list[httpx.Request] = []
        self.bodies: list[dict[str, Any]] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.gate = threading.Event()
        self.gate.set()
        self._shuffle = shuffle
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        body = orjson.loads(content)
        with self._lock:
            self.requests.append(request)
            self.bodies.append(body)
            key = message_id_of(request, body)
            self.attempts[key] += 1
            attempt = self.attempts[key]
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if not self.gate.is_set():
                await asyncio.get_running_loop().run_in_executor(None, self.gate.wait)
            if self._shuffle:
                for _ in range(self._random.randrange(20)):
                    await asyncio.sleep(0)
            answer = self.rule(request, body, attempt)
        finally:
            with self._lock:
                self.in_flight -= 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    def paths(self) -> list[str]:
        """The raw path of every request, in arrival order."""
        return [request.url.raw_path.decode() for request in self.requests]


class Reports:
    """An ``on_error`` handler that keeps what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[BaseException, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, error: BaseException, message: Any) -> None:
        with self._lock:
            self.calls.append((error, message))

    @property
    def errors(self) -> list[BaseException]:
        """The exceptions reported, in order."""
        return [error for error, _ in self.calls]


def make_client(courier: FakeCourier, **options: Any) -> Client:
    """A client talking to ``courier`` with instant retries unless told otherwise."""
    options.setdefault("api_key", "test-key")
    options.setdefault("retry", NO_WAIT)
    return Client(transport=courier, **options)


def balanced(client: Client) -> bool:
    """The accounting invariant: every message made is accounted for exactly once."""
    return client.stats.unaccounted == 0


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Serve `server` on a thread of its own for the duration; then close it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


class Loopback(socketserver.ThreadingTCPServer):
    """An HTTP/1.1 server on 127.0.0.1 that answers each request with `answer(body)`.

    `answer` runs on the connection's own thread, so it may block (a held request);
    it returns the answer's bytes, or pieces of them, each written as it comes.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Callable[[bytes], bytes | Iterable[bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), _LoopbackHandler)
        self.answer = answer

    @property
    def base_url(self) -> str:
        """Where the server listens."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _LoopbackHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Loopback = self.server  # type: ignore[assignment]
        stream = self.request.makefile("rb")
        with contextlib.suppress(OSError):  # the client closed the connection
            while head := _read_head(stream):
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                answer = server.answer(stream.read(length))
                for piece in [answer] if isinstance(answer, bytes) else answer:
                    self.request.sendall(piece)


def _read_head(stream: Any) -> bytes:
    """A request's head, or b"" once the client closed the connection."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline(65536)
        if not line:
            return b""
        head += line
    return head
