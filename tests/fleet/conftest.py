"""Fixtures of the fleet tests: a real `redis-server` in a temporary folder, and the stand-in."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._spool_helpers import KEY, _clean, server

__all__ = ["KEY", "RedisServer", "_clean", "server"]

pytest.importorskip("redis", reason="the fleet tests need redis-py (the [redis] extra)")
if shutil.which("redis-server") is None:
    pytest.skip(
        "the fleet tests need a real redis-server (Debian's redis-server package)",
        allow_module_level=True,
    )


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A `redis-server` on 127.0.0.1 with AOF on, in its own folder; started and stopped here.

    Args:
        folder: Where its append-only file lives (kept across restarts).
        options: More `redis-server` arguments (e.g. `--maxmemory`).
    """

    def __init__(self, folder: Path, *options: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.options = options
        self._process: subprocess.Popen[str] | None = None

    def url(self, **query: object) -> str:
        """The spool URL of this server (db 0), with optional `stream` or `shards`."""
        tail = "&".join(f"{name}={value}" for name, value in query.items())
        return f"redis://127.0.0.1:{self.port}/0" + (f"?{tail}" if tail else "")

    def start(self) -> None:
        """Start it and wait until it accepts connections (it says so on stdout)."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.folder), "--appendonly", "yes", "--save", ""]
        process = subprocess.Popen([*command, *self.options], stdout=subprocess.PIPE, text=True)
        self._process = process
        assert process.stdout is not None
        for line in process.stdout:
            if "Ready to accept connections" in line:
                return
        raise AssertionError(f"redis-server ended early (exit {process.wait()})")

    def stop(self) -> None:
        """Stop it as an operator would (SIGTERM: it writes its AOF and exits)."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.communicate(timeout=30)

    def wait_for(
        self, ready: Callable[[Any], bool], keys: str, events: str, timeout: float
    ) -> bool:
        """Wait until `ready(client)`, checked again each time Redis tells of an event.

        Keyspace notifications of the classes `events` (e.g. `t` stream commands,
        `x` expiries) on keys matching `keys` wake the wait: no sleep, no polling.
        Returns False if `timeout` passed first.
        """
        import redis

        client = redis.Redis(port=self.port)
        client.config_set("notify-keyspace-events", "K" + events)
        pubsub = client.pubsub()
        try:
            pubsub.psubscribe(f"__keyspace@0__:{keys}")  # before the first look: none missed
            deadline = time.monotonic() + timeout
            while not (done := ready(client)) and (left := deadline - time.monotonic()) > 0:
                pubsub.get_message(timeout=left)  # blocks until an event (or the deadline)
            return done
        finally:
            pubsub.close()
            client.close()

    def restart(self, *, crash: bool = False) -> None:
        """Stop it (`crash`: SIGKILL, no shutdown) and start it again, same port and folder."""
        if crash and self._process is not None:
            self._process.kill()
            self._process.communicate(timeout=30)
            self._process = None
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running Redis of its own for each test."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
