"""Request-scoped identity: analytics.scope, identify/track without ids, user(), reset()."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import courier_analytics as analytics
from courier_analytics import User
from courier_analytics.segment import Client as SegmentClient
from courier_analytics.testing import CapturedEvents, capture

from .fakes import FakeCourier, balanced, make_client


@pytest.fixture
def events() -> Iterator[CapturedEvents]:
    """Module-level calls captured (nothing sent), with an API key set."""
    analytics.api_key = "test-key"
    with capture() as captured:
        yield captured


def who(message: dict[str, Any]) -> tuple[Any, Any]:
    return message.get("userId"), message.get("anonymousId")


# --------------------------------------------------------------------- the sequence


def test_the_analytics_js_sequence_works_as_shown(events: CapturedEvents) -> None:
    """The issue's analytics.js sequence: ids, context and traits come from the scope."""
    with analytics.scope(
        user_id=None, anonymous_id="anon-9", traits=None, context={"ip": "203.0.113.7"}
    ):
        analytics.track("Pricing Viewed")
        analytics.identify("user_123", {"email": "carrier.pigeon@example.com"})
        analytics.track("Login Button Clicked", {"plan": "pro"})
        analytics.identify(traits={"plan": "pro"})
        assert analytics.user() == User(
            id="user_123",
            anonymous_id="anon-9",
            traits={"email": "carrier.pigeon@example.com", "plan": "pro"},
        )
        analytics.reset()
        assert analytics.user() == User(id=None, anonymous_id=None, traits={})
    pricing, login_identify, login, traits_identify = events
    assert who(pricing) == (None, "anon-9")
    assert pricing["context"]["ip"] == "203.0.113.7"
    assert who(login_identify) == ("user_123", "anon-9")
    assert who(login) == ("user_123", "anon-9")
    assert login["properties"] == {"plan": "pro"}
    assert who(traits_identify) == ("user_123", "anon-9")
    assert traits_identify["traits"] == {"email": "carrier.pigeon@example.com", "plan": "pro"}
    assert all(m["context"]["ip"] == "203.0.113.7" for m in events)


def test_outside_a_scope_a_call_without_ids_raises_and_names_scope(
    events: CapturedEvents,
) -> None:
    """track("E") with no user and no scope raises ValueError that suggests analytics.scope."""
    with pytest.raises(ValueError, match=r"user_id or anonymous_id is required.*analytics\.scope"):
        analytics.track("E")
    assert len(events) == 0


def test_outside_a_scope_nothing_is_remembered(events: CapturedEvents) -> None:
    """identify() outside every scope sets no process-wide user: the next track still raises."""
    analytics.identify("user_123", {"plan": "pro"})
    assert analytics.user() is None
    with pytest.raises(ValueError, match="user_id or anonymous_id is required"):
        analytics.track("E")


def test_a_strict_scope_without_identity_raises(events: CapturedEvents) -> None:
    """Inside a scope that knows no one, a call without ids raises by default."""
    with (
        analytics.scope(context={"ip": "203.0.113.7"}),
        pytest.raises(ValueError, match="required"),
    ):
        analytics.track("E")
    assert len(events) == 0


def test_identify_with_an_id_makes_that_user_the_scopes(events: CapturedEvents) -> None:
    """identify("u1") in a scope: later calls without ids are about u1."""
    with analytics.scope():
        analytics.identify("u1")
        analytics.page("Home")
        analytics.group("g1")
    assert [who(m) for m in events] == [("u1", None)] * 3


def test_a_scope_user_id_is_used_without_identify(events: CapturedEvents) -> None:
    """A scope opened with user_id attributes calls to that user straight away."""
    with analytics.scope(user_id="u7"):
        analytics.track("E")
        analytics.screen("Settings")
    assert [who(m) for m in events] == [("u7", None)] * 2


# --------------------------------------------------------------- explicit wins


def test_an_explicit_user_id_wins_and_brings_no_scope_ids(events: CapturedEvents) -> None:
    """track(..., user_id="u2") in u1's scope goes to u2 alone, without the scope's anonymousId."""
    with analytics.scope(user_id="u1", anonymous_id="anon-1"):
        analytics.track("E", user_id="u2")
        assert analytics.user() == User(id="u1", anonymous_id="anon-1", traits={})
    assert who(events[0]) == ("u2", None)


def test_an_explicit_anonymous_id_wins(events: CapturedEvents) -> None:
    """track(..., anonymous_id="a2") in u1's scope is about a2 only."""
    with analytics.scope(user_id="u1"):
        analytics.track("E", anonymous_id="a2")
    assert who(events[0]) == (None, "a2")


def test_the_calls_context_keys_win_and_library_is_ours(events: CapturedEvents) -> None:
    """Context: scope keys, then the call's keys over them; library is always this library's."""
    scoped = {"ip": "203.0.113.7", "locale": "fr-FR", "library": {"name": "forged"}}
    with analytics.scope(user_id="u1", context=scoped):
        analytics.track("E", context={"locale": "de-DE", "campaign": {"name": "x"}})
        analytics.alias("anon-1", "u1")
    track, alias = events
    assert track["context"]["ip"] == "203.0.113.7"
    assert track["context"]["locale"] == "de-DE"
    assert track["context"]["campaign"] == {"name": "x"}
    assert track["context"]["library"]["name"] == "courier-analytics"
    assert alias["context"]["ip"] == "203.0.113.7"
    assert alias["context"]["library"]["name"] == "courier-analytics"


def test_a_bad_context_in_a_scope_is_named(events: CapturedEvents) -> None:
    """A call's context that is not a mapping raises TypeError naming context, in a scope too."""
    scope = analytics.scope(user_id="u1", context={"ip": "203.0.113.7"})
    with scope, pytest.raises(TypeError, match="context must be a mapping"):
        analytics.track("E", context=["ip"])  # type: ignore[arg-type]


# ----------------------------------------------------------------------- traits


def test_identify_merges_traits_of_the_same_user(events: CapturedEvents) -> None:
    """identify() of the same user merges traits into the scope's and sends them all."""
    with analytics.scope(user_id="u1", traits={"plan": "free"}):
        analytics.identify(traits={"email": "a@example.com"})
        analytics.identify("u1", {"plan": "pro"})
        assert analytics.user() == User("u1", None, {"plan": "pro", "email": "a@example.com"})
    assert events[0]["traits"] == {"plan": "free", "email": "a@example.com"}
    assert events[1]["traits"] == {"plan": "pro", "email": "a@example.com"}


def test_identify_of_another_user_starts_their_traits_afresh(events: CapturedEvents) -> None:
    """Switching users in a scope drops the previous user's traits, as analytics.js does."""
    with analytics.scope(anonymous_id="anon-1"):
        analytics.identify("u1", {"email": "one@example.com"})
        analytics.identify("u2", {"plan": "pro"})
        assert analytics.user() == User("u2", "anon-1", {"plan": "pro"})
    assert events[1]["traits"] == {"plan": "pro"}
    assert who(events[1]) == ("u2", "anon-1")


def test_identify_with_an_anonymous_id_sets_the_scopes(events: CapturedEvents) -> None:
    """identify(anonymous_id=...) in a scope records the anonymous id for later calls."""
    with analytics.scope():
        analytics.identify(anonymous_id="anon-5", traits={"locale": "fr"})
        analytics.track("E")
    assert who(events[1]) == (None, "anon-5")


def test_a_failed_identify_leaves_the_scope_unchanged(events: CapturedEvents) -> None:
    """identify() whose traits cannot become JSON raises and the scope keeps its old user."""
    with analytics.scope(user_id="u1", traits={"plan": "free"}):
        with pytest.raises(TypeError):
            analytics.identify("u2", {"bad": object()})
        assert analytics.user() == User("u1", None, {"plan": "free"})


def test_user_traits_are_a_copy(events: CapturedEvents) -> None:
    """Changing the traits user() returned does not change the scope."""
    with analytics.scope(user_id="u1", traits={"plan": "free"}):
        current = analytics.user()
        assert current is not None
        current.traits["plan"] = "changed"  # type: ignore[index]
        assert analytics.user() == User("u1", None, {"plan": "free"})


def test_the_scope_copies_the_callers_dicts(events: CapturedEvents) -> None:
    """Mutating the traits/context dicts after opening the scope changes nothing in it."""
    traits, context = {"plan": "free"}, {"ip": "203.0.113.7"}
    with analytics.scope(user_id="u1", traits=traits, context=context):
        traits["plan"], context["ip"] = "pro", "198.51.100.1"
        analytics.track("E")
        assert analytics.user() == User("u1", None, {"plan": "free"})
    assert events[0]["context"]["ip"] == "203.0.113.7"


# ------------------------------------------------------------------------ reset


def test_reset_forgets_user_traits_and_anonymous_id(events: CapturedEvents) -> None:
    """After reset() the scope knows no one (calls without ids raise) but keeps its context."""
    with analytics.scope(anonymous_id="anon-1", context={"ip": "203.0.113.7"}):
        analytics.identify("u1", {"plan": "pro"})
        analytics.reset()
        assert analytics.user() == User(None, None, {})
        with pytest.raises(ValueError, match="user_id or anonymous_id is required"):
            analytics.track("E")
        analytics.track("E", user_id="u2")
    assert events[-1]["context"]["ip"] == "203.0.113.7"


def test_user_and_reset_outside_a_scope(events: CapturedEvents) -> None:
    """Outside every scope user() is None and reset() does nothing."""
    assert analytics.user() is None
    analytics.reset()
    assert analytics.user() is None


# ----------------------------------------------------------------------- nesting


def test_an_inner_scope_starts_from_the_outer_ones_values(events: CapturedEvents) -> None:
    """Nested: the inner scope inherits ids, traits and context, and adds its own context keys."""
    with analytics.scope(anonymous_id="anon-1", context={"ip": "203.0.113.7"}):
        analytics.identify("u1", {"plan": "pro"})
        with analytics.scope(context={"page": {"path": "/inner"}}):
            assert analytics.user() == User("u1", "anon-1", {"plan": "pro"})
            analytics.track("Inner")
    inner = events[-1]
    assert who(inner) == ("u1", "anon-1")
    assert inner["context"]["ip"] == "203.0.113.7"
    assert inner["context"]["page"] == {"path": "/inner"}


def test_leaving_an_inner_scope_restores_exactly_what_was_there(events: CapturedEvents) -> None:
    """identify() and reset() in an inner scope leave the outer scope's user as it was."""
    with analytics.scope(user_id="u1", traits={"plan": "free"}):
        with analytics.scope():
            analytics.identify("u2", {"plan": "pro"})
            analytics.reset()
        assert analytics.user() == User("u1", None, {"plan": "free"})
        analytics.track("E")
    assert analytics.user() is None
    assert who(events[-1]) == ("u1", None)


def test_an_inner_scope_for_another_user_does_not_inherit_traits(events: CapturedEvents) -> None:
    """scope(user_id="u2") inside u1's scope keeps u1's anonymous id but not u1's traits."""
    with (
        analytics.scope(user_id="u1", anonymous_id="anon-1", traits={"plan": "pro"}),
        analytics.scope(user_id="u2", traits={"role": "admin"}),
    ):
        assert analytics.user() == User("u2", "anon-1", {"role": "admin"})


def test_the_same_scope_object_can_be_entered_again_nested(events: CapturedEvents) -> None:
    """One scope object entered twice, nested, opens and restores two frames."""
    outer = analytics.scope(user_id="u1")
    with outer:
        analytics.identify(traits={"a": 1})
        with outer:
            assert analytics.user() == User("u1", None, {"a": 1})
            analytics.reset()
        assert analytics.user() == User("u1", None, {"a": 1})
    assert analytics.user() is None


def test_one_scope_object_shared_by_tasks_that_leave_out_of_order(events: CapturedEvents) -> None:
    """A module-level scope entered by three tasks, left first-in-first-out, never raises."""
    shared = analytics.scope(user_id="system")
    entered = [asyncio.Event() for _ in range(3)]

    async def handler(n: int) -> str | None:
        with shared:
            entered[n].set()
            for other in entered:
                await other.wait()
            for _ in range(n):  # task 0 leaves first, then 1, then 2
                await asyncio.sleep(0)
            analytics.track("Ran", {"n": n})
        user = analytics.user()
        return None if user is None else user.id

    async def main() -> list[str | None]:
        return await asyncio.gather(*(handler(n) for n in range(3)))

    assert asyncio.run(main()) == [None, None, None]
    assert sorted(who(m) for m in events.messages) == [("system", None)] * 3


def test_one_scope_object_shared_by_threads(events: CapturedEvents) -> None:
    """A module-level scope entered by two threads and left first-in-first-out never raises."""
    shared = analytics.scope(user_id="system")
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        with shared:
            first_in.set()
            assert second_in.wait(30)
            analytics.track("Ran")
        first_out.set()

    def second() -> None:
        assert first_in.wait(30)
        with shared:
            second_in.set()
            assert first_out.wait(30)
            analytics.track("Ran")

    def run(target: Any) -> None:
        try:
            target()
            assert analytics.user() is None
        except BaseException as exc:  # reported to the test's thread
            first_out.set()
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [who(m) for m in events.messages] == [("system", None)] * 2


# --------------------------------------------------------------------- decorator


def test_as_a_decorator_each_call_has_its_own_scope(events: CapturedEvents) -> None:
    """@scope(): each call starts from the decorator's values, not the last call's."""

    @analytics.scope(anonymous_id="anon-d")
    def handle(user: str | None) -> User | None:
        if user is not None:
            analytics.identify(user)
        analytics.track("Handled")
        return analytics.user()

    assert handle("u1") == User("u1", "anon-d", {})
    assert handle(None) == User(None, "anon-d", {})
    assert analytics.user() is None
    assert [who(m) for m in events if m["type"] == "track"] == [("u1", "anon-d"), (None, "anon-d")]


def test_as_a_decorator_of_an_async_function(events: CapturedEvents) -> None:
    """@scope() on an async def opens the scope around the awaited body, once per call."""

    @analytics.scope(context={"ip": "203.0.113.7"})
    async def handle(user: str) -> User | None:
        analytics.identify(user)
        await asyncio.sleep(0)
        analytics.track("Handled")
        return analytics.user()

    async def main() -> list[User | None]:
        return list(await asyncio.gather(handle("u1"), handle("u2")))

    assert asyncio.run(main()) == [User("u1", None, {}), User("u2", None, {})]
    tracks = [m for m in events if m["type"] == "track"]
    assert sorted(who(m) for m in tracks) == [("u1", None), ("u2", None)]
    assert all(m["context"]["ip"] == "203.0.113.7" for m in tracks)


def test_the_decorator_keeps_the_functions_name(events: CapturedEvents) -> None:
    """The decorated function keeps its name and docstring (functools.wraps)."""

    @analytics.scope()
    def view() -> None:
        """Doc."""

    assert view.__name__ == "view"
    assert view.__doc__ == "Doc."


# ------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"user_id": 3.5}, TypeError, "user_id must be a str"),
        ({"user_id": ""}, ValueError, "user_id must be a non-empty string"),
        ({"anonymous_id": object()}, TypeError, "anonymous_id must be a str"),
        ({"traits": ["plan"]}, TypeError, "traits must be a mapping"),
        ({"context": "ip"}, TypeError, "context must be a mapping"),
        ({"on_missing_identity": "ignore"}, ValueError, "on_missing_identity must be"),
    ],
)
def test_bad_scope_arguments_raise_naming_them(
    kwargs: dict[str, Any], error: type[Exception], text: str
) -> None:
    """scope(...) validates its arguments when made, naming the bad one."""
    with pytest.raises(error, match=text):
        analytics.scope(**kwargs)


def test_scope_arguments_are_keyword_only() -> None:
    """scope("u1") is refused: ids are given by name."""
    with pytest.raises(TypeError):
        analytics.scope("u1")  # type: ignore[misc]


# ------------------------------------------------------------- missing identity


def test_skip_mode_counts_a_call_without_identity_as_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """on_missing_identity="skip": the call returns an id, sends nothing, counts it skipped."""
    courier = FakeCourier()
    client = make_client(courier)
    caplog.set_level(logging.DEBUG, logger="courier_analytics")
    with analytics.scope(on_missing_identity="skip", context={"ip": "203.0.113.7"}):
        message_id = client.track("E", {"a": 1})
        client.identify(traits={"plan": "pro"})
    assert client.flush(5)
    assert isinstance(message_id, str)
    assert message_id
    assert courier.requests == []
    assert client.stats.skipped == 2
    assert client.stats.made == 2
    assert balanced(client)
    assert "no user or anonymous id in this scope" in caplog.text
    assert message_id in caplog.text
    client.shutdown()


def test_skip_mode_still_sends_once_someone_is_known() -> None:
    """In a skip-mode scope, after identify() the calls are sent as usual."""
    courier = FakeCourier()
    client = make_client(courier, route="segment")  # its bodies name the message type
    with analytics.scope(on_missing_identity="skip"):
        client.track("Before")
        client.identify("u1")
        client.track("After")
    assert client.flush(5)
    assert [(b["type"], b.get("userId")) for b in courier.bodies] == [
        ("identify", "u1"),
        ("track", "u1"),
    ]
    assert client.stats.skipped == 1
    client.shutdown()


def test_skip_mode_still_raises_for_bad_arguments() -> None:
    """on_missing_identity="skip" forgives only the missing identity: bad input still raises."""
    client = make_client(FakeCourier())
    with analytics.scope(on_missing_identity="skip"):
        with pytest.raises(TypeError, match="event must be a str"):
            client.track(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="properties"):
            client.track("E", {"bad": object()})
    assert client.stats.made == 0
    client.shutdown()


def test_skip_mode_is_inherited_and_can_be_turned_back(events: CapturedEvents) -> None:
    """An inner scope keeps the outer's on_missing_identity unless it sets its own."""
    with analytics.scope(on_missing_identity="skip"):
        with analytics.scope(context={"ip": "203.0.113.7"}):
            analytics.track("Skipped")
        with (
            analytics.scope(on_missing_identity="raise"),
            pytest.raises(ValueError, match="required"),
        ):
            analytics.track("Raises")
    assert len(events) == 0


# --------------------------------------------------------------------- snapshot


def test_snapshot_is_none_outside_a_scope() -> None:
    """scope.snapshot() outside every scope is None."""
    assert analytics.scope.snapshot() is None


def test_a_snapshot_is_plain_json_and_reopens_the_same_scope(events: CapturedEvents) -> None:
    """snapshot() -> JSON -> scope(**snapshot) in another thread: the same user and context."""
    with analytics.scope(
        anonymous_id="anon-1", context={"ip": "203.0.113.7"}, on_missing_identity="skip"
    ):
        analytics.identify("u1", {"plan": "pro"})
        carried = json.dumps(analytics.scope.snapshot())

    def worker() -> None:
        with analytics.scope(**json.loads(carried)):
            analytics.track("Export Finished")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert json.loads(carried) == {
        "user_id": "u1",
        "anonymous_id": "anon-1",
        "traits": {"plan": "pro"},
        "context": {"ip": "203.0.113.7"},
        "on_missing_identity": "skip",
    }
    assert who(events[-1]) == ("u1", "anon-1")
    assert events[-1]["context"]["ip"] == "203.0.113.7"


def test_a_snapshot_does_not_share_the_scopes_dicts(events: CapturedEvents) -> None:
    """Changing a snapshot's traits does not change the scope it came from."""
    with analytics.scope(user_id="u1", traits={"plan": "free"}):
        snapshot = analytics.scope.snapshot()
        assert snapshot is not None
        snapshot["traits"]["plan"] = "changed"
        assert analytics.user() == User("u1", None, {"plan": "free"})


# ------------------------------------------------------------- clients and shim


def test_every_client_honours_the_one_scope() -> None:
    """Two Clients called in one scope both take its user and context."""
    first, second = FakeCourier(), FakeCourier()
    # Route segment: its bodies carry the anonymousId and context checked below.
    a, b = make_client(first), make_client(second, route="segment")
    with analytics.scope(anonymous_id="anon-1", context={"ip": "203.0.113.7"}):
        a.identify("u1")
        b.track("E")
    assert a.flush(5)
    assert b.flush(5)
    assert (second.bodies[0]["userId"], second.bodies[0]["anonymousId"]) == ("u1", "anon-1")
    assert second.bodies[0]["context"]["ip"] == "203.0.113.7"
    a.shutdown()
    b.shutdown()


def test_the_segment_drop_in_is_unchanged_by_a_scope(events: CapturedEvents) -> None:
    """Segment's signatures name the user: the shim takes no ids nor context from a scope."""
    shim = SegmentClient(write_key="test-key", send=False)
    with analytics.scope(anonymous_id="anon-1", context={"ip": "203.0.113.7"}):
        shim.track("u2", "E")
    assert who(events[0]) == ("u2", None)
    assert "ip" not in events[0]["context"]
    shim.shutdown()


# ---------------------------------------------------------- threads and tasks


def test_threads_do_not_inherit_a_scope_unless_the_context_is_copied(
    events: CapturedEvents,
) -> None:
    """A new thread starts outside the scope; copy_context().run carries it over."""
    seen: dict[str, User | None] = {}
    with analytics.scope(user_id="u1"):
        plain = threading.Thread(target=lambda: seen.update(plain=analytics.user()))
        copied_context = contextvars.copy_context()
        copied = threading.Thread(
            target=lambda: copied_context.run(lambda: seen.update(copied=analytics.user()))
        )
        plain.start()
        copied.start()
        plain.join()
        copied.join()
    assert seen == {"plain": None, "copied": User("u1", None, {})}


def test_a_task_created_inside_a_scope_inherits_it(events: CapturedEvents) -> None:
    """asyncio tasks created in a scope see its user, and their identify() updates the request."""

    async def background() -> None:
        analytics.track("In Task")
        analytics.identify(traits={"seen": True})

    async def request() -> User | None:
        with analytics.scope(user_id="u1"):
            await asyncio.create_task(background())
            return analytics.user()

    assert asyncio.run(request()) == User("u1", None, {"seen": True})
    assert who(events[0]) == ("u1", None)


def test_64_threads_each_in_their_own_scope_never_mix_users(events: CapturedEvents) -> None:
    """64 threads x 50 calls, interleaved: each event carries its own thread's user."""
    start = threading.Barrier(64)

    def request(n: int) -> None:
        with analytics.scope(anonymous_id=f"anon-{n}"):
            start.wait()
            analytics.identify(f"u{n}", {"n": n})
            for i in range(50):
                analytics.track("E", {"owner": n, "i": i})
                if i == 25:
                    assert analytics.user() == User(f"u{n}", f"anon-{n}", {"n": n})

    threads = [threading.Thread(target=request, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tracks = [m for m in events if m["type"] == "track"]
    assert len(tracks) == 64 * 50
    for message in tracks:
        owner = message["properties"]["owner"]
        assert who(message) == (f"u{owner}", f"anon-{owner}")


def test_1000_asyncio_tasks_each_in_their_own_scope_never_mix_users(
    events: CapturedEvents,
) -> None:
    """1,000 tasks switching at every await: each event carries its own task's user."""

    async def request(n: int) -> None:
        with analytics.scope(anonymous_id=f"anon-{n}"):
            await asyncio.sleep(0)
            analytics.identify(f"u{n}")
            for i in range(3):
                await asyncio.sleep(0)
                analytics.track("E", {"owner": n, "i": i})

    async def main() -> None:
        await asyncio.gather(*(request(n) for n in range(1000)))

    asyncio.run(main())
    tracks = [m for m in events if m["type"] == "track"]
    assert len(tracks) == 3000
    for message in tracks:
        owner = message["properties"]["owner"]
        assert who(message) == (f"u{owner}", f"anon-{owner}")


def test_a_thread_pool_reusing_threads_never_carries_a_user_over(
    events: CapturedEvents,
) -> None:
    """400 "requests" on 4 pooled threads: a request without a scope never sees an earlier user."""
    from concurrent.futures import ThreadPoolExecutor

    def with_user(n: int) -> None:
        with analytics.scope():
            analytics.identify(f"u{n}")
            analytics.track("E", {"owner": n})

    def without_scope(n: int) -> str:
        assert analytics.user() is None
        try:
            analytics.track("E", {"owner": n})
        except ValueError:
            return "refused"
        return "sent"

    def empty_scope(n: int) -> User | None:
        with analytics.scope():
            return analytics.user()

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = []
        for n in range(400):
            job = (with_user, without_scope, empty_scope)[n % 3]
            futures.append(pool.submit(job, n))
        results = [future.result() for future in futures]
    assert results[1::3] == ["refused"] * len(results[1::3])
    assert results[2::3] == [User(None, None, {})] * len(results[2::3])
    tracks = [m for m in events if m["type"] == "track"]
    assert len(tracks) == len(results[0::3])
    assert all(who(m) == (f"u{m['properties']['owner']}", None) for m in tracks)
