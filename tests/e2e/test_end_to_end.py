"""The real client against the real stand-in over loopback, on both routes."""

from __future__ import annotations

import socket

import pytest

from courier_analytics import AuthenticationError, RetriesExhaustedError, RetryPolicy
from courier_analytics.devserver import DevServer, Faults

from .conftest import MakeClient, order_by_user


def test_identify_then_track_sends_with_the_merged_profile(
    server: DevServer, make_client: MakeClient
) -> None:
    """A mapped track after an identify makes a send that sees the merged email."""
    client = make_client()
    client.identify("u1", {"email": "a@example.com"})
    client.identify("u1", {"name": "Ada"})
    client.track("Order Completed", {"total": 5}, user_id="u1")
    assert client.flush(10)
    (send,) = server.sends()
    assert send["recipient"] == "u1"
    assert send["profile"] == {"email": "a@example.com", "name": "Ada"}
    assert server.profiles()["u1"] == {"email": "a@example.com", "name": "Ada"}


def test_track_is_named_as_courier_names_segment_events(
    server: DevServer, make_client: MakeClient
) -> None:
    """Courier sees track events as Segment-TrackEvent:<event>, mapped or not."""
    client = make_client()
    client.track("Order Completed", user_id="u1")
    client.track("Pricing Viewed", user_id="u1")
    client.flush(10)
    events = sorted(server.events(), key=lambda e: str(e["event"]))
    assert [(e["event"], e["status"]) for e in events] == [
        ("Segment-TrackEvent:Order Completed", "Mapped"),
        ("Segment-TrackEvent:Pricing Viewed", "Unmapped"),
    ]


def test_a_repeated_message_id_is_applied_once(server: DevServer, make_client: MakeClient) -> None:
    """Sending the same messageId twice applies it once; the client counts both delivered."""
    client = make_client()
    client.track("Order Completed", user_id="u1", message_id="fixed-id")
    client.flush(10)
    client.track("Order Completed", user_id="u1", message_id="fixed-id")
    client.flush(10)
    assert client.stats.delivered == 2
    assert server.stats()["message_ids_applied"] == 1
    assert len(server.sends()) == 1


def test_random_5xx_are_survived_with_nothing_lost_or_doubled(
    server: DevServer, make_client: MakeClient
) -> None:
    """20,000 events through 20% random 5xx: each applied exactly once, in order per user."""
    server.set_faults(Faults(error_rate=0.2, seed=7))
    client = make_client(max_queue_size=20_000, ordering="strict")
    for n in range(100):
        for user in range(200):
            client.track("Step", {"n": n}, user_id=f"user-{user}")
    assert client.flush(120)
    stats = client.stats
    assert (stats.delivered, stats.failed, stats.dropped) == (20_000, 0, 0)
    assert stats.retried > 3_000
    assert server.stats()["message_ids_applied"] == 20_000
    assert all(steps == list(range(100)) for steps in order_by_user(server).values())
    assert stats.unaccounted == 0


@pytest.mark.parametrize(
    ("retry_after", "retry_after_format"),
    [(0, "seconds"), (0, "http-date"), (None, "seconds")],
    ids=["seconds", "http-date", "absent"],
)
def test_rate_limits_with_retry_after_are_survived(
    server: DevServer, make_client: MakeClient, retry_after: float | None, retry_after_format: str
) -> None:
    """429s with Retry-After in seconds, as an HTTP date, or absent are retried until accepted."""
    server.set_faults(
        Faults(
            fail_next=5,
            fail_with=429,
            retry_after=retry_after,
            retry_after_format=retry_after_format,
        )
    )
    client = make_client()
    for n in range(5):
        client.track("E", {"n": n}, user_id="u1")
    assert client.flush(10)
    assert (client.stats.delivered, client.stats.retried) == (5, 5)


def test_a_transient_500_then_success_ends_delivered(
    server: DevServer, make_client: MakeClient
) -> None:
    """A first 500 (Courier replays one to a seen Idempotency-Key) is retried: all lands once."""
    server.set_faults(Faults(fail_next=1, fail_with=500))
    client = make_client()
    client.identify("u1", {"plan": "pro"})
    client.track("Order Completed", {"n": 1}, user_id="u1")
    assert client.flush(10)
    assert (client.stats.delivered, client.stats.retried, client.stats.failed) == (2, 1, 0)
    assert server.profiles() == {"u1": {"plan": "pro"}}
    assert [e["event"] for e in server.events()][-1] == "Segment-TrackEvent:Order Completed"
    assert len(server.sends()) == 1


def test_dropped_connections_are_retried(server: DevServer, make_client: MakeClient) -> None:
    """A connection closed without an answer is retried and the event lands once."""
    server.set_faults(Faults(fail_next=3, fail_with="drop"))
    client = make_client()
    for n in range(3):
        client.track("E", {"n": n}, user_id="u1")
    assert client.flush(10)
    assert client.stats.delivered == 3
    assert server.stats()["message_ids_applied"] == 3


def test_an_applied_request_whose_answer_was_lost_is_not_doubled(
    server: DevServer, make_client: MakeClient
) -> None:
    """Applied then dropped: the retry is deduplicated by messageId, one event in Courier."""
    server.set_faults(Faults(fail_next=1, fail_with="drop", apply_first=True))
    client = make_client()
    client.track("Order Completed", user_id="u1")
    assert client.flush(10)
    assert (client.stats.delivered, client.stats.failed) == (1, 0)
    assert server.stats()["message_ids_applied"] == 1
    assert len(server.sends()) == 1


def test_an_applied_request_that_timed_out_is_not_doubled(
    server: DevServer, make_client: MakeClient
) -> None:
    """Applied, then no answer before the timeout: the retry is deduplicated (409 on api)."""
    server.set_faults(Faults(fail_next=1, fail_with="hang", apply_first=True))
    client = make_client(timeout=0.2)
    client.track("Order Completed", user_id="u1")
    assert client.flush(10)
    assert (client.stats.delivered, client.stats.failed, client.stats.retried) == (1, 0, 1)
    assert server.stats()["message_ids_applied"] == 1
    assert len(server.sends()) == 1


def test_a_hung_request_times_out_and_is_retried(
    server: DevServer, make_client: MakeClient
) -> None:
    """A request the server never answers times out and the retry delivers it."""
    server.set_faults(Faults(fail_next=1, fail_with="hang"))
    client = make_client(timeout=0.2)
    client.track("E", user_id="u1")
    assert client.flush(10)
    assert (client.stats.delivered, client.stats.retried) == (1, 1)


def test_a_wrong_key_fails_every_message_without_retrying(
    server: DevServer, make_client: MakeClient
) -> None:
    """With a wrong key each message is reported as AuthenticationError, one request each."""
    errors: list[BaseException] = []
    client = make_client(api_key="wrong", on_error=lambda e, m: errors.append(e))
    for n in range(10):
        client.track("E", {"n": n}, user_id=f"u{n}")
    client.flush(10)
    assert client.stats.failed == 10
    assert [type(e) for e in errors] == [AuthenticationError] * 10
    assert server.stats()["requests_total"] == 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_connections_throughout_fail_each_message(route: str) -> None:
    """With nothing listening, each message fails after its retries, chained to ConnectError."""
    from courier_analytics import Client

    errors: list[BaseException] = []
    policy = RetryPolicy(max_retries=2, initial_wait=0, max_wait=0)
    url = f"http://127.0.0.1:{_free_port()}"
    with Client(api_key="k", base_url=url, route=route, retry=policy,  # type: ignore[arg-type]
                on_error=lambda e, m: errors.append(e)) as client:  # fmt: skip
        for n in range(5):
            client.track("E", user_id=f"u{n}")
        client.flush(10)
        assert (client.stats.failed, client.stats.retried) == (5, 10)
    assert all(isinstance(e, RetriesExhaustedError) for e in errors)
    assert all(type(e.__cause__).__name__ == "ConnectError" for e in errors)


def test_a_server_that_comes_up_late_gets_everything(route: str) -> None:
    """Events made while Courier is down are delivered once it comes up."""
    from courier_analytics import Client

    port = _free_port()
    policy = RetryPolicy(max_retries=200, initial_wait=0.01, max_wait=0.05, max_time=None)
    client = Client(api_key="late", base_url=f"http://127.0.0.1:{port}", route=route,  # type: ignore[arg-type]
                    retry=policy, ordering="strict")  # fmt: skip
    for n in range(20):
        client.track("E", {"n": n}, user_id=f"u{n % 3}")
    assert client.flush(0.2) is False  # nothing can be delivered yet
    with DevServer(api_key="late", port=port) as late:
        assert client.flush(20)
        assert client.stats.delivered == 20
        assert late.stats()["message_ids_applied"] == 20
        assert all(v == sorted(v) for v in order_by_user(late).values())
    client.shutdown(1)
