"""Sync mode with a spool: a call returns once its message is delivered, failed, or kept."""

from __future__ import annotations

import threading
from pathlib import Path

from client.fakes import make_client

from courier_analytics._client import Outcome, dispatch, make_message

from .test_client import Arrivals


def test_a_sync_call_whose_message_the_spool_takes_returns_at_once(tmp_path: Path) -> None:
    """Memory full: the message waits in the spool, and its call returns "accepted" at once."""
    courier = Arrivals(1)
    courier.gate.clear()
    client = make_client(
        courier, spool=tmp_path / "spool.db", sync_mode=True, max_queue_size=1, flush_timeout=600
    )
    try:
        first = make_message(client, lambda f: f.track("E", {}, user_id="u1", anonymous_id=None))
        second = make_message(client, lambda f: f.track("E", {}, user_id="u2", anonymous_id=None))
        outcomes: dict[str, Outcome] = {}
        calls = {
            name: threading.Thread(
                target=lambda name=name, m=m: outcomes.update({name: dispatch(client, m)}),
                daemon=True,
            )
            for name, m in (("first", first), ("second", second))
        }
        calls["first"].start()
        assert courier.arrived.wait(60)  # in flight behind the gate: memory is full
        calls["second"].start()
        calls["second"].join(60)  # before: it waited out flush_timeout (600 s)
        assert not calls["second"].is_alive(), "kept in the spool, yet the call still waits"
        assert outcomes["second"].state == "accepted"
        courier.gate.set()
        calls["first"].join(60)
        assert outcomes["first"].state == "accepted"
        assert client.flush(60)
        assert client.stats.delivered == 2
        assert not client._worker._engine.done, "a waiter is left behind"
    finally:
        courier.gate.set()
        client.shutdown(5)


def test_a_sync_call_that_outlives_its_wait_leaves_no_waiter_behind(tmp_path: Path) -> None:
    """A call that stops waiting (flush_timeout) drops its waiter while its message goes on."""
    courier = Arrivals(1)
    courier.gate.clear()
    client = make_client(courier, sync_mode=True, flush_timeout=0.2)
    try:
        message = make_message(client, lambda f: f.track("E", {}, user_id="u1", anonymous_id=None))
        assert dispatch(client, message).state == "accepted"  # still in flight behind the gate
        assert courier.arrived.is_set()
        assert not client._worker._engine.done, "a waiter is left for a call that returned"
        courier.gate.set()
        assert client.flush(60)
        assert client.stats.delivered == 1
    finally:
        courier.gate.set()
        client.shutdown(5)
