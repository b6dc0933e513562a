"""The fault matrix of the reliability promise: nothing lost, nothing doubled, order kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from courier_analytics import RejectedError
from courier_analytics.devserver import DevServer, Faults

from .conftest import KEY, MakeClient, order_by_user


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_burst_of_server_errors_is_survived(
    server: DevServer, make_client: MakeClient, status: int
) -> None:
    """A burst of one 5xx status on consecutive requests loses and doubles nothing."""
    server.set_faults(Faults(fail_next=40, fail_with=status))
    client = make_client(max_in_flight=8, ordering="strict")
    for n in range(30):
        for user in range(4):
            client.track("E", {"n": n}, user_id=f"u{user}")
    assert client.flush(30)
    assert (client.stats.delivered, client.stats.failed, client.stats.retried) == (120, 0, 40)
    assert server.stats()["message_ids_applied"] == 120
    assert all(v == list(range(30)) for v in order_by_user(server).values())


def test_one_rejected_message_fails_alone(server: DevServer, make_client: MakeClient) -> None:
    """A 400 for one message reports it to on_error; the others around it are delivered."""
    reported: list[tuple[BaseException, str]] = []
    client = make_client(
        on_error=lambda e, m: reported.append((e, m.message_id)), ordering="strict"
    )
    server.set_faults(Faults(fail_message_ids="^poison$", fail_with=400))
    for n in range(10):
        client.track("E", {"n": n}, user_id="u1", message_id="poison" if n == 5 else None)
    assert client.flush(10)
    ((error, message_id),) = reported
    assert (type(error), message_id, error.attempts) == (RejectedError, "poison", 1)  # type: ignore[attr-defined]
    assert (client.stats.delivered, client.stats.failed) == (9, 1)
    assert order_by_user(server)["u1"] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert client.stats.unaccounted == 0


def test_flush_and_shutdown_keep_their_deadlines_when_the_server_hangs(
    server: DevServer, make_client: MakeClient
) -> None:
    """With every request hanging, flush() and shutdown() return by their timeouts."""
    server.set_faults(Faults(hang_rate=1.0))
    reported: list[BaseException] = []
    client = make_client(on_error=lambda e, m: reported.append(e), timeout=30.0)
    for n in range(5):
        client.track("E", user_id=f"u{n}")
    assert client.flush(0.1) is False
    client.shutdown(0.1)
    assert client.stats.failed == 5
    assert len(reported) == 5
    assert client.stats.unaccounted == 0


def test_exit_delivers_pending_messages_to_the_stand_in(server: DevServer, route: str) -> None:
    """A process that exits right after queueing has every message in Courier's log."""
    code = textwrap.dedent(
        f"""
        import courier_analytics as analytics
        analytics.configure(api_key={KEY!r}, base_url={server.base_url!r}, route={route!r},
                            ordering="strict")
        for n in range(200):
            analytics.track("Exit Test", {{"n": n}}, user_id=f"u{{n % 4}}")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert server.stats()["message_ids_applied"] == 200
    assert all(v == sorted(v) for v in order_by_user(server).values())
