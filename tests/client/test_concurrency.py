"""The adaptive limit on requests in flight, driven by an injected clock (no I/O)."""

from __future__ import annotations

from courier_analytics._concurrency import PLATEAU_HOLD_S, START, Concurrency


def window(
    limit: Concurrency,
    now: float,
    rate: float,
    *,
    backlog: bool = True,
    seconds: float | None = 0.02,
) -> float:
    """Feed one window's answers at ``rate`` per second, each taking ``seconds``."""
    answers = 2 * limit.limit
    for _ in range(answers):
        limit.record(congested=False, seconds=seconds)
    end = now + answers / rate
    limit.update(end, backlog)
    return end


def latency_bound(limit: Concurrency) -> float:
    """The rate of a path where every answer takes 20 ms, however many are in flight."""
    return limit.limit * 50.0


def test_the_limit_starts_small_and_never_above_the_ceiling() -> None:
    """A new limit is START, or the ceiling when that is lower."""
    assert Concurrency(512, 0.0).limit == START
    assert Concurrency(4, 0.0).limit == 4


def test_the_window_after_a_step_up_settles_unjudged() -> None:
    """The window in which new connections open is not judged: a slow one keeps the step."""
    limit = Concurrency(512, 0.0)
    now = window(limit, 0.0, rate=800.0)  # 16 in flight, 20 ms each
    assert limit.limit == 2 * START
    # connections opening: no more throughput than before, answers twice as slow
    now = window(limit, now, rate=800.0, seconds=0.05)
    assert limit.limit == 2 * START
    window(limit, now, rate=1_600.0)  # settled: the step paid, so the limit steps again
    assert limit.limit == 4 * START


def test_the_limit_doubles_to_the_ceiling_while_latency_bound() -> None:
    """With a backlog and throughput rising with the limit, it doubles up to the ceiling."""
    limit = Concurrency(512, 0.0)
    now, seen = 0.0, [limit.limit]
    for _ in range(12):
        now = window(limit, now, rate=latency_bound(limit))
        seen.append(limit.limit)
    assert limit.limit == 512
    assert sorted(set(seen)) == [16, 32, 64, 128, 256, 512]  # doubling, no step back


def test_a_step_up_that_buys_nothing_is_taken_back() -> None:
    """When a settled window shows no gain from doubling, the limit returns and rests."""
    limit = Concurrency(512, 0.0)
    now = window(limit, 0.0, rate=1_000.0)  # CPU-bound: the same rate at any limit
    assert limit.limit == 2 * START
    now = window(limit, now, rate=1_000.0)  # settles
    now = window(limit, now, rate=1_100.0)  # judged: +10 % is noise, not a gain
    assert limit.limit == START


def test_after_a_step_back_the_limit_rests_then_probes_again() -> None:
    """A step up that bought nothing is not tried again for PLATEAU_HOLD_S."""
    limit = Concurrency(512, 0.0)
    now = window(limit, 0.0, rate=1_000.0)  # a step up
    now = window(limit, now, rate=1_000.0)  # settles
    now = window(limit, now, rate=1_000.0)  # bought nothing: back to START
    back_at = now
    while now < back_at + PLATEAU_HOLD_S:
        assert limit.limit == START
        now = window(limit, now, rate=1_000.0)
    assert limit.limit == 2 * START


def test_no_growth_without_a_backlog() -> None:
    """Nothing waits for a slot: more slots would not help, so the limit stays."""
    limit = Concurrency(512, 0.0)
    now = 0.0
    for _ in range(5):
        now = window(limit, now, rate=1_000.0, backlog=False)
    assert limit.limit == START


def test_no_growth_while_answers_queue() -> None:
    """Answers slower than twice the quickest window's mean are queueing: the limit stays."""
    limit = Concurrency(512, 0.0)
    now = window(limit, 0.0, rate=800.0)  # 16 in flight, 20 ms each
    now = window(limit, now, rate=1_600.0)  # 32 settle
    now = window(limit, now, rate=1_600.0)  # 32 paid: a step to 64
    assert limit.limit == 4 * START
    now = window(limit, now, rate=3_200.0)  # 64 settle
    # throughput still grew, but every answer now waits in a queue: 60 ms on a 20 ms path
    for _ in range(5):
        now = window(limit, now, rate=6_400.0, seconds=0.06)
    assert limit.limit == 4 * START


def test_congestion_halves_the_limit_and_pauses_growth() -> None:
    """An error or 429 in a window halves the limit; it does not grow again at once."""
    limit = Concurrency(512, 0.0)
    now = 0.0
    for _ in range(5):
        now = window(limit, now, rate=latency_bound(limit))
    grown = limit.limit
    assert grown > START
    limit.record(congested=True)
    now += 0.05
    limit.update(now, backlog=True)
    assert limit.limit == grown // 2
    for _ in range(5):  # well within the hold
        now = window(limit, now, rate=latency_bound(limit))
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
