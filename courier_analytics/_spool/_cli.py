"""`courier-analytics spool status` and `courier-analytics relay`: look into a spool, deliver it.

`relay --spool SPOOL` is a client that makes no messages: it takes over what
processes that stopped or died left in the spool and delivers it (a sidecar, or
a one-off after an outage). With `--once` it retries every parked message now
and exits when nothing more can be delivered: 0 when all it took was delivered,
1 otherwise. A once-relay gives a message `--timeout` seconds of retries (not the
client's two minutes) before it parks it again: against a Courier that is down
it exits 1 within about `--timeout`, saying how many are left in the spool. On
a terminal it shows a progress bar (rich, from the `cli` extra, when
installed); otherwise a progress line every few seconds.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from courier_analytics._bar import terminal_bar
from courier_analytics._errors import CourierAnalyticsError
from courier_analytics._messages import Message
from courier_analytics._retry import RetryPolicy
from courier_analytics._spool import REDIS_SCHEMES, SpoolError, parse_spool
from courier_analytics._spool._backend import SpoolStatus
from courier_analytics._spool._sqlite import SqliteBackend

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["COMMANDS", "add_commands", "run"]

#: The commands this module adds to `courier-analytics`.
COMMANDS = frozenset({"spool", "relay"})
EXIT_OK, EXIT_NOT_DELIVERED, EXIT_USAGE = 0, 1, 2
#: Seconds between two plain progress lines.
PROGRESS_EVERY = 5.0
#: Seconds between a relay's looks for new messages while idle.
RELAY_POLL = 0.05
#: The longest one request of a once-relay may take (the client's default).
REQUEST_TIMEOUT = 10.0


def add_commands(commands: Any, add_connection: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `spool status` and `relay` to the `courier-analytics` subcommands."""
    spool = commands.add_parser("spool", help="look into a durable spool")
    actions = spool.add_subparsers(dest="spool_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="what a spool holds")
    status.add_argument(
        "spool", metavar="SPOOL", help="the spool: a path, sqlite:///path or redis://host/db"
    )
    status.add_argument("--json", action="store_true", help="print JSON, for scripts")

    relay = commands.add_parser("relay", help="deliver what a spool holds, making nothing")
    relay.add_argument(
        "--spool", required=True, help="the spool: a path, sqlite:///path or redis://host/db"
    )
    relay.add_argument(
        "--once",
        action="store_true",
        help="retry everything now and exit when nothing more can be delivered",
    )
    add_connection(relay)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run `spool status` or `relay`; the exit code."""
    try:
        path = parse_spool(args.spool, "SPOOL")
    except CourierAnalyticsError as exc:
        print(f"courier-analytics: {exc}", file=sys.stderr)
        return EXIT_USAGE
    assert path is not None  # parse_spool returns None only for None
    if args.command == "spool":
        return _status(path, args.json, out)
    return _relay(path, args, out)


def _inspect(path: str) -> SpoolStatus:
    """What a spool holds, without changing it."""
    if path.startswith(REDIS_SCHEMES):
        from courier_analytics._spool._redis import RedisBackend

        return RedisBackend(path, owner="", lease=0, deliver=False).inspect(time.time())
    return SqliteBackend(path, owner="", lease=0).inspect(time.time())


def _shown(path: str) -> str:
    """The spool as shown (a Redis URL without its password)."""
    if path.startswith(REDIS_SCHEMES):
        from courier_analytics._spool._redis import redacted

        return redacted(path)
    return path


def _status(path: str, as_json: bool, out: TextIO) -> int:
    try:
        status = _inspect(path)
    except SpoolError as exc:
        print(f"courier-analytics: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if as_json:
        out.write(orjson.dumps(_as_dict(_shown(path), status), option=orjson.OPT_INDENT_2).decode())
        out.write("\n")
    else:
        out.write(_as_text(_shown(path), status, path.startswith(REDIS_SCHEMES)))
    return EXIT_OK


def _as_dict(path: str, status: SpoolStatus) -> dict[str, Any]:
    return {
        "spool": path,
        "messages": status.messages,
        "bytes": status.bytes,
        "file_bytes": status.file_bytes,
        "oldest_age_s": status.oldest_age,
        "parked": status.parked,
        "unowned": status.unowned,
        "next_retry_s": status.next_retry,
        "dead": status.dead,
        "owners": [
            {
                "owner": owner.owner,
                "host": owner.host,
                "pid": owner.pid,
                "messages": owner.messages,
                "lease_left_s": owner.lease_left,
            }
            for owner in status.owners
        ],
    }


def _as_text(path: str, status: SpoolStatus, shared: bool = False) -> str:
    where = "in Redis" if shared else "on disk"
    lines = [
        f"spool      {path} ({_size(status.file_bytes)} {where})",
        f"messages   {status.messages} ({_size(status.bytes)} of data)",
        f"oldest     {_age(status.oldest_age)}",
        f"parked     {status.parked} (waiting to retry); next retry {_when(status.next_retry)}",
        f"unowned    {status.unowned} (the next process to open the spool takes them)",
    ]
    if shared:
        lines.append(f"dead       {status.dead} (failed after spool_max_age, kept as dead letters)")
    if status.owners:
        lines.append("owners")
        for owner in status.owners:
            lease = "expired" if owner.lease_left < 0 else f"{owner.lease_left:.0f}s left"
            lines.append(
                f"  pid {owner.pid} on {owner.host}: {owner.messages} messages, lease {lease}"
            )
    else:
        lines.append("owners     none")
    return "\n".join(lines) + "\n"


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{_duration(seconds)} ago"


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return "now" if seconds <= 0 else f"in {_duration(seconds)}"


def _duration(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minute:02d}m"
    if minutes:
        return f"{minutes}m{second:02d}s"
    return f"{seconds:.1f}s"


def _relay(path: str, args: argparse.Namespace, out: TextIO) -> int:
    from courier_analytics._cli import client_for  # it imports this module

    failures: list[BaseException] = []

    def on_error(error: BaseException, message: Message) -> None:
        failures.append(error)

    try:
        total = _inspect(path).messages
    except SpoolError:
        total = 0  # made when the relay opens it
    once: dict[str, Any] = {}
    if args.once:
        # An operator running --once waits for it: a message Courier does not take
        # within --timeout stays in the spool for the next run, rather than holding
        # the command for the client's two minutes of retries.
        once = {
            "retry": RetryPolicy(max_time=args.timeout, max_wait=args.timeout),
            "timeout": min(args.timeout, REQUEST_TIMEOUT),
        }
    try:
        client = client_for(
            args,
            on_error,
            spool=path,
            deliver=True,
            **once,
            # A relay looks for new entries of a shared spool this often while idle.
            flush_interval=RELAY_POLL if path.startswith(REDIS_SCHEMES) else 0.5,
        )
    except (TypeError, ValueError) as exc:
        print(f"courier-analytics: {exc}", file=sys.stderr)
        return EXIT_USAGE
    journal = client._worker.journal
    assert journal is not None  # a spool was given
    if args.once:
        journal.retry_everything_now()
    stop = threading.Event()
    restore = _on_signals(stop)
    progress = _Progress(total, out)
    started = time.monotonic()
    try:
        while not stop.is_set():
            idle = client.flush(timeout=0.5)
            progress.show(client.stats.delivered, client.stats.failed)
            if idle and args.once:
                break
    finally:
        progress.close()
        client.shutdown(args.timeout)
        restore()
    stats = client.stats
    left = stats.pending
    took = time.monotonic() - started
    print(
        f"relayed {stats.recovered} message(s) in {took:.1f}s: {stats.delivered} delivered, "
        f"{stats.failed} failed, {left} left in the spool",
        file=out,
    )
    for error in failures[:5]:
        print(f"courier-analytics: {error}", file=sys.stderr)
    if stats.failed or (args.once and left):
        return EXIT_NOT_DELIVERED
    return EXIT_OK


def _on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM end the relay cleanly (what is left stays in the spool).

    Returns:
        What puts the previous handlers back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    numbers = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(number, lambda *_: stop.set()) for number in numbers]

    def restore() -> None:
        for number, handler in zip(numbers, previous, strict=True):
            signal.signal(number, handler)

    return restore


class _Progress:
    """A progress bar on a terminal (rich, the `cli` extra: messages, rate, time left),
    else a line every few seconds."""

    def __init__(self, total: int, out: TextIO) -> None:
        self._out = out
        self._bar: Progress | None = None
        self._started = time.monotonic()
        self._last_line = -math.inf
        if out.isatty():
            try:
                self._bar = terminal_bar(
                    out, "relay", "{task.fields[done]} messages", "{task.fields[rate]}/s"
                )
            except ImportError:  # the [cli] extra is not installed: plain lines will do
                pass
            else:
                self._task = self._bar.add_task("relay", total=total or None, done="0", rate="0")

    def show(self, delivered: int, failed: int) -> None:
        done = delivered + failed
        if self._bar is not None:
            elapsed = time.monotonic() - self._started
            rate = done / elapsed if elapsed > 0 else 0.0
            self._bar.update(self._task, completed=done, done=f"{done:,}", rate=f"{rate:,.0f}")
            return
        now = time.monotonic()
        if now - self._last_line >= PROGRESS_EVERY:
            self._last_line = now
            print(f"relay: {delivered} delivered, {failed} failed", file=self._out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
