"""Fault injection for the Courier stand-in.

`Faults` is the immutable description a user gives (at start or at run time);
`FaultInjector` is the mutable thing that turns it into per-request decisions
(random draws from a seedable RNG, the "next N requests" counter, the
messageId pattern and its per-id counts). The injector is not thread-safe on
its own: `DevState` calls it under its lock.
"""

from __future__ import annotations

import random
import re
import time
from email.utils import formatdate
from typing import Any, Literal

import attrs

FaultKind = Literal["error", "rate_limit", "drop", "hang", "slow_body"]
LatencyDistribution = Literal["fixed", "uniform", "normal"]

#: What a deterministic fault may be told to do: an HTTP status (5xx, or 429
#: with ``Retry-After``) or one of the connection-level misbehaviours.
FAIL_WITH_WORDS = ("drop", "hang", "slow_body")


def _check_rate(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Faults.{attribute.name} must be between 0 and 1, got {value!r}.")


def _check_non_negative(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"Faults.{attribute.name} must not be negative, got {value!r}.")


def _check_statuses(_instance: object, _attribute: object, value: tuple[int, ...]) -> None:
    if not value or any(not 500 <= status <= 599 for status in value):
        raise ValueError(f"Faults.error_statuses must be a non-empty list of 5xx, got {value!r}.")


def _check_fail_with(_instance: object, _attribute: object, value: int | str) -> None:
    if isinstance(value, str) and value in FAIL_WITH_WORDS:
        return
    if isinstance(value, int) and 400 <= value <= 599:
        return
    raise ValueError(
        f"Faults.fail_with must be a 4xx or 5xx status or one of {FAIL_WITH_WORDS}, got {value!r}."
    )


def _check_pattern(_instance: object, _attribute: object, value: str | None) -> None:
    if value is None:
        return
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(
            f"Faults.fail_message_ids is not a valid regular expression: {exc}"
        ) from exc


def _to_int_tuple(value: Any) -> tuple[int, ...]:
    return tuple(int(item) for item in value)


def _to_fail_with(value: Any) -> int | str:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, (int, str)):
        return value
    raise TypeError(f"Faults.fail_with must be an int or a str, got {type(value).__name__}.")


@attrs.frozen(kw_only=True)
class Faults:
    """What the stand-in should do wrong, and how often.

    All faults apply only to Courier's routes (`/inbound/*`, `/profiles/*`), never
    to the inspection API or the page. A faulted request is *not* applied unless
    `apply_first` is set, which simulates a request that Courier applied but whose
    answer was lost. `slow_body` is the exception: the answer is correct, only slow,
    so the request is always applied.

    Attributes:
        latency_ms: Added latency before every answer (the mean for distributions).
        latency_distribution: `"fixed"`, `"uniform"` (`latency_ms` ± `latency_jitter_ms`)
            or `"normal"` (standard deviation `latency_jitter_ms`); never below 0.
        latency_jitter_ms: Spread of the latency distribution.
        error_rate: Fraction of requests answered with a status from `error_statuses`.
        error_statuses: The 5xx statuses to pick from (uniformly).
        rate_limit_rate: Fraction of requests answered 429.
        retry_after: Seconds to put in `Retry-After` on 429s; `None` sends no header.
        retry_after_format: `"seconds"` (`Retry-After: 2`) or `"http-date"`.
        drop_rate: Fraction of requests whose connection is closed with no answer.
        hang_rate: Fraction of requests never answered (until the client gives up).
        slow_body_rate: Fraction of answers whose body is dribbled out slowly.
        slow_body_ms: How long a slow body takes in total.
        fail_next: Deterministic: fail the next N Courier requests with `fail_with`.
        fail_message_ids: Deterministic: fail requests whose messageId (or
            `Idempotency-Key`) matches this regular expression (`re.search`).
        fail_message_ids_times: Fail each matching messageId only this many times
            (`None`: always), so retries can be seen to succeed.
        fail_with: What deterministic faults do: a 4xx or 5xx status (429 with
            `Retry-After`; 400 to reject one message as invalid), `"drop"`,
            `"hang"` or `"slow_body"`.
        apply_first: Apply a faulted request, then fail its answer.
        seed: Seed for the random faults (`None`: unpredictable).
    """

    latency_ms: float = attrs.field(default=0.0, converter=float, validator=_check_non_negative)
    latency_distribution: LatencyDistribution = attrs.field(
        default="fixed", validator=attrs.validators.in_(("fixed", "uniform", "normal"))
    )
    latency_jitter_ms: float = attrs.field(
        default=0.0, converter=float, validator=_check_non_negative
    )
    error_rate: float = attrs.field(default=0.0, converter=float, validator=_check_rate)
    error_statuses: tuple[int, ...] = attrs.field(
        default=(500, 502, 503), converter=_to_int_tuple, validator=_check_statuses
    )
    rate_limit_rate: float = attrs.field(default=0.0, converter=float, validator=_check_rate)
    retry_after: float | None = attrs.field(default=1.0, validator=_check_non_negative)
    retry_after_format: Literal["seconds", "http-date"] = attrs.field(
        default="seconds", validator=attrs.validators.in_(("seconds", "http-date"))
    )
    drop_rate: float = attrs.field(default=0.0, converter=float, validator=_check_rate)
    hang_rate: float = attrs.field(default=0.0, converter=float, validator=_check_rate)
    slow_body_rate: float = attrs.field(default=0.0, converter=float, validator=_check_rate)
    slow_body_ms: float = attrs.field(
        default=1000.0, converter=float, validator=_check_non_negative
    )
    fail_next: int = attrs.field(default=0, converter=int, validator=_check_non_negative)
    fail_message_ids: str | None = attrs.field(default=None, validator=_check_pattern)
    fail_message_ids_times: int | None = attrs.field(default=None, validator=_check_non_negative)
    fail_with: int | str = attrs.field(
        default=503, converter=_to_fail_with, validator=_check_fail_with
    )
    apply_first: bool = attrs.field(default=False, converter=bool)
    seed: int | None = None

    def __attrs_post_init__(self) -> None:
        total = self.error_rate + self.rate_limit_rate + self.drop_rate + self.hang_rate
        if total + self.slow_body_rate > 1.0:
            raise ValueError("The fault rates together must not exceed 1.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Faults:
        """Build faults from a JSON object, e.g. the body of `POST /__dev/faults`.

        Raises:
            ValueError: An unknown field or an invalid value, with a readable message.
        """
        known = {field.name for field in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown fault field(s): {', '.join(unknown)}.")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        """Return the faults as a JSON-ready dict (the shape `from_dict` takes)."""
        data = attrs.asdict(self)
        data["error_statuses"] = list(self.error_statuses)
        return data


@attrs.frozen
class FaultAction:
    """One decision: what to do wrong with one request.

    Attributes:
        kind: `error`, `rate_limit`, `drop`, `hang` or `slow_body`.
        status: The HTTP status for `error` and `rate_limit`; 0 otherwise.
        retry_after: The `Retry-After` header value for `rate_limit`, if any.
    """

    kind: FaultKind
    status: int = 0
    retry_after: str | None = None


class FaultInjector:
    """Turns a `Faults` description into per-request decisions."""

    def __init__(self, faults: Faults) -> None:
        """Start with `faults` (counters and RNG fresh)."""
        self.configure(faults)

    def configure(self, faults: Faults) -> None:
        """Replace the description; resets the counters and reseeds the RNG."""
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._fail_next_left = faults.fail_next
        self._pattern = re.compile(faults.fail_message_ids) if faults.fail_message_ids else None
        self._matched: dict[str, int] = {}
        self._has_random = (
            faults.error_rate
            + faults.rate_limit_rate
            + faults.drop_rate
            + faults.hang_rate
            + faults.slow_body_rate
        ) > 0

    def latency_s(self) -> float:
        """Draw the latency to add to one answer, in seconds."""
        faults = self.faults
        if faults.latency_distribution == "fixed" or faults.latency_jitter_ms == 0:
            ms = faults.latency_ms
        elif faults.latency_distribution == "uniform":
            jitter = faults.latency_jitter_ms
            ms = self._rng.uniform(faults.latency_ms - jitter, faults.latency_ms + jitter)
        else:
            ms = self._rng.gauss(faults.latency_ms, faults.latency_jitter_ms)
        return max(ms, 0.0) / 1000.0

    def decide(self, message_id: str | None) -> FaultAction | None:
        """Decide whether (and how) to fault the request carrying `message_id`."""
        if self._fail_next_left > 0:
            self._fail_next_left -= 1
            return self._deterministic()
        pattern = self._pattern
        if pattern is not None and message_id is not None and self._matches(pattern, message_id):
            return self._deterministic()
        if self._has_random:
            return self._random()
        return None

    def _matches(self, pattern: re.Pattern[str], message_id: str) -> bool:
        if not pattern.search(message_id):
            return False
        times = self.faults.fail_message_ids_times
        seen = self._matched.get(message_id, 0)
        if times is not None and seen >= times:
            return False
        self._matched[message_id] = seen + 1
        return True

    def _deterministic(self) -> FaultAction:
        fail_with = self.faults.fail_with
        if fail_with == 429:
            return self._rate_limit()
        if isinstance(fail_with, int):
            return FaultAction("error", fail_with)
        kinds: dict[str, FaultKind] = {"drop": "drop", "hang": "hang", "slow_body": "slow_body"}
        return FaultAction(kinds[fail_with])

    def _random(self) -> FaultAction | None:
        faults = self.faults
        draw = self._rng.random()
        threshold = faults.drop_rate
        if draw < threshold:
            return FaultAction("drop")
        threshold += faults.hang_rate
        if draw < threshold:
            return FaultAction("hang")
        threshold += faults.error_rate
        if draw < threshold:
            return FaultAction("error", self._rng.choice(faults.error_statuses))
        threshold += faults.rate_limit_rate
        if draw < threshold:
            return self._rate_limit()
        threshold += faults.slow_body_rate
        if draw < threshold:
            return FaultAction("slow_body")
        return None

    def _rate_limit(self) -> FaultAction:
        seconds = self.faults.retry_after
        if seconds is None:
            return FaultAction("rate_limit", 429)
        if self.faults.retry_after_format == "http-date":
            value = formatdate(time.time() + seconds, usegmt=True)
        else:
            value = f"{seconds:g}"
        return FaultAction("rate_limit", 429, value)
