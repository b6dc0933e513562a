"""Retry policy: which outcomes retry, and how long to wait between attempts.

The policy is a value; the worker builds one `backoff` decorator from it when
it starts and reuses it for every message (as stamina and PostHog do), so no
per-request set-up is paid.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import random
import time
from collections.abc import Generator
from typing import Any

import attrs

__all__ = ["Outcome", "RetryPolicy", "is_retryable_status", "parse_retry_after"]


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 408, 429 and 5xx except 501."""
    return status in (408, 429) or (500 <= status <= 599 and status != 501)


def parse_retry_after(value: str | None, now: _dt.datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay-seconds or an HTTP date).

    Returns `None` when the header is absent or unreadable; never a negative number.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


@attrs.frozen(slots=True)
class Outcome:
    """What one attempt to deliver a message came to.

    Attributes:
        status: The HTTP status, or `None` when no answer came (network error).
        error: The exception raised by the transport, if any.
        retry_after: Seconds the server asked to wait (`Retry-After`), if any.
        delivered: Courier accepted the message (2xx, or 409 on route `"api"`).
        retry: The attempt failed in a way that another attempt may fix.
        detail: Courier's error message (from the body), if any; never the payload.
    """

    status: int | None
    error: BaseException | None = None
    retry_after: float | None = None
    delivered: bool = False
    retry: bool = False
    detail: str = ""


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value!r}")


def _optional_non_negative(
    instance: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0 or None, not {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a message that failed with a retryable error is tried again.

    Network errors, timeouts, 408, 429 and 5xx (except 501) retry; any other status
    is final. The n-th wait is `initial_wait * multiplier**n` with up to `jitter`
    of it removed at random, capped at `max_wait`, and raised to the server's
    `Retry-After` when that is longer. A retry that could not start before
    `max_time` is not made: the message fails then, rather than retry early.

    Attributes:
        max_retries: Retries after the first attempt (0 tries once).
        max_time: Seconds from the first attempt after which no retry starts;
            `None` for no limit.
        initial_wait: The first wait, in seconds.
        multiplier: Growth of the wait from one retry to the next.
        max_wait: Cap on the backoff's own waits (not on the server's `Retry-After`).
        jitter: Fraction (0 to 1) of each wait that may be removed at random, so that
            clients that failed together do not retry together.
    """

    max_retries: int = attrs.field(default=10, validator=_non_negative)
    max_time: float | None = attrs.field(default=120.0, validator=_optional_non_negative)
    initial_wait: float = attrs.field(default=0.5, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_non_negative)
    max_wait: float = attrs.field(default=60.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.5, validator=_non_negative)

    @property
    def max_tries(self) -> int:
        """Attempts in all: the first one plus `max_retries`."""
        return self.max_retries + 1

    def wait_for(self, retry: int, retry_after: float | None, rand: float) -> float:
        """Seconds to wait before retry number `retry` (0-based), given `rand` in [0, 1).

        The server's `Retry-After` is a floor that `max_wait` does not cut: a retry
        never goes out before the server said it may.
        """
        wait = self.initial_wait * self.multiplier**retry
        wait *= 1.0 - min(self.jitter, 1.0) * rand
        wait = min(wait, self.max_wait)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait

    def waits(
        self, start: int = 0, deadline: float | None = None
    ) -> Generator[float, Outcome | None, None]:
        """A `backoff` wait generator: sent each failed `Outcome`, yields the wait.

        It stops (so backoff gives up) when the wait would end past `deadline`
        (`time.monotonic()`), rather than retry early.

        Args:
            start: The index of the first retry it will be asked about.
            deadline: When no retry may start any more; `None` for never.
        """
        outcome = yield 0.0  # primed by backoff with send(None)
        retry = start
        while True:
            retry_after = outcome.retry_after if outcome is not None else None
            wait = self.wait_for(retry, retry_after, random.random())
            if deadline is not None and time.monotonic() + wait >= deadline:
                return
            outcome = yield wait
            retry += 1
