"""`courier-analytics spool status` and `courier-analytics relay` on real spool files."""

from __future__ import annotations

import io
from pathlib import Path

import orjson

from courier_analytics._cli import main
from courier_analytics.devserver import DevServer, Faults

from .conftest import KEY
from .helpers import leave, status, track


class Terminal(io.StringIO):
    """Output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def relay(
    spool: Path, server: DevServer, out: io.StringIO | None = None, timeout: float = 60
) -> tuple[int, str]:
    out = out or io.StringIO()
    argv = ["relay", "--spool", str(spool), "--once", "--api-key", KEY]
    code = main([*argv, "--base-url", server.base_url, "--timeout", str(timeout)], out=out)
    return code, out.getvalue()


def test_status_says_what_the_spool_holds(tmp_path: Path) -> None:
    """`spool status` prints the count, the oldest's age and who owns what."""
    leave(tmp_path / "s.db", [track(n) for n in range(3)])
    out = io.StringIO()
    assert main(["spool", "status", str(tmp_path / "s.db")], out=out) == 0
    text = out.getvalue()
    assert "messages   3" in text
    assert "oldest" in text
    assert "pid" in text  # the dead owner, lease expired
    assert "expired" in text


def test_status_json_is_for_scripts(tmp_path: Path) -> None:
    """`spool status --json` prints one JSON object with the same figures."""
    leave(tmp_path / "s.db", [track(n) for n in range(3)])
    out = io.StringIO()
    assert main(["spool", "status", "--json", f"sqlite:///{tmp_path}/s.db"], out=out) == 0
    data = orjson.loads(out.getvalue())
    assert data["messages"] == 3
    assert data["owners"][0]["messages"] == 3
    assert data["oldest_age_s"] >= 0


def test_status_of_a_missing_spool_is_a_usage_error(tmp_path: Path) -> None:
    """`spool status` on a path with no spool exits 2 and creates nothing."""
    assert main(["spool", "status", str(tmp_path / "none.db")], out=io.StringIO()) == 2
    assert not (tmp_path / "none.db").exists()


def test_relay_once_delivers_everything_and_exits_0(tmp_path: Path, server: DevServer) -> None:
    """`relay --once` delivers what the spool holds, prints a summary, and exits 0."""
    leave(tmp_path / "s.db", [track(n) for n in range(40)])
    code, text = relay(tmp_path / "s.db", server)
    assert code == 0
    assert "relayed 40 message(s)" in text
    assert "40 delivered, 0 failed, 0 left" in text
    assert len(server.events()) == 40
    assert status(tmp_path / "s.db").messages == 0


def test_relay_once_exits_1_when_a_message_fails(tmp_path: Path, server: DevServer) -> None:
    """A message Courier refuses makes `relay --once` exit 1."""
    leave(tmp_path / "s.db", [track(0)])
    server.set_faults(Faults(fail_next=1, fail_with=400))
    code, text = relay(tmp_path / "s.db", server)
    assert code == 1
    assert "0 delivered, 1 failed" in text


def test_relay_once_gives_up_within_its_timeout(tmp_path: Path, server: DevServer) -> None:
    """Against a Courier that is down, `relay --once` retries for --timeout, parks, exits 1."""
    leave(tmp_path / "s.db", [track(0)])
    server.set_faults(Faults(error_rate=1.0, error_statuses=(503,)))
    code, text = relay(tmp_path / "s.db", server, timeout=1)
    assert code == 1
    assert "0 delivered, 0 failed, 1 left in the spool" in text
    # Retries end one second after the first attempt: at most three (the client's
    # own policy makes seven or more, over two minutes).
    assert server.stats()["requests_total"] <= 3
    assert status(tmp_path / "s.db").messages == 1


def test_relay_shows_a_progress_bar_on_a_terminal(tmp_path: Path, server: DevServer) -> None:
    """On a terminal the relay draws rich's progress bar: messages, rate, time left."""
    leave(tmp_path / "s.db", [track(n) for n in range(5)])
    code, text = relay(tmp_path / "s.db", server, out=Terminal())
    assert code == 0
    assert "relay" in text
    assert "5 messages" in text
    assert "/s" in text
    assert "left" in text
    assert not text.startswith("relay: ")  # not the plain lines


def test_relay_prints_plain_lines_elsewhere(tmp_path: Path, server: DevServer) -> None:
    """Not on a terminal, progress is plain lines."""
    leave(tmp_path / "s.db", [track(n) for n in range(5)])
    code, text = relay(tmp_path / "s.db", server)
    assert code == 0
    assert text.startswith("relay: ")
