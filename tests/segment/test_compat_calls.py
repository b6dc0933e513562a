"""The calls behave as Segment's do: ids, timestamps, context, return values, errors."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import orjson
import pytest

import courier_analytics
from courier_analytics import segment

from .conftest import FakeCourier

UTC = dt.timezone.utc


def make(courier: FakeCourier, route: str = "api", **options: object) -> segment.Client:
    """A drop-in client delivering to the in-memory Courier on `route`."""
    courier_options = {"transport": courier.transport, "route": route}
    return segment.Client("test-key", courier_options=courier_options, **options)


@pytest.fixture
def client() -> segment.Client:
    """A drop-in client that validates but sends nothing."""
    return segment.Client("test-key", send=False)


def test_track_returns_success_and_segment_message(client: segment.Client) -> None:
    """track returns (True, message) with Segment's keys, empty ones included."""
    ok, msg = client.track("u1", "Order Completed", {"total": 42})
    assert ok is True
    assert msg["type"] == "track"
    assert msg["event"] == "Order Completed"
    assert msg["properties"] == {"total": 42}
    assert msg["anonymousId"] is None
    assert msg["integrations"] == {}
    assert isinstance(msg["messageId"], str)


def test_identify_returns_traits(client: segment.Client) -> None:
    """identify returns the message with its traits and userId."""
    ok, msg = client.identify("u1", {"email": "a@example.com"})
    assert ok
    assert (msg["type"], msg["userId"], msg["traits"]) == (
        "identify",
        "u1",
        {"email": "a@example.com"},
    )


def test_group_returns_group_id(client: segment.Client) -> None:
    """group returns the message with groupId and traits."""
    ok, msg = client.group("u1", "g1", {"plan": "pro"})
    assert ok
    assert (msg["groupId"], msg["traits"]) == ("g1", {"plan": "pro"})


def test_alias_returns_previous_id(client: segment.Client) -> None:
    """alias returns the message with previousId and userId."""
    ok, msg = client.alias("anon-1", "u1")
    assert ok
    assert (msg["type"], msg["previousId"], msg["userId"]) == ("alias", "anon-1", "u1")


@pytest.mark.parametrize("kind", ["page", "screen"])
def test_view_takes_category_then_name(client: segment.Client, kind: str) -> None:
    """page and screen take (user_id, category, name, properties) as Segment does."""
    ok, msg = getattr(client, kind)("u1", "Docs", "Intro", {"path": "/docs"})
    assert ok
    assert (msg["type"], msg["category"], msg["name"]) == (kind, "Docs", "Intro")
    assert msg["properties"] == {"path": "/docs"}


def test_view_empty_name_and_category_are_absent(client: segment.Client) -> None:
    """An empty name or category is treated as not given, as in Segment."""
    ok, msg = client.page("u1", "", "")
    assert ok
    assert (msg["name"], msg["category"]) == (None, None)


@pytest.mark.parametrize(
    ("given", "expected"),
    [(42, "42"), (4.5, "4.5"), (uuid.UUID(int=1), str(uuid.UUID(int=1))), ("u1", "u1")],
)
def test_ids_are_stringified(client: segment.Client, given: object, expected: str) -> None:
    """Numeric and UUID user ids become strings."""
    _, msg = client.track(given, "Clicked")
    assert msg["userId"] == expected


def test_anonymous_id_alone_is_enough(client: segment.Client) -> None:
    """A call with only an anonymous_id works, and it is stringified."""
    _, msg = client.track(None, "Clicked", anonymous_id=7)
    assert (msg["userId"], msg["anonymousId"]) == (None, "7")


def test_group_id_number_is_stringified(client: segment.Client) -> None:
    """A numeric group_id becomes a string."""
    _, msg = client.group("u1", 99)
    assert msg["groupId"] == "99"


def test_message_id_is_stringified(client: segment.Client) -> None:
    """A message_id of any type (e.g. a UUID) becomes a string, as in Segment."""
    mid = uuid.uuid4()
    _, msg = client.identify("u1", message_id=mid)
    assert msg["messageId"] == str(mid)


def test_context_library_set_without_mutating_callers_dict(client: segment.Client) -> None:
    """context.library is set on a copy: the caller's dict is untouched."""
    context = {"ip": "10.0.0.1"}
    _, msg = client.track("u1", "Clicked", context=context)
    assert context == {"ip": "10.0.0.1"}
    assert msg["context"]["ip"] == "10.0.0.1"
    assert msg["context"]["library"]["name"] == "courier-analytics"


def test_integrations_pass_through(client: segment.Client) -> None:
    """integrations are passed through unchanged."""
    _, msg = client.track("u1", "Clicked", integrations={"All": False})
    assert msg["integrations"] == {"All": False}


def test_aware_timestamp_is_kept(client: segment.Client) -> None:
    """An aware timestamp is sent as that instant, in UTC."""
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    _, msg = client.track("u1", "Clicked", timestamp=when)
    assert msg["timestamp"] == "2024-05-01T10:00:00.000+00:00"


def test_old_naive_timestamp_is_read_as_utc(client: segment.Client) -> None:
    """A naive timestamp older than 5 s is UTC, as Segment guesses."""
    _, msg = client.identify("u1", timestamp=dt.datetime(2020, 1, 1, 8, 30))
    assert msg["timestamp"] == "2020-01-01T08:30:00.000+00:00"


def test_naive_now_is_read_as_local_time(client: segment.Client) -> None:
    """A naive datetime.now() is local time, as Segment guesses."""
    now = dt.datetime.now()
    _, msg = client.identify("u1", timestamp=now)
    sent = dt.datetime.fromisoformat(msg["timestamp"])
    assert sent == now.astimezone(UTC).replace(microsecond=now.microsecond // 1000 * 1000)


@pytest.mark.parametrize("bad", ["2024-01-01", dt.date(2024, 1, 1), 1700000000])
def test_timestamp_must_be_a_datetime(client: segment.Client, bad: object) -> None:
    """A timestamp that is not a datetime raises AssertionError (and TypeError)."""
    with pytest.raises(AssertionError, match="timestamp") as info:
        client.track("u1", "Clicked", timestamp=bad)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.track(None, "Clicked"),
        lambda c: c.track("", "Clicked"),
        lambda c: c.track("u1", None),
        lambda c: c.track("u1", "Clicked", ["not", "a", "dict"]),
        lambda c: c.identify(None, {"email": "a@example.com"}),
        lambda c: c.identify("u1", "not a dict"),
        lambda c: c.group("u1", None),
        lambda c: c.alias(None, "u1"),
        lambda c: c.alias("a", None),
        lambda c: c.page(None, name="Home"),
        lambda c: c.screen("u1", name=5),
        lambda c: c.track("u1", "Clicked", context="ctx"),
    ],
)
def test_bad_arguments_raise_what_segment_raises(client: segment.Client, call: object) -> None:
    """Bad arguments raise AssertionError, as Segment's require() does."""
    with pytest.raises(AssertionError):
        call(client)  # type: ignore[operator]


def test_bad_argument_error_is_also_type_and_value_error() -> None:
    """InvalidArgumentError satisfies except clauses for Segment and for courier-analytics."""
    assert issubclass(segment.InvalidArgumentError, AssertionError)
    assert issubclass(segment.InvalidArgumentError, TypeError)
    assert issubclass(segment.InvalidArgumentError, ValueError)


def test_value_that_cannot_become_json_names_its_key(client: segment.Client) -> None:
    """An unencodable value raises at the call, naming its key path."""
    with pytest.raises(segment.InvalidArgumentError, match="cart"):
        client.track("u1", "Clicked", {"cart": object()})


def test_too_large_message_raises_runtime_error() -> None:
    """A message over the size limit raises RuntimeError, as Segment's does."""
    client = segment.Client("k", send=False, courier_options={"max_message_bytes": 1000})
    with pytest.raises(RuntimeError, match="bytes"):
        client.track("u1", "Clicked", {"blob": "x" * 2000})


def test_send_false_validates_and_sends_nothing(courier: FakeCourier) -> None:
    """send=False returns (True, msg) and makes no request."""
    client = make(courier, send=False)
    assert client.track("u1", "Clicked")[0] is True
    client.flush()
    assert courier.requests == []


def test_queued_track_is_delivered_on_flush(courier: FakeCourier) -> None:
    """A queued track reaches Courier's /inbound/courier by flush(), named as Segment's."""
    client = make(courier)
    _, msg = client.track("u1", "Order Completed", {"total": 1})
    assert client.flush() is True
    body = orjson.loads(courier.requests[0].content)
    assert courier.paths == ["/inbound/courier"]
    assert (body["event"], body["messageId"]) == (
        "Segment-TrackEvent:Order Completed",
        msg["messageId"],
    )


def test_route_segment_posts_the_segment_message(courier: FakeCourier) -> None:
    """With courier_options route="segment" the Segment message goes to /inbound/segment."""
    client = segment.Client(
        "test-key", courier_options={"route": "segment", "transport": courier.transport}
    )
    _, msg = client.track("u1", "Order Completed", {"total": 1})
    assert client.flush() is True
    body = orjson.loads(courier.requests[0].content)
    assert courier.paths == ["/inbound/segment"]
    assert (body["event"], body["messageId"]) == ("Order Completed", msg["messageId"])


def test_write_key_is_the_bearer_key(courier: FakeCourier) -> None:
    """write_key is sent as Courier's bearer API key."""
    client = segment.Client("pk_live_1", courier_options={"transport": courier.transport})
    client.identify("u1", {"email": "a@example.com"})
    client.flush()
    assert courier.requests[0].headers["Authorization"] == "Bearer pk_live_1"


def test_host_is_couriers_base_url(courier: FakeCourier) -> None:
    """host is the base URL requests go to."""
    client = make(courier, host="https://courier.internal.example")
    client.identify("u1", {"email": "a@example.com"})
    client.flush()
    assert str(courier.requests[0].url) == "https://courier.internal.example/profiles/u1"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("https://api.segment.io", "https://api.courier.com"),
        ("https://events.eu1.segmentapis.com", "https://api.eu.courier.com"),
    ],
)
def test_segment_host_selects_courier_region(host: str, expected: str) -> None:
    """A host left pointing at Segment is replaced by Courier's host of that region."""
    client = segment.Client("k", host, send=False)
    assert client.courier_client.options.resolved_base_url() == expected


def test_sync_mode_delivers_before_returning(courier: FakeCourier) -> None:
    """In sync_mode the request is made before the call returns."""
    client = make(courier, sync_mode=True)
    assert client.track("u1", "Clicked")[0] is True
    assert courier.paths == ["/inbound/courier"]


def test_sync_mode_failure_returns_false_and_reports(courier: FakeCourier) -> None:
    """In sync_mode a refused message returns (False, msg) and reaches on_error."""
    courier.status = 400
    seen: list[tuple[BaseException, list[dict[str, object]]]] = []
    client = make(courier, sync_mode=True, on_error=lambda e, batch: seen.append((e, batch)))
    ok, msg = client.track("u1", "Clicked")
    assert ok is False
    assert [batch for _, batch in seen] == [[msg]]


def test_on_error_gets_exception_and_batch_list(courier: FakeCourier) -> None:
    """on_error is called as on_error(exc, [message_dict]), Segment's signature."""
    courier.status = 400
    seen: list[tuple[BaseException, list[dict[str, object]]]] = []
    client = make(courier, on_error=lambda e, batch: seen.append((e, batch)))
    _, msg = client.identify("u1", {"email": "a@example.com"})
    client.flush()
    [(error, batch)] = seen
    assert isinstance(error, courier_analytics.DeliveryError)
    assert error.status == 400
    assert batch == [msg]


def test_full_queue_returns_false_without_raising(courier: FakeCourier) -> None:
    """With the queue full, a call returns (False, msg) and does not raise."""
    courier.gate = gate = threading.Event()
    client = make(courier, max_queue_size=1)
    first, _ = client.track("u1", "First")
    second, msg = client.track("u1", "Second")
    gate.set()
    client.flush()
    assert (first, second) == (True, False)
    assert msg["event"] == "Second"


@pytest.mark.parametrize("kind", ["page", "screen", "alias"])
def test_types_courier_ignores_are_accepted_not_sent(courier: FakeCourier, kind: str) -> None:
    """page, screen and alias return success but are not sent (counted as skipped)."""
    client = make(courier)
    args = ("anon", "u1") if kind == "alias" else ("u1", None, "Home")
    assert getattr(client, kind)(*args)[0] is True
    client.flush()
    assert courier.requests == []
    assert client.stats.skipped == 1


def test_group_is_skipped_on_the_default_route(courier: FakeCourier) -> None:
    """group means nothing on Courier's documented API: accepted, counted skipped, not sent."""
    client = make(courier)
    assert client.group("u1", "g1", {"plan": "pro"})[0] is True
    client.flush()
    assert courier.paths == []
    assert client.stats.skipped == 1


def test_group_is_delivered_on_route_segment(courier: FakeCourier) -> None:
    """On route segment group is posted to /inbound/segment, as Segment's destination does."""
    client = segment.Client(
        "test-key", courier_options={"route": "segment", "transport": courier.transport}
    )
    client.group("u1", "g1", {"plan": "pro"})
    client.flush()
    assert courier.paths == ["/inbound/segment"]


# ------------------------------------- the returned message and the snapshot sent


def test_returned_message_holds_the_callers_python_values(courier: FakeCourier) -> None:
    """A date trait comes back as a date, as Segment returns it; Courier gets its ISO string."""
    client = make(courier, route="segment")  # sends the Segment message itself
    ok, msg = client.identify("u1", {"born": dt.date(1981, 2, 2), "tags": ("a", "b")})
    assert client.flush()
    assert ok
    assert msg["traits"] == {"born": dt.date(1981, 2, 2), "tags": ["a", "b"]}
    assert orjson.loads(courier.requests[0].content)["traits"]["born"] == "1981-02-02"


def test_returned_values_are_cleaned_as_segment_cleans_them(client: segment.Client) -> None:
    """Decimal becomes float, sets and tuples lists, an Enum its value; datetimes stay."""
    import decimal
    import enum

    class Plan(enum.Enum):
        PRO = "pro"

    when = dt.datetime(2020, 1, 1, tzinfo=UTC)
    properties = {"total": decimal.Decimal("9.5"), "ids": {7}, "plan": Plan.PRO, "at": when}
    _, msg = client.track("u1", "Paid", properties, {"ip": "203.0.113.7"})
    assert msg["properties"] == {"total": 9.5, "ids": [7], "plan": "pro", "at": when}
    assert msg["context"]["ip"] == "203.0.113.7"
    assert msg["context"]["library"]["name"] == "courier-analytics"


def test_what_is_sent_is_a_snapshot_taken_at_the_call(courier: FakeCourier) -> None:
    """Changing the caller's dict after the call changes neither the message sent nor returned."""
    client = make(courier, route="segment")  # sends the Segment message itself
    properties = {"items": [1, 2]}
    _, msg = client.track("u1", "Cart", properties)
    properties["items"].append(3)
    assert client.flush()
    assert msg["properties"] == {"items": [1, 2]}
    assert orjson.loads(courier.requests[0].content)["properties"] == {"items": [1, 2]}


def test_timestamps_are_written_as_segment_writes_them(courier: FakeCourier) -> None:
    """Returned and sent: milliseconds and +00:00, which Python 3.10's fromisoformat reads."""
    client = make(courier, route="segment")  # sends the Segment message itself
    when = dt.datetime(2024, 5, 1, 10, 0, 0, 123_456, tzinfo=UTC)
    _, msg = client.track("u1", "Clicked", timestamp=when)
    assert client.flush()
    sent = orjson.loads(courier.requests[0].content)["timestamp"]
    assert msg["timestamp"] == sent == "2024-05-01T10:00:00.123+00:00"
    assert dt.datetime.fromisoformat(sent) == when.replace(microsecond=123_000)


# ---------------------------------------------- a failure during the call (#16)


def test_a_failure_reported_before_an_async_call_returns_leaves_it_successful(
    courier: FakeCourier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Async mode: a message queued is (True, msg), even if it fails before the call returns."""
    courier.status = 400
    failed = threading.Event()
    client = make(courier, on_error=lambda error, batch: failed.set())
    worker = client.courier_client._worker
    put = worker.put

    def put_then_wait_for_the_failure(*args: object) -> bool:
        accepted = put(*args)  # type: ignore[arg-type]
        assert failed.wait(30)  # the worker has reported the failure; the call is still on
        return accepted

    monkeypatch.setattr(worker, "put", put_then_wait_for_the_failure)
    ok, _ = client.track("u1", "Clicked")
    assert ok is True


def test_calls_from_many_threads_leave_no_state_behind(courier: FakeCourier) -> None:
    """Concurrent calls whose messages fail: each returns once, nothing is remembered after."""
    courier.status = 400
    client = make(courier)
    results: list[bool] = []

    def calls() -> None:
        results.extend(client.track("u1", "Clicked")[0] for _ in range(100))

    threads = [threading.Thread(target=calls) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush()
    assert results == [True] * 800
    assert client.stats.failed == 800
    assert not client.courier_client._worker._engine.done  # no call left waiting


class _Refuser:
    """A before plugin that raises: the message is cancelled at the call."""

    name = "refuser"
    type = "before"

    def process(self, message: dict[str, object]) -> dict[str, object]:
        raise RuntimeError("refused")


def test_a_message_cancelled_during_the_call_returns_false(courier: FakeCourier) -> None:
    """A message never queued (a plugin cancelled it) is (False, msg) in async mode too."""
    seen: list[BaseException] = []
    client = make(courier, on_error=lambda error, batch: seen.append(error))
    client.courier_client.register(_Refuser())
    ok, _ = client.track("u1", "Clicked")
    assert ok is False
    assert isinstance(seen[0], courier_analytics.PluginError)
    assert courier.requests == []
