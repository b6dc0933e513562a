"""When the worker opens a connection, and when the pool closes one (injected clocks).

`Concurrency.may_open` is asked when a message could go but no connection is idle;
the simulation below plays the worker's part: messages arrive at a given pace, each
request holds its connection for a fixed answer time, and an answer frees its
connection for the next waiting message, as the worker's pump does.
"""

from __future__ import annotations

import heapq
import types

import pytest

from courier_analytics import _http11
from courier_analytics._concurrency import IDLE_S, SPARE, Concurrency
from courier_analytics._http11 import Http11Pool, _Connection

LATENCY = 0.02


def learnt(latency: float = LATENCY, rate: float = 0.0) -> Concurrency:
    """A limit that has seen answers take `latency`, with messages arriving at `rate`."""
    limit = Concurrency(512, 0.0)
    now = 0.0
    for _ in range(400):  # two seconds of windows
        now += 0.005
        limit.record(congested=False, seconds=latency)
        limit.update(now, 0)
    limit.rate = rate
    return limit


def opened_for(limit: Concurrency, waiting: int) -> int:
    """Connections a pool ends with when `waiting` messages find all of them busy."""
    connections = 1
    while connections < limit.ceiling and limit.may_open(connections, waiting):
        connections += 1
    return connections


def simulate(rate: float, seconds: float, latency: float = LATENCY) -> tuple[int, int, int]:
    """A steady pace through the policy: (connections opened, at most open, open at the end).

    Messages arrive every 1/rate seconds; a request takes `latency`; a message that
    finds no idle connection opens one only if `may_open` says so, else it waits for
    the next answer. Idle connections are reused last in, first out, and one idle
    for `IDLE_S` is closed, as the pool does.
    """
    limit = Concurrency(512, 0.0)
    waiting = 0
    idle: list[float] = []  # when each idle connection was last used, oldest first
    answers: list[float] = []  # when each busy connection's answer comes
    opened = peak = 0
    now, step, end = 0.0, 1 / rate, seconds

    def pump(now: float) -> None:
        nonlocal waiting, opened
        while waiting and len(answers) < limit.limit:
            if idle:
                idle.pop()
            elif limit.may_open(len(answers), waiting):
                opened += 1
            else:
                return
            waiting -= 1
            heapq.heappush(answers, now + latency)

    next_arrival = 0.0
    while now < end:
        if answers and answers[0] <= next_arrival:
            now = heapq.heappop(answers)
            limit.record(congested=False, seconds=latency)
            idle.append(now)
            if now - idle[0] > IDLE_S:
                idle.pop(0)
            limit.update(now, waiting)
        else:
            now = next_arrival
            waiting += 1
            next_arrival += step
        pump(now)
        peak = max(peak, len(answers) + len(idle))
    return opened, peak, len(answers) + len(idle)


def test_a_connection_opens_when_none_is_open_or_nothing_is_learnt() -> None:
    """The first connection always opens, and before any answer the limit alone decides."""
    assert Concurrency(512, 0.0).may_open(0, 1)
    assert Concurrency(512, 0.0).may_open(10, 1)
    assert learnt().may_open(0, 1)


def test_a_few_waiting_messages_wait_for_a_busy_connection() -> None:
    """Fewer waiting messages than the open connections clear soon open nothing."""
    assert not learnt().may_open(10, 20)


def test_a_burst_opens_connections_as_the_backlog_grows() -> None:
    """The longer the backlog, the more connections it pays for, up to the ceiling."""
    limit = learnt()
    counts = [opened_for(limit, waiting) for waiting in (10, 1_000, 5_000, 20_000, 100_000)]
    assert counts == sorted(counts)
    assert counts[0] == 1
    assert counts[1] < counts[2] < counts[3]
    assert counts[-1] == limit.ceiling


def test_a_lasting_rate_opens_what_littles_law_needs() -> None:
    """Messages arriving at a rate keep rate x answer time connections, with some to spare."""
    limit = learnt(rate=2_000)
    needed = 2_000 * LATENCY
    assert opened_for(limit, 1) == pytest.approx(needed * SPARE, abs=1)


def test_a_steady_rate_holds_about_littles_law_connections() -> None:
    """2,000 messages a second taking 20 ms each hold some 40 connections, not hundreds."""
    opened, peak, end = simulate(rate=2_000, seconds=20.0)
    needed = 2_000 * LATENCY
    assert needed <= end <= 2 * needed
    assert peak <= 2 * needed
    assert opened <= 3 * needed


def test_a_lower_rate_holds_fewer_connections() -> None:
    """Held connections follow the rate: a tenth of the rate, a tenth of the connections."""
    _, _, busy = simulate(rate=2_000, seconds=10.0)
    _, _, quiet = simulate(rate=200, seconds=10.0)
    assert quiet * 5 <= busy


def test_the_arrival_rate_follows_a_lasting_pace_not_a_burst() -> None:
    """A burst moves the smoothed rate by a fraction; the same pace for seconds, nearly all."""
    burst = Concurrency(512, 0.0)
    burst.record(congested=False, seconds=LATENCY)
    burst.update(0.1, 2_000)  # 2,000 arrived within 0.1 s: 20,000 a second, briefly
    assert burst.rate < 20_000 / 10
    steady = learnt()
    now = 2.0
    for _ in range(200):  # ten seconds of 2,000 a second, answered as they come
        now += 0.05
        for _ in range(100):
            steady.record(congested=False, seconds=LATENCY)
        steady.update(now, 0)
    assert steady.rate == pytest.approx(2_000, rel=0.1)


class Clock:
    """A stand-in for the `time` module that `_http11` reads: monotonic() as set."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The pool's clock, moved by hand."""
    clock = Clock()
    monkeypatch.setattr(_http11, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    return clock


def idle_pool() -> Http11Pool:
    """A pool that never connects: connections are handed to it as if answered."""
    return Http11Pool("http://127.0.0.1:9", [], timeout=1.0, max_idle=10)


def test_the_pool_closes_a_connection_left_idle_beyond_idle_s(clock: Clock) -> None:
    """Connections reused last in, first out: one idle for IDLE_S is closed on the next release."""
    pool = idle_pool()
    spare, busy = _Connection(), _Connection()
    pool.release(spare, keep_alive=True)
    pool.release(busy, keep_alive=True)
    for _ in range(3):  # the last in is taken (as `start` does) and answered, again and again
        clock.now += IDLE_S / 2
        assert pool._idle.pop() is busy
        pool.release(busy, keep_alive=True)
    assert spare.closed
    assert not busy.closed
    assert pool.idle == 1


def test_the_pool_keeps_connections_idle_for_less_than_idle_s(clock: Clock) -> None:
    """Idle connections used within IDLE_S are all kept."""
    pool = idle_pool()
    connections = [_Connection() for _ in range(3)]
    for connection in connections:
        clock.now += IDLE_S / 4
        pool.release(connection, keep_alive=True)
    assert pool.idle == 3
    assert not any(connection.closed for connection in connections)


def test_a_backlog_opens_nothing_while_answers_queue() -> None:
    """Answers slower than twice the quickest mean a CPU short of work, not of connections."""
    limit = learnt()
    now = 2.0
    for _ in range(200):  # the same answers, now taking five times as long
        now += 0.005
        limit.record(congested=False, seconds=5 * LATENCY)
        limit.update(now, 0)
    assert not limit.may_open(10, 100_000)
    assert learnt().may_open(10, 100_000)
