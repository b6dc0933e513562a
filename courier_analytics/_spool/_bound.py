"""The disk bound, `spool_max_bytes`: what a spool uses, and which new messages fit.

Beyond the bound new messages are dropped, counted and reported (never old ones):
the journal asks `admit` of each batch before committing it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from courier_analytics._errors import QueueFullError
from courier_analytics._messages import Message
from courier_analytics._spool import Settings
from courier_analytics._spool._backend import Backend

if TYPE_CHECKING:
    from courier_analytics._engine import Engine

__all__ = ["ROW_OVERHEAD", "Bound"]

logger = logging.getLogger("courier_analytics")

#: Bytes a row takes beyond its message's data (columns, ids, the b-tree).
ROW_OVERHEAD = 80


class Bound:
    """`spool_max_bytes` for one worker's spool.

    Args:
        worker: The worker whose messages are dropped when they do not fit.
        settings: The spool's settings.
        backend: The store, asked what it uses once the estimate reaches the bound.
    """

    def __init__(self, worker: Engine, settings: Settings, backend: Backend) -> None:
        self._worker = worker
        self._settings = settings
        self._backend = backend
        #: Bytes the spool used at the last look, plus what was added since.
        self.used = 0
        #: Messages dropped because the spool was full.
        self.dropped = 0
        self._full_logged = False

    def admit(self, batch: list[Message]) -> tuple[list[Message], int]:
        """The messages of `batch` that fit, and their bytes; the rest are dropped.

        Raises:
            SpoolError: the store could not say what it uses.
        """
        size = sum(len(m._data) for m in batch) + ROW_OVERHEAD * len(batch)
        limit = self._settings.max_bytes
        if self.used + size <= limit:
            return batch, size
        self.used = self._backend.used_bytes()
        if self.used + size <= limit:
            return batch, size
        kept = self._fit(batch, limit - self.used)
        return kept, sum(len(m._data) for m in kept) + ROW_OVERHEAD * len(kept)

    def _fit(self, batch: list[Message], room: int) -> list[Message]:
        """The messages of `batch` that fit in `room` bytes; the rest are dropped and reported."""
        kept: list[Message] = []
        for message in batch:
            room -= len(message._data) + ROW_OVERHEAD
            if room >= 0:
                kept.append(message)
                continue
            self._worker.held -= 1
            self._worker.left_memory([message])
            self.dropped += 1
            error = QueueFullError(
                f"{message.type} {message.message_id} dropped: the spool is full "
                f"(spool_max_bytes={self._settings.max_bytes})"
            )
            if not self._full_logged:
                self._full_logged = True
                logger.error(
                    "courier-analytics: the spool %s is full (spool_max_bytes=%d): new messages "
                    "are dropped, each passed to on_error, until it has room",
                    self._settings.where,
                    self._settings.max_bytes,
                )
            self._worker.report(error, message)
        if len(kept) == len(batch):
            self._full_logged = False
        return kept
