"""`courier-analytics import`: Segment exports into the local Courier stand-in."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from courier_analytics._cli import main
from courier_analytics._import import (
    Pacer,
    _BarProgress,
    _PlainProgress,
    _progress,
    parse_timestamp,
)
from courier_analytics.devserver import DevServer, Faults

KEY = "import-key"
USERS = 997


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    """One stand-in for the module; each test resets it."""
    with DevServer(api_key=KEY) as running:
        yield running


@pytest.fixture
def courier(server: DevServer) -> DevServer:
    """The stand-in, emptied and without faults."""
    server.set_faults(Faults())
    server.reset()
    return server


def identify(i: int, **extra: Any) -> dict[str, Any]:
    """The i-th identify of a generated export, as Segment's S3 destination writes it."""
    return {
        "type": "identify",
        "messageId": f"id-{i}",
        "timestamp": f"2024-03-{1 + i % 28:02d}T12:00:00.{i % 1000:03d}Z",
        "userId": f"user-{i % USERS}",
        "traits": {"email": f"u{i % USERS}@example.com", "seq": i},
        "context": {"ip": "203.0.113.9", "library": {"name": "analytics.js", "version": "4.1"}},
        "integrations": {},
        "receivedAt": "2024-03-01T12:00:01.000Z",
        **extra,
    }


def track(i: int) -> dict[str, Any]:
    """The i-th track of a generated export."""
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"tr-{i}",
        "timestamp": "2024-03-02T08:00:00.000Z",
        "userId": f"user-{i % USERS}",
        "properties": {"order": i},
    }


class Export:
    """A generated export: its lines, and what Courier should hold after importing it."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.bad: list[int] = []  # line numbers (1-based) of bad lines
        self.identifies = 0
        self.identify_lines: list[int] = []  # line numbers (1-based) of first copies
        self.tracks = 0
        self.duplicates = 0
        self.last_seq: dict[str, int] = {}

    def add(self, start: int, count: int, *, bad_every: int = 0, dup_every: int = 0) -> None:
        for i in range(start, start + count):
            if i % 50 == 7:
                self.lines.append(orjson.dumps(track(i)))
                self.tracks += 1
            else:
                self.lines.append(orjson.dumps(identify(i)))
                self.identifies += 1
                self.identify_lines.append(len(self.lines))
                self.last_seq[f"user-{i % USERS}"] = i
            if bad_every and i % bad_every == 3:
                self.lines.append(b'{"type": "identify", "messageId": "broken"')
                self.bad.append(len(self.lines))
            if dup_every and i % dup_every == 11 and i - start >= 2 * USERS:
                # Segment delivers at least once: a line seen again later. Sent
                # again, it would take its user back to an older seq.
                self.lines.append(orjson.dumps(identify(i - 2 * USERS)))
                self.duplicates += 1

    def write(self, path: Path, *, gz: bool) -> Path:
        data = b"\n".join(self.lines) + b"\n"
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    def line_of(self, message_id: str) -> int:
        """The line number of the first line holding `message_id`."""
        needle = f'"messageId":"{message_id}"'.encode()
        return next(n for n, line in enumerate(self.lines, 1) if needle in line)


def run(*argv: str) -> tuple[int, str]:
    """Run the command in-process; return (exit code, stdout)."""
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def row(out: str, name: str) -> str:
    """The value and note of a row of the summary table, spaces squeezed."""
    found = re.search(rf"^  {name}  +(.*)$", out, re.MULTILINE)
    assert found is not None, out
    return " ".join(found.group(1).split())


def skipped(out: str, reason: str) -> str:
    """How many the summary says were skipped for `reason`."""
    found = re.search(rf"^ +([\d,]+)  {re.escape(reason)}$", out, re.MULTILINE)
    assert found is not None, out
    return found.group(1)


def connection(server: DevServer) -> list[str]:
    return ["--api-key", KEY, "--base-url", server.base_url]


def profiles_match(server: DevServer, last_seq: dict[str, int]) -> bool:
    """Whether every user's profile holds the traits of that user's last identify."""
    profiles = server.profiles()
    return len(profiles) == len(last_seq) and all(
        profiles[user]["seq"] == seq for user, seq in last_seq.items()
    )


# ---------------------------------------------------------------- a large import


def test_a_large_export_in_several_files_reaches_courier_once(
    courier: DevServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """100,000+ lines in three files (two gzipped) with bad lines and duplicates:
    every identify arrives once and in order, each bad line is named, exit 2."""
    exports = [Export(), Export(), Export()]
    exports[0].add(0, 40_000, bad_every=10_000, dup_every=5_000)
    exports[1].add(40_000, 30_000, bad_every=10_000, dup_every=5_000)
    exports[2].add(70_000, 31_000, bad_every=10_000, dup_every=5_000)
    files = [
        exports[0].write(tmp_path / "2024-03-01.json.gz", gz=True),
        exports[1].write(tmp_path / "2024-03-02.json", gz=False),
        exports[2].write(tmp_path / "2024-03-03.json.gz", gz=True),
    ]
    last_seq = {**exports[0].last_seq, **exports[1].last_seq, **exports[2].last_seq}
    identifies = sum(export.identifies for export in exports)
    assert sum(len(export.lines) for export in exports) > 100_000

    code, out = run("import", str(tmp_path / "*.json*"), *connection(courier))

    err = capsys.readouterr().err
    assert code == 2  # everything valid delivered; bad lines are bad input
    for file, export in zip(files, exports, strict=True):
        for number in export.bad:
            assert f"{file}:{number}: bad line: not valid JSON" in err
    assert profiles_match(courier, last_seq)
    # (Not the stand-in's request count: on a busy machine a timed-out request is
    # rightly sent again.)
    assert row(out, "delivered") == f"{identifies:,}"
    duplicates = sum(export.duplicates for export in exports)
    assert row(out, "sent") == f"{identifies:,} identify {identifies:,}"
    assert skipped(out, "duplicate messageId") == f"{duplicates:,}"
    assert row(out, "failed") == "0"


# ---------------------------------------------------------- interrupted, resumed


def _command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "courier_analytics", "import", *argv]


def _wait_for_line(proc: subprocess.Popen[str], text: str, limit: float = 300.0) -> list[str]:
    """Read the child's stderr until a line contains `text`; the lines read.

    `limit` only keeps a broken build from hanging the suite: the child gets
    there on its own, however slowly the machine runs.
    """
    assert proc.stderr is not None
    deadline = time.monotonic() + limit
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if not ready:
            continue
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    proc.kill()
    raise AssertionError(f"never printed {text!r}; it printed:\n{''.join(seen[-20:])}")


def test_a_killed_import_resumes_after_the_last_line_courier_answered(
    courier: DevServer, tmp_path: Path
) -> None:
    """SIGKILL mid-way, then the same command: it skips what was answered, says so,
    and Courier ends up with every message once."""
    # (Size is the 100,000-line test's concern: this one needs lines on both sides.)
    export = Export()
    export.add(0, 15_000, bad_every=4_000, dup_every=1_700)
    path = export.write(tmp_path / "export.json.gz", gz=True)
    hung = export.line_of("id-6000")
    # Courier never answers line `hung`: the import cannot confirm past it.
    courier.set_faults(Faults(fail_message_ids="^id-6000$", fail_with="hang"))
    state = tmp_path / "state.json"
    argv = _command(str(path), "--route", "segment", "--state", str(state),
                    "--progress-every", "0.1", *connection(courier))  # fmt: skip
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(first, f" read, {hung - 1:,} done;")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    [record] = orjson.loads(state.read_bytes())["inputs"]
    assert record["lines_done"] == hung - 1
    courier.set_faults(Faults())

    second = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)

    assert f"resuming after line {hung - 1:,}" in second.stderr
    assert row(second.stdout, "resumed past").startswith(f"{hung - 1:,} ")
    assert second.returncode == 2, second.stderr[-2000:]  # bad lines, all else delivered
    assert profiles_match(courier, export.last_seq)
    stats = courier.stats()
    assert stats["message_ids_applied"] == export.identifies
    # The second run sent each identify from the hung line on, and nothing before it:
    # not even a later copy of a line done by the first run.
    resent = sum(1 for line in export.identify_lines if line >= hung)
    assert row(second.stdout, "sent") == f"{resent:,} identify {resent:,}"
    assert orjson.loads(state.read_bytes())["inputs"][0]["complete"] is True


def test_ctrl_c_stops_reading_finishes_what_is_in_flight_and_the_rerun_sends_the_rest(
    courier: DevServer, tmp_path: Path
) -> None:
    """Ctrl-C while the reader waits for room: it stops reading, waits for what is in
    flight, exits 130 telling to run it again; the rerun resumes after the last line
    handed over and sends the rest, the line the reader held included."""
    export = Export()
    export.add(0, 12_000)
    path = export.write(tmp_path / "export.json", gz=False)
    # Every first answer is a 503: messages wait to retry and the import's window
    # (10,000 in flight) fills, so the reader holds its next line, waiting for room.
    courier.set_faults(Faults(error_rate=1.0, error_statuses=(503,)))
    argv = _command(str(path), "--route", "segment", "--timeout", "600",
                    "--progress-every", "0.1", *connection(courier))  # fmt: skip
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_line(first, "sent 10,000,")
    first.send_signal(signal.SIGINT)
    _wait_for_line(first, "Ctrl-C again to stop at once")
    courier.set_faults(Faults())  # the retries now get through
    out, err = first.communicate(timeout=300)
    assert first.returncode == 130, err
    assert "Run the same command again" in out
    assert row(out, "delivered") == "10,000"

    second = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)

    assert second.returncode == 0, second.stderr
    assert "resuming after line" in second.stderr
    assert courier.stats()["message_ids_applied"] == export.identifies
    assert profiles_match(courier, export.last_seq)


# -------------------------------------------------------------------- behaviours


def test_dry_run_counts_and_lists_bad_lines_sending_nothing(
    courier: DevServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run validates every line, prints counts by type and users, sends nothing."""
    lines = [
        orjson.dumps(identify(1)),
        orjson.dumps(track(2)),
        b"[1, 2]",
        orjson.dumps(identify(3, traits=["not", "a", "mapping"])),
        orjson.dumps({"type": "page", "messageId": "p-1", "userId": "u"}),
        orjson.dumps(identify(4, timestamp="yesterday")),
    ]
    path = tmp_path / "e.json"
    path.write_bytes(b"\n".join(lines))

    code, out = run("import", str(path), "--dry-run", *connection(courier))

    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}:3: bad line: not a JSON object" in err
    assert f"{path}:4: bad line: identify: traits must be a mapping" in err
    assert f"{path}:6: bad line: identify: timestamp 'yesterday' is not an ISO 8601" in err
    assert row(out, "would send") == "1 identify 1"
    assert "Users touched: 1 (user-1)" in out
    assert "page: Courier has no use for it on route api" in out
    assert courier.stats()["requests_total"] == 0
    assert not list(tmp_path.glob(".*"))  # no state file either


def test_tracks_go_only_when_asked_for(courier: DevServer, tmp_path: Path) -> None:
    """By default tracks are skipped with the reason; --only track sends them alone."""
    path = tmp_path / "e.json"
    path.write_bytes(orjson.dumps(identify(1)) + b"\n" + orjson.dumps(track(2)) + b"\n")

    code, out = run("import", str(path), *connection(courier))
    assert code == 0
    assert "replaying old tracks sends the notifications mapped to them again" in " ".join(
        out.split()
    )
    assert not [e for e in courier.events() if e["route"] == "courier"]

    code, out = run("import", str(path), "--only", "track", *connection(courier))
    assert code == 0
    [event] = [e for e in courier.events() if e["route"] == "courier"]
    assert event["messageId"] == "tr-2"


def test_messages_keep_their_id_and_timestamp_so_a_rerun_duplicates_nothing(
    courier: DevServer, tmp_path: Path
) -> None:
    """Each message goes with its own messageId and timestamp; --restart sends the
    same ids again, which Courier answers as duplicates."""
    path = tmp_path / "e.json"
    path.write_bytes(b"\n".join(orjson.dumps(identify(i)) for i in range(5)))
    argv = ["import", str(path), "--route", "segment", *connection(courier)]

    assert run(*argv)[0] == 0
    assert run(*argv, "--restart")[0] == 0

    # Five users' messages go concurrently: Courier may see them in any order.
    events = [e for e in courier.events() if e["route"] == "segment"][:5]
    assert sorted(e["messageId"] for e in events) == [f"id-{i}" for i in range(5)]
    [first] = [e for e in events if e["messageId"] == "id-0"]
    assert first["data"]["timestamp"] == "2024-03-01T12:00:00.000+00:00"
    assert courier.stats()["message_ids_applied"] == 5
    assert courier.stats()["duplicates"] == 5


def test_a_finished_input_is_skipped_on_the_next_run_and_said_so(
    courier: DevServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state file next to the input marks it done; the same command skips it."""
    path = tmp_path / "e.json.gz"
    path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(identify(i)) for i in range(3))))
    assert run("import", str(path), *connection(courier))[0] == 0
    assert (tmp_path / ".e.json.gz.import-state.json").exists()
    courier.reset()

    code, out = run("import", str(path), *connection(courier))

    assert code == 0
    assert "e.json.gz: already imported (3 lines); skipping it" in capsys.readouterr().err
    assert row(out, "resumed past") == "3 lines done by an earlier run"
    assert courier.stats()["requests_total"] == 0


def test_a_changed_input_starts_over(
    courier: DevServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Saved progress is for the same bytes: another file under the name starts at line 1."""
    path = tmp_path / "e.json"
    path.write_bytes(orjson.dumps(identify(1)))
    assert run("import", str(path), *connection(courier))[0] == 0
    path.write_bytes(orjson.dumps(identify(2)))

    assert run("import", str(path), *connection(courier))[0] == 0

    assert "e.json changed since the last run: starting it over" in capsys.readouterr().err
    assert courier.profiles()["user-2"]["seq"] == 2


def test_since_until_and_user_narrow_what_is_sent(courier: DevServer, tmp_path: Path) -> None:
    """--since (inclusive), --until (exclusive) and --user select by timestamp and user."""
    path = tmp_path / "e.json"
    path.write_bytes(b"\n".join(orjson.dumps(identify(i)) for i in range(1, 6)))  # March 2..6

    code, out = run("import", str(path), "--since", "2024-03-03", "--until", "2024-03-05",
                    "--user", "user-3", *connection(courier))  # fmt: skip

    assert code == 0
    assert list(courier.profiles()) == ["user-3"]
    assert skipped(out, "another user (--user)") == "4"


def test_standard_input_is_read_and_said_not_resumable(courier: DevServer) -> None:
    """'-' reads standard input, gzipped or not; without --state it says it cannot resume."""
    data = gzip.compress(b"\n".join(orjson.dumps(identify(i)) for i in range(4)))
    done = subprocess.run(_command("-", *connection(courier)), input=data,
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert b"pass --state FILE to resume it" in done.stderr
    assert len(courier.profiles()) == 4


def test_a_wrong_api_key_stops_the_import(courier: DevServer, tmp_path: Path) -> None:
    """Courier refusing the key ends the run (exit 1) instead of failing every line."""
    path = tmp_path / "e.json"
    path.write_bytes(b"\n".join(orjson.dumps(identify(i)) for i in range(20_000)))

    code, out = run("import", str(path), "--api-key", "wrong", "--base-url", courier.base_url)

    assert code == 1
    assert "Stopped: Courier refused the API key" in " ".join(out.split())
    assert courier.stats()["requests_total"] < 20_000


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["no-such-file.json"], "no-such-file.json: no such file"),
        (["-", "-"], "standard input ('-') can be read only once"),
        (["x.json", "--only", "group"], "route api has no group"),
    ],
)
def test_bad_usage_exits_2_before_sending(
    argv: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inputs that do not exist, or a selection the route cannot send, exit 2 at once."""
    (tmp_path / "x.json").write_text("")
    monkeypatch.chdir(tmp_path)
    code, _ = run("import", *argv, "--api-key", KEY)
    assert code == 2
    assert says in capsys.readouterr().err


def test_pacer_holds_events_to_the_rate() -> None:
    """--rate N: N events take about a second of (injected) time, in few sleeps."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    pacer = Pacer(200, clock=lambda: now[0], sleep=sleep)
    for _ in range(201):
        pacer.wait()
    assert now[0] == pytest.approx(1.0, abs=0.01)
    assert len(sleeps) < 201


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    """On a terminal (with rich) the progress is a bar; into a pipe, plain lines."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = _progress(Terminal(), 5.0, 100)
    bar.close()
    assert isinstance(bar, _BarProgress)
    assert type(_progress(io.StringIO(), 5.0, 100)) is _PlainProgress


def test_a_truncated_gzip_is_reported_and_the_next_file_still_goes(
    courier: DevServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A download cut short: its lines up to the cut are sent, the cut is a bad line,
    and the following file is imported."""
    whole = gzip.compress(b"\n".join(orjson.dumps(identify(i)) for i in range(2_000)))
    (tmp_path / "a.json.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "b.json").write_bytes(orjson.dumps(identify(5_000)))

    code, out = run("import", str(tmp_path / "a.json.gz"), str(tmp_path / "b.json"),
                    *connection(courier))  # fmt: skip

    assert code == 2
    assert "bad line: cannot read on: Compressed file ended" in capsys.readouterr().err
    assert row(out, "bad lines").startswith("1 ")
    assert f"user-{5_000 % USERS}" in courier.profiles()  # from b.json
    assert 0 < len(courier.profiles()) < 1_000


def test_a_message_courier_refuses_is_failed_and_not_sent_again(
    courier: DevServer, tmp_path: Path
) -> None:
    """A 400 is an answer: counted failed (exit 1), and the saved count passes its line,
    since sending it again would be refused again."""
    path = tmp_path / "e.json"
    path.write_bytes(b"\n".join(orjson.dumps(identify(i)) for i in range(10)))
    courier.set_faults(Faults(fail_message_ids="^id-4$", fail_with=400))

    code, out = run("import", str(path), "--route", "segment", *connection(courier))

    assert code == 1
    assert row(out, "failed") == "1 refused by Courier 1"
    state = orjson.loads((tmp_path / ".e.json.import-state.json").read_bytes())
    assert state["inputs"][0]["lines_done"] == 10


def test_a_small_input_appended_to_resumes_after_its_old_lines(
    courier: DevServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An input smaller than the hashed head, grown since, resumes instead of starting over."""
    path = tmp_path / "e.json"
    path.write_bytes(b"".join(orjson.dumps(identify(i)) + b"\n" for i in range(3)))
    assert run("import", str(path), *connection(courier))[0] == 0
    with path.open("ab") as file:
        file.write(b"".join(orjson.dumps(identify(i)) + b"\n" for i in range(3, 5)))
    courier.reset()

    code, out = run("import", str(path), *connection(courier))

    assert code == 0
    assert "e.json: resuming after line 3 (done before)" in capsys.readouterr().err
    assert row(out, "sent") == "2 identify 2"
    assert sorted(courier.profiles()) == ["user-3", "user-4"]


def test_pacer_sends_no_burst_after_a_short_stall() -> None:
    """--rate N: after a stall under a second, no second holds more than N events."""
    now = [0.0]
    sent: list[float] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    pacer = Pacer(8, clock=lambda: now[0], sleep=sleep)
    for i in range(30):
        if i == 5:
            now[0] += 0.75  # the window was full, the server slow
        pacer.wait()
        sent.append(now[0])
    assert max(sum(1 for t in sent if start <= t < start + 1) for start in sent) <= 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T12:00:00.123Z", dt.datetime(2024, 3, 1, 12, 0, 0, 123_000, dt.timezone.utc)),
        ("2024-03-01T12:00:00Z", dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc)),
        ("2024-03-01T12:00:00.1Z", dt.datetime(2024, 3, 1, 12, 0, 0, 100_000, dt.timezone.utc)),
        ("2024-03-01T12:00:00.12Z", dt.datetime(2024, 3, 1, 12, 0, 0, 120_000, dt.timezone.utc)),
        (
            "2024-03-01T12:00:00.123456789Z",  # Go's RFC 3339 with nanoseconds: cut, not rounded
            dt.datetime(2024, 3, 1, 12, 0, 0, 123_456, dt.timezone.utc),
        ),
        (
            "2024-03-01T12:00:00.1234567+00:00",
            dt.datetime(2024, 3, 1, 12, 0, 0, 123_456, dt.timezone.utc),
        ),
        (
            "2024-03-01T12:00:00.123+0000",
            dt.datetime(2024, 3, 1, 12, 0, 0, 123_000, dt.timezone.utc),
        ),
        (
            "2024-03-01T07:00:00-0500",
            dt.datetime(2024, 3, 1, 7, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        ),
        (
            "2024-03-01T12:00:00.123456+00:00",
            dt.datetime(2024, 3, 1, 12, 0, 0, 123_456, dt.timezone.utc),
        ),
        ("2024-03-01T12:00:00", dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc)),
        ("2024-03-01", dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)),
    ],
)
def test_timestamps_segment_writes_parse_alike_on_every_python(
    text: str, expected: dt.datetime
) -> None:
    """Each timestamp form Segment's libraries write reads as the same moment on 3.10 and 3.11+."""
    moment = parse_timestamp(text)
    assert moment == expected
    assert moment.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("text", ["2024-03-01T12:00:00 UTC", "yesterday", "2024-13-01T00:00:00Z"])
def test_a_timestamp_that_is_no_date_time_is_a_bad_line(text: str) -> None:
    """A malformed timestamp is a bad line, on every Python."""
    with pytest.raises(ValueError, match="is not an ISO 8601 date-time"):
        parse_timestamp(text)


@pytest.mark.parametrize(
    "names",
    [["{d}/*.json", "{d}/a.json"], ["{d}/a.json", "{d}/./a.json", "--state", "{d}/state.json"]],
)
def test_a_file_named_twice_is_read_once(
    courier: DevServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], names: list[str]
) -> None:
    """A file named twice is read once and said so: a second reading would find only
    duplicates and save itself complete over the first reading's progress."""
    (tmp_path / "a.json").write_bytes(b"".join(orjson.dumps(identify(i)) + b"\n" for i in range(4)))

    code, out = run("import", *(name.format(d=tmp_path) for name in names), *connection(courier))

    assert code == 0
    err = capsys.readouterr().err
    assert "named twice; reading it once" in err or f"the same file as {tmp_path}/a.json" in err
    assert out.startswith("courier-analytics import: 4 lines read")
    assert "duplicate messageId" not in out
    assert len(courier.profiles()) == 4


def test_a_half_written_last_line_is_read_again_once_the_file_is_finished(
    courier: DevServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A last line without a newline that is not valid JSON (the file is still being
    written) is incomplete, not bad, and not counted done: the next run sends it."""
    path = tmp_path / "e.json"
    lines = [orjson.dumps(identify(i)) for i in range(4)]
    path.write_bytes(b"".join(line + b"\n" for line in lines[:3]) + lines[3][:40])

    code, out = run("import", str(path), *connection(courier))

    err = capsys.readouterr().err
    assert code == 1
    assert "e.json:4: incomplete last line" in err
    assert "bad line" not in err
    assert row(out, "incomplete").startswith("1 ")
    [record] = orjson.loads((tmp_path / ".e.json.import-state.json").read_bytes())["inputs"]
    assert (record["lines_done"], record["complete"]) == (3, False)

    path.write_bytes(b"".join(line + b"\n" for line in lines))
    code, out = run("import", str(path), *connection(courier))

    assert code == 0
    assert row(out, "sent") == "1 identify 1"
    assert sorted(courier.profiles()) == [f"user-{i}" for i in range(4)]
