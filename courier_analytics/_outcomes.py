"""What a finished message's fate is called: the error passed to `on_error`.

Pure functions from an attempt's `Outcome` (or an exception, or a reason) to the
`DeliveryError` reported for the message. The worker decides *when* a message is
finished; this module decides only *what* its report says.
"""

from __future__ import annotations

import orjson

from courier_analytics._errors import (
    AuthenticationError,
    DeliveryError,
    NotDeliveredError,
    RejectedError,
    RetriesExhaustedError,
)
from courier_analytics._messages import Message
from courier_analytics._retry import Outcome

__all__ = ["SHUT_DOWN", "alarm", "error_detail", "error_for", "exception_error", "not_delivered"]

#: The reason given for messages still pending when the client stops.
SHUT_DOWN = "the client shut down first"


def error_detail(body: bytes) -> str:
    """Courier's error message from an error body (`{"message": ...}`), shortened."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    message = data.get("message") if isinstance(data, dict) else None
    return message[:200] if isinstance(message, str) else ""


def not_delivered(message: Message, attempts: int = 0, reason: str = SHUT_DOWN) -> DeliveryError:
    """The report for a message the client stopped before it was delivered."""
    return NotDeliveredError(
        f"{message.type} {message.message_id} was not delivered: {reason}",
        message_id=message.message_id,
        attempts=attempts,
    )


def exception_error(message: Message, attempts: int, exc: Exception) -> DeliveryError:
    """The report for a message whose request could not be built or sent (a bug, not HTTP)."""
    error = DeliveryError(
        f"{message.type} {message.message_id} could not be sent: {type(exc).__name__}: {exc}",
        message_id=message.message_id,
        attempts=attempts,
    )
    error.__cause__ = exc
    return error


def error_for(
    message: Message, outcome: Outcome, attempts: int, refusal: str | None = None
) -> DeliveryError:
    """The report for a message whose last attempt came to `outcome` (not delivered).

    Args:
        message: The message.
        outcome: Its last attempt's outcome.
        attempts: How many requests were made for it.
        refusal: Why the retry policy made no further retry, if it stopped early.
    """
    what = f"{message.type} {message.message_id}"
    status = outcome.status
    detail = f": {outcome.detail}" if outcome.detail else ""
    if refusal:
        detail += f"; {refusal}"
    error: DeliveryError
    if status is None:
        error = RetriesExhaustedError(
            f"{what} not delivered after {attempts} attempt(s): "
            f"{type(outcome.error).__name__}: {outcome.error}{detail}",
            message_id=message.message_id,
            attempts=attempts,
        )
        error.__cause__ = outcome.error
    elif outcome.retry:
        error = RetriesExhaustedError(
            f"{what} not delivered after {attempts} attempt(s): "
            f"Courier answered HTTP {status}{detail}",
            message_id=message.message_id,
            status=status,
            attempts=attempts,
        )
    elif status in (401, 403):
        error = AuthenticationError(
            f"{what} refused: Courier answered HTTP {status} (check the API key){detail}",
            message_id=message.message_id,
            status=status,
            attempts=attempts,
        )
    else:
        error = RejectedError(
            f"{what} refused: Courier answered HTTP {status}{detail}",
            message_id=message.message_id,
            status=status,
            attempts=attempts,
        )
    return error


def alarm(error: DeliveryError) -> str | None:
    """The ERROR to log once per client for a failure every later message will share.

    `None` for a failure of this message alone (logged as a WARNING each time).
    """
    if isinstance(error, AuthenticationError):
        return (
            f"Courier answered HTTP {error.status}: the API key is wrong or lacks access. "
            "Check api_key / COURIER_API_KEY. Every message sent with it fails and is "
            "passed to on_error."
        )
    return None
