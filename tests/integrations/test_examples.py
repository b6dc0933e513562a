"""Every example app, run as its README says against ``courier-analytics dev``, end to end.

Each test starts the real stand-in (``courier-analytics dev --mappings-file
examples/mappings.json``) and the example's one command, logs in and does the
thing that notifies, stops the app the way a terminal would, and then finds at
the stand-in the identify (with the email), the tracks with the user, and the
notification Courier's mapping made.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .standin import StandIn

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """``courier-analytics dev`` with the examples' mappings and its default key."""
    with StandIn("--mappings-file", str(EXAMPLES / "mappings.json")) as running:
        yield running


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(command: list[str], standin: StandIn, port: int, **env: str) -> subprocess.Popen[str]:
    """Start an example's command and wait until it accepts connections on ``port``."""
    environment = {**os.environ, "COURIER_BASE_URL": standin.base_url, "PORT": str(port), **env}
    process = subprocess.Popen(
        command,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )
    for _ in range(600):  # up to a minute, waiting on the process between tries
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            try:
                process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            break
    process.kill()
    output, _ = process.communicate()
    raise AssertionError(f"{command} did not start serving:\n{output}")


def _as_from_a_terminal() -> None:
    """In the child, before exec: Ctrl-C acts as it does for a command started in a shell.

    A child inherits ignored and blocked signals: in one full run both examples ignored
    SIGINT, which only something in the test process can have caused, not the example.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT, signal.SIGTERM])
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _signal_state(pid: int) -> str:
    """The ignored and blocked signal masks of a live process, to explain a hang."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""
    return " ".join(line for line in status.splitlines() if line.startswith(("SigIgn", "SigBlk")))


def stop(process: subprocess.Popen[str], how: signal.Signals) -> None:
    """Stop the app as a terminal would (Ctrl-C, or SIGTERM from a process manager)."""
    process.send_signal(how)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        state = _signal_state(process.pid)
        process.kill()
        process.communicate()
        raise AssertionError(f"the app did not stop on {how.name} ({state})") from None
    assert process.returncode in (0, -how, 128 + how), output


def check_notified(standin: StandIn, user: str, event: str, template: str) -> None:
    """The identify, the user's tracks and the mapped notification all reached Courier.

    The examples use the default route, so an identify arrives as a profile merge.
    """
    events = standin.events()
    identify = [e for e in events if e["type"] in ("identify", "profile.merge")]
    assert [e["user"] for e in identify] == [user]
    data = identify[0]["data"]
    assert data.get("traits", data.get("profile"))["email"].endswith("@example.com")
    tracked = [e for e in events if e["type"] == "track"]
    assert all(e["user"] == user for e in tracked)
    assert f"Segment-TrackEvent:{event}" in [e["event"] for e in tracked]
    [send] = standin.sends()
    assert (send["recipient"], send["template"]) == (user, template)
    assert send["profile"]["email"].endswith("@example.com")


def shop_session(port: int, login: dict[str, Any], *, json: bool = False) -> dict[str, Any]:
    """Log in as ada and ship order 42; the ship answer."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        if json:
            token = client.post("/login", json=login).raise_for_status().json()["token"]
            client.headers["Authorization"] = f"Bearer {token}"
        else:
            client.post("/login", data=login).raise_for_status()
        answer: dict[str, Any] = client.post("/orders/42/ship").raise_for_status().json()
        return answer


def test_flask_example(standin: StandIn) -> None:
    """python examples/flask_app/app.py: login identifies, shipping notifies ada."""
    pytest.importorskip("flask_login")
    port = free_port()
    app = start([sys.executable, str(EXAMPLES / "flask_app" / "app.py")], standin, port)
    try:
        answer = shop_session(port, {"username": "ada", "password": "lovelace"})
    finally:
        stop(app, signal.SIGINT)
    assert answer == {"order_id": 42, "shipped_by": "ada"}
    check_notified(standin, "ada", "Order Shipped", "order-shipped")


def test_django_example(standin: StandIn, tmp_path: Path) -> None:
    """python examples/django_app/run.py: login identifies request.user, shipping notifies."""
    pytest.importorskip("django")
    port = free_port()
    command = [sys.executable, str(EXAMPLES / "django_app" / "run.py")]
    app = start(command, standin, port, SHOP_DATABASE=str(tmp_path / "shop.sqlite3"))
    try:
        answer = shop_session(port, {"username": "ada", "password": "lovelace"})
    finally:
        stop(app, signal.SIGINT)
    user = str(answer["shipped_by"])  # ada's primary key
    check_notified(standin, user, "Order Shipped", "order-shipped")


def test_fastapi_example(standin: StandIn) -> None:
    """uvicorn app:app: the token's user reaches the scope; SIGTERM's shutdown flushes."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES / "fastapi_app"),
        "app:app", "--port", str(port),
    ]  # fmt: skip
    app = start(command, standin, port)
    try:
        answer = shop_session(port, {"username": "ada", "password": "lovelace"}, json=True)
    finally:
        stop(app, signal.SIGTERM)
    assert answer == {"order_id": 42, "shipped_by": "ada"}
    check_notified(standin, "ada", "Order Shipped", "order-shipped")


def test_celery_example(standin: StandIn, tmp_path: Path) -> None:
    """A prefork worker runs the export in the sender's scope and notifies ada."""
    pytest.importorskip("celery")
    folder = EXAMPLES / "celery_app"
    env = {**os.environ, "COURIER_BASE_URL": standin.base_url, "EXAMPLE_CELERY_DIR": str(tmp_path)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool", "prefork",
         "--concurrency", "1", "--loglevel", "WARNING", "--without-heartbeat",
         "--without-gossip", "--without-mingle"],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        sent = subprocess.run(
            [sys.executable, "send.py", "ada", "42"],
            cwd=folder, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        stop(worker, signal.SIGTERM)
    assert sent.returncode == 0, sent.stderr
    assert "https://reports.example.com/42.csv" in sent.stdout
    check_notified(standin, "ada", "Export Finished", "export-ready")
