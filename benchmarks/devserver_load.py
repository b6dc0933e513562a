"""Load generator for the Courier stand-in: how many requests/s can it answer?

Opens N keep-alive HTTP/1.1 connections (raw asyncio protocols, uvloop when
installed) and has each send ``POST /inbound/segment`` track calls back to back,
each with a fresh messageId (so every request is really applied), for a fixed
time. By default it starts the stand-in itself in a separate process with the
requested added latency; ``--url`` measures a stand-in that is already running.

    python benchmarks/devserver_load.py --connections 200 --latency-ms 20 --duration 10

Prints requests/s, status counts and latency percentiles. Only the standard
library plus the project's own dependencies are needed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

API_KEY = "bench-key"
BODY = (
    b'{"type":"track","messageId":"%s","userId":"user-%d","event":"Order Completed",'
    b'"properties":{"total":42.5,"currency":"EUR"}}'
)
HEAD = (
    b"POST /inbound/segment HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
)


class Connection(asyncio.Protocol):
    """One keep-alive connection sending one request at a time, back to back."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.buffer = b""
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.bench.next_request())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            status = head[9:12].decode()
            self.buffer = self.buffer[total:]
            self.bench.record(status, time.perf_counter() - self.sent_at)
            if self.bench.running:
                self.send()
            elif self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Bench:
    """Counts answers and latencies while `running`."""

    def __init__(self, host: str, tag: str) -> None:
        self.host = host.encode()
        self.tag = tag
        self.ids = itertools.count()
        self.running = True
        self.measuring = False
        self.statuses: dict[str, int] = {}
        self.latencies: list[float] = []

    def next_request(self) -> bytes:
        n = next(self.ids)
        body = BODY % (f"{self.tag}-{n}".encode(), n % 1000)
        return HEAD % (self.host, API_KEY.encode(), len(body)) + body

    def record(self, status: str, latency: float) -> None:
        if self.measuring:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.latencies.append(latency)


async def _drive(
    host: str, port: int, connections: int, warmup: float, duration: float, tag: str
) -> tuple[dict[str, int], list[float]]:
    loop = asyncio.get_running_loop()
    bench = Bench(f"{host}:{port}", tag)
    protocols = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(lambda: Connection(bench), host, port)
        protocols.append(protocol)
    await asyncio.sleep(warmup)
    bench.measuring = True
    await asyncio.sleep(duration)
    bench.measuring = False
    bench.running = False
    await asyncio.wait([p.closed for p in protocols], timeout=5)
    return bench.statuses, bench.latencies


def _worker(args: tuple[str, int, int, float, float, str]) -> tuple[dict[str, int], list[float]]:
    try:
        import uvloop

        return uvloop.run(_drive(*args))
    except ImportError:
        return asyncio.run(_drive(*args))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(port: int, latency_ms: float) -> subprocess.Popen[bytes]:
    code = (
        "from courier_analytics.devserver import Faults, serve\n"
        f"serve('127.0.0.1', {port}, {API_KEY!r}, {{'Order Completed': 'tmpl_order'}}, "
        f"Faults(latency_ms={latency_ms}))\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("the stand-in did not start")


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(len(values) * fraction))] * 1000


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="measure this running stand-in (key must be bench-key)")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="stand-in's added latency")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    args = parser.parse_args(argv)

    server = None
    if args.url:
        parts = urlsplit(args.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
    else:
        host, port = "127.0.0.1", _free_port()
        server = _start_server(port, args.latency_ms)
    try:
        per_process = [args.connections // args.processes] * args.processes
        per_process[0] += args.connections - sum(per_process)
        jobs = [
            (host, port, count, args.warmup, args.duration, f"{os.getpid()}-{index}")
            for index, count in enumerate(per_process)
        ]
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            results = pool.map(_worker, jobs)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)

    statuses: dict[str, int] = {}
    latencies: list[float] = []
    for counted, measured in results:
        for status, count in counted.items():
            statuses[status] = statuses.get(status, 0) + count
        latencies.extend(measured)
    latencies.sort()
    total = sum(statuses.values())
    print(
        f"connections={args.connections} processes={args.processes} "
        f"latency_ms={args.latency_ms if not args.url else 'n/a'} duration={args.duration}s"
    )
    print(f"requests: {total}  statuses: {dict(sorted(statuses.items()))}")
    print(f"throughput: {total / args.duration:,.0f} requests/s")
    if latencies:
        print(
            "latency ms: "
            f"p50={_percentile(latencies, 0.50):.1f} p90={_percentile(latencies, 0.90):.1f} "
            f"p99={_percentile(latencies, 0.99):.1f} max={latencies[-1] * 1000:.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
