"""Process-wide capture hook used by [`courier_analytics.testing`][courier_analytics.testing].

While at least one recorder is registered, every client (the default one and the
Segment shim's included) hands each message it makes to the recorders and sends
nothing; messages it skips at the call are handed over too, with the reason. The
check on the call path is one tuple truth test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from courier_analytics._messages import Message

__all__ = ["Recorder", "add_recorder", "recorders", "remove_recorder"]

#: Called with each message and `None` when it is captured instead of sent, or with
#: the reason when a client skipped it at the call (its `integrations` turn Courier
#: off, a plugin dropped it, a scope knew no user): those were never to be sent.
Recorder = Callable[[Message, "str | None"], None]

#: The registered recorders; read without a lock on the call path, replaced whole.
recorders: tuple[Recorder, ...] = ()
_lock = threading.Lock()


def add_recorder(recorder: Recorder) -> None:
    """Start handing every message made by any client to `recorder`."""
    global recorders
    with _lock:
        recorders = (*recorders, recorder)


def remove_recorder(recorder: Recorder) -> None:
    """Stop handing messages to `recorder` (no error if it was not registered)."""
    global recorders
    with _lock:
        recorders = tuple(r for r in recorders if r is not recorder)
