"""Per-user lanes: which of a user's messages may be on the way to Courier now.

Each user (``Message.recipient``) has a lane: the FIFO of their messages not yet
released, a count of their released tracks still unanswered, and whether a
*barrier* of theirs is unanswered. The worker adds messages as they come, sends
whatever a lane releases, and tells the lane when each message is finished.

With ``ordering="identify"`` (the default) ``identify``, ``alias`` and ``group``
are barriers: one goes only once every earlier message of its user is answered,
and nothing of that user goes until it is answered (a notification a later
track triggers needs the merged profile). Between two barriers a user's tracks
(and page/screen calls) go together, up to ``per_user`` at once. A track that
waits to retry is *detached*: it holds back nothing but itself. A barrier that
waits to retry holds back its user's later messages.

With ``ordering="strict"`` every message is a barrier: one message per user in
flight, and a retry holds back that user's later messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Final

from courier_analytics._messages import Message

__all__ = ["BARRIER_TYPES", "Lanes"]

#: Message types that every later message of the same user waits for.
BARRIER_TYPES: Final = frozenset({"identify", "alias", "group"})


class _Lane:
    __slots__ = ("barrier", "in_flight", "waiting")

    def __init__(self) -> None:
        self.waiting: deque[Message] = deque()
        self.in_flight = 0  # released non-barrier messages not finished nor detached
        self.barrier = False  # a released barrier is not finished


class Lanes:
    """The per-user lanes of one worker (used from the worker's thread only).

    Args:
        release: Called with each message that may be sent now, in release order.
        strict: Every message is a barrier (one per user in flight).
        per_user: Most non-barrier messages of one user in flight at once.
    """

    def __init__(self, release: Callable[[Message], object], *, strict: bool, per_user: int):
        if per_user < 1:
            raise ValueError(f"per_user must be at least 1, not {per_user}")
        self._release = release
        self._strict = strict
        self._per_user = 1 if strict else per_user
        self._lanes: dict[str, _Lane] = {}
        self._detached: set[int] = set()  # id() of detached messages

    def __len__(self) -> int:
        """Users with a message waiting or unanswered."""
        return len(self._lanes)

    def is_barrier(self, message: Message) -> bool:
        """Whether later messages of this user wait for this one."""
        return self._strict or message.type in BARRIER_TYPES

    def add(self, message: Message) -> None:
        """Take a new message; release it at once if its lane allows."""
        key = message.recipient
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.waiting.append(message)
        if len(lane.waiting) == 1:  # others waiting: it is behind them anyway
            self._advance(lane)

    def detach(self, message: Message) -> bool:
        """A released message waits to retry: stop holding its lane back, if allowed.

        Returns:
            Whether it was detached (non-barriers outside strict ordering only).
        """
        if self.is_barrier(message):
            return False
        lane = self._lanes[message.recipient]
        lane.in_flight -= 1
        self._detached.add(id(message))
        self._advance_or_drop(message.recipient, lane)
        return True

    def finish(self, message: Message) -> None:
        """A released message is delivered or has failed: let its lane go on."""
        if self._detached:
            try:
                self._detached.remove(id(message))
            except KeyError:
                pass
            else:
                return
        lane = self._lanes[message.recipient]
        if self.is_barrier(message):
            lane.barrier = False
        else:
            lane.in_flight -= 1
        self._advance_or_drop(message.recipient, lane)

    def withdraw(self, key: str) -> list[Message]:
        """Remove and return a user's messages not yet released (they wait elsewhere now)."""
        lane = self._lanes.get(key)
        if lane is None:
            return []
        taken = list(lane.waiting)
        lane.waiting.clear()
        return taken

    def drain(self) -> Iterator[Message]:
        """Remove and yield every message not yet released (the worker is stopping)."""
        lanes, self._lanes = self._lanes, {}
        self._detached.clear()
        for lane in lanes.values():
            yield from lane.waiting

    def _advance_or_drop(self, key: str, lane: _Lane) -> None:
        self._advance(lane)
        if not lane.waiting and not lane.in_flight and not lane.barrier:
            del self._lanes[key]

    def _advance(self, lane: _Lane) -> None:
        """Release the lane's waiting messages that may go now, in order."""
        waiting = lane.waiting
        while waiting and not lane.barrier:
            head = waiting[0]
            if self.is_barrier(head):
                if lane.in_flight:
                    return  # a barrier waits for every earlier message
                lane.barrier = True
            elif lane.in_flight >= self._per_user:
                return
            else:
                lane.in_flight += 1
            waiting.popleft()
            self._release(head)
