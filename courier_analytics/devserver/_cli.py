"""Command-line glue for `courier-analytics dev`.

The CLI module calls `add_arguments` on its `dev` sub-parser and `run` with the
parsed namespace; both live here so the stand-in's options stay next to it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from courier_analytics.devserver._faults import Faults
from courier_analytics.devserver._server import DEFAULT_HOST, exposure_warning, serve
from courier_analytics.devserver._state import (
    DEFAULT_API_KEY,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_PROFILE_BYTES,
    DEFAULT_MAX_PROFILES,
)

DEFAULT_PORT = 8787


def _mapping(text: str) -> tuple[str, str]:
    event, sep, template = text.partition("=")
    if not sep or not event or not template:
        raise argparse.ArgumentTypeError(f"expected EVENT=TEMPLATE, got {text!r}")
    return event, template


def load_mappings(path: str | Path) -> dict[str, str]:
    """Read a mappings file: a JSON object of event name -> template id.

    Raises:
        ValueError: The file is not a JSON object of strings.
    """
    data = orjson.loads(Path(path).read_bytes())
    if not isinstance(data, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in data.items()
    ):
        raise ValueError(f"{path}: expected a JSON object of event name -> template id")
    return dict(data)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the stand-in's options to `parser` (the `dev` sub-command)."""
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="bearer key to accept")
    parser.add_argument(
        "--accept-any-key", action="store_true", help="accept any non-empty bearer key"
    )
    parser.add_argument(
        "--map",
        dest="mappings",
        metavar="EVENT=TEMPLATE",
        type=_mapping,
        action="append",
        default=[],
        help="map an event to a template (repeatable)",
    )
    parser.add_argument("--mappings-file", metavar="FILE", help="JSON object: event -> template")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument(
        "--max-profiles",
        type=int,
        default=DEFAULT_MAX_PROFILES,
        help="profiles kept; the least recently written go first (default %(default)s)",
    )
    parser.add_argument(
        "--max-profile-bytes",
        type=int,
        default=DEFAULT_MAX_PROFILE_BYTES,
        help="bytes of profiles' JSON kept, all together (default %(default)s)",
    )
    parser.add_argument(
        "--allow-host",
        dest="allowed_hosts",
        metavar="NAME",
        action="append",
        default=[],
        help="also answer requests for this host name, e.g. a Docker service (repeatable)",
    )
    faults = parser.add_argument_group("fault injection")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="added latency (mean)")
    faults.add_argument("--latency-jitter-ms", type=float, default=0.0)
    faults.add_argument(
        "--latency-distribution", choices=("fixed", "uniform", "normal"), default="fixed"
    )
    faults.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 5xx")
    faults.add_argument(
        "--error-statuses", default="500,502,503", help="comma-separated 5xx statuses"
    )
    faults.add_argument("--rate-limit-rate", type=float, default=0.0, help="fraction answered 429")
    faults.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds on 429")
    faults.add_argument(
        "--drop-rate", type=float, default=0.0, help="fraction of dropped connections"
    )
    faults.add_argument("--hang-rate", type=float, default=0.0, help="fraction never answered")
    faults.add_argument("--seed", type=int, default=None, help="seed for the random faults")


def faults_from_args(args: argparse.Namespace) -> Faults:
    """The `Faults` the parsed options describe."""
    return Faults(
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        latency_distribution=args.latency_distribution,
        error_rate=args.error_rate,
        error_statuses=tuple(int(s) for s in str(args.error_statuses).split(",") if s.strip()),
        rate_limit_rate=args.rate_limit_rate,
        retry_after=args.retry_after,
        drop_rate=args.drop_rate,
        hang_rate=args.hang_rate,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """Run the stand-in as the parsed options say; returns the exit code."""
    try:
        mappings = load_mappings(args.mappings_file) if args.mappings_file else {}
        mappings.update(dict(args.mappings))
        faults = faults_from_args(args)
    except (OSError, ValueError) as exc:
        print(f"courier-analytics dev: {exc}", file=sys.stderr)
        return 2

    def announce(base_url: str) -> None:
        print(f"Courier stand-in listening on {base_url}")
        print(
            f"  API key:   {args.api_key}" + (" (any key accepted)" if args.accept_any_key else "")
        )
        print(f"  Data Logs: {base_url}/")
        print(f"  Mapped:    {len(mappings)} event(s); Ctrl-C to stop", flush=True)
        if (warning := exposure_warning(args.host)) is not None:
            print(f"\n  WARNING: {warning}\n", file=sys.stderr, flush=True)

    try:
        serve(
            args.host,
            args.port,
            args.api_key,
            mappings,
            faults,
            accept_any_key=args.accept_any_key,
            max_body_bytes=args.max_body_bytes,
            max_profiles=args.max_profiles,
            max_profile_bytes=args.max_profile_bytes,
            on_ready=announce,
            warn_exposure=False,  # announce() says it louder
            allowed_hosts=args.allowed_hosts,
        )
    except OSError as exc:
        print(
            f"courier-analytics dev: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0
