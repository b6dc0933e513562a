"""Assert on your app's analytics in its tests, without a network or a Courier account.

Inside [`capture`][courier_analytics.testing.capture], every client (the default one behind
`courier_analytics.track`, clients you build, and the Segment drop-in
[`courier_analytics.segment`][courier_analytics.segment]) records each message instead of sending
it:

```python
import courier_analytics as analytics
from courier_analytics.testing import capture

analytics.api_key = "test-key"

with capture() as events:
    analytics.track(
        "Order Completed", {"total": 42, "currency": "EUR"}, user_id="u1"
    )

events.assert_tracked("Order Completed", user_id="u1", properties={"total": 42})
```

Matching is partial: the expected `properties`, `traits` or `context` need
only be a part of the captured one, at any depth. A failed assertion lists what
was captured and how the closest message differs. With pytest, the
`courier_analytics_events` fixture of
[`courier_analytics.pytest_plugin`][courier_analytics.pytest_plugin] does the same for a test's
duration.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, overload

from courier_analytics import _capture
from courier_analytics._messages import Message

__all__ = ["CapturedEvents", "capture", "matches"]

#: Python-style keyword names and the Segment-spec keys they match.
_KEYS = {
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "group_id": "groupId",
    "previous_id": "previousId",
    "message_id": "messageId",
}
_MISSING = object()


def _spec_key(name: str) -> str:
    return _KEYS.get(name, name)


def _differences(expected: Any, actual: Any, path: str) -> list[str]:
    """Where `actual` fails to contain `expected` (mappings match partially, at any depth)."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [f"{path}: expected a mapping, got {actual!r}"]
        found: list[str] = []
        for key, value in expected.items():
            where = f"{path}[{key!r}]" if path else str(key)
            if key not in actual:
                found.append(f"{where}: missing (expected {value!r})")
            else:
                found.extend(_differences(value, actual[key], where))
        return found
    if expected == actual:
        return []
    return [f"{path}: expected {expected!r}, got {actual!r}"]


def _criteria(type_: str | None, match: Mapping[str, Any]) -> dict[str, Any]:
    criteria = {_spec_key(name): value for name, value in match.items() if value is not _MISSING}
    if type_ is not None:
        criteria["type"] = type_
    return criteria


def matches(message: Mapping[str, Any], **match: Any) -> bool:
    """Whether a captured message has every given field (partial match of nested mappings).

    Args:
        message: A Segment-spec message dict, as captured.
        **match: Fields to compare, by Segment key (`event`, `properties`,
            `traits`, `type`, ...) or Python name (`user_id`, `anonymous_id`,
            `group_id`, `previous_id`, `message_id`).

    Returns:
        `True` when every field matches.
    """
    return not _differences(_criteria(None, match), message, "")


def _describe(index: int, message: Mapping[str, Any]) -> str:
    kind = message.get("type", "?")
    who = message.get("userId") or message.get("anonymousId")
    label = {
        "track": f"{message.get('event')!r}",
        "group": f"group {message.get('groupId')!r}",
        "page": f"{message.get('name')!r}",
        "screen": f"{message.get('name')!r}",
        "alias": f"from {message.get('previousId')!r}",
    }.get(kind, "")
    body = message.get("properties") if kind in ("track", "page", "screen") else None
    if kind in ("identify", "group"):
        body = message.get("traits")
    parts = [f"  {index}. {kind}", label, f"user={who!r}"]
    if body:
        parts.append(repr(body))
    return " ".join(part for part in parts if part)


def _expected(type_: str, criteria: Mapping[str, Any], article: str = "a ") -> str:
    shown = ", ".join(f"{key}={value!r}" for key, value in criteria.items() if key != "type")
    return f"{article}{type_} message" + (f" with {shown}" if shown else "")


class CapturedEvents(Sequence[dict[str, Any]], contextlib.ContextDecorator):
    """Messages captured while this object is active, as Segment-spec dicts, oldest first.

    Use it as a context manager (`with capture() as events:`) or a decorator
    (`events = capture()`, then `@events` on a function). It is a read-only
    sequence of message dicts, safe to fill from many threads at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._skipped: list[tuple[dict[str, Any], str]] = []
        self._depth = 0
        # One bound method, registered and removed by identity.
        self._recorder = self._record

    # ----------------------------------------------------------- recording

    def _record(self, message: Message, skipped: str | None) -> None:
        data = message.to_dict()
        with self._lock:
            if skipped is None:
                self._messages.append(data)
            else:
                self._skipped.append((data, skipped))

    def __enter__(self) -> CapturedEvents:
        with self._lock:
            self._depth += 1
            first = self._depth == 1
        if first:
            _capture.add_recorder(self._recorder)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._depth -= 1
            last = self._depth == 0
        if last:
            _capture.remove_recorder(self._recorder)

    @property
    def active(self) -> bool:
        """Whether messages are being captured now."""
        return self._depth > 0

    def clear(self) -> None:
        """Forget the messages captured (and skipped) so far; capturing goes on."""
        with self._lock:
            self._messages.clear()
            self._skipped.clear()

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """Messages a client skipped at the call, which it would never send, oldest first.

        Their `integrations` turned Courier off (`{"Courier": False}`, `{"All": False}`),
        a plugin or source middleware dropped them, or a scope with
        `on_missing_identity="skip"` knew no user. They are not in the sequence of
        captured messages, so `assert_tracked` does not match them; a failed
        assertion names a skipped message that would have matched, and why it was
        skipped.
        """
        with self._lock:
            return [data for data, _ in self._skipped]

    # ----------------------------------------------------------- sequence

    @property
    def messages(self) -> list[dict[str, Any]]:
        """A snapshot list of the captured messages."""
        with self._lock:
            return list(self._messages)

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        with self._lock:
            return self._messages[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.messages)

    def __repr__(self) -> str:
        return f"<CapturedEvents {len(self)} message(s)>"

    def summary(self) -> str:
        """A readable list of what was captured, one line per message."""
        messages = self.messages
        if not messages:
            return "Nothing was captured."
        lines = [f"Captured {len(messages)} message(s):"]
        lines.extend(_describe(i, m) for i, m in enumerate(messages, 1))
        return "\n".join(lines)

    # ------------------------------------------------------------- finding

    def find(self, type: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Captured messages of `type` (any if `None`) having every field in `match`.

        Args:
            type: `"track"`, `"identify"`, `"group"`, `"page"`, `"screen"`, `"alias"`.
            **match: Fields to compare, as in [`matches`][courier_analytics.testing.matches].

        Returns:
            The matching messages, oldest first.
        """
        criteria = _criteria(type, match)
        return [m for m in self.messages if not _differences(criteria, m, "")]

    def tracked(
        self, event: str | None = None, user_id: str | None = None, **match: Any
    ) -> list[dict[str, Any]]:
        """Captured `track` messages, optionally of `event` and `user_id`, matching `match`.

        Returns:
            The matching messages, oldest first.
        """
        return self.find("track", **_optional(event=event, user_id=user_id), **match)

    def identified(self, user_id: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Captured `identify` messages, optionally of `user_id`, matching `match`.

        Returns:
            The matching messages, oldest first.
        """
        return self.find("identify", **_optional(user_id=user_id), **match)

    def grouped(self, group_id: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Captured `group` messages, optionally of `group_id`, matching `match`.

        Returns:
            The matching messages, oldest first.
        """
        return self.find("group", **_optional(group_id=group_id), **match)

    # ---------------------------------------------------------- assertions

    def assert_tracked(
        self,
        event: str,
        user_id: str | None = None,
        *,
        count: int | None = None,
        **match: Any,
    ) -> dict[str, Any]:
        """Assert that `event` was tracked (for `user_id`, with the fields in `match`).

        Args:
            event: The event name.
            user_id: Whose event, if it matters.
            count: How many matching messages there must be; default at least one.
            **match: Further fields, e.g. `properties={"total": 42}` (partial).

        Returns:
            The first matching message.

        Raises:
            AssertionError: No (or not `count`) matching message; the text lists
                what was captured and how the closest message differs.
        """
        __tracebackhide__ = True  # pytest shows the test's line, not the kit's
        return self._assert_some("track", count, event=event, **_optional(user_id=user_id), **match)

    def assert_identified(
        self,
        user_id: str | None = None,
        *,
        count: int | None = None,
        **match: Any,
    ) -> dict[str, Any]:
        """Assert that `user_id` was identified, e.g. with `traits={"email": ...}` (partial).

        Returns:
            The first matching message.

        Raises:
            AssertionError: No (or not `count`) matching message; see
                [`assert_tracked`][courier_analytics.testing.CapturedEvents.assert_tracked].
        """
        __tracebackhide__ = True
        return self._assert_some("identify", count, **_optional(user_id=user_id), **match)

    def assert_grouped(
        self,
        group_id: str | None = None,
        *,
        count: int | None = None,
        **match: Any,
    ) -> dict[str, Any]:
        """Assert that a `group` call was made (for `group_id`, with `match`).

        Returns:
            The first matching message.

        Raises:
            AssertionError: No (or not `count`) matching message; see
                [`assert_tracked`][courier_analytics.testing.CapturedEvents.assert_tracked].
        """
        __tracebackhide__ = True
        return self._assert_some("group", count, **_optional(group_id=group_id), **match)

    def assert_not_tracked(
        self, event: str | None = None, user_id: str | None = None, **match: Any
    ) -> None:
        """Assert that no matching `track` message was captured (none at all without arguments).

        Raises:
            AssertionError: Some were; the text lists them.
        """
        __tracebackhide__ = True
        self._assert_none("track", event=event, user_id=user_id, **match)

    def assert_not_identified(self, user_id: str | None = None, **match: Any) -> None:
        """Assert that no matching `identify` message was captured.

        Raises:
            AssertionError: Some were; the text lists them.
        """
        __tracebackhide__ = True
        self._assert_none("identify", user_id=user_id, **match)

    def assert_count(self, expected: int, type: str | None = None, **match: Any) -> None:
        """Assert that exactly `expected` messages (of `type`, matching `match`) exist.

        Raises:
            AssertionError: Another number was; the text lists what was captured.
        """
        __tracebackhide__ = True
        found = self.find(type, **match)
        if len(found) != expected:
            what = _expected(type or "any", _criteria(type, match))
            raise AssertionError(
                f"Expected {expected} x {what}, found {len(found)}.\n{self.summary()}"
            )

    def assert_nothing_captured(self) -> None:
        """Assert that no message at all was captured.

        Raises:
            AssertionError: Some were; the text lists them.
        """
        __tracebackhide__ = True
        if len(self):
            raise AssertionError(f"Expected no analytics calls.\n{self.summary()}")

    def _assert_some(self, type_: str, count: int | None, **match: Any) -> dict[str, Any]:
        __tracebackhide__ = True
        criteria = _criteria(type_, match)
        messages = self.messages
        found = [m for m in messages if not _differences(criteria, m, "")]
        if found and (count is None or len(found) == count):
            return found[0]
        what = _expected(type_, criteria)
        if found:
            raise AssertionError(
                f"Expected {count} x {what}, found {len(found)}.\n{self.summary()}"
            )
        text = [f"Expected {what}, but none was captured.", self.summary()]
        with self._lock:
            skipped = [(m, why) for m, why in self._skipped if not _differences(criteria, m, "")]
        if skipped:
            text.append(
                f"A matching message was made but skipped, never to be sent: {skipped[0][1]}."
            )
        same_type = [(i, m) for i, m in enumerate(messages, 1) if m.get("type") == type_]
        if same_type:
            index, closest = min(
                same_type, key=lambda pair: len(_differences(criteria, pair[1], ""))
            )
            text.append(f"Closest is #{index}, which differs at:")
            text.extend(f"  - {line}" for line in _differences(criteria, closest, ""))
        raise AssertionError("\n".join(text))

    def _assert_none(self, type_: str, **match: Any) -> None:
        __tracebackhide__ = True
        given = {key: value for key, value in match.items() if value is not None}
        found = self.find(type_, **given)
        if found:
            what = _expected(type_, _criteria(type_, given), article="")
            lines = [_describe(i, m) for i, m in enumerate(found, 1)]
            raise AssertionError(f"Expected no {what}, found {len(found)}:\n" + "\n".join(lines))


def _optional(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def capture() -> CapturedEvents:
    """Capture every client's messages instead of sending them, while active.

    Returns:
        A [`CapturedEvents`][courier_analytics.testing.CapturedEvents]: enter it (`with capture() as
        events:`) or use it as a decorator; it keeps the messages after the block ends.

    Example:
        ```python
        from courier_analytics import Client
        from courier_analytics.testing import capture

        with capture() as events:
            Client(api_key="test-key").track("Signed Up", user_id="u1")
        events.assert_tracked("Signed Up", user_id="u1")
        ```
    """
    return CapturedEvents()
