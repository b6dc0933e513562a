"""Exceptions that courier-analytics raises at a call or reports to `on_error`.

Bad arguments are programming errors and raise at the call, before anything is
queued, as plain `TypeError` / `ValueError` (or a subclass below
that is also one). Everything that goes wrong later, at run time, never raises
into the application: it is counted in [`Client.stats`][courier_analytics.Client.stats], logged
without the payload, and passed to `on_error(exc, message)` as one of these:

```text
CourierAnalyticsError                  base of every exception here
├── ConfigurationError (ValueError)    bad Client(...) options
├── MessageTooLargeError (ValueError)  larger than Courier accepts
├── QueueFullError                     reported: queue full, dropped
├── ClientClosedError                  reported: call after shutdown()
├── PluginError                        reported: a before plugin raised
└── DeliveryError                      reported: did not reach Courier (as
    │                                  such: a TLS certificate that fails)
    ├── RejectedError                  a status retrying cannot fix
    │   └── AuthenticationError        401/403: key wrong or lacks access
    ├── RetriesExhaustedError          retries outlasted the policy
    └── NotDeliveredError              shutdown/exit before delivery
```

A report caused by a network failure carries the underlying `httpx` exception as
`__cause__`, and its text says what happened and where (`connection refused by
host:port`, a DNS failure, a timeout, a certificate that does not verify).
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ClientClosedError",
    "ConfigurationError",
    "CourierAnalyticsError",
    "DeliveryError",
    "MessageTooLargeError",
    "NotDeliveredError",
    "PluginError",
    "QueueFullError",
    "RejectedError",
    "RetriesExhaustedError",
]


class CourierAnalyticsError(Exception):
    """Base class of every exception courier-analytics defines."""


class ConfigurationError(CourierAnalyticsError, ValueError):
    """A client option is missing or invalid; raised when the client is built."""


class MessageTooLargeError(CourierAnalyticsError, ValueError):
    """The message's JSON exceeds what Courier accepts in one request; raised at the call."""


class QueueFullError(CourierAnalyticsError):
    """Reported when a message was dropped because the queue was full."""


class ClientClosedError(CourierAnalyticsError):
    """Reported when a message was made after the client was shut down, and dropped."""


class PluginError(CourierAnalyticsError):
    """Reported when a `before` plugin or source middleware raised: the message was cancelled.

    The plugin's own exception is the `__cause__`.

    Attributes:
        plugin: The name of the plugin that raised.
        message_id: The `messageId` of the cancelled message.
    """

    def __init__(self, text: str, *, plugin: str, message_id: str) -> None:
        super().__init__(text)
        self.plugin = plugin
        self.message_id = message_id


class DeliveryError(CourierAnalyticsError):
    """Reported when a queued message did not reach Courier.

    Reported as this class itself (not a subclass) for a failure that retrying
    cannot fix and that no status explains: a TLS certificate that does not verify.

    Attributes:
        message_id: The `messageId` of the message that failed.
        status: The last HTTP status Courier answered, or `None` when no answer came.
        attempts: How many requests were made for this message.
    """

    def __init__(
        self, text: str, *, message_id: str, status: int | None = None, attempts: int = 0
    ) -> None:
        super().__init__(text)
        self.message_id = message_id
        self.status = status
        self.attempts = attempts


class RejectedError(DeliveryError):
    """Courier refused the message with a status that retrying cannot fix (e.g. 400, 413)."""


class AuthenticationError(RejectedError):
    """Courier answered 401 or 403: the API key is wrong or lacks access."""


class RetriesExhaustedError(DeliveryError):
    """Every attempt failed with a retryable error until the retry policy gave up."""


class NotDeliveredError(DeliveryError):
    """The client shut down (or the interpreter exited) before this message was delivered."""


class WorkerUnavailable(Exception):
    """The worker takes no message: it was closed, or no thread can start (interpreter exit).

    Internal (never reported as such): the client turns it into a `ClientClosedError`.
    Defined here, not beside the worker, so that the client can catch it without
    importing the delivery engine (asyncio and all) with the package.
    """
