"""Property-based: any nested input becomes JSON Courier accepts, or raises at the call."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from courier_analytics import Client
from courier_analytics._messages import MessageFactory
from courier_analytics.devserver import DevServer

from .conftest import INSTANT, KEY, MakeClient


class Opaque:
    """An object with no JSON meaning."""


def _generator() -> Any:
    return (n for n in range(3))


class RaisingOffset(dt.tzinfo):
    """A tzinfo whose utcoffset() fails."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        raise RuntimeError("no offset")


class FarOffset(dt.tzinfo):
    """A tzinfo beyond the +-24 h Python allows."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=-25)


class Kind(enum.Enum):
    """Enum members, one of them with a value that cannot become JSON."""

    PLAIN = "plain"
    OPAQUE = Opaque()


def _aware(tzinfo: dt.tzinfo) -> dt.datetime:
    return dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=tzinfo)


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec=None), max_size=30),  # includes lone surrogates
    st.text(max_size=20_000).filter(lambda s: len(s) > 10_000) | st.just("x" * 50_000),
    st.binary(max_size=20),
    st.decimals(allow_nan=True),
    st.datetimes(),
    st.uuids(),
    st.builds(_aware, st.sampled_from([dt.timezone.utc, RaisingOffset(), FarOffset()])),
    st.sampled_from(Kind),
    st.builds(Opaque),
    st.builds(_generator),
)
keys = st.one_of(st.text(st.characters(codec=None), max_size=10), st.integers(), st.none(),
                 st.floats(allow_nan=False), st.tuples(st.integers()),
                 st.sampled_from(["1", "2", "true", "null", "1.5"]), st.booleans(),
                 st.just(1.5))  # fmt: skip
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=5),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=25,
)


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"d": value}
    return value


Reports = list[BaseException]


@pytest.fixture(scope="module", params=["segment", "api"])
def fuzz_client(
    server: DevServer, request: pytest.FixtureRequest
) -> Iterator[tuple[Client, Reports]]:
    """One client per route for all examples, with what it reported."""
    errors: Reports = []
    client = Client(api_key=KEY, base_url=server.base_url, route=request.param, retry=INSTANT,
                    on_error=lambda e, m: errors.append(e))  # fmt: skip
    yield client, errors
    client.shutdown(5)


def _refusal(client: Client, properties: Any) -> Exception | None:
    try:
        client.track("Fuzz", properties, user_id="fuzz")
    except (TypeError, ValueError) as exc:
        return exc
    return None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    properties=st.dictionaries(keys, values, max_size=6) | st.builds(_deep, st.integers(240, 400))
)
def test_any_input_is_sent_as_valid_json_or_refused_at_the_call(
    fuzz_client: tuple[Client, Reports], properties: dict[Any, Any]
) -> None:
    """Each call gives JSON the stand-in accepts, or TypeError/ValueError naming properties."""
    client, errors = fuzz_client
    before = client.stats.delivered
    refusal = _refusal(client, properties)
    if refusal is not None:
        assert "properties" in str(refusal)
    client.track("After", {"ok": True}, user_id="fuzz")  # the worker is still alive
    assert client.flush(10)
    assert errors == []
    assert client.stats.delivered == before + (1 if refusal else 2)


def test_nan_and_infinities_become_null(server: DevServer) -> None:
    """NaN, inf and -inf (float or Decimal) arrive as null: JSON has no such numbers."""
    with Client(api_key=KEY, base_url=server.base_url) as client:
        client.track("Ratios", {"a": math.nan, "b": math.inf, "c": -math.inf,
                                "d": decimal.Decimal("NaN")}, user_id="u1")  # fmt: skip
        client.flush(10)
    (event,) = server.events()
    assert event["data"]["properties"] == {"a": None, "b": None, "c": None, "d": None}
    json.dumps(event["data"], allow_nan=False)  # strictly valid JSON


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"duplicate JSON keys: {names}"
    return dict(pairs)


@settings(max_examples=100, deadline=None)
@given(properties=st.dictionaries(keys, st.dictionaries(keys, st.integers(), max_size=4)))
def test_no_json_object_sent_has_two_equal_keys(properties: dict[Any, Any]) -> None:
    """Keys that stringify alike (1 and "1", True and "true") are refused, never both sent."""
    call = {"user_id": "u", "anonymous_id": None, "context": None, "timestamp": None,
            "message_id": None, "integrations": None}  # fmt: skip
    try:
        message = MessageFactory().track("Keys", properties, **call)
    except (TypeError, ValueError) as exc:
        refusal = str(exc)
    else:
        json.loads(message.body, object_pairs_hook=_no_duplicates)
        return
    assert refusal.startswith("properties")


#: User ids that are awkward in a URL path, and how each must appear in `/profiles/{id}`.
ODD_IDS = {
    ".": "%2E",
    "..": "%2E%2E",
    "a/..": "a%2F..",
    "%2F": "%252F",
    "?x=": "%3Fx%3D",
    "#": "%23",
    "ünï 🎉": "%C3%BCn%C3%AF%20%F0%9F%8E%89",
}


@pytest.mark.parametrize("user_id", list(ODD_IDS))
def test_odd_user_ids_reach_their_own_profile(
    make_client: MakeClient, server: DevServer, user_id: str
) -> None:
    """Ids such as `..`, `a/..`, `%2F`, `?x=`, `#` and unicode arrive as themselves, per route."""
    client = make_client()
    client.identify(user_id, {"plan": "pro"})
    client.track("Odd Id", {"n": 1}, user_id=user_id)
    assert client.flush(10)
    assert (client.stats.delivered, client.stats.failed) == (2, 0)
    assert server.profiles() == {user_id: {"plan": "pro"}}
    assert [event["user"] for event in server.events()] == [user_id, user_id]


@pytest.mark.parametrize("route", ["segment", "api"])
def test_odd_user_ids_make_exactly_these_request_paths(route: str) -> None:
    """The path reaching the transport keeps each id inside `/profiles/{id}` or off the path."""
    seen: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(202 if request.url.path.startswith("/inbound") else 200)

    transport = httpx.MockTransport(answer)
    with Client(api_key=KEY, base_url="https://courier.test/v1", route=route, transport=transport,
                retry=INSTANT) as client:  # fmt: skip
        for user_id in ODD_IDS:
            client.identify(user_id, {"plan": "pro"})
            client.track("Odd Id", user_id=user_id)
            assert client.flush(10)
    if route == "segment":
        expected = [b"/v1/inbound/segment"] * 2 * len(ODD_IDS)
    else:
        expected = []
        for encoded in ODD_IDS.values():
            expected += [f"/v1/profiles/{encoded}".encode(), b"/v1/inbound/courier"]
    assert seen == expected
