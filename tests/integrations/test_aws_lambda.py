"""flush_after: each invocation's events are delivered before the handler returns."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import courier_analytics as analytics
from courier_analytics import Client
from courier_analytics.devserver import DevServer, Faults
from courier_analytics.integrations.aws_lambda import flush_after

from .conftest import KEY


class Context:
    """The part of Lambda's context object that flush_after reads."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


class Recorder:
    """A client stand-in that records the timeouts it is flushed with."""

    def __init__(self, result: bool = True) -> None:
        self.timeouts: list[float | None] = []
        self.result = result

    def flush(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        return self.result


def test_events_are_delivered_before_the_handler_returns(courier: DevServer) -> None:
    """The module-level client's events are at Courier when the wrapped handler returns."""
    analytics.configure(api_key=KEY, base_url=courier.base_url)

    @flush_after
    def handler(event: dict[str, Any], context: Context) -> str:
        analytics.identify(event["user"], {"email": "ada@example.com"})
        analytics.track("Export Finished", {"rows": 3}, user_id=event["user"])
        return "ok"

    assert handler({"user": "u-lambda"}, Context(30_000)) == "ok"
    events = courier.events()
    assert [(e["type"], e["user"]) for e in events] == [
        ("identify", "u-lambda"),
        ("track", "u-lambda"),
    ]
    assert courier.sends()[0]["template"] == "tmpl_export"


def test_the_flush_is_bounded_by_the_remaining_time_less_the_margin() -> None:
    """With 3,000 ms left and a 0.5 s margin the flush may take 2.5 s at most."""
    recorder = Recorder()
    handler = flush_after(client=recorder)(lambda event, context: None)
    handler({}, Context(3000))
    handler({}, context=Context(200))
    assert recorder.timeouts == [2.5, 0.0]


def test_a_custom_margin_is_kept_free() -> None:
    """margin=2 leaves two seconds of the invocation for the handler's own return."""
    recorder = Recorder()
    flush_after(client=recorder, margin=2)(lambda event, context: None)({}, Context(10_000))
    assert recorder.timeouts == [8.0]


def test_without_a_lambda_context_the_clients_flush_timeout_applies() -> None:
    """A script's main() (no context) flushes with the client's own default timeout."""
    recorder = Recorder()

    @flush_after(client=recorder)
    def main() -> int:
        return 7

    assert main() == 7
    assert recorder.timeouts == [None]


def test_a_handler_that_raises_still_flushes_and_its_error_propagates() -> None:
    """The handler's exception reaches Lambda unchanged, after the flush."""
    recorder = Recorder()

    @flush_after(client=recorder)
    def handler(event: object, context: Context) -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        handler({}, Context(5000))
    assert recorder.timeouts == [4.5]


def test_a_flush_that_gives_up_is_logged_and_does_not_fail_the_handler(
    courier: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Courier hanging: the handler still returns its answer, within the remaining time."""
    courier.set_faults(Faults(hang_rate=1.0))
    client = Client(api_key=KEY, base_url=courier.base_url, timeout=30)
    handler = flush_after(client=client)(lambda event, context: "answer")
    client.track("Export Finished", user_id="u1")
    with caplog.at_level(logging.WARNING, logger="courier_analytics"):
        assert handler({}, Context(700)) == "answer"
    assert client.stats.pending == 1
    assert "gave up" in caplog.text
    client.shutdown(0)


def test_a_failing_flush_never_breaks_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    """A client whose flush raises is logged; the handler's answer still comes back."""

    class Broken:
        def flush(self, timeout: float | None = None) -> bool:
            raise RuntimeError("bug")

    handler = flush_after(client=Broken())(lambda event, context: 1)
    assert handler({}, Context(1000)) == 1
    assert "flushing after the handler failed" in caplog.text


def test_coroutine_functions_are_refused_with_a_pointer_to_aflush() -> None:
    """An async handler raises TypeError at decoration time, naming aflush."""

    async def handler(event: object, context: object) -> None:
        return None

    with pytest.raises(TypeError, match="aflush"):
        flush_after(handler)


@pytest.mark.parametrize(("margin", "error"), [(-1, ValueError), ("1", TypeError)])
def test_a_bad_margin_is_refused(margin: Any, error: type[Exception]) -> None:
    """margin must be a non-negative number of seconds."""
    with pytest.raises(error, match="margin"):
        flush_after(margin=margin)
