"""SIGTERM with `handle_sigterm()`: real subprocesses, sent the real signal."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import courier_analytics as analytics

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# The child's Courier: refuses connections while the file DOWN exists, accepts
# otherwise; each accepted message id goes to SENT and each report to REPORTED (one
# line each, written at once: a process killed by a signal runs no exit hooks).
PRELUDE = textwrap.dedent(
    """
    import os, signal, sys, httpx, orjson
    import courier_analytics as analytics
    DOWN, SENT, REPORTED = sys.argv[1:4]
    def courier(request):
        if os.path.exists(DOWN):
            raise httpx.ConnectError("connection refused")
        with open(SENT, "a") as log:
            log.write(orjson.loads(request.content)["messageId"] + "\\n")
        return httpx.Response(202, json={})
    reported = open(REPORTED, "a", buffering=1)
    def on_error(error, message):
        reported.write(f"{type(error).__name__} {message.message_id}\\n")
    # Retries every 20 ms for as long as it takes: Courier comes back, or exit ends it.
    policy = analytics.RetryPolicy(max_retries=10_000, initial_wait=0.02, max_wait=0.02,
                                   max_time=None)
    """
)


_children: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_child_left() -> Iterator[None]:
    """A test that fails half-way leaves no child running."""
    yield
    while _children:
        process = _children.pop()
        if process.poll() is None:
            process.kill()
        process.communicate()


class Child:
    """A Python child that runs PRELUDE + script; it prints "ready" once it tracked."""

    def __init__(self, tmp_path: Path, script: str) -> None:
        self.down, self.sent, self.reported = (tmp_path / n for n in ("down", "sent", "reported"))
        self.down.touch()
        code = PRELUDE + textwrap.dedent(script)
        files = [str(self.down), str(self.sent), str(self.reported)]
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, *files],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _children.append(self.process)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line == "ready\n", line + self.finish()[1]

    def terminate(self) -> tuple[int, str]:
        """Send SIGTERM; return the exit status and stderr."""
        self.process.send_signal(signal.SIGTERM)
        return self.finish()

    def finish(self) -> tuple[int, str]:
        """Wait for the child to end (closing its stdin); return its status and stderr."""
        _, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stderr

    def lines(self, path: Path) -> list[str]:
        """The lines the child wrote to one of its files."""
        return path.read_text().splitlines() if path.exists() else []


# The child tracks 200 messages, says it is ready, then waits on stdin: SIGTERM
# arrives there, in the main thread, as in a server's accept loop.
TRACK_AND_WAIT = """
    client = analytics.Client(api_key="k", transport=httpx.MockTransport(courier),
                              retry=policy, on_error=on_error, exit_timeout={exit_timeout})
    {install}
    for n in range(200):
        client.track("E", {{"n": n}}, user_id=f"u{{n % 10}}")
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_sigterm_delivers_what_is_pending_then_ends_the_process_as_sigterm_does(
    tmp_path: Path,
) -> None:
    """With the handler, SIGTERM delivers the pending messages, then the process dies by it."""
    child = Child(
        tmp_path, TRACK_AND_WAIT.format(exit_timeout=30, install="analytics.handle_sigterm()")
    )
    child.down.unlink()  # Courier is back: what waits to retry can now be delivered
    status, stderr = child.terminate()
    assert status == -signal.SIGTERM, stderr
    assert len(set(child.lines(child.sent))) == 200
    assert child.lines(child.reported) == []


def test_without_the_handler_sigterm_loses_what_is_pending(tmp_path: Path) -> None:
    """Without it, SIGTERM's default action ends the process before anything is delivered."""
    child = Child(tmp_path, TRACK_AND_WAIT.format(exit_timeout=30, install=""))
    status, _ = child.terminate()
    assert status == -signal.SIGTERM
    assert child.lines(child.sent) == child.lines(child.reported) == []


def test_sigterm_reports_what_it_could_not_deliver_in_one_line(tmp_path: Path) -> None:
    """Courier down: within exit_timeout each message is reported, with one summary line."""
    child = Child(
        tmp_path, TRACK_AND_WAIT.format(exit_timeout=0.3, install="analytics.handle_sigterm()")
    )
    status, stderr = child.terminate()
    assert status == -signal.SIGTERM, stderr
    reported = child.lines(child.reported)
    assert len(reported) == 200
    assert {line.split()[0] for line in reported} == {"NotDeliveredError"}
    assert child.lines(child.sent) == []
    summaries = [line for line in stderr.splitlines() if "not delivered" in line]
    assert len(summaries) == 1
    assert "200 message(s)" in summaries[0]


def test_sigterm_chains_to_the_handler_set_before(tmp_path: Path) -> None:
    """A Python handler set before is called after the flush; exit reports the rest."""
    child = Child(
        tmp_path,
        TRACK_AND_WAIT.format(
            exit_timeout=0.3,
            install="signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
            "    analytics.handle_sigterm()",
        ),
    )
    status, stderr = child.terminate()
    assert status == 3, stderr
    assert len(child.lines(child.reported)) == 200


def test_an_ignored_sigterm_stays_ignored(tmp_path: Path) -> None:
    """With SIGTERM ignored before, the handler does nothing: the process and client go on."""
    child = Child(
        tmp_path,
        TRACK_AND_WAIT.format(
            exit_timeout=30,
            install="signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    analytics.handle_sigterm()",
        )
        + "    os.unlink(DOWN)\n    print(client.flush(30), file=sys.stderr)\n",
    )
    status, stderr = child.terminate()  # then stdin ends: Courier comes back, it flushes
    assert status == 0, stderr
    assert stderr.strip().endswith("True")
    assert len(child.lines(child.sent)) == 200


def test_handle_sigterm_outside_the_main_thread_is_a_value_error() -> None:
    """Only the main thread can set signal handlers: elsewhere it raises ValueError."""
    errors: list[BaseException] = []

    def install() -> None:
        try:
            analytics.handle_sigterm()
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert "main thread" in str(errors[0])
