"""How many requests the worker keeps in flight, and when it opens a connection.

Courier has no batch endpoint, so at a distance the number of requests in flight
sets the pace, while on a short or CPU-bound path more requests only cost
connections, and over TLS every connection costs a handshake. Two decisions:

**The limit** on requests in flight is found at run time under a ceiling (the
``max_in_flight`` option). It starts small and is adjusted once per *window*
(about two round trips' worth of answers, at least 20 ms, at most 1 s):

- a window in which the limit changed, the first one included, is not judged (it
  *settles*): it holds the new connections' handshakes and first answers, which
  are slower than any after them, so its throughput and answer times say nothing
  about the new limit;
- while messages wait for a free slot and answers take no longer than twice the
  quickest window's, two windows in a row (the wait is distance, not a queue in
  this process or at the server), the limit doubles, up to the ceiling, as TCP's
  slow start does: the settled window after a step judges it (a window twice as
  long, so that the burst of answers that the handshakes held back does not
  flatter the step), and when the step raised throughput by at least 25 %, the
  same window may step up again;
- when a step up bought less, the judging window goes on as long again (a thread
  of the application, a garbage collection or the machine's other work can slow
  a part of it); if the whole still shows less, the limit goes back to where it
  was and stays there for a second before it probes again, then 2, 4 and at most
  8 seconds after further such steps in a row;
- a window in which the messages did not always outnumber the slots (the
  application paused, or one user's messages are all in flight) is not judged
  either: a step up pending then is neither kept for its gain nor taken back,
  and a pause between bursts is not mistaken for a step that bought nothing;
- when answers show congestion (a network error, 408, 429 or 5xx), the limit
  halves, and it does not grow again for a second.

**A new connection** (`Concurrency.may_open`, asked when a message could go but
no connection is idle) is opened only when one of these pays for its handshake;
otherwise the message waits for the first connection that an answer frees:

- the rate needs it (Little's law): fewer connections are open than the rate at
  which messages arrive times the mean answer time, with a quarter to spare. The
  rate is smoothed over seconds, so a short burst moves it a little, a rate that
  lasts moves it all the way;
- the backlog needs it: the waiting messages would keep every open connection
  busy for longer than `BACKLOG_S`, unless answers show queueing (then the CPU,
  here or at the server, is short, not connections);
- every connection is stalled (`Concurrency.stalled`): even the request started
  last has gone unanswered for `OVERDUE` answer times (at least `OVERDUE_MIN_S`).
  The server or a proxy holds them, no answer frees a connection soon, and the
  message would wait up to the timeout. That wait doubles with each connection so
  opened until an answer comes, so a proxy that holds every request is not sent a
  new connection every few answer times.

Idle connections are reused most recent first, so the ones beyond what the rate
needs stay idle, and the pool closes a connection idle for `IDLE_S`: the
connections held follow the rate.
"""

from __future__ import annotations

import math
import time
from typing import Final

__all__ = ["Concurrency"]

START: Final = 32
#: Least gain (ratio of throughputs) for a step up to count: doubling a latency-bound
#: limit nearly doubles throughput once the step has settled, while noise on a busy
#: machine is often +-20 % and a CPU-bound path gains next to nothing.
GAIN: Final = 1.25
MIN_WINDOW_S: Final = 0.02
#: The window that judges a step up is this many windows long: just after the settling
#: window, answers delayed by the new connections' handshakes arrive in a burst that
#: would flatter the step (the window after is slower, and the one after that is the
#: step's throughput; see docs/design-notes.md, "How many requests in flight").
JUDGING: Final = 2
MAX_WINDOW_S: Final = 1.0
#: After a step up that bought nothing: seconds before probing again. The wait doubles
#: after each such step in a row, up to PLATEAU_HOLD_MAX_S, and starts again from here
#: after a step that paid: a step judged on a disturbed window is soon tried again,
#: while a limit that is right stops costing probes.
PLATEAU_HOLD_S: Final = 1.0
PLATEAU_HOLD_MAX_S: Final = 8.0
#: After congestion: seconds before growing again.
CONGESTION_HOLD_S: Final = 1.0
#: No growth while a window's mean answer time exceeds this many times the quickest
#: window's: the extra time is queueing (CPU-bound here or at the server), which more
#: requests in flight would only lengthen.
QUEUEING: Final = 2.0
#: Windows in a row without queueing before a step up (a window that judges a step
#: counts as JUDGING): one quick window in a CPU-bound run is noise, and a step up
#: from there costs connections (over TLS, handshakes that slow every answer).
CALM: Final = 2
#: The quickest window's answer time creeps up by this factor per second, so that a
#: path that became slower (Courier farther away) is learnt again within a minute.
QUICKEST_DRIFT: Final = 1.02
#: A new connection pays for its handshake when the waiting messages would keep every
#: open connection busy for longer than this (seconds at the quickest answer time).
BACKLOG_S: Final = 1.0
#: Connections wanted beyond the rate times the answer time (Little's law): at
#: exactly that many the waiting line would never empty.
SPARE: Final = 1.25
#: Seconds over which the arrival rate is smoothed: a burst of a fraction of a second
#: moves it by a fraction, a rate that lasts this long moves it most of the way.
RATE_S: Final = 4.0
#: Every connection is stalled when the request started last has gone unanswered for this
#: many answer times (`Concurrency.latency`): the server or a proxy holds them.
OVERDUE: Final = 4.0
#: ...and for at least this many seconds: a garbage collection, or the machine's other
#: work holding the worker's thread, must not make quick requests look stalled.
OVERDUE_MIN_S: Final = 0.05
#: An idle connection unused this long is beyond what the rate needs: the pool closes it.
IDLE_S: Final = 5.0


class Concurrency:
    """The adaptive limit on requests in flight (used from the worker's thread only).

    Args:
        ceiling: The largest limit (``max_in_flight``).
        now: The current ``time.monotonic()``.
    """

    def __init__(self, ceiling: int, now: float) -> None:
        self.ceiling = ceiling
        self.limit = min(ceiling, START)
        self._since = now
        self._answers = 0
        self._congested = 0
        self._hold_until = now
        self._settling = True  # the limit changed (here: was set) in this window: not judged
        self._starved = False  # a message found no other waiting in this window: not judged
        self._previous: tuple[int, float] | None = None  # (limit, rate) before a step up
        self._doubted = False  # no gain from that step yet: the window goes on
        self._calm = 0  # windows judged since the last change without queueing, in a row
        self._plateau_hold = PLATEAU_HOLD_S  # the rest after the next step that buys nothing
        self._waited = 0.0  # seconds the answers of this window took, summed
        self._timed = 0
        self._quickest = float("inf")  # the lowest mean answer time of a window
        self.latency: float | None = None  # the mean answer time of the last timed window
        self._distance = float("inf")  # the lowest such mean, drifting up as _quickest does
        self.rate = 0.0  # messages arriving per second, smoothed over RATE_S
        self._waiting = 0  # messages waiting when this window began
        self._answered = now  # when the last answer (or failure to get one) came
        self.last_start = now  # when the last request started (set by the worker)
        self._stalled_after = now  # the answer after which `_stalled` connections opened
        self._stalled = 0  # connections opened since then because every one was stalled

    def record(self, congested: bool, seconds: float | None = None) -> None:
        """Count one answer (or failure to get one), and how long it took if known."""
        self._answers += 1
        if congested:
            self._congested += 1
        elif seconds is not None:
            self._waited += seconds
            self._timed += 1

    def update(self, now: float, backlog: int) -> int:
        """After each answer: adjust the limit at the end of a window, and return it.

        Args:
            now: The current ``time.monotonic()``.
            backlog: How many messages are waiting for a free slot.
        """
        self._answered = now
        if not backlog:
            self._starved = True
        elapsed = now - self._since
        previous = None if self._settling else self._previous
        answers = 2 * self.limit
        if previous is not None:  # a longer window weighs a step up
            answers *= JUDGING * (2 if self._doubted else 1)
        if elapsed < MIN_WINDOW_S or (
            elapsed < MAX_WINDOW_S and self._answers < answers and not self._congested
        ):
            return self.limit
        if self._congested:
            self._change(max(1, self.limit // 2))
            self._previous, self._doubted = None, False
            self._hold_until = now + CONGESTION_HOLD_S
        elif self._settling:
            self._settling = False
        elif self._starved:  # slots stood idle: no verdict on the limit, nor a baseline
            self._previous, self._doubted, self._calm = None, False, 0
        elif (
            previous is not None and not self._doubted and self._rate(elapsed) < previous[1] * GAIN
        ):
            self._doubted = True  # no gain yet: the window goes on as long again
            return self.limit
        else:
            self._judge(now, elapsed)
        self._observe(elapsed, backlog)
        self._since, self._answers, self._congested, self._starved = now, 0, 0, False
        self._waited, self._timed = 0.0, 0
        return self.limit

    def may_open(self, connections: int, waiting: int) -> bool:
        """Whether a message that finds no idle connection should open one.

        A connection costs a handshake (over TLS, as much CPU as many requests), so
        one opens when the rate needs it (Little's law, with `SPARE`) or, while
        answers show no queueing, when the waiting messages would keep the open
        connections busy for longer than `BACKLOG_S`; otherwise the message waits
        for an answer to free one.

        Args:
            connections: Connections open (all busy).
            waiting: Messages waiting to be sent, this one included.
        """
        latency = self.latency
        if not connections or latency is None:  # nothing learnt yet: the limit decides
            return True
        # The distance, not a queue: while this process or the server is short of CPU,
        # answers take longer and a backlog grows, and more connections would only
        # cost more CPU (the limit does not grow then either).
        distance = self._distance
        if connections < self.rate * distance * SPARE:
            return True
        return latency <= QUEUEING * distance and waiting * distance > connections * BACKLOG_S

    def opens(self, connections: int, waiting: int) -> bool:
        """Whether a waiting message opens a connection now: `may_open`, else `stalled`."""
        return self.may_open(connections, waiting) or self.stalled(time.monotonic())

    def stalled(self, now: float) -> bool:
        """Whether every connection is stalled, so that a waiting message opens one.

        Asked when `may_open` says no. True when even the request started last has
        gone unanswered for `OVERDUE` answer times, at least `OVERDUE_MIN_S`,
        doubled for each connection opened so since the last answer; counts the
        connection that the message opens then.

        Args:
            now: The current ``time.monotonic()``.
        """
        if self._answered != self._stalled_after:  # an answer came: the wait starts over
            self._stalled_after, self._stalled = self._answered, 0
        due = max(OVERDUE_MIN_S, OVERDUE * (self.latency or 0.0)) * 2**self._stalled
        if now - self.last_start < due:
            return False
        self._stalled += 1
        return True

    def _observe(self, elapsed: float, waiting: int) -> None:
        """At the end of a window: its mean answer time, and the arrival rate.

        Messages arrived = answered + the growth of the waiting line (the change in
        requests in flight is left out: the limit changes seldom).
        """
        if self._timed:
            self.latency = latency = self._waited / self._timed
            self._distance = min(latency, self._distance * QUICKEST_DRIFT**elapsed)
        arrived = max(0, self._answers + waiting - self._waiting)
        weight = 1.0 - math.exp(-elapsed / RATE_S)
        self.rate += (arrived / elapsed - self.rate) * weight
        self._waiting = waiting

    def _judge(self, now: float, elapsed: float) -> None:
        """Weigh a settled window: take back a step that bought nothing, or step up."""
        rate = self._rate(elapsed)
        queueing = False
        if self._timed:
            mean = self._waited / self._timed
            self._quickest = min(mean, self._quickest * QUICKEST_DRIFT**elapsed)
            queueing = mean > QUEUEING * self._quickest
        self._calm = 0 if queueing else self._calm + (1 if self._previous is None else JUDGING)
        if self._previous is not None:
            before_limit, before_rate = self._previous
            self._previous, self._doubted = None, False
            if rate < before_rate * GAIN:  # the step up bought nothing: step back, rest
                self._change(before_limit)
                self._hold_until = now + self._plateau_hold
                self._plateau_hold = min(PLATEAU_HOLD_MAX_S, 2 * self._plateau_hold)
                return
            self._plateau_hold = PLATEAU_HOLD_S
        if self._calm >= CALM and now >= self._hold_until and self.limit < self.ceiling:
            self._previous = (self.limit, rate)
            self._change(min(self.ceiling, self.limit * 2))

    def _rate(self, elapsed: float) -> float:
        """This window's answers per second, at most the limit per mean answer time.

        More than that (Little's law) is answers that new connections held back
        arriving in a burst, not throughput of this limit: counted, it flattered
        the window after a settling one, and so a step up from there, or the step
        after it, whose baseline it became.
        """
        rate = self._answers / elapsed
        if self._waited > 0:
            rate = min(rate, self.limit * self._timed / self._waited)
        return rate

    def _change(self, limit: int) -> None:
        """Set a new limit; the window it starts in only settles."""
        self._settling = limit != self.limit
        self._calm = 0
        self.limit = limit
