"""Messages: validation of a call's arguments and the Segment-spec message it makes.

Every call is validated and encoded here, in the caller's thread; what comes out
is an immutable [`Message`][courier_analytics.Message] holding the Segment-spec JSON bytes. The
routes (`_routes.py`) later turn a message into the request for Courier.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import os
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn, TypedDict, cast

import attrs
import orjson

from courier_analytics._errors import MessageTooLargeError
from courier_analytics._json import _OPTIONS, _default, dumps, encode_field, encode_timestamp, loads
from courier_analytics._plugins import Plugins, Step, run_plugins
from courier_analytics._version import __version__

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11+, only needed by the type checker

__all__ = [
    "LIBRARY",
    "MAX_REQUEST_BYTES",
    "NO_IDENTITY",
    "Message",
    "MessageFactory",
    "Shared",
    "to_courier",
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

    __slots__ = ("_data", "_mid", "anonymous_id", "event", "type", "user_id")

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


_FIELDS: Final = ("type", "_mid", "user_id", "anonymous_id", "event", "_data")


class Message(_Fields):
    """One analytics call, validated and encoded; what is queued, sent and reported.

    Immutable: assigning an attribute raises `attrs.exceptions.FrozenInstanceError`.

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

    def __setattr__(self, name: str, value: object) -> None:
        raise attrs.exceptions.FrozenInstanceError

    def __delattr__(self, name: str) -> None:
        raise attrs.exceptions.FrozenInstanceError

    @property
    def message_id(self) -> str:
        """The Segment `messageId`."""
        mid = self._mid
        return unpack(self._data)[1] if mid is None else mid

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
) -> Message:
    """A compact message of `data` from `pack` (identify: traits; track: properties).

    The caller vouches for every field as `MessageFactory` checks them, each string
    encodable as UTF-8.
    """
    return _made(kind, None, user_id, anonymous_id, event, data)


def _made(
    kind: str,
    message_id: str | None,
    user_id: str | None,
    anonymous_id: str | None,
    event: str | None,
    data: bytes,
) -> Message:
    """`Message(...)` (whole, or compact when `message_id` is None), made faster: the
    frozen class's own `__init__` sets slot by slot."""
    draft = _new_draft(_Draft)
    draft.type = kind
    draft._mid = message_id
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


def _id(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{name} must be a non-empty string (or None)")
        return value
    if isinstance(value, (int, uuid.UUID)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{name} must be a str (or an int or UUID), not {type(value).__name__}")


#: Why a call without ids is refused outside scopes (and, by default, inside them).
NO_IDENTITY: Final = (
    "user_id or anonymous_id is required: Courier needs to know whose profile or event "
    "this is. Pass one, or call it inside analytics.scope(...) after identify()"
)


def _who(
    user_id: object, anonymous_id: object, required: bool = True
) -> tuple[str | None, str | None]:
    uid = _id("user_id", user_id)
    aid = _id("anonymous_id", anonymous_id)
    if uid is None and aid is None and required:
        raise ValueError(NO_IDENTITY)
    return uid, aid


def _mapping(name: str, value: object) -> Mapping[Any, Any] | None:
    if value is None or isinstance(value, Mapping):
        return value
    raise TypeError(
        f"{name} must be a mapping such as a dict (or None), not {type(value).__name__}"
    )


def _name(name: str, value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _timestamp(value: object) -> _dt.datetime:
    if value is None:
        return _dt.datetime.now(_UTC)
    if not isinstance(value, _dt.datetime):
        raise TypeError(
            f"timestamp must be a datetime.datetime (or None), not {type(value).__name__}"
        )
    try:
        # A naive datetime is local time, as Python's own astimezone() reads it.
        return value.astimezone(_UTC)
    except OverflowError:
        raise ValueError(
            f"timestamp {value.isoformat()} is out of range once converted to UTC; "
            "pass a datetime between years 1 and 9999 in UTC"
        ) from None
    except Exception as exc:  # the tzinfo's utcoffset() failed or is beyond +-24 h
        raise TypeError(
            f"timestamp's tzinfo ({type(value.tzinfo).__name__}) gives no valid UTC offset "
            f"({type(exc).__name__}: {exc}); use a zoneinfo.ZoneInfo or datetime.timezone"
        ) from None


# Message ids: UUID4-shaped, a random prefix per process and a counter.
# `str(uuid.uuid4())` costs ~2.5 us, a third of a call; this costs ~0.2 us. The
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


def _message_id(value: object) -> str:
    if value is None:
        return new_message_id()
    text = cast(str, _id("message_id", value))
    if not text.isprintable():
        raise ValueError("message_id must not contain control characters (it is sent in a header)")
    return text


def _context(value: object) -> Mapping[str, Any]:
    if value is None:
        return _DEFAULT_CONTEXT
    context = _mapping("context", value)
    # A new dict: the caller's context is never modified.
    return {**context, "library": LIBRARY} if context else _DEFAULT_CONTEXT


def now_ms() -> int:
    """Now, in milliseconds since the epoch: a message's timestamp."""
    return time.time_ns() // 1_000_000


def _utf8(value: str | None) -> bool:
    """Whether `value` (or `None`) can be encoded as UTF-8, as JSON needs (no lone surrogates)."""
    if value is None or value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: The types made compact when they can be, and the field kept as JSON.
_COMPACT: Final = {"identify": "traits", "track": "properties"}

#: More than a compact body holds besides its payload and strings (each string
#: counted six times, as if every character had to be escaped).
ENVELOPE_BYTES: Final = 256 + len(_DEFAULT_CONTEXT_BYTES)


class Shared(TypedDict):
    """The keyword arguments every call takes besides its own (see `Client.track`)."""

    context: object
    timestamp: object
    message_id: object
    integrations: object


@attrs.frozen
class MessageFactory:
    """Validates a call's arguments and makes its [`Message`][courier_analytics.Message].

    Args:
        max_bytes: Largest encoded message accepted; larger ones raise
            [`MessageTooLargeError`][courier_analytics.MessageTooLargeError] at the call.
        views_as_track: Turn `page` and `screen` calls into `track` messages
            named `Viewed <name> Page` / `Viewed <name> Screen`.
        plugins: The plugins and source middleware each message goes through.
        require_identity: Refuse a call with no user and no anonymous id (ValueError);
            when `False` it makes a message stopped as skipped (a scope's
            `on_missing_identity="skip"`).
        compact: Make compact messages where it can (identify and track with the
            default context, no integrations and no plugins): fewer bytes queued,
            and route `"api"` makes its requests without decoding; route
            `"segment"`, which sends the whole Segment-spec body, is better off
            without (its body would be made again per request).
    """

    max_bytes: int = MAX_REQUEST_BYTES
    views_as_track: bool = False
    plugins: Plugins = attrs.field(factory=Plugins)
    require_identity: bool = True
    compact: bool = True

    def identify(
        self,
        user_id: object,
        traits: object,
        *,
        anonymous_id: object,
        **shared: Unpack[Shared],
    ) -> Message:
        """Make an `identify` message."""
        uid, aid = _who(user_id, anonymous_id, self.require_identity)
        traits = _mapping("traits", traits)
        fields = {"traits": {} if traits is None else traits}
        return self._make("identify", (uid, aid), fields, shared)

    def track(
        self,
        event: object,
        properties: object,
        *,
        user_id: object,
        anonymous_id: object,
        **shared: Unpack[Shared],
    ) -> Message:
        """Make a `track` message."""
        name = _name("event", event)
        uid, aid = _who(user_id, anonymous_id, self.require_identity)
        properties = _mapping("properties", properties)
        fields = {"event": name, "properties": {} if properties is None else properties}
        return self._make("track", (uid, aid), fields, shared)

    def group(
        self,
        group_id: object,
        traits: object,
        *,
        user_id: object,
        anonymous_id: object,
        **shared: Unpack[Shared],
    ) -> Message:
        """Make a `group` message."""
        gid = _id("group_id", group_id)
        if gid is None:
            raise ValueError("group_id is required")
        uid, aid = _who(user_id, anonymous_id, self.require_identity)
        traits = _mapping("traits", traits)
        fields = {"groupId": gid, "traits": {} if traits is None else traits}
        return self._make("group", (uid, aid), fields, shared)

    def view(
        self,
        kind: str,
        name: object,
        properties: object,
        *,
        category: object,
        user_id: object,
        anonymous_id: object,
        **shared: Unpack[Shared],
    ) -> Message:
        """Make a `page` or `screen` message (`kind`), or its `track` equivalent."""
        view_name = _name("name", name, optional=True)
        view_category = _name("category", category, optional=True)
        uid, aid = _who(user_id, anonymous_id, self.require_identity)
        props = _mapping("properties", properties)
        props = {} if props is None else props
        if self.views_as_track:
            label = kind.capitalize()
            event = f"Viewed {view_name} {label}" if view_name else f"Loaded a {label}"
            extra = {"name": view_name, "category": view_category}
            props = {**{k: v for k, v in extra.items() if v is not None}, **props}
            fields: dict[str, Any] = {"event": event, "properties": props}
            return self._make("track", (uid, aid), fields, shared)
        fields = {"name": view_name, "properties": props}
        if view_category is not None:
            fields["category"] = view_category
        return self._make(kind, (uid, aid), fields, shared)

    def alias(
        self,
        previous_id: object,
        user_id: object,
        **shared: Unpack[Shared],
    ) -> Message:
        """Make an `alias` message."""
        previous = _id("previous_id", previous_id)
        uid = _id("user_id", user_id)
        if previous is None or uid is None:
            raise ValueError("alias needs both previous_id and user_id")
        fields = {"previousId": previous}
        return self._make("alias", (uid, None), fields, shared)

    def _make(
        self, kind: str, who: tuple[str | None, str | None], fields: dict[str, Any], shared: Shared
    ) -> Message:
        """The message of type `kind` for `who` (user id, anonymous id), with `fields`."""
        user_id, anonymous_id = who
        event = fields.get("event")
        mid = _message_id(shared["message_id"])
        given = shared["timestamp"]
        timestamp = None if given is None else _timestamp(given)
        context = _context(shared["context"])
        integrations = shared["integrations"]
        if (
            context is _DEFAULT_CONTEXT
            and integrations is None
            and self.compact
            and kind in _COMPACT
            and (user_id is not None or anonymous_id is not None)
            and kind not in self.plugins.chains
            and compactable_id(mid)
            and (mid.isascii() or _utf8(mid))
            and (user_id is None or user_id.isascii() or _utf8(user_id))
            and (anonymous_id is None or anonymous_id.isascii() or _utf8(anonymous_id))
            and (event is None or event.isascii() or _utf8(event))
        ):
            stamp = now_ms() if timestamp is None else (timestamp - _EPOCH) // _MILLISECOND
            name = _COMPACT[kind]
            packed = pack(stamp, mid, name, fields[name])
            message = compact(kind, user_id, anonymous_id, event, packed)
            strings = (user_id or "", anonymous_id or "", event or "")
            if len(packed) + 6 * sum(map(len, strings)) + ENVELOPE_BYTES > self.max_bytes:
                body = message.body  # near the limit: the exact size
                if len(body) > self.max_bytes:
                    self._too_large(kind, body)
            return message
        if timestamp is None:
            timestamp = _dt.datetime.now(_UTC)
        data: dict[str, Any] = {"type": kind, "messageId": mid, "timestamp": timestamp}
        if user_id is not None:
            data["userId"] = user_id
        if anonymous_id is not None:
            data["anonymousId"] = anonymous_id
        data.update(fields)
        data["context"] = context
        if integrations is not None:
            data["integrations"] = _mapping("integrations", integrations)
        if user_id is None and anonymous_id is None:  # only when not require_identity
            body = self._encode(kind, data)  # still validated in full: bad input raises
            return _StoppedMessage(kind, mid, None, None, event, body, stop=SKIPPED_NO_IDENTITY)
        chains = self.plugins.chains
        chain: tuple[Step, ...] = ()
        if chains and kind in chains:
            chain = chains[kind]
            # The containers a plugin may change in place are its own copies, never
            # the caller's dicts (the shared library dict refuses changes).
            field = _PAYLOAD[kind]
            if field is not None:
                data[field] = dict(data[field])
            if integrations is not None:
                data["integrations"] = dict(data["integrations"])
            ctx = data["context"]
            if ctx is _DEFAULT_CONTEXT:  # else made by _context() for this message
                ctx = data["context"] = {"library": LIBRARY}
            made = dict(data)  # the fields as the call made them: all valid
            result = run_plugins(chain, kind, data)
            if type(result) is not dict or result != made or result["context"] is not ctx:
                return self._after_plugins(kind, data, made, result, chain)
            # No field was replaced; what changed inside the containers is checked
            # by the encoding below.
            ctx["library"] = LIBRARY
            data = result
        # Every message has one: encoded here, it skips orjson's round trip to _default.
        data["timestamp"] = encode_timestamp(data["timestamp"])
        try:
            body = dumps(data)
        except (TypeError, ValueError) as exc:
            if chain:
                raise _blame(kind, chain, exc) from exc
            raise
        if len(body) > self.max_bytes:
            self._too_large(kind, body)
        if integrations is not None and not to_courier(data["integrations"]):
            return _StoppedMessage(
                kind, mid, user_id, anonymous_id, event, body, stop=SKIPPED_INTEGRATIONS
            )
        return _made(kind, mid, user_id, anonymous_id, event, body)

    def _encode(self, kind: str, data: Mapping[str, Any]) -> bytes:
        body = dumps(data)
        if len(body) > self.max_bytes:
            self._too_large(kind, body)
        return body

    def _too_large(self, kind: str, body: bytes) -> NoReturn:
        raise MessageTooLargeError(
            f"the {kind} message is {len(body):,} bytes of JSON; Courier accepts at most "
            f"{self.max_bytes:,} bytes per request, so send less data in one call"
        )

    def _after_plugins(
        self,
        kind: str,
        data: dict[str, Any],
        made: dict[str, Any],
        result: dict[str, Any] | str | Exception,
        chain: tuple[Step, ...],
    ) -> Message:
        """The message after plugins that dropped, cancelled or replaced some of it."""
        mid, uid, aid, event = (
            made["messageId"],
            made.get("userId"),
            made.get("anonymousId"),
            made.get("event"),
        )
        if not isinstance(result, dict):
            # Dropped (the plugin's name) or cancelled (the error): goes no further.
            try:  # the message as the plugins left it, for on_error and the Segment drop-in
                body = dumps(data)
            except (TypeError, ValueError):  # half-made by a plugin: the ids will do
                body = dumps({"type": kind, "messageId": mid})
            why = f"plugin {result!r} dropped it" if isinstance(result, str) else result
            return _StoppedMessage(kind, mid, uid, aid, event, body, stop=why)
        try:
            uid, aid, event = _revalidate(kind, result, made)
            result["timestamp"] = encode_timestamp(result["timestamp"])
            body = self._encode(kind, result)
        except (TypeError, ValueError) as exc:
            raise _blame(kind, chain, exc) from exc
        mid = result["messageId"]
        integrations = result.get("integrations")
        if integrations is not None and not to_courier(integrations):
            return _StoppedMessage(kind, mid, uid, aid, event, body, stop=SKIPPED_INTEGRATIONS)
        return _made(kind, mid, uid, aid, event, body)


def _blame(kind: str, chain: tuple[Step, ...], exc: Exception) -> Exception:
    """`exc` (a TypeError or ValueError), its text naming the plugins the message went through."""
    names = ", ".join(repr(name) for name, _, _ in chain)
    return type(exc)(f"the {kind} message as plugin(s) {names} left it: {exc}")


#: Reasons a message is skipped at the call (see `Client._dispatch`).
SKIPPED_NO_IDENTITY: Final = "no user or anonymous id in this scope (on_missing_identity='skip')"
SKIPPED_INTEGRATIONS: Final = "its integrations turn Courier off"


def to_courier(integrations: Mapping[str, Any]) -> bool:
    """Whether a Segment `integrations` object lets the message go to Courier.

    As the Segment spec and analytics.js read it: `{"Courier": False}` turns it
    off; `{"All": False}` turns off every destination not set to a true value
    (or an options object) of its own, so `{"All": False, "Courier": True}` sends.
    """
    setting = integrations.get("Courier", integrations.get("All", True))
    return setting is not False


#: The payload field of each message type (a mapping), if it has one.
_PAYLOAD: Final[dict[str, str | None]] = {
    "identify": "traits",
    "track": "properties",
    "group": "traits",
    "page": "properties",
    "screen": "properties",
    "alias": None,
}


def _revalidate(
    kind: str, data: dict[str, Any], made: dict[str, Any]
) -> tuple[str | None, str | None, str | None]:
    """Validate (in place) the message dict the plugins returned, as a call's arguments are.

    `made` holds the fields as the call made them: a field still holding the very
    same object is valid already.

    Returns:
        Its user id, anonymous id and event name.
    """
    if data.get("type") != kind:
        raise ValueError(f"type must stay {kind!r}; a plugin cannot change it")
    mid = data.get("messageId")
    if mid is not made["messageId"]:
        data["messageId"] = _message_id(mid)
    uid, aid = data.get("userId"), data.get("anonymousId")
    if uid is not made.get("userId") or aid is not made.get("anonymousId"):
        uid, aid = _id("userId", uid), _id("anonymousId", aid)
        if uid is None and aid is None:
            raise ValueError("userId or anonymousId is required: the message must stay someone's")
        for key, value in (("userId", uid), ("anonymousId", aid)):
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
    event: str | None = None
    if kind == "track":
        event = data.get("event")
        if event is not made.get("event"):
            event = _name("event", event)
    elif kind == "group":
        if _id("groupId", data.get("groupId")) is None:
            raise ValueError("groupId is required")
    elif kind == "alias":
        if uid is None or _id("previousId", data.get("previousId")) is None:
            raise ValueError("alias needs both previousId and userId")
    elif kind in ("page", "screen"):
        _name("name", data.get("name"), optional=True)
        _name("category", data.get("category"), optional=True)
    field = _PAYLOAD[kind]
    if field is not None:
        value = data.get(field)
        if value is not made[field] and _mapping(field, value) is None:
            data[field] = {}
    timestamp = data.get("timestamp")
    if timestamp is not made["timestamp"]:
        data["timestamp"] = _timestamp(timestamp)
    context = data.get("context")
    if context is made["context"]:
        context["library"] = LIBRARY  # ours, whatever a plugin did to its copy
    else:
        given = _mapping("context", context)
        data["context"] = {**given, "library": LIBRARY} if given else _DEFAULT_CONTEXT
    integrations = data.get("integrations")
    if integrations is not made.get("integrations"):
        _mapping("integrations", integrations)
    return uid, aid, event
