"""The stand-in as its own process (``courier-analytics dev``), as an app developer runs it.

Tests whose subject shares the process with the stand-in would also measure the
stand-in (it competes for the GIL); these run it apart, and read it over HTTP.
"""

from __future__ import annotations

import subprocess
import sys
from types import TracebackType
from typing import Any

import httpx


class StandIn:
    """``courier-analytics dev --port 0`` in a subprocess; inspect it through ``/__dev``."""

    def __init__(self, *args: str) -> None:
        self._args = args
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> StandIn:
        command = [sys.executable, "-m", "courier_analytics", "dev", "--port", "0", *self._args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self._process = process
        assert process.stdout is not None
        first = process.stdout.readline()  # "Courier stand-in listening on http://..."
        if "listening on " not in first:
            process.kill()
            raise RuntimeError(f"the stand-in did not start: {first!r}")
        self.base_url = first.rsplit(" ", 1)[1].strip()
        self._http = httpx.Client(base_url=self.base_url, timeout=30)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.close()
        if self._process is not None:
            self._process.terminate()
            self._process.communicate(timeout=30)

    def events(self) -> list[dict[str, Any]]:
        """The event log, oldest first."""
        events: list[dict[str, Any]] = self._http.get("/__dev/events").json()
        return events[::-1]

    def sends(self) -> list[dict[str, Any]]:
        """The notifications mapped events made, oldest first."""
        sends: list[dict[str, Any]] = self._http.get("/__dev/sends").json()
        return sends

    def stats(self) -> dict[str, Any]:
        """The stand-in's counters."""
        stats: dict[str, Any] = self._http.get("/__dev/stats").json()
        return stats

    def set_faults(self, **faults: Any) -> None:
        """Inject faults (``Faults`` fields); none turns them off."""
        self._http.post("/__dev/faults", json=faults).raise_for_status()

    def reset(self) -> None:
        """Forget events, profiles, sends and counters."""
        self._http.post("/__dev/reset").raise_for_status()
