"""What a failed message's report says: the error class, its fields and its text."""

from __future__ import annotations

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
    error_detail,
    error_for,
    exception_error,
    not_delivered,
)
from courier_analytics._retry import Outcome


@pytest.fixture
def message() -> Message:
    """One track message."""
    return Message("track", "m-1", "u1", None, "Signed Up", b'{"type":"track"}')


def test_a_network_error_that_outlasted_the_retries_keeps_its_cause(message: Message) -> None:
    """No answer at all: RetriesExhaustedError without a status, the httpx error as its cause."""
    cause = httpx.ConnectError("refused")
    error = error_for(message, Outcome(None, error=cause, retry=True), attempts=3)
    assert type(error) is RetriesExhaustedError
    assert (error.status, error.attempts, error.message_id) == (None, 3, "m-1")
    assert error.__cause__ is cause
    assert str(error) == "track m-1 not delivered after 3 attempt(s): ConnectError: refused"


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


def test_only_an_authentication_error_raises_an_alarm(message: Message) -> None:
    """401 is logged as one ERROR per client; a 400 concerns its own message only."""
    assert "API key" in (alarm(error_for(message, Outcome(401), 1)) or "")
    assert alarm(error_for(message, Outcome(400), 1)) is None
