"""The adaptive limit on requests in flight, driven by an injected clock (no I/O)."""

from __future__ import annotations

from courier_analytics._concurrency import START, Concurrency


def window(
    limit: Concurrency,
    now: float,
    rate: float,
    *,
    backlog: bool = True,
    seconds: float | None = None,
) -> float:
    """Feed one window's answers at ``rate`` per second, each taking ``seconds``."""
    answers = 2 * limit.limit
    for _ in range(answers):
        limit.record(congested=False, seconds=seconds)
    end = now + answers / rate
    limit.update(end, backlog)
    return end


def test_the_limit_starts_small_and_never_above_the_ceiling() -> None:
    """A new limit is START, or the ceiling when that is lower."""
    assert Concurrency(512, 0.0).limit == START
    assert Concurrency(4, 0.0).limit == 4


def test_the_limit_grows_while_throughput_grows() -> None:
    """With a backlog and throughput rising with the limit, it doubles up to the ceiling."""
    limit = Concurrency(256, 0.0)
    now = 0.0
    for _ in range(12):
        # latency-bound: every answer takes 20 ms, however many are in flight
        now = window(limit, now, rate=limit.limit * 50.0, seconds=0.02)
    assert limit.limit == 256


def test_a_step_up_that_buys_nothing_is_taken_back() -> None:
    """When doubling does not raise throughput, the limit returns to where it was."""
    limit = Concurrency(256, 0.0)
    now = window(limit, 0.0, rate=1_000.0)  # CPU-bound: the same rate at any limit
    assert limit.limit == 2 * START
    window(limit, now, rate=1_000.0)
    assert limit.limit == START


def test_no_growth_without_a_backlog() -> None:
    """Nothing waits for a slot: more slots would not help, so the limit stays."""
    limit = Concurrency(256, 0.0)
    now = 0.0
    for _ in range(5):
        now = window(limit, now, rate=1_000.0, backlog=False)
    assert limit.limit == START


def test_congestion_halves_the_limit_and_pauses_growth() -> None:
    """An error or 429 in a window halves the limit; it does not grow again at once."""
    limit = Concurrency(256, 0.0)
    now = 0.0
    for _ in range(3):
        now = window(limit, now, rate=limit.limit * 50.0)
    grown = limit.limit
    limit.record(congested=True)
    limit.update(now + 0.05, backlog=True)
    assert limit.limit == grown // 2
    window(limit, now + 0.05, rate=limit.limit * 50.0)
    assert limit.limit == grown // 2


def test_congestion_never_takes_the_limit_below_one() -> None:
    """Repeated congestion bottoms out at one request in flight."""
    limit = Concurrency(8, 0.0)
    now = 0.0
    for _ in range(10):
        limit.record(congested=True)
        now += 0.05
        limit.update(now, backlog=True)
    assert limit.limit == 1


def test_no_growth_while_answers_queue() -> None:
    """Answers slower than twice the quickest window's mean queueing: the limit stays."""
    limit = Concurrency(256, 0.0)
    now = window(limit, 0.0, rate=800.0, seconds=0.02)  # 16 in flight, 20 ms each
    assert limit.limit == 2 * START  # a first step up
    now = window(limit, now, rate=1_600.0, seconds=0.02)  # it paid: keep it
    for _ in range(5):  # now every answer waits in a queue: 60 ms for a 20 ms path
        now = window(limit, now, rate=limit.limit * 50.0, seconds=0.06)
    assert limit.limit == 2 * START
