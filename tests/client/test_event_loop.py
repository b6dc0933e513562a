"""The worker's event loop: asyncio by default, uvloop when asked for and installed."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import httpx
import pytest

from courier_analytics import Client, ConfigurationError

from .fakes import FakeCourier, accept, make_client


def loop_recorder(seen: list[str]) -> Any:
    """A FakeCourier rule that accepts and notes the type of the loop answering."""

    def rule(request: httpx.Request, body: dict[str, Any], attempt: int) -> httpx.Response:
        seen.append(type(asyncio.get_running_loop()).__module__)
        return accept(request, body, attempt)

    return rule


def test_the_worker_runs_on_asyncio_by_default() -> None:
    """Without event_loop, messages are delivered from a standard asyncio loop."""
    seen: list[str] = []
    with make_client(FakeCourier(loop_recorder(seen))) as client:
        client.track("E", user_id="u1")
        assert client.flush(30)
    assert seen
    assert all(module.startswith("asyncio") for module in seen)


def test_uvloop_delivers_every_message_when_asked_for() -> None:
    """event_loop="uvloop": the worker runs on uvloop and delivers as usual."""
    pytest.importorskip("uvloop")
    seen: list[str] = []
    with make_client(FakeCourier(loop_recorder(seen)), event_loop="uvloop") as client:
        for n in range(50):
            client.track("E", {"n": n}, user_id=f"u{n % 5}")
        assert client.flush(30)
        assert client.stats.delivered == 50
    assert set(seen) == {"uvloop"}


def test_uvloop_without_the_package_is_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asking for uvloop when it is not installed fails at construction with the fix."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    with pytest.raises(ConfigurationError, match=r"courier-analytics\[uvloop\]"):
        Client(api_key="k", event_loop="uvloop")


@pytest.mark.parametrize("value", ["trio", "", None])
def test_other_event_loops_are_refused(value: Any) -> None:
    """Only "asyncio" and "uvloop" are accepted, and the error names the option."""
    with pytest.raises(ConfigurationError, match="event_loop"):
        Client(api_key="k", event_loop=value)
