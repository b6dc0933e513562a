"""Retry policy: which outcomes retry, how long to wait between attempts, and when to stop.

The policy is a value. The delivery engine applies it after each attempt
(`Engine._settle`): the waits come from `RetryPolicy.waits` (a `backoff.expo`
sequence, capped and jittered), the server's `Retry-After` is a floor on each
wait, and one monotonic deadline, `max_time` after the first attempt, ends the
retries.
"""

from __future__ import annotations

import datetime as _dt
import functools
import itertools
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from courier_analytics._value import Value

if TYPE_CHECKING:
    import random
    import ssl
else:  # only a failed request looks for a certificate failure among its causes
    from courier_analytics._lazy import ssl

__all__ = [
    "MAX_RETRY_AFTER",
    "Outcome",
    "RetryPolicy",
    "causes",
    "is_retryable_error",
    "is_retryable_status",
    "parse_retry_after",
    "tls_failure",
]

#: The longest `Retry-After` (seconds) a message waits for. A server asking for more
#: (`Retry-After: 1e8`, `inf`) gets no retry: the message fails at once, saying so,
#: rather than hold its user's later messages for hours or until shutdown.
MAX_RETRY_AFTER = 3600.0


@functools.cache
def _jitter_source() -> random.Random:
    """The jitter's own generator, not the `random` module's shared one: made at the
    first retry, since a process whose messages all go through never needs it."""
    import random

    return random.Random()


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 408, 429 and 5xx except 501."""
    return status in (408, 429) or (500 <= status <= 599 and status != 501)


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it (`__cause__`, else `__context__`), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def tls_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a transport error, if that is what it is."""
    for error in causes(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            return error
    return None


def is_retryable_error(exc: BaseException) -> bool:
    """Whether a transport error is worth retrying: all but a TLS certificate that fails.

    A certificate that does not verify (self-signed, expired, wrong host name, a
    proxy intercepting TLS) fails the same way on every attempt until someone fixes it.
    """
    return tls_failure(exc) is None


def parse_retry_after(value: str | None, now: _dt.datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay-seconds or an HTTP date).

    Returns `None` when the header is absent or unreadable; never a negative number.
    """
    if not value:
        return None
    value = value.strip()
    # float() alone reads more than HTTP numbers: `5_0`, other scripts' digits, `nan`.
    if value.isascii() and "_" not in value:
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            return None if math.isnan(seconds) else max(0.0, seconds)
    import email.utils  # only for an HTTP date, which few servers send

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


class Outcome(NamedTuple):
    """What one attempt to deliver a message came to.

    Attributes:
        status: The HTTP status, or `None` when no answer came (network error).
        error: The exception raised by the transport, if any.
        retry_after: Seconds the server asked to wait (`Retry-After`), if any.
        delivered: Courier accepted the message (2xx, or 409 on route `"api"`).
        retry: The attempt failed in a way that another attempt may fix.
        detail: Courier's error message (from the body), if any; never the payload.
            When no answer came: what went wrong and where, in words (see
            `_outcomes.describe`), e.g. `connection refused by 127.0.0.1:8787`.
    """

    status: int | None
    error: BaseException | None = None
    retry_after: float | None = None
    delivered: bool = False
    retry: bool = False
    detail: str = ""


class RetryPolicy(Value):
    """How a message that failed with a retryable error is tried again.

    Network errors, timeouts, 408, 429 and 5xx (except 501) retry; any other status
    is final. The n-th wait is `initial_wait * multiplier**n`, capped at `max_wait`,
    with up to `jitter` of it removed at random, and raised to the server's
    `Retry-After` when that is longer (up to one hour; a longer one is not waited for:
    the message fails at once, saying so). A retry that could not start before
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

    __match_args__ = (
        "max_retries",
        "max_time",
        "initial_wait",
        "multiplier",
        "max_wait",
        "jitter",
    )
    __slots__ = __match_args__

    max_retries: int
    max_time: float | None
    initial_wait: float
    multiplier: float
    max_wait: float
    jitter: float

    def __init__(
        self,
        *,
        max_retries: int = 10,
        max_time: float | None = 120.0,
        initial_wait: float = 0.5,
        multiplier: float = 2.0,
        max_wait: float = 60.0,
        jitter: float = 0.5,
    ) -> None:
        self._assign(max_retries, max_time, initial_wait, multiplier, max_wait, jitter)
        for name in self.__match_args__:  # in order: the first bad one is named
            value = getattr(self, name)
            if name == "max_time" and value is None:
                continue
            if value < 0:
                none = " or None" if name == "max_time" else ""
                raise ValueError(f"{name} must be >= 0{none}, not {value!r}")

    @property
    def max_tries(self) -> int:
        """Attempts in all: the first one plus `max_retries`."""
        return self.max_retries + 1

    def waits(self, rand: Callable[[], float] | None = None) -> Iterator[float]:
        """The backoff's own wait before each retry, one per retry allowed.

        Args:
            rand: Gives a number in [0, 1) for the jitter of each wait; by default
                a generator of the package's own, so retries on the worker thread
                never move the `random` module's shared state under the app (or
                under Hypothesis, which warns when that state changes mid-test).
        """
        rand = rand or _jitter_source().random
        import backoff  # only when a message is retried: not on every import

        expo = backoff.expo(base=self.multiplier, factor=self.initial_wait, max_value=self.max_wait)
        next(expo)  # backoff's generators open with a bare yield
        jitter = min(self.jitter, 1.0)
        for wait in itertools.islice(expo, self.max_retries):
            yield wait * (1.0 - jitter * rand())

    def refusal(self, wait: float, retry_after: float | None, time_left: float) -> str | None:
        """Why no retry may follow this wait, or `None` when it may.

        Args:
            wait: The wait before the retry, `Retry-After` included.
            retry_after: What the server asked for, if anything.
            time_left: Seconds until `max_time` runs out (`math.inf` without one).
        """
        if retry_after is not None and retry_after > MAX_RETRY_AFTER:
            return (
                f"Courier asked to wait {retry_after:g}s (Retry-After), more than the "
                f"{MAX_RETRY_AFTER:g}s a retry waits at most"
            )
        if wait >= time_left:
            return f"no retry could start within max_time ({self.max_time:g}s)"
        return None
