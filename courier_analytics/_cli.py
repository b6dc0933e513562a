"""The `courier-analytics` command: the local stand-in, one-off calls, the demo, imports.

Exit codes: 0 success; 1 a message was not delivered; 2 bad usage or bad input;
130 interrupted by Ctrl-C (`import`: run it again to resume); 141 the output was
closed early (`courier-analytics demo | head`), as for tools that SIGPIPE ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import orjson

from courier_analytics._client import Client
from courier_analytics._errors import NotDeliveredError
from courier_analytics._import import add_arguments as add_import_arguments
from courier_analytics._messages import Message
from courier_analytics._spool import _cli as spool_cli
from courier_analytics._version import __version__

__all__ = ["main"]

EXIT_OK, EXIT_NOT_DELIVERED, EXIT_USAGE = 0, 1, 2
#: 128 + SIGPIPE: what a shell reports for a tool that its closed output ended.
EXIT_BROKEN_PIPE = 141


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"plan": "pro"}\'')
    return value


ROUTE_HELP = (
    "api (default): Courier's documented /profiles and /inbound/courier; "
    "segment: POST /inbound/segment, as Segment's Courier destination"
)


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", help="Courier API key (default: $COURIER_API_KEY)")
    parser.add_argument(
        "--base-url", help="Courier URL, e.g. a local stand-in (default: $COURIER_BASE_URL)"
    )
    parser.add_argument("--region", choices=["us", "eu"], default="us")
    parser.add_argument("--route", choices=["api", "segment"], default="api", help=ROUTE_HELP)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to deliver")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="courier-analytics",
        description="Send Segment-style analytics calls to Courier, or run a local stand-in.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run a demo against a local Courier stand-in")
    demo.add_argument("--route", choices=["api", "segment"], default="api", help=ROUTE_HELP)
    demo.add_argument(
        "--keep-running", action="store_true", help="keep the stand-in up to browse its page"
    )

    dev = commands.add_parser("dev", help="run the local Courier stand-in")
    try:
        from courier_analytics.devserver import add_arguments
    except ImportError:  # the [dev] extra is not installed; 'dev' will say so
        dev.add_argument("rest", nargs=argparse.REMAINDER)
    else:
        add_arguments(dev)

    identify = commands.add_parser("identify", help="merge traits into a user's profile")
    identify.add_argument("user", metavar="USER_ID", help="whose profile")
    identify.add_argument("--traits", type=_json_object, default={}, help="JSON object")
    _add_connection_arguments(identify)

    track = commands.add_parser("track", help="send one track event")
    track.add_argument("event", metavar="EVENT", help="event name, e.g. 'Order Completed'")
    track.add_argument("--properties", type=_json_object, default={}, help="JSON object")
    track.add_argument("--user-id", help="who did it")
    track.add_argument("--anonymous-id", help="an anonymous id, when there is no user id")
    _add_connection_arguments(track)

    history = commands.add_parser(
        "import",
        help="send Segment's archived messages (JSON lines, plain or gzipped) to Courier",
        description="Send Segment-spec messages from exports (S3, Cloud Storage) to Courier: "
        "identifies by default; each keeps its messageId and timestamp; Ctrl-C, then the "
        "same command again, goes on where it stopped.",
    )
    add_import_arguments(history)
    _add_connection_arguments(history)
    spool_cli.add_commands(commands, _add_connection_arguments)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    out = out or sys.stdout
    try:
        return _main(argv, out)
    except BrokenPipeError:
        # The reader went away (`courier-analytics demo | head`): stop without a
        # traceback, and point stdout at /dev/null so that the interpreter's own
        # flush at exit does not fail a second time.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None, out: TextIO) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dev":
        return _dev(args)
    if args.command == "demo":
        from courier_analytics._demo import run_demo

        return run_demo(route=args.route, out=out, keep_running=args.keep_running)
    if args.command == "import":
        from courier_analytics._import import run as run_import

        return run_import(args, out)
    if args.command in spool_cli.COMMANDS:
        return spool_cli.run(args, out)
    return _send_one(args, out)


def _dev(args: argparse.Namespace) -> int:
    try:
        from courier_analytics.devserver import run
    except ImportError as exc:
        print(
            f"the local stand-in needs the [dev] extra ({exc.name} is missing): "
            "pip install -e '.[dev]' in a clone of courier-analytics",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return run(args)


def client_for(
    args: argparse.Namespace, on_error: Callable[[BaseException, Message], None], **options: Any
) -> Client:
    """A client with the command's connection options (`_add_connection_arguments`)."""
    return Client(
        api_key=args.api_key,
        base_url=args.base_url,
        region=args.region,
        route=args.route,
        on_error=on_error,
        flush_at_exit=False,
        **options,
    )


def _send_one(args: argparse.Namespace, out: TextIO) -> int:
    failures: list[BaseException] = []

    def on_error(error: BaseException, message: Message) -> None:
        failures.append(error)

    try:
        client = client_for(args, on_error)
        call: Callable[[], str]
        if args.command == "identify":
            call = lambda: client.identify(args.user, args.traits)  # noqa: E731
        else:
            call = lambda: client.track(  # noqa: E731
                args.event, args.properties, user_id=args.user_id, anonymous_id=args.anonymous_id
            )
        message_id = call()
    except (TypeError, ValueError) as exc:
        print(f"courier-analytics: {exc}", file=sys.stderr)
        return EXIT_USAGE
    client.shutdown(args.timeout)
    if failures or client.stats.delivered != 1:
        error = failures[0] if failures else f"{args.command} {message_id} not delivered"
        late = not failures or isinstance(error, NotDeliveredError)
        ran_out = f"--timeout {args.timeout:g}s ran out: " if late else ""
        print(f"courier-analytics: {ran_out}{error}", file=sys.stderr)
        return EXIT_NOT_DELIVERED
    print(f"delivered {args.command} {message_id}", file=out)
    return EXIT_OK
