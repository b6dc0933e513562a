"""Whether the spool and Courier work, as the journal sees them.

A spool failure (a locked or broken file, Redis away) is logged once per episode,
and its end once; the journal tries the spool again `RETRY_SPOOL` seconds later
and delivers from memory meanwhile. A Courier outage (`Outage`) spaces out the
retries of what waits in the spool.
"""

from __future__ import annotations

import logging
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
        self._logged = False

    def failed(self, exc: SpoolError) -> float:
        """The spool failed: not tried until the time returned (monotonic); logged once."""
        self.broken_until = time.monotonic() + RETRY_SPOOL
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

    def works(self) -> None:
        """The spool answered: the end of a failure is logged once."""
        if self._logged:
            self._logged = False
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
