"""The courier-analytics command: demo, one-off calls, and the stand-in."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from courier_analytics._cli import main
from courier_analytics.devserver import DevServer

KEY = "cli-key"


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    """A stand-in for the one-off calls."""
    with DevServer(api_key=KEY) as running:
        yield running


def run(*argv: str) -> tuple[int, str]:
    """Run the command in-process; return (exit code, stdout)."""
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.mark.parametrize("route", ["segment", "api"])
def test_demo_shows_what_courier_did_with_each_call(route: str) -> None:
    """The demo reports the merged profile, a Mapped send, an Unmapped event and a skip."""
    code, out = run("demo", "--route", route)
    assert code == 0
    assert "Segment-TrackEvent:Order Completed  Mapped" in out
    assert "sent order-receipt to user_1001 <carrier.pigeon@example.com>" in out
    assert "Segment-TrackEvent:Pricing Viewed   Unmapped" in out
    assert "not sent  Courier takes no such call; counted as skipped" in out
    assert "plan          pro" in out


def test_demo_runs_route_api_unless_told_otherwise() -> None:
    """Without --route the demo uses Courier's documented API, and group is skipped."""
    code, out = run("demo")
    assert code == 0
    assert out.startswith("courier-analytics demo: route 'api'")
    assert "POST /profiles/user_1001" in out
    assert "no group on Courier's API; skipped (route segment logs it)" in out


def test_identify_merges_traits_and_exits_zero(server: DevServer) -> None:
    """identify USER_ID --traits sends one identify and exits 0 once delivered."""
    code, out = run("identify", "u-cli", "--traits", '{"email": "c@example.com"}',
                    "--api-key", KEY, "--base-url", server.base_url)  # fmt: skip
    assert code == 0
    assert out.startswith("delivered identify ")
    assert server.profiles()["u-cli"] == {"email": "c@example.com"}


def test_track_delivers_on_route_api_by_default(server: DevServer) -> None:
    """track EVENT --user-id --properties posts to /inbound/courier without --route."""
    server.reset()
    code, _ = run("track", "Signed Up", "--user-id", "u-cli", "--properties", '{"plan": "pro"}',
                  "--api-key", KEY, "--base-url", server.base_url)  # fmt: skip
    assert code == 0
    [event] = server.events()
    assert (event["route"], event["event"]) == ("courier", "Segment-TrackEvent:Signed Up")


def test_track_on_route_segment_posts_to_inbound_segment(server: DevServer) -> None:
    """--route segment posts the Segment message to /inbound/segment."""
    server.reset()
    code, _ = run("track", "Signed Up", "--user-id", "u-cli", "--api-key", KEY,
                  "--base-url", server.base_url, "--route", "segment")  # fmt: skip
    assert code == 0
    [event] = server.events()
    assert (event["route"], event["event"]) == ("segment", "Segment-TrackEvent:Signed Up")


def test_a_refused_call_exits_one(server: DevServer, capsys: pytest.CaptureFixture[str]) -> None:
    """A call Courier refuses (wrong key) exits 1 and says why on stderr."""
    code, _ = run("track", "E", "--user-id", "u", "--api-key", "wrong", "--base-url",
                  server.base_url)  # fmt: skip
    assert code == 1
    assert "HTTP 401" in capsys.readouterr().err


def test_unreachable_courier_is_named_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening: exit 1, saying connection refused, where, and that time ran out."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    code, _ = run("track", "E", "--user-id=u", "--api-key=sk-9", f"--base-url={url}", "--timeout=1")
    err = capsys.readouterr().err
    assert code == 1
    assert "--timeout 1s ran out: track " in err
    assert f"the last: connection refused by 127.0.0.1:{port}" in err
    assert "sk-9" not in err


def test_bad_input_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    """A track without any user id is refused before sending, exit code 2."""
    code, _ = run("track", "E", "--api-key", "k", "--base-url", "http://127.0.0.1:1")
    assert code == 2
    assert "user_id or anonymous_id" in capsys.readouterr().err


def test_missing_key_advises_the_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a key the command says --api-key or COURIER_API_KEY, not Client(api_key=...)."""
    monkeypatch.delenv("COURIER_API_KEY", raising=False)
    monkeypatch.delenv("COURIER_AUTH_TOKEN", raising=False)
    code, _ = run("track", "E", "--user-id", "u", "--base-url", "http://127.0.0.1:1")
    err = capsys.readouterr().err
    assert code == 2
    assert "pass --api-key, or set the COURIER_API_KEY environment variable" in err
    assert "Client(" not in err


def test_invalid_json_is_a_usage_error() -> None:
    """--properties that is not a JSON object stops argument parsing (exit 2)."""
    with pytest.raises(SystemExit) as info:
        run("track", "E", "--user-id", "u", "--properties", "[1, 2]")
    assert info.value.code == 2


def test_dev_runs_the_stand_in_until_stopped() -> None:
    """`courier-analytics dev` serves Courier's routes on the given port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "courier_analytics", "dev", "--port", str(port), "--api-key", KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # printed once it is listening
        assert f"http://127.0.0.1:{port}" in first
        answer = httpx.post(
            f"http://127.0.0.1:{port}/inbound/segment",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"type": "identify", "messageId": "m1", "userId": "u", "traits": {"a": 1}},
        )
        assert answer.status_code == 202
        stats = httpx.get(f"http://127.0.0.1:{port}/__dev/stats").json()
        assert stats["message_ids_applied"] == 1
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def test_demo_into_a_closed_pipe_exits_quietly() -> None:
    """`courier-analytics demo | head`: a reader that goes away ends it with 141, no traceback."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "courier_analytics", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert demo.stdout is not None
    demo.stdout.close()  # the reader is gone before the first line: every write fails
    _, errors = demo.communicate(timeout=120)
    assert errors.decode() == ""
    assert demo.returncode == 141
