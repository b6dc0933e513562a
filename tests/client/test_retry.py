"""Retries: Retry-After parsing, the policy's waits and refusals, and the loop applying them."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
from typing import Any

import httpx
import pytest

from courier_analytics import RetriesExhaustedError, RetryPolicy
from courier_analytics._retry import MAX_RETRY_AFTER, is_retryable_status, parse_retry_after

from .fakes import FakeCourier, Reports, accept, make_client

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


def test_policy_rejects_negative_values() -> None:
    """A negative setting is refused when the policy is made."""
    with pytest.raises(ValueError, match="max_wait"):
        RetryPolicy(max_wait=-1)


def test_waits_grow_exponentially_up_to_max_wait() -> None:
    """Without jitter the waits double from initial_wait and stop growing at max_wait."""
    policy = RetryPolicy(max_retries=5, initial_wait=1, multiplier=2, max_wait=5, jitter=0.5)
    assert list(policy.waits(rand=lambda: 0.0)) == [1, 2, 4, 5, 5]


def test_jitter_removes_at_most_its_fraction_of_each_wait() -> None:
    """With jitter 0.5 a wait keeps at least half its length, even at the cap."""
    policy = RetryPolicy(max_retries=4, initial_wait=1, multiplier=2, max_wait=2, jitter=0.5)
    assert list(policy.waits(rand=lambda: 0.999)) == pytest.approx([0.5005, 1.001, 1.001, 1.001])


def test_there_is_one_wait_per_retry_allowed() -> None:
    """max_retries bounds the waits; 0 gives none."""
    assert len(list(RetryPolicy(max_retries=3).waits())) == 3
    assert list(RetryPolicy(max_retries=0).waits()) == []


def test_a_retry_that_fits_before_the_deadline_is_allowed() -> None:
    """A wait shorter than the time left, with a sane Retry-After, gets its retry."""
    assert RetryPolicy().refusal(7.0, 7.0, time_left=10.0) is None


def test_a_retry_past_the_deadline_is_refused_rather_than_made_early() -> None:
    """A wait that ends at or after max_time gives no retry, and says why."""
    assert "max_time (120s)" in (RetryPolicy().refusal(10.0, None, time_left=10.0) or "")


def test_a_retry_after_beyond_the_cap_is_refused_even_without_a_deadline() -> None:
    """Retry-After longer than MAX_RETRY_AFTER (one hour) is never waited for."""
    policy = RetryPolicy(max_time=None)
    assert MAX_RETRY_AFTER == 3600
    assert policy.refusal(3600.0, 3600.0, time_left=math.inf) is None
    assert "Retry-After" in (policy.refusal(math.inf, math.inf, time_left=math.inf) or "")


def test_retry_after_is_a_floor_that_max_wait_does_not_cut() -> None:
    """A 429 asking for 7 s is retried no sooner, though max_wait is 0."""
    slept: list[float] = []

    def record(
        loop: asyncio.AbstractEventLoop, wait: float, due: Any, retry: Any
    ) -> asyncio.TimerHandle:
        slept.append(wait)
        return loop.call_at(loop.time(), due, retry)

    def limited(request: httpx.Request, body: dict[str, Any], attempt: int) -> httpx.Response:
        if attempt == 1:
            return httpx.Response(429, headers={"Retry-After": "7"})
        return accept(request, body, attempt)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("courier_analytics._engine._call_after", record)
        with make_client(FakeCourier(limited)) as client:
            client.track("E", user_id="u1")
            assert client.flush(30)
            assert client.stats.delivered == 1
    assert slept == [7.0]


def fails_once(status: int, **headers: str) -> Any:
    """A rule: the first attempt of each message gets `status`, later ones are accepted."""

    def rule(request: httpx.Request, body: dict[str, Any], attempt: int) -> httpx.Response:
        if attempt == 1:
            return httpx.Response(status, json={"message": "later"}, headers=headers)
        return accept(request, body, attempt)

    return rule


def test_retry_after_longer_than_the_time_left_fails_at_once() -> None:
    """A Retry-After past max_time gives no early retry: one attempt, reported with why."""
    reports = Reports()
    courier = FakeCourier(fails_once(429, **{"Retry-After": "300"}))
    policy = RetryPolicy(max_retries=3, max_time=60, initial_wait=0, max_wait=0)
    with make_client(courier, retry=policy, on_error=reports) as client:
        client.track("E", user_id="u1")
        assert client.flush(30)
    assert len(courier.requests) == 1
    [error] = reports.errors
    assert isinstance(error, RetriesExhaustedError)
    assert (error.status, error.attempts) == (429, 1)
    assert str(error).endswith("HTTP 429: later; no retry could start within max_time (60s)")


def test_a_deadline_passed_before_the_first_retry_fails_without_retrying() -> None:
    """With max_time already spent when the first attempt fails, no retry is made."""
    reports = Reports()
    courier = FakeCourier(fails_once(503))
    policy = RetryPolicy(max_retries=3, max_time=0, initial_wait=0, max_wait=0)
    with make_client(courier, retry=policy, on_error=reports) as client:
        client.track("E", user_id="u1")
        assert client.flush(30)
        assert client.stats.retried == 0
    assert len(courier.requests) == 1
    [error] = reports.errors
    assert isinstance(error, RetriesExhaustedError)
    assert error.attempts == 1


@pytest.mark.parametrize("retry_after", ["inf", "1e8"])
def test_an_endless_retry_after_frees_the_lane_at_once(retry_after: str) -> None:
    """Retry-After inf or 1e8 without max_time fails that message now; the user's next goes."""
    reports = Reports()

    def first_limited(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        if body["properties"]["n"] == 0:
            return httpx.Response(429, headers={"Retry-After": retry_after})
        return accept(request, body, attempt)

    courier = FakeCourier(first_limited)
    policy = RetryPolicy(max_retries=3, max_time=None, initial_wait=0, max_wait=0)
    with make_client(courier, retry=policy, on_error=reports) as client:
        first = client.track("E", {"n": 0}, user_id="u1")
        client.track("E", {"n": 1}, user_id="u1")
        assert client.flush(30)
        assert (client.stats.delivered, client.stats.failed) == (1, 1)
    [error] = reports.errors
    assert isinstance(error, RetriesExhaustedError)
    assert error.message_id == first
    assert "more than the 3600s a retry waits at most" in str(error)


def test_retries_leave_the_random_modules_state_alone() -> None:
    """Jitter comes from the package's own generator: the app's `random` state is untouched."""
    random.seed(1234)
    before = random.getstate()
    courier = FakeCourier(fails_once(503))
    with make_client(courier) as client:
        client.track("E", user_id="u1")
        assert client.flush(5)
        assert client.stats.retried == 1
    assert random.getstate() == before


@pytest.mark.parametrize("value", ["5_0", "\u0665", "nan", "NaN", "1_000"])
def test_retry_after_reads_only_plain_ascii_numbers(value: str) -> None:
    """Underscores, non-ASCII digits and NaN, which float() accepts, are unreadable."""
    assert parse_retry_after(value, NOW) is None
