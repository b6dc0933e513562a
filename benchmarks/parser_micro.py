"""Microbenchmark of the native sender's answer parser: microseconds per answer.

    python -m benchmarks.parser_micro [--courier-src DIR] [--rounds N]

Times the answer reader's `feed(...)` on typical answers (one piece, cut in two, chunked)
for this checkout's `courier_analytics._http11_parser`, and, with `--courier-src`, for the copy
of `courier_analytics` in DIR too (e.g. `git archive main courier_analytics | tar -x -C DIR`).
The copies are timed in turn, round after round (CPU time, so that other processes on a busy
machine count less); each row gives the median of the rounds and, for each copy, the median
of its per-round ratios to the first copy (a round's copies ran seconds apart, under the
same load).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any

BODY = b'{"requestId":"1-6565f1c0-4b2a9e0d7c3f5a1b"}'
HEAD = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
    b"date: Wed, 02 Dec 2026 11:49:04 GMT\r\nserver: uvicorn\r\n\r\n" % len(BODY)
)
CHUNKED = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
    b"date: Wed, 02 Dec 2026 11:49:04 GMT\r\nserver: uvicorn\r\n\r\n"
    b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"
)
CASES = {
    "202, one piece": [HEAD + BODY],
    "202, one piece, reused": [HEAD + BODY],  # one reader, as a connection keeps it
    "202, head then body": [HEAD, BODY],
    "202 chunked, one piece": [CHUNKED],
}


def load(source: Path | None) -> ModuleType:
    """The answer parser's module from this checkout, or from the copy under `source`.

    It is `_http11_parser.py`; copies made before it was split from `_http11.py` have it there.
    """
    if source is None:
        from courier_analytics import _http11_parser

        return _http11_parser
    path = source / "courier_analytics" / "_http11_parser.py"
    if not path.exists():
        path = source / "courier_analytics" / "_http11.py"
    spec = importlib.util.spec_from_file_location("_http11_baseline", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timer(module: ModuleType, case: str, number: int = 20_000) -> timeit.Timer:
    """Times `number` answers of `case`: a new reader fed the pieces, or one reader reused."""
    reader_class = getattr(module, "Reader", None) or module._Reader
    pieces = CASES[case]
    reused = reader_class()

    def once() -> Any:
        reader = reused if case.endswith("reused") else reader_class()
        for piece in pieces:
            answer = reader.feed(piece)
        return answer

    answer = once()
    assert (answer.status, answer.body, answer.keep_alive) == (202, BODY, True)
    return timeit.Timer(once, timer=time.process_time)


def main() -> None:
    """Print median microseconds per answer for each case and each copy of the parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courier-src", type=Path, help="another courier_analytics to time")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of each case and copy")
    args = parser.parse_args()
    number = 20_000
    copies = {"this checkout": load(None)}
    if args.courier_src:
        copies = {"baseline": load(args.courier_src), **copies}
    for case in CASES:
        timers = {name: timer(module, case, number) for name, module in copies.items()}
        times: dict[str, list[float]] = {name: [] for name in copies}
        for round_ in range(args.rounds):
            order = list(timers) if round_ % 2 else list(timers)[::-1]  # each goes first in turn
            for name in order:
                times[name].append(timers[name].timeit(number) / number * 1e6)
        first = next(iter(times.values()))
        row = "  ".join(
            f"{name}: {statistics.median(values):5.2f} us "
            f"({statistics.median(x / y for x, y in zip(values, first, strict=True)):.3f}x)"
            for name, values in times.items()
        )
        print(f"{case:<24} {row}", flush=True)


if __name__ == "__main__":
    main()
