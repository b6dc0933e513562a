"""What a call turns into: validation at the call and the Segment-spec JSON it makes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import math
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import attrs
import orjson
import pytest

from courier_analytics import Client, Message, MessageTooLargeError, User
from courier_analytics._messages import LIBRARY, MessageFactory

CALL = {"context": None, "timestamp": None, "message_id": None, "integrations": None}


def track(properties: Any = None, **call: Any) -> dict[str, Any]:
    """The Segment-spec dict a track call makes."""
    args = {**CALL, "user_id": "u1", "anonymous_id": None, **call}
    return MessageFactory().track("Clicked", properties, **args).to_dict()


def test_track_message_has_the_segment_spec_shape() -> None:
    """A track message carries type, messageId, timestamp, userId, event, properties, context."""
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    data = track({"plan": "pro"}, timestamp=when, message_id="m-1")
    assert data == {
        "type": "track",
        "messageId": "m-1",
        "timestamp": "2026-01-02T03:04:05.000+00:00",
        "userId": "u1",
        "event": "Clicked",
        "properties": {"plan": "pro"},
        "context": {"library": LIBRARY},
    }


def test_identify_message_carries_traits_and_anonymous_id() -> None:
    """identify puts traits and anonymousId in the message, with no userId when absent."""
    args = {**CALL, "anonymous_id": "anon-1"}
    data = MessageFactory().identify(None, {"email": "a@example.com"}, **args).to_dict()
    assert data["traits"] == {"email": "a@example.com"}
    assert data["anonymousId"] == "anon-1"
    assert "userId" not in data


def test_group_message_carries_group_id() -> None:
    """group puts groupId and traits in the message."""
    args = {**CALL, "user_id": "u1", "anonymous_id": None}
    data = MessageFactory().group("g1", {"name": "Acme"}, **args).to_dict()
    assert (data["groupId"], data["traits"]) == ("g1", {"name": "Acme"})


def test_page_message_keeps_name_and_category() -> None:
    """page makes a page message with name, category and properties."""
    args = {**CALL, "user_id": "u1", "anonymous_id": None, "category": "Docs"}
    data = MessageFactory().view("page", "Home", {"url": "/"}, **args).to_dict()
    assert (data["type"], data["name"], data["category"]) == ("page", "Home", "Docs")


def test_views_as_track_turns_a_page_into_a_viewed_event() -> None:
    """With views_as_track a named page becomes the track event 'Viewed <name> Page'."""
    args = {**CALL, "user_id": "u1", "anonymous_id": None, "category": None}
    message = MessageFactory(views_as_track=True).view("page", "Home", {"url": "/"}, **args)
    assert (message.type, message.event) == ("track", "Viewed Home Page")
    assert message.to_dict()["properties"] == {"name": "Home", "url": "/"}


def test_views_as_track_names_an_unnamed_screen_loaded() -> None:
    """An unnamed screen becomes 'Loaded a Screen'."""
    args = {**CALL, "user_id": "u1", "anonymous_id": None, "category": None}
    message = MessageFactory(views_as_track=True).view("screen", None, None, **args)
    assert message.event == "Loaded a Screen"


def test_alias_message_carries_previous_id() -> None:
    """alias carries previousId and userId."""
    data = MessageFactory().alias("old", "new", **CALL).to_dict()
    assert (data["previousId"], data["userId"]) == ("old", "new")


def test_context_library_is_set_on_a_copy() -> None:
    """context.library is set without changing the caller's dict."""
    context = {"ip": "1.2.3.4", "library": {"name": "mine"}}
    data = track(context=context)
    assert data["context"] == {"ip": "1.2.3.4", "library": LIBRARY}
    assert context["library"] == {"name": "mine"}


def test_integrations_are_passed_through() -> None:
    """integrations appear in the message as given."""
    assert track(integrations={"All": False})["integrations"] == {"All": False}


def test_default_message_ids_are_unique_uuids() -> None:
    """Without message_id each message gets a fresh UUID4 string."""
    ids = {track()["messageId"] for _ in range(100)}
    assert len(ids) == 100
    assert all(uuid.UUID(i).version == 4 for i in ids)


def test_naive_timestamp_is_read_as_local_time() -> None:
    """A naive datetime is local time and is sent converted to UTC."""
    naive = dt.datetime(2026, 5, 1, 12, 0, 0)
    expected = naive.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
    assert track(timestamp=naive)["timestamp"] == expected


def test_timestamp_has_milliseconds_and_an_offset_that_python_3_10_reads() -> None:
    """The timestamp is written as Segment's library writes it, and fromisoformat reads it."""
    when = dt.datetime(2026, 3, 4, 5, 6, 7, 89_123, tzinfo=dt.timezone.utc)
    text = track(timestamp=when)["timestamp"]
    assert text == "2026-03-04T05:06:07.089+00:00" == when.isoformat(timespec="milliseconds")
    assert dt.datetime.fromisoformat(text) == when.replace(microsecond=89_000)


def test_aware_timestamp_is_converted_to_utc() -> None:
    """An aware datetime in another zone is sent as the same instant in UTC."""
    paris = dt.timezone(dt.timedelta(hours=2))
    when = dt.datetime(2026, 5, 1, 14, 0, tzinfo=paris)
    assert track(timestamp=when)["timestamp"] == "2026-05-01T12:00:00.000+00:00"


def test_numeric_user_id_is_stringified() -> None:
    """An int user id is sent as a string."""
    assert track(user_id=42)["userId"] == "42"


def test_properties_are_snapshotted_at_the_call() -> None:
    """Mutating the caller's dict after the call changes nothing sent."""
    properties: dict[str, Any] = {"items": [1, 2]}
    message = MessageFactory().track(
        "Clicked", properties, **{**CALL, "user_id": "u1", "anonymous_id": None}
    )
    properties["items"].append(3)
    properties["new"] = True
    assert message.to_dict()["properties"] == {"items": [1, 2]}


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


@attrs.define
class Item:
    sku: str
    qty: int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "2026-01-02T03:04:05+00:00"),
        (dt.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (Decimal("9.99"), 9.99),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Color.RED, "red"),
        ((1, 2), [1, 2]),
        ({3}, [3]),
        (frozenset({"a"}), ["a"]),
        (Point(1, 2), {"x": 1, "y": 2}),
        (Item("A1", 2), {"sku": "A1", "qty": 2}),
        (
            User("u1", None, {"plan": "pro"}),
            {"id": "u1", "anonymous_id": None, "traits": {"plan": "pro"}},
        ),
        (b"caf\xc3\xa9", "café"),
        ({"nested": {"deep": [1, {"x": None}]}}, {"nested": {"deep": [1, {"x": None}]}}),
        (math.nan, None),
        (math.inf, None),
        (Decimal("NaN"), None),
    ],
    ids=lambda v: type(v).__name__,
)
def test_non_json_values_become_json_as_documented(value: Any, expected: Any) -> None:
    """Each non-JSON-native value becomes the JSON the module docs promise."""
    assert track({"v": value})["properties"]["v"] == expected


def test_non_str_keys_become_strings() -> None:
    """int, float, bool and None keys become strings as json.dumps writes them."""
    assert track({1: "a", 2.5: "b", False: "c", None: "d"})["properties"] == {
        "1": "a",
        "2.5": "b",
        "false": "c",
        "null": "d",
    }


def _gen() -> Iterator[int]:
    yield 1


class Opaque:
    pass


def _cycle() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"d": value}
    return value


@pytest.mark.parametrize(
    ("properties", "error", "words"),
    [
        ({"cart": {"items": [1, Opaque()]}}, TypeError, "properties['cart']['items'][1]"),
        ({"g": _gen()}, TypeError, "pass a list"),
        ({"c": _cycle()}, ValueError, "reference cycle"),
        ({"deep": _deep(300)}, ValueError, "deeper than"),
        ({"s": "\ud800"}, ValueError, "lone surrogate"),
        ({"n": 2**70}, ValueError, "64 bits"),
        ({"b": b"\xff\xfe"}, TypeError, "base64"),
        ({(1, 2): "tuple key"}, TypeError, "JSON key"),
    ],
    ids=["object", "generator", "cycle", "deep", "surrogate", "bigint", "bytes", "key"],
)
def test_values_that_cannot_become_json_raise_naming_the_path(
    properties: dict[Any, Any], error: type[Exception], words: str
) -> None:
    """A value that cannot become JSON raises TypeError/ValueError naming where it is."""
    with pytest.raises(error, match="properties") as info:
        track(properties)
    assert words in str(info.value)


def test_oversized_message_is_refused_at_the_call() -> None:
    """A message larger than max_bytes raises MessageTooLargeError, a ValueError."""
    factory = MessageFactory(max_bytes=1000)
    with pytest.raises(MessageTooLargeError, match="at most 1,000 bytes"):
        factory.track("E", {"x": "y" * 2000}, **{**CALL, "user_id": "u", "anonymous_id": None})


def test_message_repr_shows_no_payload() -> None:
    """repr(Message) names type, id and size, never the payload."""
    message = Message("track", "m1", "u1", None, "E", b'{"secret":"pw"}')
    assert "secret" not in repr(message)
    assert "m1" in repr(message)


@pytest.fixture
def client() -> Iterator[Client]:
    """A client that validates and sends nothing."""
    with Client(send=False) as c:
        yield c


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda c: c.track("E", {}), ValueError, "user_id or anonymous_id"),
        (lambda c: c.track("", user_id="u"), ValueError, "event"),
        (lambda c: c.track(None, user_id="u"), TypeError, "event"),
        (lambda c: c.track("E", ["not", "a", "dict"], user_id="u"), TypeError, "properties"),
        (lambda c: c.identify("u", "traits"), TypeError, "traits"),
        (lambda c: c.identify("", {}), ValueError, "user_id"),
        (lambda c: c.identify(3.5, {}), TypeError, "user_id"),
        (lambda c: c.track("E", user_id="u", timestamp="2026-01-01"), TypeError, "timestamp"),
        (lambda c: c.track("E", user_id="u", context=[1]), TypeError, "context"),
        (lambda c: c.track("E", user_id="u", integrations=1), TypeError, "integrations"),
        (lambda c: c.track("E", user_id="u", message_id=""), ValueError, "message_id"),
        (lambda c: c.track("E", user_id="u", message_id="a\r\nX: 1"), ValueError, "message_id"),
        (lambda c: c.group(None, user_id="u"), ValueError, "group_id"),
        (lambda c: c.alias(None, "u"), ValueError, "previous_id"),
        (lambda c: c.page(5, user_id="u"), TypeError, "name"),
    ],
    ids=[
        "no-user",
        "empty-event",
        "event-type",
        "properties",
        "traits",
        "empty-user",
        "user-type",
        "timestamp",
        "context",
        "integrations",
        "message-id",
        "message-id-crlf",
        "group-id",
        "alias",
        "page-name",
    ],
)
def test_bad_arguments_raise_at_the_call_naming_the_argument(
    client: Client, call: Any, error: type[Exception], argument: str
) -> None:
    """Each kind of bad argument raises TypeError/ValueError naming that argument."""
    with pytest.raises(error, match=argument):
        call(client)
    assert client.stats.made == 0


class RaisingOffset(dt.tzinfo):
    """A tzinfo whose utcoffset() fails (orjson used to crash the process on it)."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        raise RuntimeError("no offset today")

    def dst(self, when: dt.datetime | None) -> None:
        return None


class FarOffset(dt.tzinfo):
    """A tzinfo 30 hours east of UTC, which Python's own datetime refuses."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=30)

    def dst(self, when: dt.datetime | None) -> None:
        return None


class TwoHoursEast(dt.tzinfo):
    """A fixed offset of +02:00 that is not a datetime.timezone (as pytz's and dateutil's)."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=2)

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)


class NoOffset(dt.tzinfo):
    """A tzinfo that gives no offset: Python reads such a datetime as naive."""

    def utcoffset(self, when: dt.datetime | None) -> None:
        return None

    def dst(self, when: dt.datetime | None) -> None:
        return None


def test_a_tzinfo_whose_utcoffset_raises_is_refused_not_a_crash() -> None:
    """A datetime whose utcoffset() raises is a TypeError naming its path (it was a SIGSEGV)."""
    code = (
        "import datetime as dt\n"
        "from courier_analytics import Client\n"
        "class RaisingOffset(dt.tzinfo):\n"
        "    def utcoffset(self, when):\n"
        "        raise RuntimeError('no offset today')\n"
        "when = dt.datetime(2026, 1, 2, tzinfo=RaisingOffset())\n"
        "with Client(send=False) as c:\n"
        "    for call in (lambda: c.track('E', {'cart': [{'at': when}]}, user_id='u'),\n"
        "                 lambda: c.identify('u', {'seen': {'last': when}})):\n"
        "        try:\n"
        "            call()\n"
        "        except TypeError as exc:\n"
        "            print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("properties['cart'][0]['at']: ")
    assert lines[1].startswith("traits['seen']['last']: ")
    assert all("no valid UTC offset" in line for line in lines)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (dt.datetime(2026, 1, 2, tzinfo=FarOffset()), "no valid UTC offset"),
        (dt.time(3, 4, tzinfo=dt.timezone.utc), "time with a tzinfo"),
    ],
    ids=["offset-beyond-24h", "aware-time"],
)
def test_datetimes_without_a_valid_offset_raise_type_error_naming_the_path(
    value: Any, words: str
) -> None:
    """A datetime offset beyond +-24 h, or an aware time, is a TypeError naming its path."""
    with pytest.raises(TypeError, match=r"^properties\['a'\]\[1\]: ") as info:
        track({"a": [1, value]})
    assert words in str(info.value)


def test_a_datetime_that_gives_no_offset_is_written_naive() -> None:
    """A tzinfo whose utcoffset() is None makes a naive datetime, as Python reads it."""
    value = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=NoOffset())
    assert track({"v": value})["properties"]["v"] == "2026-01-02T03:04:05"


def test_datetime_subclasses_and_other_zones_become_iso_strings() -> None:
    """A datetime subclass (as pandas' Timestamp is) and a custom tzinfo become ISO 8601."""

    class Stamp(dt.datetime):
        pass

    east = TwoHoursEast()
    properties = {"a": Stamp(2026, 1, 2, 3, 4, 5, 6), "b": dt.datetime(2026, 7, 1, tzinfo=east)}
    assert track(properties)["properties"] == {
        "a": "2026-01-02T03:04:05.000006",
        "b": "2026-07-01T00:00:00+02:00",
    }


class Opaqueness(enum.Enum):
    """An Enum whose member's value cannot become JSON."""

    THING = Opaque()


def test_an_enum_whose_value_cannot_become_json_names_its_path() -> None:
    """An Enum member with a non-JSON value raises TypeError naming the member's path."""
    with pytest.raises(TypeError, match=r"^properties\['kind'\]\.value: a value of type Opaque"):
        track({"kind": Opaqueness.THING})


@pytest.mark.parametrize(
    "timestamp",
    [
        dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    ],
    ids=["before-year-1", "after-year-9999"],
)
def test_a_timestamp_out_of_range_in_utc_is_a_value_error(timestamp: dt.datetime) -> None:
    """A timestamp that leaves years 1-9999 once in UTC raises ValueError naming timestamp."""
    with pytest.raises(ValueError, match=r"^timestamp .* out of range"):
        track(timestamp=timestamp)


@pytest.mark.parametrize("tzinfo", [RaisingOffset(), FarOffset()], ids=["raises", "beyond-24h"])
def test_a_timestamp_without_a_valid_offset_is_a_type_error(tzinfo: dt.tzinfo) -> None:
    """A timestamp whose tzinfo gives no valid offset raises TypeError naming timestamp."""
    with pytest.raises(TypeError, match=r"^timestamp's tzinfo"):
        track(timestamp=dt.datetime(2026, 1, 2, tzinfo=tzinfo))


@pytest.mark.parametrize(
    ("properties", "where"),
    [
        ({"m": {1: "a", "1": "b"}}, "properties['m']"),
        ({"m": [{True: 1, "true": 2}]}, "properties['m'][0]"),
        ({None: 1, "null": 2}, "properties"),
        ({"d": {dt.date(2026, 1, 2): 1, "2026-01-02": 2}}, "properties['d']"),
    ],
    ids=["int", "bool", "none", "date"],
)
def test_keys_that_become_the_same_json_key_are_refused(
    properties: dict[Any, Any], where: str
) -> None:
    """Two keys that stringify alike (1 and '1') raise ValueError naming their dict."""
    with pytest.raises(ValueError, match="both become the JSON key") as info:
        track(properties)
    assert str(info.value).startswith(f"{where}: ")


def _call_from_deep_in_the_stack(levels: int, properties: Any) -> None:
    if levels:
        _call_from_deep_in_the_stack(levels - 1, properties)
    else:
        track(properties)


def test_excess_nesting_is_a_value_error_even_deep_in_the_callers_stack() -> None:
    """Nesting beyond the limit is a ValueError, never RecursionError, whatever the stack."""
    headroom = sys.getrecursionlimit() - len(inspect.stack()) - 60
    with pytest.raises(ValueError, match="nesting is deeper than 250 levels"):
        _call_from_deep_in_the_stack(headroom, {"deep": _deep(300)})


def test_excess_nesting_names_a_short_path() -> None:
    """The path of a very deep value is shortened in the middle, not 100,000 segments."""
    with pytest.raises(ValueError, match="nesting") as info:
        track({"deep": _deep(100_000)})
    assert len(str(info.value)) < 300
    assert "more levels" in str(info.value)


def _full_factory() -> MessageFactory:
    """A factory whose track/identify take the whole-body path (a no-op plugin on each)."""
    factory = MessageFactory()

    class Noop:
        name = "noop"
        type = "before"

        def process(self, message: dict[str, Any]) -> dict[str, Any]:
            return message

    factory.plugins.register(Noop())
    return factory


COMPACT_CALLS = [
    (
        "track",
        ("Order Completed", {"total": 42.5, "items": [{"sku": "é", "at": dt.date(2026, 1, 2)}]}),
    ),
    ("track", ("Clicked", None)),
    ("track", ('Ünïcode "quoted" event', {1: "int key", "nan": math.nan})),
    ("identify", ("u1", {"email": "a@example.com", "phone_number": None})),
]


@pytest.mark.parametrize(("kind", "args"), COMPACT_CALLS)
@pytest.mark.parametrize("who", [{"user_id": "u1é"}, {"anonymous_id": 'a"1'}])
def test_a_compact_body_is_the_whole_encoding_byte_for_byte(
    kind: str, args: tuple[Any, ...], who: dict[str, str]
) -> None:
    """A compact message's body is the very bytes the whole-body path encodes."""
    when = dt.datetime(2026, 3, 4, 5, 6, 7, 89_999, tzinfo=dt.timezone.utc)
    call = {**CALL, "timestamp": when, "message_id": "m-1", "user_id": None, "anonymous_id": None}
    call.update(who)
    if kind == "identify":
        args = (call.pop("user_id"), args[1])
    compact = getattr(MessageFactory(), kind)(*args, **call)
    whole = getattr(_full_factory(), kind)(*args, **call)
    assert compact._mid is None
    assert whole._mid is not None
    assert compact.body == whole.body
    assert compact == whole


def test_a_message_is_immutable() -> None:
    """Assigning or deleting an attribute of a message raises FrozenInstanceError."""
    message = MessageFactory().track("E", None, **{**CALL, "user_id": "u", "anonymous_id": None})
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.user_id = "someone else"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del message.event  # type: ignore[misc]


def test_a_message_survives_pickling() -> None:
    """A pickled and unpickled message equals the original, body included."""
    import pickle

    message = MessageFactory().track(
        "E", {"a": 1}, **{**CALL, "user_id": "u", "anonymous_id": None}
    )
    copy = pickle.loads(pickle.dumps(message))
    assert (copy, copy.body) == (message, message.body)


def test_timestamps_before_1970_keep_their_milliseconds() -> None:
    """A compact message keeps a timestamp before the epoch as the whole path writes it."""
    when = dt.datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=dt.timezone.utc)
    assert track(None, timestamp=when)["timestamp"] == "1969-12-31T23:59:59.999+00:00"


@pytest.fixture
def sending() -> Iterator[Client]:
    """A client that sends (to a fake Courier), so track() may take its short way."""
    from .fakes import FakeCourier, make_client

    with make_client(FakeCourier(), max_message_bytes=1000) as c:
        yield c


@pytest.mark.parametrize(
    ("event", "properties", "user_id"),
    [
        ("E", {"cart": {"items": [1, Opaque()]}}, "u"),
        ("E", {"c": _cycle()}, "u"),
        ("E", {"deep": _deep(300)}, "u"),
        ("E", {"s": "\ud800"}, "u"),
        ("E", {1: "a", "1": "b"}, "u"),
        ("E", {"x": "y" * 2000}, "u"),
        ("E", {}, "\ud800"),
        ("", {}, "u"),
        (" \t", {}, "u"),
        ("E", {}, ""),
    ],
    ids=[
        "object",
        "cycle",
        "deep",
        "surrogate",
        "same-key",
        "large",
        "bad-user",
        "empty",
        "blank",
        "empty-user",
    ],
)
def test_a_sending_clients_track_refuses_what_the_factory_refuses(
    sending: Client, event: str, properties: dict[Any, Any], user_id: str
) -> None:
    """track() on a sending client raises the factory's own error, and counts nothing."""
    factory = MessageFactory(max_bytes=1000)
    with pytest.raises((TypeError, ValueError)) as expected:
        factory.track(event, properties, **{**CALL, "user_id": user_id, "anonymous_id": None})
    with pytest.raises(type(expected.value)) as raised:
        sending.track(event, properties, user_id=user_id)
    assert str(raised.value) == str(expected.value)
    assert sending.stats.made == 0


@pytest.mark.parametrize(
    ("user_id", "traits"),
    [("u", {"cart": [Opaque()]}), ("u", {"s": "\ud800"}), ("u", {"x": "y" * 2000}), ("", {})],
    ids=["object", "surrogate", "large", "empty-user"],
)
def test_a_sending_clients_identify_refuses_what_the_factory_refuses(
    sending: Client, user_id: str, traits: dict[str, Any]
) -> None:
    """identify() on a sending client raises the factory's own error, and counts nothing."""
    factory = MessageFactory(max_bytes=1000)
    with pytest.raises((TypeError, ValueError)) as expected:
        factory.identify(user_id, traits, **{**CALL, "anonymous_id": None})
    with pytest.raises(type(expected.value)) as raised:
        sending.identify(user_id, traits)
    assert str(raised.value) == str(expected.value)
    assert sending.stats.made == 0


def test_a_track_exactly_at_the_size_limit_is_accepted() -> None:
    """A body of exactly max_message_bytes passes; one byte more raises."""
    from .fakes import FakeCourier, make_client

    properties = {"x": "y" * 900}
    size = (
        MessageFactory()
        .track("E", properties, **{**CALL, "user_id": "u", "anonymous_id": None})
        .size
    )
    with make_client(FakeCourier(), max_message_bytes=size) as client:
        client.track("E", properties, user_id="u")
        with pytest.raises(MessageTooLargeError, match=f"{size + 1:,} bytes"):
            client.track("E", {"x": "y" * 901}, user_id="u")
        assert client.flush(5)
        assert client.stats.delivered == 1


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(2026, 3, 4, 5, 6, 7, 89_999, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=dt.timezone.utc),
        dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.timezone.utc),
    ],
    ids=str,
)
def test_a_compact_timestamp_reads_as_the_whole_encoding_writes_it(when: dt.datetime) -> None:
    """The milliseconds kept by a compact message format as encode_timestamp writes the datetime."""
    from courier_analytics._json import encode_timestamp
    from courier_analytics._message import _EPOCH, _MILLISECOND, format_ms

    expected = orjson.dumps(encode_timestamp(when)).decode().strip('"')
    assert format_ms((when - _EPOCH) // _MILLISECOND) == expected
    assert format_ms((when - _EPOCH) // _MILLISECOND) == expected  # from the cache, too


def test_to_dict_of_a_compact_message_is_its_decoded_body() -> None:
    """A compact message's to_dict() equals decoding its body, and is a fresh dict each time."""
    call = {**CALL, "user_id": "u", "anonymous_id": "a"}
    message = MessageFactory().track("E", {"a": [1, {"b": None}]}, **call)
    first = message.to_dict()
    assert first == orjson.loads(message.body)
    first["context"]["library"]["name"] = "changed"
    assert message.to_dict() == orjson.loads(message.body)
