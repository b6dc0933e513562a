"""The API key reaches no error given to on_error, in its whole chain, and no log record.

A hostile server on 127.0.0.1 echoes the request's Authorization header back: in a
malformed header line (which h11 quotes in its error, and httpcore logs at DEBUG),
in a valid header (which httpcore logs), and JSON-escaped in a 400's message. The
client sends with its native sender, or through httpx's own transports (the path a
proxy or `transport=` takes). Everything reachable from each reported error is
walked (causes, contexts, arguments, attributes, tracebacks and their frames), and
every log record of every logger at DEBUG is read.
"""

from __future__ import annotations

import gc
import logging
import socketserver
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from courier_analytics import Client, RejectedError, RetryPolicy

from .fakes import serving

KEY = "sk_test_hostile_0123456789"
NO_RETRY = RetryPolicy(max_retries=0)


def malformed(authorization: bytes) -> bytes:
    """A header line without a colon that quotes the Authorization header."""
    return b"HTTP/1.1 202 Accepted\r\nEcho " + authorization + b"\r\nContent-Length: 0\r\n\r\n"


def escaped(authorization: bytes) -> bytes:
    """A 400 echoing the header, and quoting the key JSON-escaped in its message."""
    quoted = authorization.replace(b"_", b"\\u005f")
    body = b'{"message":"no access for ' + quoted + b'"}'
    return (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        b"X-Echo: " + authorization + b"\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )


ANSWERS = {"malformed": malformed, "escaped": escaped}


class EchoServer(socketserver.ThreadingTCPServer):
    """Answers each request with `answer(its Authorization header)`, then closes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Any) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.answer = answer

    @property
    def base_url(self) -> str:
        """Where the server listens."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        authorization, length = b"", 0
        while (line := self.rfile.readline(65536)) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"authorization":
                authorization = value.strip()
            elif name.lower() == b"content-length":
                length = int(value)
        self.rfile.read(length)
        self.wfile.write(server.answer(authorization))


@pytest.fixture(params=sorted(ANSWERS))
def server(request: pytest.FixtureRequest) -> Iterator[EchoServer]:
    """A hostile server giving one kind of echoing answer."""
    echo = EchoServer(ANSWERS[request.param])
    with serving(echo):
        yield echo


def senders() -> dict[str, Any]:
    """How a client sends: natively, or through an async or a sync httpx transport."""
    return {
        "native": lambda: None,
        "httpx-async": httpx.AsyncHTTPTransport,
        "httpx-sync": httpx.HTTPTransport,
    }


def holders(root: object) -> Iterator[str]:
    """Where `KEY` is found among the objects reachable from `root` (frames included).

    Classes, modules, functions and code are not followed (they lead to everything
    in the process); a frame's locals are, not its globals.
    """
    secret, seen, todo = KEY.encode(), set(), [(root, "error")]
    while todo:
        value, path = todo.pop()
        if id(value) in seen or isinstance(
            value, (type, types.ModuleType, types.FunctionType, types.CodeType)
        ):
            continue
        seen.add(id(value))
        if isinstance(value, str):
            if KEY in value:
                yield path
            continue
        if isinstance(value, (bytes, bytearray, memoryview)):
            if secret in bytes(value):
                yield path
            continue
        if isinstance(value, types.FrameType):
            yield f"{path} (a frame: {value.f_code.co_name})"
            todo.append((value.f_locals, f"{path}.f_locals"))
            continue
        if isinstance(value, BaseException):
            todo.append((str(value), f"{path} text"))
        for referent in gc.get_referents(value):
            todo.append((referent, f"{path}>{type(referent).__name__}"))


def deliver_one(base_url: str, sender: str) -> BaseException:
    """Track one event through `sender` with `KEY`, not retried; what on_error got."""
    reports: list[BaseException] = []
    transport = senders()[sender]()
    client = Client(
        api_key=KEY,
        base_url=base_url,
        transport=transport,
        retry=NO_RETRY,
        on_error=lambda exc, message: reports.append(exc),
    )
    try:
        client.track("Signed Up", user_id="u1")
        assert client.flush(timeout=30)
    finally:
        client.shutdown(timeout=5)
        if isinstance(transport, httpx.HTTPTransport):
            transport.close()
    (error,) = reports
    return error


@pytest.mark.parametrize("sender", sorted(senders()))
def test_the_key_reaches_no_reported_error_and_no_log(
    server: EchoServer, sender: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer echoing the key: nothing reachable from the report, no log record, holds it."""
    caplog.set_level(logging.DEBUG)  # every logger: httpx's and httpcore's too
    error = deliver_one(server.base_url, sender)
    assert list(holders(error)) == []
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in (record.exc_text or "")
    assert KEY not in caplog.text


@pytest.mark.parametrize("sender", sorted(senders()))
def test_a_json_escaped_key_is_blanked_after_decoding(
    sender: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400 spelling the key with JSON escapes: the report says what Courier said, key blanked."""
    echo = EchoServer(escaped)
    with serving(echo):
        error = deliver_one(echo.base_url, sender)
    assert isinstance(error, RejectedError)
    assert "no access for Bearer ***" in str(error)
    assert KEY not in caplog.text
