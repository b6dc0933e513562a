"""The message: the immutable value a call makes, and its encoding.

A [`Message`][courier_analytics.Message] holds the Segment-spec JSON of one call,
whole or compact (see `_Fields`); `_messages.MessageFactory` validates a call and
makes it. The routes (`_routes.py`) turn a message into the request for Courier.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import os
import time
import uuid
from typing import Any, ClassVar, Final, NoReturn

import orjson

from courier_analytics._json import _OPTIONS, _default, encode_field, loads
from courier_analytics._version import __version__

__all__ = [
    "ENVELOPE_BYTES",
    "LIBRARY",
    "MAX_REQUEST_BYTES",
    "Message",
    "compact",
    "compactable_id",
    "format_ms",
    "new_message_id",
    "now_ms",
    "pack",
    "pieces",
    "unpack",
]

#: Courier refuses requests larger than 6 MB (answering 413).
MAX_REQUEST_BYTES: Final = 6 * 1000 * 1000


class _ReadOnlyDict(dict[str, Any]):
    """A dict that refuses changes: shared by every message, so no plugin may edit it."""

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("context.library belongs to courier-analytics and cannot be changed")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse


#: `context.library` of every message, as the Segment spec asks.
LIBRARY: Final = _ReadOnlyDict(name="courier-analytics", version=__version__)

_DEFAULT_CONTEXT: Final = {"library": LIBRARY}
_UTC = _dt.timezone.utc


class _Fields:
    """The slots of a message, shared by the frozen `Message` and its `_Draft`."""

    __slots__ = ("_data", "_mid", "anonymous_id", "event", "message_id", "type", "user_id")

    type: str
    user_id: str | None
    anonymous_id: str | None
    event: str | None
    # A whole message: `_mid` is its message id and `_data` its Segment-spec JSON.
    # A compact one (an identify or track with the default context, no integrations
    # and no plugins): `_mid` is None and `_data` is `<ms>,"<id>",<payload>`, its
    # timestamp in milliseconds since the epoch, its message id as JSON and the
    # JSON of its traits or properties (see `pack`); the body is made again from
    # them when asked for. About half the bytes to keep while queued, and Courier's
    # body is made without decoding anything (`ApiRoute`).
    _mid: str | None
    _data: bytes
    # The id of both kinds, kept as a str: every call returns it, and reading it
    # from a compact message's `_data` would cost the call more than keeping it.
    message_id: str


_FIELDS: Final = ("type", "_mid", "user_id", "anonymous_id", "event", "_data")


class Message(_Fields):
    """One analytics call, validated and encoded; what is queued, sent and reported.

    Immutable: assigning an attribute raises `dataclasses.FrozenInstanceError`.

    Attributes:
        type: `"identify"`, `"track"`, `"group"`, `"page"`, `"screen"` or `"alias"`.
        message_id: The Segment `messageId`; the same on every delivery attempt, so
            Courier deduplicates retries.
        user_id: The `userId`, or `None`.
        anonymous_id: The `anonymousId`, or `None`.
        event: The event name of a `track` message, else `None`.
        body: The Segment-spec message as compact UTF-8 JSON.
    """

    __slots__ = ()
    __match_args__ = ("type", "message_id", "user_id", "anonymous_id", "event", "body")

    # Why this message goes no further than the call (not queued): a reason to skip
    # it (str) or the error that cancelled it (a before plugin raised). None but on
    # a _StoppedMessage, so that making an ordinary message costs nothing more.
    _stop: ClassVar[str | Exception | None] = None

    def __init__(
        self,
        type: str,
        message_id: str,
        user_id: str | None,
        anonymous_id: str | None,
        event: str | None,
        body: bytes,
    ) -> None:
        fields = (type, message_id, user_id, anonymous_id, event, body)
        for name, value in zip(_FIELDS, fields, strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "message_id", message_id)

    def __setattr__(self, name: str, value: object) -> None:
        raise dataclasses.FrozenInstanceError

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError

    @property
    def body(self) -> bytes:
        """The Segment-spec message as compact UTF-8 JSON."""
        if self._mid is None:
            return _compact_body(self)
        return self._data

    @property
    def recipient(self) -> str:
        """Whose message this is: `user_id`, else `anonymous_id`; the per-user order key."""
        return self.user_id or self.anonymous_id or ""

    @property
    def size(self) -> int:
        """Size of the encoded message in bytes."""
        return len(self.body)

    def to_dict(self) -> dict[str, Any]:
        """Decode the Segment-spec message (a fresh dict on every call)."""
        if self._mid is None:
            return _compact_dict(self)
        result: dict[str, Any] = loads(self._data)
        return result

    def _key(self) -> tuple[object, ...]:
        return (self.type, self.message_id, self.user_id, self.anonymous_id, self.event, self.body)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self.__class__, *self._key()))

    def __repr__(self) -> str:
        # Type, id and size only: never the payload, which may hold personal data.
        return f"<Message {self.type} {self.message_id} ({self.size} bytes)>"


class _Draft(_Fields):
    """A message while it is filled in; then it becomes a `Message` (same slots)."""

    __slots__ = ()


_new_draft = object.__new__


def pack(stamp: int, message_id: str, name: str, payload: object) -> bytes:
    """A compact message's data: `stamp` (ms), `message_id` and `payload`, its field `name`.

    `payload` is checked and encoded as `MessageFactory` does, errors naming the
    path from `name`; `message_id` has no `"` or backslash (see `compactable_id`).
    """
    try:
        # One call encodes all three; in a list, the payload is as deep as in the
        # message, and the slice is the exact-size copy fit to be queued.
        return orjson.dumps([stamp, message_id, payload], default=_default, option=_OPTIONS)[1:-1]
    except (orjson.JSONEncodeError, RecursionError):
        pass
    encoded = encode_field(name, payload)  # raises naming the path, if it must
    return b"%d,%b,%b" % (stamp, orjson.dumps(message_id), encoded)


def pieces(data: bytes) -> tuple[bytes, bytes, bytes]:
    """A compact message's data as it is kept: timestamp digits, id as JSON, payload JSON."""
    comma = data.index(b',"')
    end = data.index(b'"', comma + 2) + 1
    return data[:comma], data[comma + 1 : end], data[end + 1 :]


def unpack(data: bytes) -> tuple[int, str, bytes]:
    """A compact message's timestamp (ms), message id and payload JSON (see `pack`)."""
    stamp, message_id, payload = pieces(data)
    return int(stamp), message_id[1:-1].decode(), payload


def compactable_id(message_id: str) -> bool:
    """Whether a message id can be kept in a compact message (ours always can)."""
    return '"' not in message_id and "\\" not in message_id


def compact(
    kind: str,
    user_id: str | None,
    anonymous_id: str | None,
    event: str | None,
    data: bytes,
    message_id: str | None = None,
) -> Message:
    """A compact message of `data` from `pack` (identify: traits; track: properties).

    The caller vouches for every field as `MessageFactory` checks them, each string
    encodable as UTF-8; `message_id`, if given, is the one packed in `data`.
    """
    return _made(kind, None, user_id, anonymous_id, event, data, message_id)


def _made(
    kind: str,
    message_id: str | None,
    user_id: str | None,
    anonymous_id: str | None,
    event: str | None,
    data: bytes,
    packed_id: str | None = None,
) -> Message:
    """`Message(...)` (whole, or compact when `message_id` is None), made faster: the
    frozen class's own `__init__` sets slot by slot.

    `packed_id` is a compact message's id, when its maker has it at hand (else it is
    read from `data`: a message read back from a spool).
    """
    draft = _new_draft(_Draft)
    draft.type = kind
    draft._mid = message_id
    if message_id is not None:
        draft.message_id = message_id
    else:
        draft.message_id = unpack(data)[1] if packed_id is None else packed_id
    draft.user_id = user_id
    draft.anonymous_id = anonymous_id
    draft.event = event
    draft._data = data
    draft.__class__ = Message  # type: ignore[assignment]  # the same slots: now frozen
    return draft  # type: ignore[return-value]


def _restore(cls: type[Message], *fields: Any) -> Message:
    """Unpickle a message (as its whole body)."""
    message = cls.__new__(cls)
    Message.__init__(message, *fields[:6])
    if len(fields) > 6:
        object.__setattr__(message, "_stop", fields[6])
    return message


_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MILLISECOND: Final = _dt.timedelta(milliseconds=1)
_DEFAULT_CONTEXT_BYTES: Final = orjson.dumps({"library": LIBRARY})
_DEFAULT_CONTEXT_JSON: Final = orjson.Fragment(_DEFAULT_CONTEXT_BYTES)


# The last second formatted, as (seconds since the epoch, "YYYY-MM-DDTHH:MM:SS"):
# messages made in a burst share it. Swapped whole, so readers need no lock.
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def format_ms(stamp: int) -> str:
    """A timestamp in milliseconds since the epoch as a message writes it (see `encode_timestamp`).

    `2026-03-04T05:06:07.089+00:00`: milliseconds and `+00:00`, as Segment's library.
    """
    global _last_second
    second, milli = divmod(stamp, 1000)
    cached = _last_second
    if cached[0] != second:
        # isoformat() pads the year to 4 digits: the first 19 characters are the second.
        cached = _last_second = (second, (_EPOCH + _dt.timedelta(seconds=second)).isoformat()[:19])
    return f"{cached[1]}.{milli:03d}+00:00"


def _compact_head(message: Message) -> tuple[dict[str, Any], bytes]:
    """A compact message's fields before its payload, and the payload's JSON."""
    stamp, mid, payload = unpack(message._data)
    data: dict[str, Any] = {"type": message.type, "messageId": mid, "timestamp": format_ms(stamp)}
    if message.user_id is not None:
        data["userId"] = message.user_id
    if message.anonymous_id is not None:
        data["anonymousId"] = message.anonymous_id
    if message.type == "track":
        data["event"] = message.event
    return data, payload


def _compact_dict(message: Message) -> dict[str, Any]:
    """`to_dict()` of a compact message: what decoding its body gives, without the body."""
    data, payload = _compact_head(message)
    data[_COMPACT[message.type]] = loads(payload)
    data["context"] = {"library": dict(LIBRARY)}
    return data


def _compact_body(message: Message) -> bytes:
    """The Segment-spec JSON of a compact message, as `MessageFactory` would encode it whole."""
    data, payload = _compact_head(message)
    data[_COMPACT[message.type]] = orjson.Fragment(payload)
    data["context"] = _DEFAULT_CONTEXT_JSON
    return orjson.dumps(data)


class _StoppedMessage(Message):
    """A message that goes no further than the call: skipped, or cancelled by a plugin."""

    __slots__ = ("_stop",)

    _stop: str | Exception | None  # type: ignore[misc]

    def __init__(
        self,
        type: str,
        message_id: str,
        user_id: str | None,
        anonymous_id: str | None,
        event: str | None,
        body: bytes,
        *,
        stop: str | Exception | None,
    ) -> None:
        super().__init__(type, message_id, user_id, anonymous_id, event, body)
        object.__setattr__(self, "_stop", stop)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self.__class__, *self._key(), self._stop))


# Message ids: UUID4-shaped, a random prefix per process and a counter, a small
# fraction of what `str(uuid.uuid4())` costs a call (see docs/design-notes.md). The
# prefix keeps 80 random bits (version and variant bits as UUID4 draws them), the
# last 48 bits count from a random start; a forked child draws a new prefix, so no
# two processes share ids. Module globals: the call path's cheapest lookups.
_id_prefix = ""
_id_counter = itertools.count()


def reset_message_ids() -> None:
    """Draw a new random prefix and counter start for message ids."""
    global _id_prefix, _id_counter
    bits = uuid.uuid4().hex
    _id_prefix = f"{bits[:8]}-{bits[8:12]}-{bits[12:16]}-{bits[16:20]}-"
    _id_counter = itertools.count(int(bits[20:], 16))


def new_message_id() -> str:
    """A new UUID4-shaped message id, unique to this process."""
    return f"{_id_prefix}{next(_id_counter) & 0xFFFF_FFFF_FFFF:012x}"


reset_message_ids()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reset_message_ids)


def now_ms() -> int:
    """Now, in milliseconds since the epoch: a message's timestamp."""
    return time.time_ns() // 1_000_000


#: The types made compact when they can be, and the field kept as JSON.
_COMPACT: Final = {"identify": "traits", "track": "properties"}

#: More than a compact body holds besides its payload and strings (each string
#: counted six times, as if every character had to be escaped).
ENVELOPE_BYTES: Final = 256 + len(_DEFAULT_CONTEXT_BYTES)
