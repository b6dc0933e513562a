"""What a failed message's report says: the error class, its fields and its text."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest

from courier_analytics import (
    AuthenticationError,
    DeliveryError,
    NotDeliveredError,
    RejectedError,
    RetriesExhaustedError,
)
from courier_analytics._messages import Message
from courier_analytics._outcomes import (
    alarm,
    describe,
    error_detail,
    error_for,
    exception_error,
    not_delivered,
    origin_of,
    summary,
)
from courier_analytics._retry import Outcome


@pytest.fixture
def message() -> Message:
    """One track message."""
    return Message("track", "m-1", "u1", None, "Signed Up", b'{"type":"track"}')


def test_a_network_error_that_outlasted_the_retries_keeps_its_cause(message: Message) -> None:
    """No answer at all: RetriesExhaustedError without a status, the httpx error as its cause."""
    cause = httpx.ConnectError("refused")
    outcome = Outcome(None, error=cause, retry=True, detail="connection refused by h:1")
    error = error_for(message, outcome, attempts=3)
    assert type(error) is RetriesExhaustedError
    assert (error.status, error.attempts, error.message_id) == (None, 3, "m-1")
    assert error.__cause__ is cause
    assert str(error) == (
        "track m-1 not delivered after 3 attempt(s): connection refused by h:1 "
        "(ConnectError: refused)"
    )


def test_a_retryable_status_that_outlasted_the_retries_names_it(message: Message) -> None:
    """A 503 to the last: RetriesExhaustedError with the status and Courier's detail."""
    error = error_for(message, Outcome(503, retry=True, detail="busy"), attempts=11)
    assert type(error) is RetriesExhaustedError
    assert error.status == 503
    assert str(error).endswith("after 11 attempt(s): Courier answered HTTP 503: busy")


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_authentication_errors(message: Message, status: int) -> None:
    """A refused key is an AuthenticationError, which is also a RejectedError."""
    error = error_for(message, Outcome(status), attempts=1)
    assert type(error) is AuthenticationError
    assert isinstance(error, RejectedError)
    assert "check the API key" in str(error)


def test_any_other_final_status_is_a_rejection(message: Message) -> None:
    """A 400 is a RejectedError naming the status and Courier's detail."""
    error = error_for(message, Outcome(400, detail="bad event"), attempts=1)
    assert type(error) is RejectedError
    assert str(error) == "track m-1 refused: Courier answered HTTP 400: bad event"


def test_not_delivered_says_why(message: Message) -> None:
    """A message still pending at shutdown is a NotDeliveredError with the reason."""
    error = not_delivered(message, 2, reason="the worker failed")
    assert type(error) is NotDeliveredError
    assert error.attempts == 2
    assert str(error) == "track m-1 was not delivered: the worker failed"


def test_not_delivered_defaults_to_shutdown(message: Message) -> None:
    """Without a reason the report says the client shut down first."""
    assert str(not_delivered(message)).endswith("the client shut down first")


def test_an_unexpected_exception_is_a_delivery_error_with_its_cause(message: Message) -> None:
    """A bug while sending is reported as a plain DeliveryError caused by it."""
    cause = RuntimeError("boom")
    error = exception_error(message, 1, cause)
    assert type(error) is DeliveryError
    assert error.__cause__ is cause
    assert str(error) == "track m-1 could not be sent: RuntimeError: boom"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"message": "Invalid event"}', "Invalid event"),
        (b'{"message": 3}', ""),
        (b"[1, 2]", ""),
        (b"<html>", ""),
        (b'{"message": "' + b"x" * 500 + b'"}', "x" * 200),
    ],
)
def test_error_detail_reads_only_a_message_string_and_shortens_it(body: bytes, detail: str) -> None:
    """Courier's `message` field, cut to 200 characters; anything else gives nothing."""
    assert error_detail(body) == detail


def test_alarms_are_for_failures_every_message_shares() -> None:
    """401 and a failing certificate are one ERROR per client; a 400 or a 503 are not."""
    assert "API key" in (alarm(Outcome(401)) or "")
    assert "SSL_CERT_FILE" in (alarm(Outcome(None, retry=False, detail="bad cert")) or "")
    assert alarm(Outcome(400)) is None
    assert alarm(Outcome(503, retry=True)) is None
    assert alarm(Outcome(None, retry=True)) is None


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    """`outer` raised from `inner`, as transports wrap socket errors."""
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (
            chained(httpx.ConnectError("x"), ConnectionRefusedError(111, "refused")),
            "connection refused by api.example:443",
        ),
        (
            chained(httpx.ConnectError("x"), socket.gaierror(-2, "Name or service not known")),
            "DNS lookup failed for api.example:443",
        ),
        (httpx.ConnectTimeout("x"), "no connection to api.example:443 within the timeout"),
        (httpx.ReadTimeout("x"), "no answer from api.example:443 within the timeout"),
        (
            chained(httpx.ConnectError("x"), ssl.SSLCertVerificationError(1, "verify failed")),
            "the TLS certificate of api.example:443 did not verify",
        ),
        (httpx.RemoteProtocolError("x"), "no answer from api.example:443"),
    ],
)
def test_transport_errors_are_described_with_where(exc: BaseException, words: str) -> None:
    """Refused, DNS, timeouts and certificates are named, with host:port."""
    assert describe(exc, "api.example:443").startswith(words)


def test_the_cause_is_found_behind_two_wrappers_and_an_implicit_context() -> None:
    """httpx wraps httpcore, which wraps the socket error: the chain is followed to it."""
    inner = httpx.ConnectError("httpcore's")
    inner.__context__ = ConnectionRefusedError(111, "refused")
    outer = chained(httpx.ConnectError("httpx's"), inner)
    assert describe(outer, "h:1") == "connection refused by h:1 (is anything listening there?)"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://api.courier.com", "api.courier.com:443"),
        ("http://127.0.0.1:8787/base", "127.0.0.1:8787"),
        ("http://user:secret@localhost", "localhost:80"),
        ("https://[::1]:9443", "[::1]:9443"),
    ],
)
def test_origin_is_host_and_port_only(url: str, origin: str) -> None:
    """Reports name host:port, never user info or the path."""
    assert origin_of(url) == origin


def test_a_certificate_failure_is_final_and_says_so(message: Message) -> None:
    """A failure retrying cannot fix is a DeliveryError after one attempt, with the reason."""
    cause = httpx.ConnectError("verify failed")
    outcome = Outcome(None, error=cause, retry=False, detail="the TLS certificate of h:1 ...")
    error = error_for(message, outcome, attempts=1)
    assert type(error) is DeliveryError
    assert error.__cause__ is cause
    assert str(error).startswith("track m-1 not delivered: the TLS certificate of h:1")
    assert str(error).endswith("retrying cannot fix this")


def test_stopped_while_retrying_names_the_last_failure(message: Message) -> None:
    """At shutdown a message in backoff reports its attempts and what the last one met."""
    last = Outcome(None, error=httpx.ConnectError("x"), retry=True, detail="connection refused")
    error = not_delivered(message, 4, last=last)
    assert str(error) == (
        "track m-1 was not delivered: the client shut down first, after 4 attempt(s); "
        "the last: connection refused"
    )
    assert error.__cause__ is last.error
    assert summary(Outcome(503)) == "HTTP 503"


def test_error_detail_cannot_forge_log_lines() -> None:
    """A server's message with line breaks or escape codes is shown escaped, on one line."""
    detail = error_detail(b'{"message": "bad\\r\\nCRITICAL forged\\u001b[2J\\u0000"}')
    assert detail == "bad\\r\\nCRITICAL forged\\x1b[2J\\x00"
    assert detail.isprintable()
