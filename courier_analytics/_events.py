"""Events: what became of messages, told to handlers as analytics-node's emitter does.

`client.on(name, handler)` subscribes and returns a function that unsubscribes.
Handlers run on the worker thread (or the caller's, for what happens at the call:
drops, calls after close, cancelled messages), so they must be quick; one that
raises is logged once and never breaks delivery. They see a `MessageView`:
the message's type and ids, never its payload or the API key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final, Literal

from courier_analytics._messages import Message
from courier_analytics._plugins import FirstFailures
from courier_analytics._value import Value

__all__ = ["EVENTS", "Emitter", "EventName", "MessageView"]

logger = logging.getLogger("courier_analytics")

EventName = Literal["delivered", "error", "retry", "dropped", "drained", "call_after_close"]

#: Every event name, with the arguments its handlers get.
EVENTS: Final[dict[str, str]] = {
    "delivered": "(message)",
    "error": "(exc, message)",
    "retry": "(exc, message, attempt)",
    "dropped": "(exc, message)",
    "drained": "()",
    "call_after_close": "(message)",
}


class MessageView(Value):
    """What an event handler sees of a message: its type and ids, never the payload.

    Attributes:
        type: `"identify"`, `"track"`, `"group"`, `"page"`, `"screen"` or `"alias"`.
        message_id: The Segment `messageId`.
        user_id: The `userId`, or `None`.
        anonymous_id: The `anonymousId`, or `None`.
        event: The event name of a `track` message, else `None`.
    """

    __match_args__ = (
        "type",
        "message_id",
        "user_id",
        "anonymous_id",
        "event",
    )
    __slots__ = __match_args__

    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    event: str | None

    def __init__(
        self,
        type: str,
        message_id: str,
        user_id: str | None,
        anonymous_id: str | None,
        event: str | None,
    ) -> None:
        self._assign(type, message_id, user_id, anonymous_id, event)

    @classmethod
    def of(cls, message: Message) -> MessageView:
        """The view of `message`."""
        return cls(
            message.type, message.message_id, message.user_id, message.anonymous_id, message.event
        )


class Emitter:
    """A client's event handlers, and the one place they are called from."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: dict[str, tuple[tuple[object, Callable[..., Any]], ...]] = {}
        #: event name -> its handlers; only names that have some. Read without a lock.
        self.handlers: dict[str, tuple[Callable[..., Any], ...]] = {}
        self._complained = FirstFailures()

    def on(self, name: EventName, handler: Callable[..., Any]) -> Callable[[], None]:
        """Call `handler` on every `name` event; return a function that unsubscribes.

        Raises:
            ValueError: `name` is not an event (the message lists them).
            TypeError: `handler` is not callable.
        """
        if name not in EVENTS:
            known = ", ".join(f"{event}{args}" for event, args in EVENTS.items())
            raise ValueError(f"unknown event {name!r}; the events are {known}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        token = object()
        with self._lock:
            self._set(name, (*self._subscriptions.get(name, ()), (token, handler)))

        def unsubscribe() -> None:
            with self._lock:
                kept = tuple(s for s in self._subscriptions.get(name, ()) if s[0] is not token)
                self._set(name, kept)

        return unsubscribe

    def clear(self) -> None:
        """Unsubscribe every handler."""
        with self._lock:
            self._subscriptions = {}
            self.handlers = {}

    def _set(self, name: str, subscriptions: tuple[tuple[object, Callable[..., Any]], ...]) -> None:
        subs = dict(self._subscriptions)
        handlers = dict(self.handlers)
        if subscriptions:
            subs[name] = subscriptions
            handlers[name] = tuple(handler for _, handler in subscriptions)
        else:
            subs.pop(name, None)
            handlers.pop(name, None)
        self._subscriptions = subs
        self.handlers = handlers  # swapped whole: readers never see it half-made

    def emit(self, name: str, *args: Any) -> None:
        """Call `name`'s handlers with `args`; a handler that raises is logged, once."""
        for handler in self.handlers.get(name, ()):
            try:
                handler(*args)
            except Exception as exc:
                first = self._complained.first(handler)
                logger.log(
                    logging.WARNING if first else logging.DEBUG,
                    "courier-analytics: a %r event handler raised %s; ignored%s",
                    name,
                    type(exc).__name__,
                    " (later failures of it are logged at DEBUG)" if first else "",
                )

    def message(self, name: str, message: Message) -> None:
        """Emit `name(message)` (delivered, call_after_close) if anyone listens."""
        if name in self.handlers:
            self.emit(name, MessageView.of(message))

    def failure(self, name: str, error: BaseException, message: Message) -> None:
        """Emit `name(exc, message)` (error, dropped) if anyone listens."""
        if name in self.handlers:
            self.emit(name, error, MessageView.of(message))

    def retry(self, error: BaseException, message: Message, attempt: int) -> None:
        """Emit `retry(exc, message, attempt)` if anyone listens."""
        if "retry" in self.handlers:
            self.emit("retry", error, MessageView.of(message), attempt)
