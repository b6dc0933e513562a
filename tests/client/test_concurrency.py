"""The adaptive limit on requests in flight, driven by an injected clock (no I/O).

Answers arrive one at a time at a given rate, and the limit is updated after each,
as the worker does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from courier_analytics import Client
from courier_analytics._concurrency import (
    CONGESTION_HOLD_S,
    JUDGING,
    OVERDUE,
    OVERDUE_MIN_S,
    PLATEAU_HOLD_S,
    START,
    Concurrency,
)
from courier_analytics._options import MAX_IN_FLIGHT, default_max_in_flight

Rate = Callable[[int], float]


def latency_bound(limit: int) -> float:
    """Answers a second when each takes 20 ms however many are in flight."""
    return limit * 50.0


def cpu_bound(limit: int) -> float:
    """Answers a second when the CPU sets the pace: the same at any limit."""
    return 1_000.0


def answers(
    limit: Concurrency,
    now: float,
    rate: float,
    count: int,
    *,
    seconds: float = 0.02,
    backlog: bool = True,
) -> float:
    """Feed ``count`` answers at ``rate`` per second, each taking ``seconds``."""
    for _ in range(count):
        now += 1 / rate
        limit.record(congested=False, seconds=seconds)
        limit.update(now, backlog)
    return now


def run(
    limit: Concurrency,
    now: float,
    rate: Rate,
    *,
    until: float | None = None,
    change: bool = False,
    seconds: float = 0.02,
    backlog: bool = True,
) -> float:
    """Feed answers at ``rate(limit)`` until the time ``until`` or, with ``change``, a new limit."""
    start, end = limit.limit, now + 10.0 if until is None else until
    while now < end and not (change and limit.limit != start):
        now = answers(limit, now, rate(limit.limit), 1, seconds=seconds, backlog=backlog)
    return now


def test_the_limit_starts_small_and_never_above_the_ceiling() -> None:
    """A new limit is START, or the ceiling when that is lower."""
    assert Concurrency(512, 0.0).limit == START
    assert Concurrency(4, 0.0).limit == 4


def test_the_window_after_a_step_up_settles_unjudged() -> None:
    """The window in which new connections open is not judged: a slow one keeps the step."""
    limit = Concurrency(512, 0.0)
    now = run(limit, 0.0, latency_bound, change=True)
    assert limit.limit == 2 * START
    # its two round trips' worth of answers: no faster than before, and slower
    now = answers(limit, now, latency_bound(START), 4 * START, seconds=0.05)
    assert limit.limit == 2 * START
    run(limit, now, latency_bound, change=True)  # settled: the step paid, so step again
    assert limit.limit == 4 * START


def test_one_window_without_gain_does_not_take_a_step_back() -> None:
    """A judging window without gain goes on as long again, and the whole decides."""
    limit = Concurrency(512, 0.0)
    now = run(limit, 0.0, latency_bound, change=True)
    now = answers(limit, now, latency_bound(2 * START), 4 * START)  # settles
    # a judging window's worth of answers slowed by something else: no gain yet
    now = answers(limit, now, latency_bound(START), JUDGING * 4 * START, seconds=0.03)
    assert limit.limit == 2 * START
    run(limit, now, latency_bound, change=True)  # the next window gains: a step up
    assert limit.limit == 4 * START


def test_a_burst_of_held_back_answers_is_not_a_gain() -> None:
    """Answers beyond the limit per mean answer time (Little's law) are not throughput."""
    limit = Concurrency(512, 0.0)
    now = run(limit, 0.0, latency_bound, change=True)
    now = answers(limit, now, latency_bound(2 * START), 4 * START)  # settles
    # four times the rate before the step, but each answer took 40 ms: with 64 in
    # flight, 1,600 a second at most, the rate before the step
    answers(limit, now, 4 * latency_bound(START), 2 * JUDGING * 4 * START, seconds=0.04)
    assert limit.limit == START


def test_the_limit_doubles_to_the_ceiling_while_latency_bound() -> None:
    """With a backlog and throughput rising with the limit, it doubles up to the ceiling."""
    limit = Concurrency(512, 0.0)
    now, seen = 0.0, [limit.limit]
    while limit.limit < 512 and now < 10.0:
        now = run(limit, now, latency_bound, change=True)
        seen.append(limit.limit)
    assert seen == [START << step for step in range(len(seen))]  # doubling, no step back
    assert seen[-1] == 512
    assert now < 1.0


def test_a_step_up_that_buys_nothing_is_taken_back() -> None:
    """When the window after settling shows no gain from doubling, the limit returns."""
    limit = Concurrency(512, 0.0)
    now = run(limit, 0.0, cpu_bound, change=True)
    assert limit.limit == 2 * START
    run(limit, now, cpu_bound, change=True)
    assert limit.limit == START


def test_after_a_step_back_the_limit_rests_then_probes_again() -> None:
    """A step up that bought nothing is not tried again for PLATEAU_HOLD_S."""
    limit = Concurrency(512, 0.0)
    now = run(limit, 0.0, cpu_bound, change=True)  # a step up
    back = run(limit, now, cpu_bound, change=True)  # taken back
    probe = run(limit, back, cpu_bound, change=True)
    assert limit.limit == 2 * START
    assert PLATEAU_HOLD_S <= probe - back < PLATEAU_HOLD_S + 0.1


def test_the_rest_doubles_after_each_step_in_a_row_that_buys_nothing() -> None:
    """The second fruitless probe in a row is followed by twice the rest."""
    limit = Concurrency(512, 0.0)
    now = run(limit, 0.0, cpu_bound, change=True)  # a step up
    now = run(limit, now, cpu_bound, change=True)  # taken back: rests PLATEAU_HOLD_S
    now = run(limit, now, cpu_bound, change=True)  # probes again
    back = run(limit, now, cpu_bound, change=True)  # taken back again
    probe = run(limit, back, cpu_bound, change=True)
    assert 2 * PLATEAU_HOLD_S <= probe - back < 2 * PLATEAU_HOLD_S + 0.1


def test_no_growth_without_a_backlog() -> None:
    """Nothing waits for a slot: more slots would not help, so the limit stays."""
    limit = Concurrency(512, 0.0)
    run(limit, 0.0, latency_bound, until=2.0, backlog=False)
    assert limit.limit == START


def test_a_pause_in_traffic_is_no_verdict_on_a_step() -> None:
    """A window in which slots stood idle neither keeps nor takes back a pending step."""
    limit = Concurrency(512, 0.0)
    now = run(limit, 0.0, latency_bound, change=True)
    now = answers(limit, now, latency_bound(2 * START), 4 * START)  # settles
    now = answers(limit, now, latency_bound(2 * START), 8)  # the application pauses
    limit.record(congested=False, seconds=0.02)
    now += 5.0
    limit.update(now, backlog=False)
    assert limit.limit == 2 * START
    run(limit, now, latency_bound, change=True)  # busy again: it steps up, not back
    assert limit.limit == 4 * START


def test_no_growth_while_answers_queue() -> None:
    """Answers slower than twice the quickest window's mean are queueing: the limit stays."""
    limit = Concurrency(512, 0.0)
    window = 2 * START  # answers in a window that judges no step
    now = answers(limit, 0.0, latency_bound(START), window)  # settles
    now = answers(limit, now, latency_bound(START), window)  # learns 20 ms
    # every answer now takes 60 ms on a 20 ms path, and more in flight would go faster
    while now < 2.0:
        now = answers(limit, now, limit.limit / 0.06, window, seconds=0.06)
    assert limit.limit == START


def test_one_quick_window_among_queueing_ones_is_no_reason_to_grow() -> None:
    """A step up needs two windows in a row whose answers do not queue."""
    limit = Concurrency(512, 0.0)
    window = 2 * START  # answers in a window that judges no step
    now = answers(limit, 0.0, latency_bound(START), window)  # settles
    now = answers(limit, now, latency_bound(START), window)  # learns 20 ms
    for quick in (False, False, True, False, True, False):
        now = answers(limit, now, latency_bound(START), window, seconds=0.02 if quick else 0.06)
    assert limit.limit == START


def test_congestion_halves_the_limit_and_pauses_growth() -> None:
    """An error or 429 in a window halves the limit; it does not grow again at once."""
    limit = Concurrency(512, 0.0)
    now = 0.0
    while limit.limit < 128:
        now = run(limit, now, latency_bound, change=True)
    limit.record(congested=True)
    now += 0.05
    limit.update(now, backlog=True)
    assert limit.limit == 64
    run(limit, now, latency_bound, until=now + CONGESTION_HOLD_S - 0.01)
    assert limit.limit == 64


def test_congestion_never_takes_the_limit_below_one() -> None:
    """Repeated congestion bottoms out at one request in flight."""
    limit = Concurrency(8, 0.0)
    now = 0.0
    for _ in range(10):
        limit.record(congested=True)
        now += 0.05
        limit.update(now, backlog=True)
    assert limit.limit == 1


def answered_in(seconds: float) -> Concurrency:
    """A limit that has seen answers take `seconds` (few arrivals); a request starts at 10 s."""
    limit = Concurrency(512, 0.0)
    answers(limit, 0.0, 50.0, 100, seconds=seconds, backlog=False)
    limit.rate = 0.0
    limit.last_start = 10.0
    return limit


def test_connections_are_stalled_when_the_last_request_is_overdue() -> None:
    """Every connection is stalled once the request started last waits OVERDUE answer times."""
    limit = answered_in(0.02)
    assert not limit.may_open(1, 2)  # an answer frees the connection soon...
    assert not limit.stalled(10.0 + OVERDUE * 0.02 - 0.01)
    assert limit.stalled(10.0 + OVERDUE * 0.02 + 0.01)  # ...unless none is coming


def test_after_quick_answers_connections_are_stalled_only_after_the_floor() -> None:
    """However quick the answers, a request is not overdue before OVERDUE_MIN_S."""
    limit = answered_in(0.001)
    assert OVERDUE * 0.001 < OVERDUE_MIN_S
    assert not limit.stalled(10.0 + OVERDUE_MIN_S - 0.001)
    assert limit.stalled(10.0 + OVERDUE_MIN_S + 0.001)


def test_each_connection_opened_for_stalled_ones_doubles_the_wait_until_an_answer() -> None:
    """After each connection opened because all were stalled, the next waits twice as long."""
    limit, due = answered_in(0.02), OVERDUE * 0.02
    for waited in (1, 2, 4):  # a proxy that holds every request, the new ones too
        limit.last_start = now = 20.0 * waited
        assert not limit.stalled(now + waited * due - 0.01)
        assert limit.stalled(now + waited * due + 0.01)
    limit.record(congested=False, seconds=0.02)
    limit.update(100.0, backlog=1)  # an answer: the wait starts over
    limit.last_start = 100.0
    assert limit.stalled(100.0 + due + 0.01)


@pytest.mark.skipif(sys.platform == "win32", reason="no resource module")
@pytest.mark.parametrize(
    ("soft", "default"), [(256, 64), (1024, 256), (4096, MAX_IN_FLIGHT), (3, 1)]
)
def test_the_default_ceiling_is_capped_by_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch, soft: int, default: int
) -> None:
    """By default at most a quarter of the soft open-file limit goes to connections."""
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, resource.RLIM_INFINITY))
    assert default_max_in_flight() == default


@pytest.mark.skipif(sys.platform == "win32", reason="no resource module")
def test_an_unlimited_open_file_limit_leaves_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """No open-file limit: the default ceiling is 512."""
    import resource

    infinity = resource.RLIM_INFINITY
    monkeypatch.setattr(resource, "getrlimit", lambda which: (infinity, infinity))
    assert default_max_in_flight() == MAX_IN_FLIGHT


def test_without_the_resource_module_the_default_is_512(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where `resource` cannot be imported (Windows), the default ceiling is 512."""
    monkeypatch.setitem(sys.modules, "resource", None)
    assert default_max_in_flight() == MAX_IN_FLIGHT


def test_a_given_max_in_flight_is_not_capped() -> None:
    """An explicit max_in_flight is used as given, above the open-file cap too."""
    with Client(send=False, max_in_flight=5_000) as client:
        assert client.options.max_in_flight == 5_000
