"""Shared by the spool and fleet tests: the stand-in, producer processes, what arrived, a worker.

`tests/spool/conftest.py` and `tests/fleet/conftest.py` import the fixtures from here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from courier_analytics._lanes import Lanes
from courier_analytics._messages import Message
from courier_analytics.devserver import DevServer, Faults

KEY = "spool-key-7c1d"
#: The producer process (see its docstring for its modes).
PRODUCER = Path(__file__).with_name("_spool_producer.py")


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    """One Courier stand-in for the module."""
    with DevServer(api_key=KEY, max_events=200_000) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(server: DevServer) -> None:
    """Each test starts with an empty stand-in and no faults."""
    server.set_faults(Faults())
    server.reset()


def environment() -> dict[str, str]:
    """The test's environment without the COURIER_ settings of whoever runs it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}


def producer(
    spool: str | Path, server: DevServer, count: int, name: str, mode: str
) -> subprocess.Popen[str]:
    """A producer process making `count` tracks through `spool` (`mode`: deliver or commit)."""
    command = [sys.executable, str(PRODUCER), str(spool), server.base_url, KEY, str(count)]
    return subprocess.Popen(
        [*command, name, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environment(),
    )


def read_until(process: subprocess.Popen[str], made: int) -> int:
    """Read a producer's progress until it has made `made` messages; -1 once it is done."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("done"):
            return -1
        last = int(line.split()[1])
        if last >= made:
            return last
    raise AssertionError("the producer ended early")


def by_producer(server: DevServer) -> dict[str, set[int]]:
    """The `n` of each producer's tracks the stand-in received."""
    seen: dict[str, set[int]] = {}
    for event in server.events():
        properties = event["data"].get("properties", {})
        if "p" in properties:
            seen.setdefault(properties["p"], set()).add(properties["n"])
    return seen


class StubWorker:
    """What the journal needs of a worker: its queue, `held`, lanes and reports."""

    def __init__(self, max_queue_size: int) -> None:
        self.queue: deque[Message] = deque()
        self.held = 0
        self.delivered = 0
        self.max_queue_size = max_queue_size
        self.released: list[Message] = []
        self.lanes = Lanes(self.released.append, strict=False, per_user=100)
        self.reports: list[BaseException] = []

    def add_to_lanes(self, messages: list[Message]) -> None:
        for message in messages:
            self.lanes.add(message)

    def is_barrier(self, message: Message) -> bool:
        return self.lanes.is_barrier(message)

    def withdraw(self, user: str) -> list[Message]:
        return self.lanes.withdraw(user)

    def left_memory(self, messages: list[Message]) -> None:
        pass

    def back_in_memory(self, message: Message) -> None:
        pass

    def spilled(self, messages: list[Message]) -> None:
        pass

    def report(self, error: BaseException, message: Message) -> None:
        self.reports.append(error)

    def fail_at_stop(self, message: Message, error: Any) -> None:
        self.reports.append(error)

    def wake_for_spool(self) -> None:
        pass
