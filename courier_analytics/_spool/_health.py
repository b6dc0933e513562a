"""Whether the spool and Courier work, as the journal sees them.

A spool failure (a locked or broken file, Redis away or full) is logged once per
episode, and its end once, after a write of the kind that failed succeeds; the
journal tries the spool again `RETRY_SPOOL` seconds later and delivers from
memory meanwhile. A Courier outage (`Outage`) spaces out the
retries of what waits in the spool.
"""

from __future__ import annotations

import logging
import math
import random
import time

from courier_analytics._spool import Settings, SpoolError

__all__ = ["FIRST_WAIT", "LONGEST_WAIT", "RETRY_SPOOL", "Health", "Outage"]

logger = logging.getLogger("courier_analytics")

#: Seconds after a spool error before the spool is tried again.
RETRY_SPOOL = 1.0
#: The first and the longest wait of a parked retry.
FIRST_WAIT, LONGEST_WAIT = 1.0, 300.0


class Health:
    """A spool's failures and recoveries, for one worker.

    Args:
        settings: The spool's settings.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        #: Monotonic time until which the spool is not tried (it failed).
        self.broken_until = 0.0
        #: Monotonic time of the last write the spool took (commits wait a window after it).
        self.last_write = -math.inf
        self._logged = False
        self._commits_failed = False  # in this episode: only a commit ends it

    def failed(self, exc: SpoolError, *, committing: bool = False) -> float:
        """The spool failed (`committing`: a commit did): not tried until the time returned.

        The time is monotonic; the failure is logged once per episode.
        """
        self.broken_until = time.monotonic() + RETRY_SPOOL
        self._commits_failed = self._commits_failed or committing
        if not self._logged:
            self._logged = True
            logger.error(
                "courier-analytics: %s; %s until the spool works again "
                "(what is not committed is lost if the process dies)",
                exc,
                "keeping new messages in memory (up to max_queue_size, then dropping them)"
                if self._settings.shared
                else "delivering from memory",
            )
        return self.broken_until

    def wrote(self, now: float, writes: int, *, committed: bool = False) -> None:
        """The spool took `writes` writes (`committed`: commits) at `now` (monotonic)."""
        self.last_write = now
        if writes:
            self.works(committed=committed)

    def kept_lease(self) -> None:
        """The upkeep renewed this owner's lease: a write (a producer has none: reads only)."""
        if self._settings.deliver or not self._settings.shared:
            self.works()

    def works(self, *, committed: bool = False) -> None:
        """The spool took a write (`committed`: a commit): the end of a failure is logged once.

        Only a write ends an episode: a full Redis still answers reads. And an episode
        in which commits failed ends only with a commit: a full Redis 7 still takes the
        bookkeeping writes (leases, acknowledgements) that let relays drain it.
        """
        if self._logged and (committed or not self._commits_failed):
            self._logged = self._commits_failed = False
            logger.info("courier-analytics: the spool %s works again", self._settings.where)


class Outage:
    """Courier does not answer: a message was parked and none delivered since.

    New messages wait in the spool and only a few parked ones are tried, once per
    wait, the wait doubling (shared by all, as a Courier that does not answer is
    one for all); the first delivery ends it and every parked message is tried at
    once.
    """

    def __init__(self) -> None:
        self.on = False
        #: Seconds between two tries of parked messages.
        self.wait = FIRST_WAIT
        self._doubled_at = 0.0

    def next_try(self, now: float) -> float:
        """A message ran out of retries at `now` (epoch seconds): when to try it next."""
        if not self.on:
            self.on, self._doubled_at = True, now
        elif now - self._doubled_at >= self.wait:
            self.wait = min(LONGEST_WAIT, self.wait * 2)
            self._doubled_at = now
        return now + self.wait * random.uniform(0.5, 1.0)

    def end(self) -> None:
        """Courier answers again."""
        self.on, self.wait = False, FIRST_WAIT
