"""A request the server holds holds back no other user's messages (issue #22).

A real socket server on 127.0.0.1 answers at once, except one user's request, which
it holds until the test releases it (a slow route, a stalled proxy). With no idle
connection the worker waits for an answer to free one rather than pay for a new
one; once the request holding the only connection is unanswered long past the
usual answer time, no answer frees it soon, and the next message opens a
connection. Nothing here depends on the machine's speed: the held request stays
held until the test releases it, and the other message is checked to go out while
it is held (the per-request timeout is the default, 10 s, which only a failure of
this test waits out).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from courier_analytics import Client, MessageView

from .fakes import Loopback, serving

OK = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"
HELD = b'"userId":"slow"'


class HoldingServer(Loopback):
    """Answers every request with a 202 at once, except those carrying `HELD`.

    A held request is answered once `release` is set; `bodies` keeps what arrived.
    """

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.release = threading.Event()
        self.bodies: list[bytes] = []

    def _answer(self, body: bytes) -> bytes:
        self.bodies.append(body)
        if HELD in body:
            self.release.wait(60)  # bounds only a failure of the test
        return OK


@pytest.fixture
def server() -> Iterator[HoldingServer]:
    """The holding server, released and closed at the end."""
    holding = HoldingServer()
    with serving(holding):
        try:
            yield holding
        finally:
            holding.release.set()


@pytest.fixture
def client(server: HoldingServer) -> Iterator[Client]:
    """A client of `server` that has learnt its answer time, one message at a time."""
    client = Client(api_key="pk_test_held", base_url=server.base_url)
    try:
        for n in range(80):
            client.track("Warm Up", user_id=f"u{n}")
            assert client.flush(10)
        yield client
    finally:
        server.release.set()
        client.shutdown(10)


def on_user(user_id: str, then: Callable[[], None]) -> Callable[..., None]:
    """An event handler that calls `then` for `user_id`'s message only."""

    def handler(*args: object) -> None:
        message = next(arg for arg in args if isinstance(arg, MessageView))
        if message.user_id == user_id:
            then()

    return handler


def test_a_held_request_does_not_hold_back_another_users_message(
    server: HoldingServer, client: Client
) -> None:
    """While Courier holds one user's request, another user's message goes out."""
    held_ended = threading.Event()  # the held request was answered, or given up on
    fast_delivered = threading.Event()
    held_then: list[bool] = []  # whether it had, when the other message was delivered

    def delivered() -> None:
        held_then.append(held_ended.is_set())
        fast_delivered.set()

    for event in ("retry", "error", "delivered"):
        client.on(event, on_user("slow", held_ended.set))
    client.on("delivered", on_user("fast", delivered))
    client.track("Slow", user_id="slow")
    client.track("Fast", user_id="fast")
    assert fast_delivered.wait(60)
    assert held_then == [False], "the other user's message waited for the held request"


def test_a_held_request_is_still_delivered_once_released(
    server: HoldingServer, client: Client
) -> None:
    """The held request, left in flight while others go, is delivered once released."""
    fast_delivered = threading.Event()
    client.on("delivered", on_user("fast", fast_delivered.set))
    client.track("Slow", user_id="slow")
    client.track("Fast", user_id="fast")
    assert fast_delivered.wait(60)
    server.release.set()
    assert client.flush(30)
    assert client.stats.delivered == 82
    assert client.stats.retried == 0
    assert sum(HELD in body for body in server.bodies) == 1
