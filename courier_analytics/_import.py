"""`courier-analytics import`: Segment's archived messages into Courier, through a client.

Segment's S3 and Cloud Storage destinations archive every call as a Segment-spec
message, one JSON object per line, gzipped. This command reads such files (or
standard input), validates each message as a client call would, and hands it to a
[`Client`][courier_analytics.Client]: the same validation, delivery engine,
retries and per-user order as the library's calls. Each message keeps its own
`messageId` and `timestamp`, so running it twice duplicates nothing in Courier.

A run remembers how far it got in a small state file per input (a hidden file
next to it, or one `--state FILE` for all): the count of leading lines whose
messages Courier answered. Run the same command again after Ctrl-C or a crash and
it skips those lines. The count only passes a line once its message was delivered
(or refused for good by Courier), so nothing is skipped that did not arrive.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import glob
import gzip
import hashlib
import io
import os
import re
import signal
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import IO, Any, Final, TextIO

import orjson

from courier_analytics._bar import terminal_bar
from courier_analytics._client import Client, dispatch, make_message
from courier_analytics._errors import (
    AuthenticationError,
    ConfigurationError,
    RejectedError,
)
from courier_analytics._events import MessageView
from courier_analytics._messages import Message, MessageFactory

__all__ = ["add_arguments", "run"]

EXIT_OK, EXIT_NOT_DELIVERED, EXIT_USAGE = 0, 1, 2
#: 128 + SIGINT: what a shell reports for a command that Ctrl-C stopped.
EXIT_INTERRUPTED = 130

#: Messages handed to the client and not yet answered, at most: the reader waits
#: beyond it, so the client's queue (twice as large) never drops one.
WINDOW: Final = 10_000
#: Once the window is full, the reader waits until this few are left: handing over
#: a message per answer would wake the reader per message, at twice the CPU.
LOW_WATER: Final = WINDOW // 2
#: Seconds between two saves of the state file while importing.
CHECKPOINT_S: Final = 1.0
#: The bytes at the head of an input whose hash tells a later run it is the same input.
HEAD_BYTES: Final = 64 * 1024
STATE_SUFFIX: Final = ".import-state.json"
STATE_VERSION: Final = 1
#: The message types `--only` may name, and what `--all` means on each route.
TYPES: Final = ("identify", "track", "group")
SEGMENT_TYPES: Final = frozenset(("identify", "track", "group", "page", "screen", "alias"))
ALL_TYPES: Final = {"api": ("identify", "track"), "segment": ("identify", "track", "group")}
#: How many users a dry run names before it only counts them.
USERS_SHOWN: Final = 10

TRACK_WARNING: Final = (
    "replaying old tracks sends the notifications mapped to them again, today "
    "(an order receipt for last year's order)"
)

_UTC = _dt.timezone.utc


# ----------------------------------------------------------------- arguments


#: An ISO 8601 date-time as Segment's libraries write it, in parts Python 3.10's
#: `fromisoformat` takes: any count of fraction digits, `Z`, `+HHMM` or `+HH`.
_ISO_PARTS: Final = re.compile(
    r"(\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?)"
    r"(?:[.,](\d+))?"
    r"(?:([Zz])|([+-]\d{2})(?::?(\d{2}))?)?"
)


def fromisoformat(text: str) -> _dt.datetime:
    """`text` as `datetime.fromisoformat` of Python 3.11+ reads it, on 3.10 too.

    Python 3.10 refuses a `Z`, a `+0000` offset and fractions of other than 3 or 6
    digits, all of which Segment's libraries write; a fraction beyond microseconds
    is cut, as 3.11 does.

    Raises:
        ValueError: `text` is not an ISO 8601 date or date-time.
    """
    try:
        return _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] == "Z" else text)
    except ValueError:
        parts = _ISO_PARTS.fullmatch(text)
        if parts is None:
            raise
    moment, fraction, utc, hours, minutes = parts.groups()
    if fraction is not None:
        moment += "." + fraction[:6].ljust(6, "0")
    if utc is not None:
        moment += "+00:00"
    elif hours is not None:
        moment += f"{hours}:{minutes or '00'}"
    return _dt.datetime.fromisoformat(moment)


def _moment(text: str) -> _dt.datetime:
    """An ISO 8601 date or date-time (`Z` allowed); naive means UTC, as Segment writes."""
    try:
        value = fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or date-time, e.g. 2024-03-01 or "
            "2024-03-01T12:00:00Z"
        ) from None
    return value.replace(tzinfo=_UTC) if value.tzinfo is None else value


def _types(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in TYPES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected one or more of {', '.join(TYPES)} (comma-separated), got {text!r}"
        )
    return names


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `courier-analytics import` (the connection's are added apart)."""
    parser.add_argument(
        "inputs",
        metavar="FILE",
        nargs="+",
        help="JSON-lines export, plain or gzipped; globs are expanded; '-' is standard input",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--only",
        type=_types,
        default=("identify",),
        metavar="TYPES",
        help="message types to send, comma-separated: identify (default), track, group",
    )
    what.add_argument(
        "--all", action="store_true", help="send every type the route delivers, tracks included"
    )
    parser.add_argument("--since", type=_moment, help="only messages at or after this timestamp")
    parser.add_argument("--until", type=_moment, help="only messages before this timestamp")
    parser.add_argument("--user", metavar="USER_ID", help="only this user's messages (a trial)")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate and count everything, send nothing"
    )
    parser.add_argument(
        "--rate", type=_positive, metavar="N", help="send at most N events a second"
    )
    parser.add_argument(
        "--state", metavar="FILE", help="keep the resume state of every input in FILE"
    )
    parser.add_argument(
        "--restart", action="store_true", help="ignore saved progress and start from line 1"
    )
    parser.add_argument(
        "--progress-every",
        type=_positive,
        default=5.0,
        metavar="SECONDS",
        help="seconds between progress lines when stderr is not a terminal (default 5)",
    )


# -------------------------------------------------------------------- inputs


class _Counted(io.RawIOBase):
    """A raw byte stream that counts what was read, after `head` bytes already read from it."""

    def __init__(self, raw: IO[bytes], head: bytes) -> None:
        self._raw = raw
        self._head = head
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            size = min(len(view), len(self._head))
            view[:size] = self._head[:size]
            self._head = self._head[size:]
        else:
            data = self._raw.read(len(view))
            size = len(data)
            view[:size] = data
        self.consumed += size
        return size


class _Input:
    """One input: a file, or standard input (`path` None)."""

    def __init__(self, name: str, path: str | None) -> None:
        self.name = name
        self.path = path
        self.size = os.path.getsize(path) if path is not None else None
        #: The first `HEAD_BYTES` of the input (all of it, if shorter), once read.
        self.head = b""
        self._counted: _Counted | None = None

    @property
    def consumed(self) -> int:
        """Bytes of the input read so far (compressed bytes for gzip)."""
        return 0 if self._counted is None else self._counted.consumed

    def head_sha256(self, size: int) -> str:
        """The hash of the input's first `size` bytes: the head an earlier run saw."""
        return hashlib.sha256(self.head[:size]).hexdigest()

    def lines(self) -> Generator[bytes, None, None]:
        """The input's lines, gunzipped when it is gzip (told by its first bytes)."""
        raw: IO[bytes] = sys.stdin.buffer if self.path is None else open(self.path, "rb")  # noqa: SIM115
        try:
            head = raw.read(HEAD_BYTES)
            while len(head) < HEAD_BYTES:  # a pipe gives what it has: fill the head
                more = raw.read(HEAD_BYTES - len(head))
                if not more:
                    break
                head += more
            self.head = head
            self._counted = _Counted(raw, head)
            stream: IO[bytes] = io.BufferedReader(self._counted, 1 << 20)
            if head[:2] == b"\x1f\x8b":
                yield from gzip.GzipFile(fileobj=stream, mode="rb")
            else:
                yield from stream
        finally:
            if self.path is not None:
                raw.close()


def _expand(patterns: Sequence[str], note: Callable[[str], None]) -> list[_Input]:
    """The inputs named: files, globs (sorted), `-` for standard input.

    A file named twice (a glob and its name, `a.json` and `./a.json`, a link) is
    read once, and `note` says so: its second reading would find every message a
    duplicate, and save that as its progress over the first reading's.

    Raises:
        ValueError: a name matches nothing, names a directory, or `-` comes twice.
    """
    inputs: list[_Input] = []
    #: The first name of each file listed, by (device, inode).
    listed: dict[tuple[int, int], str] = {}
    for pattern in patterns:
        if pattern == "-":
            if any(item.path is None for item in inputs):
                raise ValueError("standard input ('-') can be read only once")
            inputs.append(_Input("<stdin>", None))
            continue
        names = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        names = [name for name in names if not name.endswith(STATE_SUFFIX)]
        if not names:
            raise ValueError(f"{pattern}: no such file")
        for name in names:
            if os.path.isdir(name):
                raise ValueError(f"{name} is a directory; name its files, e.g. '{name}/*.gz'")
            if not os.path.exists(name):
                raise ValueError(f"{name}: no such file")
            found = os.stat(name)
            key = (found.st_dev, found.st_ino)
            if key in listed:
                same = "named twice" if listed[key] == name else f"the same file as {listed[key]}"
                note(f"{name}: {same}; reading it once")
                continue
            listed[key] = name
            inputs.append(_Input(name, name))
    return inputs


# -------------------------------------------------------------------- parsing


class BadLine(ValueError):
    """A line that is not a message this command can send; its text says why."""


def parse_timestamp(value: object) -> _dt.datetime:
    """A message's `timestamp` (ISO 8601, as Segment writes it) as an aware datetime.

    Raises:
        BadLine: it is missing or not an ISO 8601 date-time.
    """
    if not isinstance(value, str) or not value:
        raise BadLine("timestamp is missing" if value is None else "timestamp is not a string")
    try:
        moment = fromisoformat(value)
    except ValueError:
        raise BadLine(f"timestamp {value[:40]!r} is not an ISO 8601 date-time") from None
    return moment.replace(tzinfo=_UTC) if moment.tzinfo is None else moment


def _object(data: dict[str, Any], key: str) -> Any:
    """`data[key]` when it is a non-empty value, else None (an empty `{}` is no value)."""
    value = data.get(key)
    return value if value else None


def make(
    factory: MessageFactory, data: dict[str, Any], route: str, timestamp: _dt.datetime
) -> Message:
    """The message a client call would make of Segment message `data`, with its own
    `messageId` and `timestamp` (parsed already).

    Raises:
        BadLine, TypeError, ValueError: the message is not one a call could make.
    """
    kind = data["type"]
    message_id = data.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise BadLine("messageId is missing: without it a second run would send it twice")
    shared: dict[str, Any] = {
        "timestamp": timestamp,
        "message_id": message_id,
        "integrations": _object(data, "integrations"),
        # Route "api" sends no context: leaving it out keeps the message compact.
        "context": _object(data, "context") if route == "segment" else None,
    }
    user_id, anonymous_id = data.get("userId"), data.get("anonymousId")
    if kind == "identify":
        return factory.identify(user_id, data.get("traits"), anonymous_id=anonymous_id, **shared)
    if kind == "track":
        return factory.track(
            data.get("event"),
            data.get("properties"),
            user_id=user_id,
            anonymous_id=anonymous_id,
            **shared,
        )
    return factory.group(
        data.get("groupId"), data.get("traits"), user_id=user_id, anonymous_id=anonymous_id,
        **shared,
    )  # fmt: skip


_ID_KEY: Final = b'"messageId":"'


def _scan_id(line: bytes) -> str | None:
    """The `messageId` of a line done by an earlier run, found without decoding it all."""
    start = line.find(_ID_KEY)
    if start >= 0:
        start += len(_ID_KEY)
        end = line.find(b'"', start)
        if end > start and b"\\" not in line[start:end]:
            return line[start:end].decode("utf-8", "replace")
    try:  # spaced or escaped: decode it all
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    message_id = data.get("messageId") if isinstance(data, dict) else None
    return message_id if isinstance(message_id, str) else None


def _recipient(data: dict[str, Any]) -> str | None:
    who = data.get("userId") or data.get("anonymousId")
    return None if who is None else str(who)


# ---------------------------------------------------------------------- state


class _State:
    """The resume state kept in one file: per (input, selection), lines done."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        try:
            with open(path, "rb") as file:
                data = orjson.loads(file.read())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the state file {path}: {exc}") from None
        if isinstance(data, dict) and data.get("version") == STATE_VERSION:
            for record in data.get("inputs", ()):
                self.records[f"{record['input']}\n{record['selection']}"] = record

    def get(self, key: str, selection: str) -> dict[str, Any] | None:
        return self.records.get(f"{key}\n{selection}")

    def put(self, key: str, selection: str, record: dict[str, Any]) -> None:
        self.records[f"{key}\n{selection}"] = {"input": key, "selection": selection, **record}

    def save(self) -> None:
        """Write the file whole and atomically: a crash leaves the old or the new one."""
        data = {"version": STATE_VERSION, "inputs": list(self.records.values())}
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as file:
            file.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)


def _sidecar(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}{STATE_SUFFIX}")


# ------------------------------------------------------------------- tracking


class _Tracked:
    """One input's messages in flight, in line order, and how far all are answered."""

    def __init__(self, source: _Input, state: _State | None, key: str, skip: int) -> None:
        self.source = source
        self.state = state
        self.key = key
        self.skip = skip
        self.read = skip  # the last line number read
        self.done_reading = False
        # [line number, settled] of each message handed over, oldest first.
        self.pending: collections.deque[list[Any]] = collections.deque()

    def confirmed(self) -> int:
        """Lines from the first whose messages are all answered (or had none to send)."""
        while self.pending and self.pending[0][1]:
            self.pending.popleft()
        return self.pending[0][0] - 1 if self.pending else self.read

    def record(self, confirmed: int) -> dict[str, Any]:
        return {
            "head_sha256": self.source.head_sha256(HEAD_BYTES),
            "head_bytes": len(self.source.head),
            "size": self.source.size,
            "lines_done": confirmed,
            "complete": self.done_reading and confirmed == self.read,
            "updated": _dt.datetime.now(_UTC).isoformat(timespec="seconds"),
        }


class Pacer:
    """Holds the caller back to `rate` events a second (`--rate`).

    Args:
        rate: Events per second at most.
        clock: Monotonic seconds (injectable for tests).
        sleep: Waits the given seconds (injectable for tests).
    """

    #: Waits shorter than this are saved up: sleeping per event would cost more than it paces.
    MIN_SLEEP_S: Final = 0.005

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        """Return when the next event may go."""
        now = self._clock()
        # Behind time (a stall: a full window, a slow server; or a sleep that
        # overslept) start afresh: catching up would send a burst above the rate.
        if self._next is None or now > self._next:
            self._next = now
        ahead = self._next - now
        if ahead >= self.MIN_SLEEP_S:
            self._sleep(ahead)
        self._next += self._interval


# ------------------------------------------------------------------- progress


class _Counts:
    """What a run did, by outcome."""

    def __init__(self) -> None:
        self.lines = 0
        self.resumed = 0
        self.sent = 0
        self.delivered = 0
        self.refused = 0
        self.not_delivered = 0
        self.bad = 0
        #: Last lines without a newline, not valid JSON: still being written, perhaps.
        self.incomplete = 0
        self.by_type: collections.Counter[str] = collections.Counter()
        self.sent_by_type: collections.Counter[str] = collections.Counter()
        self.skipped: collections.Counter[str] = collections.Counter()

    @property
    def failed(self) -> int:
        return self.refused + self.not_delivered


def _n(value: int) -> str:
    return f"{value:,}"


class _PlainProgress:
    """Progress as a line every few seconds on stderr (not a terminal: logs, CI)."""

    def __init__(self, err: TextIO, every: float) -> None:
        self._err = err
        self._every = every
        self._last = time.monotonic()

    def say(self, text: str) -> None:
        print(text, file=self._err, flush=True)

    def update(self, counts: _Counts, confirmed: int, rate: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._every:
            return
        self._last = now
        # Short enough for a terminal: lines read and done (confirmed), then messages.
        self.say(
            f"lines {_n(counts.lines)} read, {_n(confirmed)} done; sent {_n(counts.sent)}, "
            f"delivered {_n(counts.delivered)}, failed {_n(counts.failed)}; {rate:,.0f}/s"
        )

    def advance(self, consumed: int) -> None:
        pass

    def close(self) -> None:
        pass


class _BarProgress(_PlainProgress):
    """A progress bar on a terminal (rich, the `cli` extra): bytes read, events, rate, time left."""

    def __init__(self, err: TextIO, total_bytes: int | None) -> None:
        super().__init__(err, 0.0)
        self._progress = terminal_bar(
            err, "importing", "{task.fields[events]} events", "{task.fields[rate]}/s"
        )
        self._task = self._progress.add_task("import", total=total_bytes, events="0", rate="0")

    def say(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def update(self, counts: _Counts, confirmed: int, rate: float, force: bool = False) -> None:
        self._progress.update(self._task, events=_n(counts.delivered), rate=f"{rate:,.0f}")

    def advance(self, consumed: int) -> None:
        self._progress.update(self._task, completed=consumed)

    def close(self) -> None:
        self._progress.stop()


def _progress(err: TextIO, every: float, total_bytes: int | None) -> _PlainProgress:
    if err.isatty():
        try:
            return _BarProgress(err, total_bytes)
        except ImportError:  # the [cli] extra is not installed: plain lines will do
            pass
    return _PlainProgress(err, every)


# ---------------------------------------------------------------------- import


class Importer:
    """One run of `courier-analytics import` (see the module docstring)."""

    client: Client

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.route: str = args.route
        self.types: tuple[str, ...] = ALL_TYPES[self.route] if args.all else args.only
        self.counts = _Counts()
        self.cond = threading.Condition()
        self.outstanding: dict[str, tuple[_Tracked, list[Any]]] = {}
        self.tracked: list[_Tracked] = []
        self.seen: set[int] = set()
        self.users: set[str] = set()
        self.stop_reason: str | None = None
        #: What the reading thread waits on `cond` for, if it waits: woken only then.
        self.waiting_for: Callable[[], bool] | None = None
        self.interrupted = False
        self.started = self.last_checkpoint = time.monotonic()
        self.progress: _PlainProgress = _PlainProgress(err, args.progress_every)
        self.pacer = Pacer(args.rate) if args.rate else None

    # -- what is selected ------------------------------------------------------

    def selection(self) -> str:
        """What this run sends, and where: saved progress is only for the same selection."""
        a = self.args
        since = a.since.isoformat() if a.since else "-"
        until = a.until.isoformat() if a.until else "-"
        where = self.client.options.resolved_base_url()
        return (
            f"route={self.route} types={','.join(sorted(self.types))} since={since} "
            f"until={until} user={a.user or '-'} to={where}"
        )

    def skip_reason(self, data: dict[str, Any], kind: str) -> str | None:
        """Why a valid-looking message is not sent in this run, or None."""
        a = self.args
        if kind not in self.types:
            if kind == "track":
                return "track: not selected (--only track or --all sends them)"
            if kind in ("page", "screen", "alias") or (kind == "group" and self.route == "api"):
                return f"{kind}: Courier has no use for it on route {self.route}"
            return f"{kind}: not selected"
        if a.user is not None and _recipient(data) != a.user:
            return "another user (--user)"
        return None

    # -- the run ---------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        if "group" in self.types and self.route == "api":
            return self.usage("route api has no group; pass --route segment to send groups")
        try:
            inputs = _expand(a.inputs, self.note)
        except ValueError as exc:
            return self.usage(str(exc))
        if a.state is None and any(item.path is None for item in inputs) and not a.dry_run:
            self.note(
                "reading standard input: a stream cannot be resumed from its own file; "
                "pass --state FILE to resume it when the same data is piped again"
            )
        try:
            self.client = self.make_client()
        except (ConfigurationError, ValueError) as exc:
            return self.usage(str(exc))
        if not a.dry_run:
            problem = self.check_state_places(inputs)
            if problem:
                return self.usage(problem)
            if "track" in self.types:
                self.note(f"sending track events: {TRACK_WARNING}")
        total = (
            None
            if any(item.size is None for item in inputs)
            else sum(item.size or 0 for item in inputs)
        )
        if not a.dry_run:
            self.progress = _progress(self.err, a.progress_every, total)
        previous = signal.getsignal(signal.SIGINT)
        catch = threading.current_thread() is threading.main_thread()
        if catch:
            signal.signal(signal.SIGINT, self.on_interrupt)
        try:
            self.read_all(inputs)
            self.finish()
        except KeyboardInterrupt:  # the second Ctrl-C: stop waiting, keep what is answered
            self.interrupted = True
            self.checkpoint(final=True)
        finally:
            if catch:
                signal.signal(signal.SIGINT, previous)
            self.progress.close()
        return self.report()

    def make_client(self) -> Client:
        a = self.args
        client = Client(
            api_key=a.api_key,
            base_url=a.base_url,
            region=a.region,
            route=a.route,
            send=not a.dry_run,
            on_error=self.on_error,
            flush_at_exit=False,
            max_queue_size=2 * WINDOW,
        )
        client.on("delivered", self.on_delivered)
        return client

    def check_state_places(self, inputs: list[_Input]) -> str | None:
        """Why the resume state could not be kept, or None."""
        if self.args.state is not None:
            folder = os.path.dirname(os.path.abspath(self.args.state))
            if not os.access(folder, os.W_OK):
                return f"cannot write the state file {self.args.state}: {folder} is not writable"
            return None
        for item in inputs:
            if item.path is not None and not os.access(
                os.path.dirname(os.path.abspath(item.path)), os.W_OK
            ):
                return (
                    f"cannot keep the resume state next to {item.name} (its folder is not "
                    "writable): pass --state FILE to keep it elsewhere"
                )
        return None

    def state_for(self, item: _Input) -> tuple[_State | None, str]:
        """The state file that keeps `item`'s progress, and its key there."""
        a = self.args
        if a.dry_run:
            return None, item.name
        if a.state is not None:
            key = "-" if item.path is None else os.path.abspath(item.path)
            return self.shared_state(a.state), key
        if item.path is None:
            return None, "-"
        return _State(_sidecar(item.path)), os.path.basename(item.path)

    _shared: _State | None = None

    def shared_state(self, path: str) -> _State:
        if self._shared is None:
            self._shared = _State(path)
        return self._shared

    def read_all(self, inputs: list[_Input]) -> None:
        selection = self.selection()
        consumed_before = 0
        for item in inputs:
            if self.stop_reason is not None:
                break
            try:
                state, key = self.state_for(item)
            except ValueError as exc:
                self.note(str(exc))
                self.stop_reason = "unreadable state file"
                break
            saved = None if state is None or self.args.restart else state.get(key, selection)
            tracked = _Tracked(item, state, key, 0)
            lines = item.lines()
            try:
                first = next(lines, None)  # reads the head: its hash tells the input
                tracked.skip = tracked.read = self.resume_point(tracked, saved)
                self.tracked.append(tracked)
                self.counts.resumed += tracked.skip
                stream = lines if first is None else _chain(first, lines)
                for number, line in enumerate(stream, 1):
                    if number <= tracked.skip:
                        # Done before; its id still marks a later copy as a duplicate.
                        self.seen.add(hash(_scan_id(line)))
                        continue
                    if line[-1:] != b"\n" and not _whole(line):
                        # The file may be written as we read: the rest of the line
                        # may come, so it is neither bad nor done, and not read.
                        self.counts.incomplete += 1
                        self.progress.say(
                            f"{item.name}:{number}: incomplete last line (no newline; still "
                            "being written?): the next run reads it again"
                        )
                        break
                    if not self.one_line(tracked, number, line):
                        break  # stopped before the line was handed over: not read
                    tracked.read = number
                    self.counts.lines += 1
                    if time.monotonic() - self.last_checkpoint >= CHECKPOINT_S:
                        self.progress.advance(consumed_before + item.consumed)
                        self.maybe_checkpoint()
                    if self.stop_reason is not None:
                        break
                else:
                    tracked.done_reading = True
            except (EOFError, OSError, zlib.error) as exc:
                # A truncated or corrupt gzip, a read error: what came before stands.
                self.bad(item.name, tracked.read + 1, f"cannot read on: {exc}")
                tracked.done_reading = True
            finally:
                lines.close()
            consumed_before += item.size or 0
            self.progress.advance(consumed_before)

    def resume_point(self, tracked: _Tracked, saved: dict[str, Any] | None) -> int:
        """Lines of the input done by an earlier run (0 to start over), said aloud."""
        item = tracked.source
        if saved is None:
            return 0
        done = int(saved.get("lines_done", 0))
        # An input shorter than the head then, appended to since, has a longer
        # head now: the bytes the earlier run saw are what must be the same.
        seen = int(saved.get("head_bytes", len(item.head)))
        if (
            len(item.head) < seen
            or saved.get("head_sha256") != item.head_sha256(seen)
            or (item.size is not None and saved.get("size", 0) > item.size)
        ):
            self.note(f"{item.name} changed since the last run: starting it over")
            return 0
        if saved.get("complete") and saved.get("size") == item.size:
            self.note(f"{item.name}: already imported ({_n(done)} lines); skipping it")
        elif done:
            self.note(f"{item.name}: resuming after line {_n(done)} (done before)")
        return done

    def one_line(self, tracked: _Tracked, number: int, line: bytes) -> bool:
        """Parse, check and send (or count) one line; False if stopped before sending it."""
        counts = self.counts
        if not line.strip():
            return True
        name = tracked.source.name
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            self.bad(name, number, f"not valid JSON ({exc.msg})")
            return True
        if not isinstance(data, dict):
            self.bad(name, number, "not a JSON object")
            return True
        kind = data.get("type")
        if kind not in SEGMENT_TYPES:
            why = "type is missing" if kind is None else f"type {kind!r} is not a Segment type"
            self.bad(name, number, why)
            return True
        counts.by_type[kind] += 1
        skip = self.skip_reason(data, kind)
        if skip is not None and kind not in TYPES:  # page, screen, alias: nothing to check
            counts.skipped[skip] += 1
            return True
        try:
            moment = parse_timestamp(data.get("timestamp"))
            message = make_message(self.client, lambda f: make(f, data, self.route, moment))
        except (TypeError, ValueError) as exc:  # BadLine too
            self.bad(name, number, f"{kind}: {exc}")
            return True
        since, until = self.args.since, self.args.until
        if skip is None and (
            (since is not None and moment < since) or (until is not None and moment >= until)
        ):
            skip = "outside --since/--until"
        if skip is None:
            mark = hash(message.message_id)
            if mark in self.seen:
                skip = "duplicate messageId"
            else:
                self.seen.add(mark)
                if message._stop is not None:
                    skip = "its integrations turn Courier off"
        if skip is not None:
            counts.skipped[skip] += 1
        elif self.args.dry_run:
            counts.sent_by_type[message.type] += 1
            self.users.add(message.recipient)
        elif not self.send(tracked, number, message):
            return False
        return True

    def send(self, tracked: _Tracked, number: int, message: Message) -> bool:
        """Hand `message` (line `number`) to the client; False if the run stopped first."""
        if self.pacer is not None:
            self.pacer.wait()
        while True:
            with self.cond:
                if len(self.outstanding) < WINDOW or self.stop_reason is not None:
                    break
                self.waiting_for = self.room
                self.cond.wait_for(self.room, 0.25)
                self.waiting_for = None
                if self.room():
                    break
            self.maybe_checkpoint()
        entry = [number, False]
        with self.cond:
            if self.stop_reason is not None:
                return False
            tracked.pending.append(entry)
            # Known before the client has it: its answer may come at once.
            self.outstanding[message.message_id] = (tracked, entry)
        self.counts.sent += 1
        self.counts.sent_by_type[message.type] += 1
        dispatch(self.client, message)
        return True

    def room(self) -> bool:
        """Whether the reader may go on: the window emptied to its low-water mark, or stop."""
        return len(self.outstanding) <= LOW_WATER or self.stop_reason is not None

    def all_answered(self) -> bool:
        return not self.outstanding or self.interrupted

    def maybe_checkpoint(self) -> None:
        """Save the state and show progress, when a checkpoint is due."""
        now = time.monotonic()
        if now - self.last_checkpoint >= CHECKPOINT_S:
            self.last_checkpoint = now
            self.checkpoint()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.counts.delivered / elapsed if elapsed > 0 else 0.0

    def checkpoint(self, final: bool = False) -> None:
        """Save how far each input is answered, then say it (never the other way round)."""
        files: dict[int, _State] = {}
        with self.cond:
            records = [(tracked, tracked.confirmed()) for tracked in self.tracked]
        selection = self.selection()
        for tracked, confirmed in records:
            if tracked.state is not None:
                tracked.state.put(tracked.key, selection, tracked.record(confirmed))
                files[id(tracked.state)] = tracked.state
        for state in files.values():
            try:
                state.save()
            except OSError as exc:
                self.note(f"cannot save the resume state {state.path}: {exc}")
        if not self.args.dry_run:
            self.progress.update(self.counts, sum(c for _, c in records), self.rate(), force=final)

    def finish(self) -> None:
        """Wait for what is in flight, then save the state a last time.

        Every message ends, delivered or failed, within the client's retry policy:
        the wait has no deadline of its own, but for `--timeout` after Ctrl-C.
        """
        a = self.args
        deadline: float | None = None
        while not a.dry_run and self.outstanding:
            if self.interrupted and deadline is None:
                deadline = time.monotonic() + a.timeout
                self.note(
                    f"stopped reading; waiting up to {a.timeout:g}s for "
                    f"{_n(len(self.outstanding))} messages in flight"
                )
                self.note("Ctrl-C again to stop at once")
            if deadline is not None and time.monotonic() >= deadline:
                break
            with self.cond:
                self.waiting_for = self.all_answered
                self.cond.wait(0.25)
                self.waiting_for = None
            self.maybe_checkpoint()
        try:
            self.client.shutdown(0.0 if self.interrupted else 1.0)
        finally:
            with self.cond:
                # Reports the client has not made by now will not be waited for: they
                # are not delivered, and their lines wait for the next run.
                self.counts.not_delivered += len(self.outstanding)
                self.outstanding.clear()
            self.checkpoint(final=True)

    # -- answers (worker thread) -------------------------------------------------

    def on_delivered(self, view: MessageView) -> None:
        self.answered(view.message_id, settled=True, delivered=True)

    def on_error(self, error: BaseException, message: Message) -> None:
        # Refused for good (a 400, 413): an answer; resending will not change it.
        # Not delivered (network, 5xx, shutdown): the line waits for the next run.
        refused = isinstance(error, RejectedError) and not isinstance(error, AuthenticationError)
        if isinstance(error, AuthenticationError) and self.stop_reason is None:
            self.stop_reason = f"Courier refused the API key: {error}"
        # The client logs each failure (type, id, why); here it is counted.
        self.answered(message.message_id, settled=refused, delivered=False)

    def answered(self, message_id: str, *, settled: bool, delivered: bool) -> None:
        with self.cond:
            found = self.outstanding.pop(message_id, None)
            if found is None:
                return
            entry = found[1]
            entry[1] = settled
            if delivered:
                self.counts.delivered += 1
            elif settled:
                self.counts.refused += 1
            else:
                self.counts.not_delivered += 1
            waiting_for = self.waiting_for
            if waiting_for is not None and waiting_for():
                self.cond.notify()

    def on_interrupt(self, signum: int, frame: object) -> None:
        """First Ctrl-C: stop reading, finish what is in flight; the second stops at once."""
        self.interrupted = True
        if self.stop_reason is None:
            self.stop_reason = "interrupted"
        signal.signal(signal.SIGINT, signal.default_int_handler)

    # -- saying things -----------------------------------------------------------

    def note(self, text: str) -> None:
        self.progress.say(f"import: {text}")

    def usage(self, text: str) -> int:
        print(f"courier-analytics import: {text}", file=self.err)
        return EXIT_USAGE

    def bad(self, name: str, number: int, why: str) -> None:
        self.counts.bad += 1
        self.progress.say(f"{name}:{number}: bad line: {why}")

    def report(self) -> int:
        """The summary table on stdout; the exit code."""
        if self.args.dry_run:
            return _dry_run_summary(self.out, self.counts, self.users)
        c = self.counts
        elapsed = time.monotonic() - self.started
        rows = [
            ("sent", _n(c.sent), _by_type(c.sent_by_type)),
            ("delivered", _n(c.delivered), ""),
            ("failed", _n(c.failed), _failed_note(c)),
            ("skipped", _n(sum(c.skipped.values())), ""),
            *(("", _n(count), reason) for reason, count in sorted(c.skipped.items())),
            ("bad lines", _n(c.bad), "each one is listed above" if c.bad else ""),
            *_incomplete_row(c),
            ("resumed past", _n(c.resumed), "lines done by an earlier run" if c.resumed else ""),
            ("time", f"{elapsed:.1f}s", f"{c.delivered / elapsed:,.0f} events/s"
             if elapsed > 0 else ""),
        ]  # fmt: skip
        print(f"courier-analytics import: {_n(c.lines)} lines read", file=self.out)
        _table(self.out, rows)
        if c.skipped and any(reason.startswith("track") for reason in c.skipped):
            print(_wrap(f"Tracks were not sent: {TRACK_WARNING}."), file=self.out)
        unsent = c.sent - c.delivered
        if self.stop_reason is not None and self.stop_reason != "interrupted":
            print(_wrap(f"Stopped: {self.stop_reason}"), file=self.out)
        if self.interrupted or unsent or c.incomplete:
            print(
                "Run the same command again to go on from the last line Courier answered.",
                file=self.out,
            )
        if self.interrupted:
            return EXIT_INTERRUPTED
        if unsent or c.incomplete or self.stop_reason is not None:
            return EXIT_NOT_DELIVERED
        return EXIT_USAGE if c.bad else EXIT_OK


def _wrap(text: str) -> str:
    """`text` in lines that fit a terminal."""
    return textwrap.fill(text, width=78, subsequent_indent="  ", break_on_hyphens=False)


def _dry_run_summary(out: TextIO, c: _Counts, users: set[str]) -> int:
    """What a `--dry-run` would have done, on stdout; the exit code."""
    print(f"courier-analytics import --dry-run: {_n(c.lines)} lines read, nothing sent", file=out)
    rows = [(kind, _n(count), "") for kind, count in sorted(c.by_type.items())]
    rows.append(("would send", _n(sum(c.sent_by_type.values())), _by_type(c.sent_by_type)))
    for reason, count in sorted(c.skipped.items()):
        rows.append(("would skip", _n(count), reason))
    rows.append(("bad lines", _n(c.bad), "each one is listed above" if c.bad else ""))
    rows.extend(_incomplete_row(c))
    _table(out, rows)
    shown = ", ".join(sorted(users)[:USERS_SHOWN])
    more = f" and {_n(len(users) - USERS_SHOWN)} more" if len(users) > USERS_SHOWN else ""
    touched = f"Users touched: {_n(len(users))}" + (f" ({shown}{more})" if users else "")
    print(_wrap(touched), file=out)
    return EXIT_USAGE if c.bad else EXIT_OK


def _whole(line: bytes) -> bool:
    """Whether a last line without a newline is whole: valid JSON cannot be cut short
    (an object ends with its brace); anything else may be."""
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _incomplete_row(counts: _Counts) -> list[tuple[str, str, str]]:
    if not counts.incomplete:
        return []
    return [("incomplete", _n(counts.incomplete), "last lines without a newline; not read")]


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _by_type(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{kind} {_n(count)}" for kind, count in sorted(counter.items()))


def _failed_note(counts: _Counts) -> str:
    parts = []
    if counts.refused:
        parts.append(f"refused by Courier {_n(counts.refused)}")
    if counts.not_delivered:
        parts.append(f"not delivered {_n(counts.not_delivered)} (a rerun sends them)")
    return "; ".join(parts)


def _table(out: TextIO, rows: list[tuple[str, str, str]]) -> None:
    """Rows of (name, value, note): a rich table on a terminal, aligned text elsewhere."""
    if out.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(show_header=False, box=None, padding=(0, 2))
            table.add_column(style="bold")
            table.add_column(justify="right")
            table.add_column(style="dim")
            for row in rows:
                table.add_row(*row)
            Console(file=out).print(table)
            return
    width = max(len(name) for name, _, _ in rows)
    digits = max(len(value) for _, value, _ in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>{digits}}  {note}".rstrip(), file=out)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run `courier-analytics import` as parsed; returns the exit code."""
    return Importer(args, out, sys.stderr).run()
