"""Routes: how a message becomes a request to Courier.

`SegmentRoute` posts the Segment-spec message unchanged to `/inbound/segment`,
as Segment's Courier destination does; Courier then applies its own mapping.
`ApiRoute` applies that mapping in the client, on Courier's documented API:
identify merges traits into `/profiles/{id}`, track posts to `/inbound/courier`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Protocol, cast
from urllib.parse import quote

import orjson

from courier_analytics._message import Message, pieces

__all__ = [
    "ANONYMOUS_PROFILE_PREFIX",
    "DEFAULT_EVENT_PREFIX",
    "ApiRoute",
    "Request",
    "Route",
    "RouteName",
    "SegmentRoute",
    "path_segment",
]

RouteName = Literal["segment", "api"]

#: What Courier's Segment integration prefixes to a track event's name.
DEFAULT_EVENT_PREFIX = "Segment-TrackEvent:"

#: What route "api" puts before an anonymous id to make it a Courier profile id.
ANONYMOUS_PROFILE_PREFIX = "anonymous:"


def profile_id(message: Message) -> str:
    """The Courier profile route "api" files a message under.

    Its user id; without one, its anonymous id in a namespace of its own
    (`anonymous:<id>`), so that an anonymous id, which often comes from the
    visitor (analytics.js's cookie), can never name a user's profile and trigger
    notifications to that user.
    """
    return message.user_id or ANONYMOUS_PROFILE_PREFIX + (message.anonymous_id or "")


def path_segment(value: str) -> str:
    """`value` as one percent-encoded path segment that no server resolves away.

    `quote` leaves `.` alone, so the ids `.` and `..` would be dot segments:
    httpx, proxies and servers resolve `/profiles/..` to `/` and `/profiles/.`
    to `/profiles/`, carrying the traits (and the key) to another endpoint.
    Encoded as `%2E`, they stay the ids they are.
    """
    segment = quote(value, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


class Request(NamedTuple):
    """The request a route makes for one message (a named tuple: cheap to make).

    Attributes:
        path: Path below the base URL, already percent-encoded.
        body: JSON body.
        idempotency_key: Value of the `Idempotency-Key` header, if one is sent.
            Neither route sends one: Courier saves the first answer to a key, a
            5xx included, and replays it to every retry (see `ApiRoute`).
    """

    path: str
    body: bytes
    idempotency_key: str | None = None


class Route(Protocol):
    """Turns messages into requests and says which answers mean accepted."""

    @property
    def name(self) -> RouteName:
        """`"segment"` or `"api"`."""

    def delivers(self, kind: str) -> bool:
        """Whether messages of this type are sent at all (others are skipped)."""

    def request(self, message: Message) -> Request:
        """The POST request that delivers `message`."""

    def accepted(self, status: int) -> bool:
        """Whether an answer with this status means Courier has the message."""


# The routes are plain classes, not attrs ones: one is made per client and none is
# compared, so attrs would only cost the import the code it generates.


class SegmentRoute:
    """Route `"segment"`: Segment-spec messages to `POST /inbound/segment`."""

    __slots__ = ()
    name: RouteName = "segment"

    def __repr__(self) -> str:
        return "SegmentRoute()"

    def delivers(self, kind: str) -> bool:
        """identify, track and group; Courier answers 501 to page, screen and alias."""
        return kind in ("identify", "track", "group")

    def request(self, message: Message) -> Request:
        """The message's own JSON, one message per request; its messageId deduplicates."""
        return Request("/inbound/segment", message.body)

    def accepted(self, status: int) -> bool:
        """2xx; a repeated messageId is answered with the first answer, so no 409."""
        return 200 <= status < 300


class ApiRoute:
    """Route `"api"`: the destination's meaning applied on Courier's documented API.

    A message without a user id is filed under its anonymous id namespaced as
    `anonymous:<id>` (see `profile_id`): a visitor who sets their anonymous id to
    a user's id reaches no user's profile.

    No request carries an `Idempotency-Key`. Courier saves the first answer to a
    key, status and body, a 500 included, and replays it to every later request
    with that key, so one transient 500 would doom every retry of the message.
    Neither endpoint needs the header: a profile merge is content-idempotent (and
    per-user order keeps an older retry from landing after a newer identify), and
    `/inbound/courier` deduplicates on `messageId`, answering a repeat 409.

    Args:
        event_prefix: Put before a track event's name, so that events sent this way
            are named as the Segment integration names them.
    """

    __slots__ = ("event_prefix",)
    name: RouteName = "api"

    def __init__(self, event_prefix: str = DEFAULT_EVENT_PREFIX) -> None:
        self.event_prefix = event_prefix

    def __repr__(self) -> str:
        return f"ApiRoute(event_prefix={self.event_prefix!r})"

    def delivers(self, kind: str) -> bool:
        """identify and track; Courier's API has nothing that group, page, screen, alias mean."""
        return kind in ("identify", "track")

    def request(self, message: Message) -> Request:
        """identify -> `POST /profiles/{id}` (merge); track -> `POST /inbound/courier`.

        The body is spliced from JSON pieces, the bytes `orjson` makes of the same
        dict (tests/client/test_routes.py pins it): a compact message's own, kept
        as made, or a whole message's, from its body decoded once.
        """
        message_id, payload = _id_and_payload(message)
        if message.type == "identify":
            path = "/profiles/" + path_segment(profile_id(message))
            return Request(path, b'{"profile":' + payload + b"}")
        body = b"".join(
            (
                b'{"event":',
                orjson.dumps(self.event_prefix + cast(str, message.event)),
                b',"messageId":',
                message_id,
                b',"type":"track","properties":',
                payload,
                b',"userId":',
                orjson.dumps(profile_id(message)),
                b"}",
            )
        )
        return Request("/inbound/courier", body)

    def accepted(self, status: int) -> bool:
        """2xx, or 409: `/inbound/courier` already has this messageId."""
        return 200 <= status < 300 or status == 409


def _id_and_payload(message: Message) -> tuple[bytes, bytes]:
    """A message's id and its traits or properties, as JSON."""
    if message._mid is None:  # compact: its pieces are kept as JSON (see _message.pack)
        _, message_id, payload = pieces(message._data)
        return message_id, payload
    data = orjson.loads(message.body)
    field = "traits" if message.type == "identify" else "properties"
    return orjson.dumps(message.message_id), orjson.dumps(data.get(field, {}))
