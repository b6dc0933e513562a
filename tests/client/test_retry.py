"""The retry policy's parts: Retry-After parsing and the wait generator fed to backoff."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from courier_analytics import RetryPolicy
from courier_analytics._retry import Outcome, is_retryable_status, parse_retry_after

NOW = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.timezone.utc)


def test_retry_after_in_seconds_is_read() -> None:
    """Retry-After: 7 means seven seconds."""
    assert parse_retry_after("7", NOW) == 7.0


def test_retry_after_as_http_date_is_read_against_now() -> None:
    """Retry-After as an HTTP date is the time left until then."""
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", NOW) == 30.0


@pytest.mark.parametrize("value", [None, "", "soon", "Sat, 28 Nov 2026 11:00:00 GMT", "-5"])
def test_absent_unreadable_or_past_retry_after_gives_no_positive_wait(value: str | None) -> None:
    """Missing or unreadable headers give None; past dates and negatives give 0."""
    assert parse_retry_after(value, NOW) in (None, 0.0)


@pytest.mark.parametrize(("code", "retry"), [(408, True), (429, True), (500, True), (503, True),
                                             (501, False), (400, False), (401, False),
                                             (404, False), (409, False), (413, False)])  # fmt: skip
def test_which_statuses_retry(code: int, retry: bool) -> None:
    """408, 429 and 5xx except 501 retry; other statuses are final."""
    assert is_retryable_status(code) is retry


def test_wait_generator_honours_retry_after_sent_by_backoff() -> None:
    """The generator yields the Retry-After of the outcome backoff sends it."""
    waits = RetryPolicy(initial_wait=0.5, jitter=0, max_wait=60).waits()
    next(waits)  # backoff primes it with send(None)
    assert waits.send(Outcome(503)) == 0.5
    assert waits.send(Outcome(429, retry_after=12.0)) == 12.0
    assert waits.send(Outcome(503)) == 2.0


def test_policy_rejects_negative_values() -> None:
    """A negative setting is refused when the policy is made."""
    with pytest.raises(ValueError, match="max_wait"):
        RetryPolicy(max_wait=-1)


def test_wait_generator_gives_up_rather_than_retry_before_retry_after() -> None:
    """A Retry-After that ends past the deadline stops the retries instead of cutting the wait."""
    deadline = time.monotonic() + 10
    waits = RetryPolicy(initial_wait=0.5, jitter=0).waits(deadline=deadline)
    next(waits)
    assert waits.send(Outcome(429, retry_after=2.0)) == 2.0
    with pytest.raises(StopIteration):
        waits.send(Outcome(429, retry_after=60.0))
