"""Validation of a call's arguments, and the `MessageFactory` that makes its message.

Every call is validated and encoded here, in the caller's thread; what comes out
is an immutable [`Message`][courier_analytics.Message] (`_message.py`) holding the
Segment-spec JSON bytes.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypedDict, cast

from courier_analytics._errors import MessageTooLargeError
from courier_analytics._json import dumps, encode_timestamp
from courier_analytics._message import (
    _COMPACT,
    _DEFAULT_CONTEXT,
    _EPOCH,
    _MILLISECOND,
    _UTC,
    ENVELOPE_BYTES,
    LIBRARY,
    MAX_REQUEST_BYTES,
    Message,
    _made,
    _StoppedMessage,
    compact,
    compactable_id,
    new_message_id,
    now_ms,
    pack,
    pieces,
    unpack,
)
from courier_analytics._plugins import Plugins, Step, run_plugins

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11+, only needed by the type checker

# The message value's names are imported from here too (the spool, the benchmarks).
__all__ = [
    "LIBRARY",
    "MAX_REQUEST_BYTES",
    "NO_IDENTITY",
    "Message",
    "MessageFactory",
    "Shared",
    "_made",
    "compact",
    "new_message_id",
    "now_ms",
    "pack",
    "pieces",
    "to_courier",
    "unpack",
]


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


def _utf8(value: str | None) -> bool:
    """Whether `value` (or `None`) can be encoded as UTF-8, as JSON needs (no lone surrogates)."""
    if value is None or value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Shared(TypedDict):
    """The keyword arguments every call takes besides its own (see `Client.track`)."""

    context: object
    timestamp: object
    message_id: object
    integrations: object


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

    # A plain class: a client makes two and never compares them; as an attrs class it
    # cost every import the code attrs generates for it, for nothing a caller uses.
    __slots__ = ("compact", "max_bytes", "plugins", "require_identity", "views_as_track")

    def __init__(
        self,
        max_bytes: int = MAX_REQUEST_BYTES,
        views_as_track: bool = False,
        plugins: Plugins | None = None,
        require_identity: bool = True,
        compact: bool = True,
    ) -> None:
        self.max_bytes = max_bytes
        self.views_as_track = views_as_track
        self.plugins = Plugins() if plugins is None else plugins
        self.require_identity = require_identity
        self.compact = compact

    def __repr__(self) -> str:
        return (
            f"MessageFactory(max_bytes={self.max_bytes!r}, views_as_track={self.views_as_track!r}, "
            f"require_identity={self.require_identity!r}, compact={self.compact!r})"
        )

    def lenient(self) -> MessageFactory:
        """This factory, making a skipped message where a call names no user (see
        `require_identity`) instead of raising."""
        return MessageFactory(
            self.max_bytes, self.views_as_track, self.plugins, False, self.compact
        )

    def identify(
        self,
        user_id: object,
        traits: object,
        *,
        anonymous_id: object,
        context: object = None,
        timestamp: object = None,
        message_id: object = None,
        integrations: object = None,
    ) -> Message:
        """Make an `identify` message."""
        # A plain call (see `_plain`): a str user id, a dict or no traits, the rest
        # left at None (one chained test: each `is` the next).
        if (
            type(user_id) is str
            and anonymous_id is context is timestamp is message_id is integrations is None
            and (traits is None or type(traits) is dict)
        ):
            message = self._plain("identify", user_id, None, traits)
            if message is not None:
                return message
        uid, aid = _who(user_id, anonymous_id, self.require_identity)
        traits = _mapping("traits", traits)
        fields = {"traits": {} if traits is None else traits}
        shared = Shared(
            context=context, timestamp=timestamp, message_id=message_id, integrations=integrations
        )
        return self._make("identify", (uid, aid), fields, shared)

    def track(
        self,
        event: object,
        properties: object,
        *,
        user_id: object,
        anonymous_id: object,
        context: object = None,
        timestamp: object = None,
        message_id: object = None,
        integrations: object = None,
    ) -> Message:
        """Make a `track` message."""
        if (  # a plain call, as in identify
            type(user_id) is str
            and type(event) is str
            and anonymous_id is context is timestamp is message_id is integrations is None
            and (properties is None or type(properties) is dict)
        ):
            message = self._plain("track", user_id, event, properties)
            if message is not None:
                return message
        name = _name("event", event)
        uid, aid = _who(user_id, anonymous_id, self.require_identity)
        properties = _mapping("properties", properties)
        fields = {"event": name, "properties": {} if properties is None else properties}
        shared = Shared(
            context=context, timestamp=timestamp, message_id=message_id, integrations=integrations
        )
        return self._make("track", (uid, aid), fields, shared)

    def _plain(
        self, kind: str, user_id: str, event: str | None, payload: dict[Any, Any] | None
    ) -> Message | None:
        """The compact message of a plain call, or None: the call takes the general way.

        A plain call is an identify or track with a user id, every other argument
        left at its default, no plugin for its type and route "api"'s compact
        messages: the common call. Its checks are the general way's, done here in
        one go on values whose types are known; anything they do not settle (a
        non-ASCII id or name, a blank name, a body near `max_bytes`) goes the
        general way, which raises the errors.
        """
        if not self.compact or not user_id or not user_id.isascii() or kind in self.plugins.chains:
            return None
        strings = len(user_id)
        if event is not None:
            if not event or not event.isascii() or event.isspace():
                return None
            strings += len(event)
        mid = new_message_id()
        data = pack(now_ms(), mid, _COMPACT[kind], {} if payload is None else payload)
        if len(data) + 6 * strings + ENVELOPE_BYTES > self.max_bytes:
            return None  # near the limit: the general way measures the body exactly
        return _made(kind, None, user_id, None, event, data, mid)

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
        if context is _DEFAULT_CONTEXT and integrations is None:
            message = self._compacted(kind, mid, timestamp, who, event, fields)
            if message is not None:
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
            result = self._through_plugins(kind, chain, data)
            if isinstance(result, Message):
                return result
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

    def _compacted(
        self,
        kind: str,
        mid: str,
        timestamp: _dt.datetime | None,
        who: tuple[str | None, str | None],
        event: str | None,
        fields: dict[str, Any],
    ) -> Message | None:
        """The compact message of checked fields, if it can be one (see `_Fields`)."""
        user_id, anonymous_id = who
        if not (
            self.compact
            and kind in _COMPACT
            and (user_id is not None or anonymous_id is not None)
            and kind not in self.plugins.chains
            and compactable_id(mid)
            and (mid.isascii() or _utf8(mid))
            and (user_id is None or user_id.isascii() or _utf8(user_id))
            and (anonymous_id is None or anonymous_id.isascii() or _utf8(anonymous_id))
            and (event is None or event.isascii() or _utf8(event))
        ):
            return None
        stamp = now_ms() if timestamp is None else (timestamp - _EPOCH) // _MILLISECOND
        name = _COMPACT[kind]
        packed = pack(stamp, mid, name, fields[name])
        message = compact(kind, user_id, anonymous_id, event, packed, mid)
        strings = (user_id or "", anonymous_id or "", event or "")
        if len(packed) + 6 * sum(map(len, strings)) + ENVELOPE_BYTES > self.max_bytes:
            body = message.body  # near the limit: the exact size
            if len(body) > self.max_bytes:
                self._too_large(kind, body)
        return message

    def _through_plugins(
        self, kind: str, chain: tuple[Step, ...], data: dict[str, Any]
    ) -> dict[str, Any] | Message:
        """The message dict after the plugins, or the message they dropped, cancelled or changed."""
        # The containers a plugin may change in place are its own copies, never
        # the caller's dicts (the shared library dict refuses changes).
        field = _PAYLOAD[kind]
        if field is not None:
            data[field] = dict(data[field])
        if data.get("integrations") is not None:
            data["integrations"] = dict(data["integrations"])
        ctx = data["context"]
        if ctx is _DEFAULT_CONTEXT:  # else made by _context() for this message
            ctx = data["context"] = {"library": LIBRARY}
        made = dict(data)  # the fields as the call made them: all valid
        result = run_plugins(chain, kind, data)
        if type(result) is not dict or result != made or result["context"] is not ctx:
            return self._after_plugins(kind, data, made, result, chain)
        # No field was replaced; what changed inside the containers is checked
        # by the encoding that follows.
        ctx["library"] = LIBRARY
        return result

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
