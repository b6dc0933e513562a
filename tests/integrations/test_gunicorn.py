"""Real gunicorn servers (sync workers with --preload, gevent workers) lose no event.

Each test starts gunicorn with two workers on a socket the test bound, sends a few
hundred requests, stops gunicorn gracefully (SIGTERM) and then finds every event
at the stand-in, exactly once, with its user. The stand-in answers after 20 ms and
each user's events go one at a time, so most events are still queued when
gunicorn is told to stop: they must be delivered on the way out.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from courier_analytics.devserver import DevServer, Faults

from .conftest import KEY

pytest.importorskip("gunicorn")

REQUESTS = 300
HERE = Path(__file__).resolve().parent


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1, handed to gunicorn as ``fd://``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    yield sock
    sock.close()


def serve_and_stop(listener: socket.socket, courier: DevServer, *options: str) -> list[str]:
    """Run gunicorn with ``options``, send REQUESTS requests, stop it; the messageIds sent."""
    courier.set_faults(Faults(latency_ms=20))
    env = {
        **os.environ,
        "COURIER_API_KEY": KEY,
        "COURIER_BASE_URL": courier.base_url,
        "PYTHONPATH": str(HERE.parent),
    }
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}",
        "--workers", "2", "--graceful-timeout", "30", *options,
        "integrations.apps.wsgi_app:app",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, pass_fds=[listener.fileno()], stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    try:
        with httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda n: http.get("/", params={"user": f"user-{n % 7}", "n": n}),
                    range(REQUESTS),
                )
            )
    finally:
        at_stop = len(courier.events())
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert all(answer.status_code == 200 for answer in answers)
    print(f"{at_stop} events had arrived when gunicorn was told to stop")
    return [answer.text for answer in answers]


def check_every_event_arrived_once(courier: DevServer, sent: list[str]) -> None:
    """Every request's event arrived once, with its user."""
    served = [e for e in courier.events() if e["event"] == "Segment-TrackEvent:Page Served"]
    assert sorted(e["messageId"] for e in served) == sorted(sent)
    assert all(e["user"] == f"user-{e['data']['properties']['n'] % 7}" for e in served)
    assert courier.stats()["duplicates"] == 0


def test_sync_workers_with_preload_deliver_every_event(
    listener: socket.socket, courier: DevServer
) -> None:
    """--preload forks workers from a master whose client already runs: nothing is lost."""
    sent = serve_and_stop(listener, courier, "--preload")
    check_every_event_arrived_once(courier, sent)
    served = [e for e in courier.events() if e["event"] == "Segment-TrackEvent:Page Served"]
    assert len({e["data"]["properties"]["pid"] for e in served}) == 2  # both workers served
    booted = [e for e in courier.events() if e["event"] == "Segment-TrackEvent:App Booted"]
    assert len(booted) == 1  # tracked once by the master, not resent by the forked workers


def test_gevent_workers_deliver_every_event(listener: socket.socket, courier: DevServer) -> None:
    """gevent workers (threads and sockets monkey-patched) deliver every event."""
    pytest.importorskip("gevent")
    sent = serve_and_stop(listener, courier, "--worker-class", "gevent")
    check_every_event_arrived_once(courier, sent)
    booted = [e for e in courier.events() if e["event"] == "Segment-TrackEvent:App Booted"]
    assert len(booted) == 2  # each worker imported the app itself
