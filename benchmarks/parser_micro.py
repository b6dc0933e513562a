"""Microbenchmark of the native sender's answer parser: microseconds per answer.

    python -m benchmarks.parser_micro [--courier-src DIR]

Times the answer reader's `feed(...)` on typical answers (one piece, cut in two, chunked)
for this checkout's `courier_analytics._http11_parser`, and, with `--courier-src`, for the copy
of `courier_analytics` in DIR too (e.g. `git archive main courier_analytics | tar -x -C DIR`).
"""

from __future__ import annotations

import argparse
import importlib.util
import timeit
from pathlib import Path
from types import ModuleType

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


def per_answer(module: ModuleType, pieces: list[bytes], number: int = 20_000) -> float:
    """Microseconds per answer: a new reader fed the pieces, best of five runs."""
    reader_class = getattr(module, "Reader", None) or module._Reader

    def once() -> object:
        reader = reader_class()
        for piece in pieces:
            answer = reader.feed(piece)
        return answer

    answer = once()
    assert (answer.status, answer.body, answer.keep_alive) == (202, BODY, True)
    return min(timeit.repeat(once, number=number, repeat=5)) / number * 1e6


def main() -> None:
    """Print microseconds per answer for each case and each copy of the parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courier-src", type=Path, help="another courier_analytics to time")
    args = parser.parse_args()
    copies = {"this checkout": load(None)}
    if args.courier_src:
        copies = {"baseline": load(args.courier_src), **copies}
    for case, pieces in CASES.items():
        timings = {name: per_answer(module, pieces) for name, module in copies.items()}
        row = "  ".join(f"{name}: {us:5.2f} us" for name, us in timings.items())
        print(f"{case:<24} {row}")


if __name__ == "__main__":
    main()
