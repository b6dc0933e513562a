"""Process life: fork() and interpreter exit, each in a real subprocess."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A transport that appends "<pid> <messageId>" per request to a log file, so the
# test can see which process sent what, after the processes are gone.
PRELUDE = textwrap.dedent(
    """
    import os, sys, httpx, orjson
    import courier_analytics as analytics
    LOG = sys.argv[1]
    def record(request):
        message_id = orjson.loads(request.content)["messageId"]
        with open(LOG, "a") as log:
            log.write(f"{os.getpid()} {message_id}\\n")
        return httpx.Response(202, json={})
    client = analytics.Client(api_key="k", transport=httpx.MockTransport(record))
    """
)


def run(script: str, log: Path) -> list[tuple[int, str]]:
    """Run PRELUDE + script in a fresh interpreter and return the (pid, id) lines logged."""
    code = PRELUDE + textwrap.dedent(script)
    done = subprocess.run(
        [sys.executable, "-c", code, str(log)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = log.read_text().split() if log.exists() else []
    return [(int(pid), mid) for pid, mid in zip(lines[::2], lines[1::2], strict=True)]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_fork_child_sends_only_its_own_messages(tmp_path: Path) -> None:
    """After fork with a non-empty queue, each process sends its own messages, once.

    Both processes also make messages after the fork: their ids must not collide.
    """
    sent = run(
        """
        import threading
        gate = threading.Event()
        client.track("warm-up", user_id="p")     # starts the parent's worker
        client.flush(10)
        before = [client.track("E", {"n": n}, user_id="parent") for n in range(50)]
        pid = os.fork()
        if pid == 0:
            mine = [client.track("E", {"n": n}, user_id="child") for n in range(20)]
            ok = client.flush(10)
            print(*mine, file=open(LOG + ".child", "w"))
            os._exit(0 if ok and client.stats.delivered == 20 else 3)
        after = [client.track("E", {"n": n}, user_id="parent") for n in range(20)]
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert client.flush(10)
        print(*before, *after, file=open(LOG + ".parent", "w"))
        """,
        tmp_path / "log",
    )
    parent_ids = (tmp_path / "log.parent").read_text().split()
    child_ids = (tmp_path / "log.child").read_text().split()
    ids = [mid for _, mid in sent]
    assert len(ids) == len(set(ids)) == 1 + 50 + 20 + 20
    pids = {mid: pid for pid, mid in sent}
    assert len({pids[mid] for mid in parent_ids}) == 1
    assert len({pids[mid] for mid in child_ids}) == 1
    assert {pids[mid] for mid in parent_ids} != {pids[mid] for mid in child_ids}


def test_pending_messages_are_delivered_at_exit(tmp_path: Path) -> None:
    """Messages still queued when the interpreter exits are delivered by the atexit hook."""
    sent = run(
        """
        for n in range(300):
            client.track("E", {"n": n}, user_id=f"u{n % 5}")
        """,
        tmp_path / "log",
    )
    assert len(sent) == 300


# A transport that never answers, and an on_error that logs each error's type.
HUNG = textwrap.dedent(
    """
    import sys, threading, httpx
    import courier_analytics as analytics
    class Hang(httpx.BaseTransport):
        def handle_request(self, request):
            threading.Event().wait()
    def report(error, message):
        with open(sys.argv[1], "a") as log:
            log.write(f"{type(error).__name__}\\n")
    """
)


def run_hung(script: str, log: Path) -> list[str]:
    """Run HUNG + script in a fresh interpreter (60 s at most); return the errors logged."""
    done = subprocess.run(
        [sys.executable, "-c", HUNG + textwrap.dedent(script), str(log)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return log.read_text().split()


def test_exit_reports_what_it_cannot_deliver_in_time(tmp_path: Path) -> None:
    """With a hung server, exit waits exit_timeout, then reports each message as not delivered."""
    errors = run_hung(
        """
        client = analytics.Client(api_key="k", transport=Hang(), exit_timeout=0.2,
                                  on_error=report)
        for n in range(7):
            client.track("E", user_id=f"u{n}")
        """,
        tmp_path / "log",
    )
    assert errors == ["NotDeliveredError"] * 7


def test_exit_does_not_wait_again_after_a_flush_timed_out(tmp_path: Path) -> None:
    """After flush() gave up at flush_timeout, exit reports at once, not exit_timeout later."""
    # exit_timeout (600 s) far beyond run_hung's 60 s: waiting it out fails the test.
    errors = run_hung(
        """
        client = analytics.Client(api_key="k", transport=Hang(), flush_timeout=0.2,
                                  exit_timeout=600, on_error=report)
        client.track("E", user_id="u1")
        assert client.flush() is False
        """,
        tmp_path / "log",
    )
    assert errors == ["NotDeliveredError"]


def test_exit_delivery_resolves_host_names(tmp_path: Path) -> None:
    """At exit, connections to a host name (not an IP) still open: DNS avoids the executor."""
    log = tmp_path / "log"
    code = textwrap.dedent(
        """
        import sys, threading, http.server
        import courier_analytics as analytics

        # One thread serving one connection at a time (HTTP/1.0 closes each): Python
        # 3.12+ refuses new threads at exit, so a thread-per-request server would fail.
        class Courier(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with open(sys.argv[1], "a") as log:
                    log.write("got\\n")
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
            def log_message(self, *args):
                pass

        class Server(http.server.HTTPServer):
            request_queue_size = 256  # the client opens many connections at once

        server = Server(("127.0.0.1", 0), Courier)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://localhost:{server.server_address[1]}"
        client = analytics.Client(api_key="k", base_url=url)
        for n in range(20):
            client.track("E", user_id=f"u{n}")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(log)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == ["got"] * 20


def test_exit_reports_every_undelivered_message_in_one_line(tmp_path: Path) -> None:
    """10,000 messages that cannot go out at exit all reach on_error; one log line sums them."""
    log = tmp_path / "log"
    code = textwrap.dedent(
        """
        import atexit, sys, httpx
        reports = []
        # Registered before the library's hook, so it runs after it: what on_error saw.
        atexit.register(lambda: open(sys.argv[1], "w").write(str(len(reports))))
        import courier_analytics as analytics
        def refuse(request):
            raise httpx.ConnectError("connection refused")
        policy = analytics.RetryPolicy(max_retries=5, initial_wait=30, max_wait=30)
        client = analytics.Client(api_key="k", transport=httpx.MockTransport(refuse),
                                  retry=policy, exit_timeout=0.2,
                                  on_error=lambda error, message: reports.append(error))
        for n in range(10_000):
            client.track("E", user_id=f"u{n % 100}")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(log)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text() == "10000"
    lines = done.stderr.splitlines()
    assert len(lines) < 10, lines[:20]
    assert any("10000 message(s) not delivered" in line for line in lines), lines


def test_clients_share_one_exit_budget(tmp_path: Path) -> None:
    """Three clients with Courier hanging exit within one exit_timeout, not three in a row."""
    log = tmp_path / "log"
    code = textwrap.dedent(
        """
        import atexit, sys, threading, time, httpx
        began = []
        # atexit runs hooks last registered first: this one after the library's,
        # the one registered below before it.
        def end():
            with open(sys.argv[1], "w") as log:
                log.write(f"{time.monotonic() - began[0]} {len(reports)}")
        atexit.register(end)
        import courier_analytics as analytics
        class Hang(httpx.BaseTransport):
            def handle_request(self, request):
                threading.Event().wait()
        reports = []
        clients = [
            analytics.Client(api_key="k", transport=Hang(), exit_timeout=2.0,
                             on_error=lambda error, message: reports.append(error))
            for _ in range(3)
        ]
        for client in clients:
            client.track("E", user_id="u1")
        atexit.register(lambda: began.append(time.monotonic()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(log)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seconds, reported = log.read_text().split()
    # One after another took three budgets (6 s and more); together, one and a bit.
    assert 2.0 <= float(seconds) < 5.0
    assert reported == "3"
