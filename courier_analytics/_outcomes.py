"""What a finished message's fate is called: the error passed to `on_error`.

Pure functions from an attempt's `Outcome` (or an exception, or a reason) to the
`DeliveryError` reported for the message, and to the words logged about it. The
worker decides *when* a message is finished; this module decides only *what* its
report says. No text here carries a payload or the API key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson

from courier_analytics._errors import (
    AuthenticationError,
    DeliveryError,
    NotDeliveredError,
    RejectedError,
    RetriesExhaustedError,
)
from courier_analytics._messages import Message
from courier_analytics._retry import Outcome, causes

if TYPE_CHECKING:
    import socket
    import ssl

    import httpx
else:  # only a failed request needs them (see _lazy)
    from courier_analytics._lazy import httpx, socket, ssl

__all__ = [
    "SHUT_DOWN",
    "alarm",
    "describe",
    "detached",
    "error_detail",
    "error_for",
    "exception_error",
    "not_delivered",
    "origin_of",
    "retry_error",
    "summary",
]

#: The reason given for messages still pending when the client stops.
SHUT_DOWN = "the client shut down first"


def detached(
    exc: BaseException, replace: Callable[[BaseException], BaseException] | None = None
) -> BaseException:
    """`exc` as reported: its chain one line of causes, without tracebacks or contexts.

    A traceback's frames hold their locals (the sender, its headers and the API key,
    the request); a `__context__` beside a `__cause__` (`raise ... from None` keeps
    it) can hold the error that a blanked one replaced. Neither says more than the
    texts and types of the causes, which stay.

    Args:
        exc: The error, changed in place.
        replace: Given each link of the chain, returns it or the link to put instead.
    """
    chain = [link if replace is None else replace(link) for link in causes(exc)]
    for link, cause in zip(chain, [*chain[1:], None], strict=True):
        link.__traceback__ = None
        link.__context__ = None
        link.__cause__ = cause
    return chain[0]


def error_detail(body: bytes) -> str:
    """Courier's error message from an error body (`{"message": ...}`), shortened."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, str):
        return ""
    text = message[:200]
    if text.isprintable():
        return text
    # Escaped, so that a server's message cannot forge log lines or send escape codes
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def origin_of(base_url: str) -> str:
    """`host:port` of a base URL, as reports name it (no user info, path or key)."""
    url = urlsplit(base_url)
    host = url.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{url.port or (443 if url.scheme == 'https' else 80)}"


def describe(exc: BaseException, origin: str) -> str:
    """What a transport error means, in words, and where (`origin` is `host:port`)."""
    for error in causes(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            why = getattr(error, "verify_message", None) or error.strerror or error
            return f"the TLS certificate of {origin} did not verify ({why})"
        if isinstance(error, ConnectionRefusedError):
            return f"connection refused by {origin} (is anything listening there?)"
        if isinstance(error, socket.gaierror):
            return f"DNS lookup failed for {origin}"
        if isinstance(error, httpx.ConnectTimeout):
            return f"no connection to {origin} within the timeout"
        if isinstance(error, httpx.TimeoutException):
            return f"no answer from {origin} within the timeout"
    return f"no answer from {origin}"


def summary(outcome: Outcome) -> str:
    """An attempt's outcome in a few words, for logs: `HTTP 503`, or what went wrong."""
    if outcome.status is not None:
        return f"HTTP {outcome.status}"
    return outcome.detail or f"no answer ({type(outcome.error).__name__})"


def not_delivered(
    message: Message, attempts: int = 0, reason: str = SHUT_DOWN, last: Outcome | None = None
) -> DeliveryError:
    """The report for a message the client stopped before it was delivered.

    Args:
        message: The message.
        attempts: How many requests were made for it.
        reason: Why it was stopped.
        last: Its last attempt's outcome, when it was stopped while retrying.
    """
    text = f"{message.type} {message.message_id} was not delivered: {reason}"
    if last is not None:
        text += f", after {attempts} attempt(s); the last: {summary(last)}"
    status = None if last is None else last.status
    error = NotDeliveredError(text, message_id=message.message_id, status=status, attempts=attempts)
    if last is not None and last.error is not None:
        error.__cause__ = last.error
    return error


def retry_error(message: Message, outcome: Outcome, wait: float, attempts: int) -> DeliveryError:
    """What a "retry" event handler is told went wrong with the last attempt."""
    why = summary(outcome)
    if outcome.error is not None:
        why += f", {type(outcome.error).__name__}"
    error = DeliveryError(
        f"{message.type} {message.message_id} attempt {attempts} failed ({why}); "
        f"retrying in {wait:.2f}s",
        message_id=message.message_id,
        status=outcome.status,
        attempts=attempts,
    )
    error.__cause__ = outcome.error
    return error


def exception_error(message: Message, attempts: int, exc: Exception) -> DeliveryError:
    """The report for a message whose request could not be built or sent (a bug, not HTTP)."""
    error = DeliveryError(
        f"{message.type} {message.message_id} could not be sent: {type(exc).__name__}: {exc}",
        message_id=message.message_id,
        attempts=attempts,
    )
    error.__cause__ = detached(exc)
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
    status, cause = outcome.status, outcome.error
    if status is None:
        answer = f"{outcome.detail or 'no answer'} ({type(cause).__name__}: {cause})"
    else:
        detail = f": {outcome.detail}" if outcome.detail else ""
        answer = f"Courier answered HTTP {status}{detail}"
    error: DeliveryError
    if outcome.retry:
        stopped = f"; {refusal}" if refusal else ""
        text = f"{what} not delivered after {attempts} attempt(s): {answer}{stopped}"
        error = RetriesExhaustedError(
            text, message_id=message.message_id, status=status, attempts=attempts
        )
    elif status is None:  # a failure retrying cannot fix, e.g. a certificate that fails
        text = f"{what} not delivered: {answer}; retrying cannot fix this"
        error = DeliveryError(text, message_id=message.message_id, attempts=attempts)
    elif status in (401, 403):
        detail = f": {outcome.detail}" if outcome.detail else ""
        text = f"{what} refused: Courier answered HTTP {status} (check the API key){detail}"
        error = AuthenticationError(
            text, message_id=message.message_id, status=status, attempts=attempts
        )
    else:
        text = f"{what} refused: {answer}"
        error = RejectedError(text, message_id=message.message_id, status=status, attempts=attempts)
    error.__cause__ = cause
    return error


def alarm(outcome: Outcome) -> str | None:
    """The ERROR to log once per client for a final failure every message will share.

    `None` for a failure of one message alone (logged as a WARNING each time).
    """
    if outcome.status in (401, 403):
        return (
            f"Courier answered HTTP {outcome.status}: the API key is wrong or lacks access. "
            "Check api_key (write_key in courier_analytics.segment) or COURIER_API_KEY. "
            "Every message sent with it fails and is "
            "passed to on_error."
        )
    if outcome.status is None and not outcome.retry:
        return (
            f"{outcome.detail}. Every message fails, without retrying, until this is fixed: "
            "check base_url (host in courier_analytics.segment); behind a proxy that "
            "intercepts TLS, trust its CA "
            "(SSL_CERT_FILE) or pass a transport. Each message is passed to on_error."
        )
    return None
