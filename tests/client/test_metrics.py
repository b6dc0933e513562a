"""OpenTelemetry metrics, read with the real SDK through an in-memory reader."""

from __future__ import annotations

import gc
import re
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import courier_analytics as analytics
from courier_analytics import Client, ConfigurationError, Stats
from courier_analytics._intake import NO_STATS
from courier_analytics._metrics import INSTRUMENTS, METER_NAME
from tests.client.fakes import FakeCourier, accept, make_client
from tests.client.test_cold_start import CHILD_HUNG, ONE_ANSWER, run_python
from tests.client.test_fast_path import LoopbackServer

OUTCOMES = {"delivered", "failed", "dropped", "skipped"}


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """An in-memory reader on a meter provider of its own."""
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Every metric of the package's meter collected now, by name."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        if scope.scope.name == METER_NAME
        for metric in scope.metrics
    }


def values(metric: Any) -> dict[frozenset[tuple[str, Any]], Any]:
    """A sum's values (or a histogram's counts) by attribute set."""
    return {
        frozenset(point.attributes.items()): getattr(point, "value", None)
        if hasattr(point, "value")
        else point.count
        for point in metric.data.data_points
    }


def by_outcome(metric: Any) -> dict[str, int]:
    return {dict(attributes)["outcome"]: value for attributes, value in values(metric).items()}


def test_messages_are_counted_by_outcome_as_the_client_counts_them(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """courier_analytics.messages has one series per outcome, equal to client.stats."""

    def rule(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        if body.get("event", "").endswith("Bad"):
            return httpx.Response(400, json={"message": "no"})
        return accept(request, body, attempt)

    client = make_client(FakeCourier(rule), meter_provider=provider)
    client.track("Good", user_id="u1")
    client.track("Good", user_id="u2")
    client.track("Bad", user_id="u3")
    client.page("Home", user_id="u1")  # not delivered on route "api": skipped
    assert client.flush(10)
    client.shutdown()
    client.track("Late", user_id="u1")  # the client is closed: dropped

    metric = collect(reader)["courier_analytics.messages"]

    assert by_outcome(metric) == {"delivered": 2, "failed": 1, "dropped": 1, "skipped": 1}
    assert metric.unit == "{message}"
    assert metric.data.is_monotonic


def test_retries_are_counted(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    """courier_analytics.retries counts retry attempts, as Stats.retried does."""

    def rule(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        return httpx.Response(503) if attempt < 3 else accept(request, body, attempt)

    client = make_client(FakeCourier(rule), meter_provider=provider)
    client.track("E", user_id="u1")
    assert client.flush(10)

    metrics = collect(reader)

    assert values(metrics["courier_analytics.retries"]) == {frozenset(): 2}
    assert client.stats.retried == 2


def test_each_request_has_a_duration_with_http_attributes(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """http.client.request.duration: one point per attempt, semantic-convention attributes."""

    def rule(request: httpx.Request, body: dict[str, Any], attempt: int) -> Any:
        if attempt == 1:
            return httpx.Response(503)
        if attempt == 2:
            raise httpx.ConnectError("refused")
        return accept(request, body, attempt)

    client = make_client(
        FakeCourier(rule), base_url="https://api.courier.com", meter_provider=provider
    )
    client.track("E", user_id="u1")
    assert client.flush(10)

    metric = collect(reader)["http.client.request.duration"]

    server = {"http.request.method": "POST", "server.address": "api.courier.com"}
    server["server.port"] = 443
    assert values(metric) == {
        frozenset({**server, "http.response.status_code": 503, "error.type": "503"}.items()): 1,
        frozenset({**server, "error.type": "ConnectError"}.items()): 1,
        frozenset({**server, "http.response.status_code": 202}.items()): 1,
    }
    assert metric.unit == "s"


def test_delivery_duration_is_recorded_once_per_delivered_message(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """courier_analytics.delivery.duration: a point for each delivered message, over the native
    sender's callback path and the general path alike, none for a failed one."""
    server = LoopbackServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = Client(api_key="k", base_url=server.url, meter_provider=provider)
    try:
        for n in range(20):  # one at a time: all but the first on the idle connection
            client.track("E", user_id=f"u{n % 3}")
            assert client.flush(30)
    finally:
        client.shutdown()
        server.shutdown()
        server.server_close()
    refused = make_client(
        FakeCourier(lambda *_: httpx.Response(400)), meter_provider=provider
    )  # a second client on the same provider: its failure records no delivery
    refused.track("E", user_id="u1")
    assert refused.flush(10)

    metric = collect(reader)["courier_analytics.delivery.duration"]
    (point,) = metric.data.data_points

    assert point.count == 20
    assert 0 < point.sum < 20 * 30
    assert metric.unit == "s"
    assert by_outcome(collect(reader)["courier_analytics.messages"])["failed"] == 1


class HoldingCourier(FakeCourier):
    """Holds every request until its gate opens; `arrived` is released once per request."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.clear()
        self.arrived = threading.Semaphore(0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.arrived.release()
        return await super().handle_async_request(request)


def test_pending_and_requests_in_flight_are_observed(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """courier_analytics.pending and http.client.active_requests read the client at collection."""
    courier = HoldingCourier()
    client = make_client(courier, base_url="http://127.0.0.1:8787", meter_provider=provider)
    try:
        for n in range(3):
            client.track("E", user_id=f"u{n}")
        for _ in range(3):
            assert courier.arrived.acquire(timeout=30)
        held = collect(reader)
    finally:
        courier.gate.set()
    assert client.flush(10)
    after = collect(reader)

    in_flight = {"server.address": "127.0.0.1", "server.port": 8787}
    assert values(held["courier_analytics.pending"]) == {frozenset(): 3}
    assert values(held["http.client.active_requests"]) == {frozenset(in_flight.items()): 3}
    assert values(after["courier_analytics.pending"]) == {frozenset(): 0}
    assert values(after["http.client.active_requests"]) == {frozenset(in_flight.items()): 0}


def test_clients_on_one_provider_share_instruments_and_are_summed(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Two clients on one provider: one series per outcome, their sum."""
    clients = [make_client(FakeCourier(), meter_provider=provider) for _ in range(2)]
    for client in clients:
        client.track("E", user_id="u1")
        assert client.flush(10)

    assert by_outcome(collect(reader)["courier_analytics.messages"])["delivered"] == 2


def test_every_instrument_is_listed_with_its_unit(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """What is collected is exactly INSTRUMENTS (spooled only once Stats has it), units too."""
    client = make_client(FakeCourier(), meter_provider=provider)
    client.track("E", user_id="u1")
    assert client.flush(10)

    metrics = collect(reader)

    expected = set(INSTRUMENTS)
    if not hasattr(client.stats, "spooled"):
        expected.discard("courier_analytics.spooled")
    assert set(metrics) == expected
    assert {name: metric.unit for name, metric in metrics.items()} == {
        name: INSTRUMENTS[name][1] for name in metrics
    }


def test_a_meter_provider_that_is_not_one_is_refused() -> None:
    """meter_provider must have get_meter: a clear ConfigurationError names the option."""
    with pytest.raises(ConfigurationError, match="meter_provider must be an OpenTelemetry"):
        Client(api_key="k", meter_provider="prometheus")  # type: ignore[arg-type]


def test_the_global_meter_provider_is_used_by_default() -> None:
    """Without meter_provider, a client records through the global provider set by the app."""
    result = run_python(
        textwrap.dedent(
            """
        import json
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        import courier_analytics

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        client = courier_analytics.Client(api_key="k", send=False)
        client.track("E", user_id="u1")
        skipped = {"outcome": "skipped"}
        names = {
            m.name: [p.value for p in m.data.data_points if dict(p.attributes) == skipped]
            for r in reader.get_metrics_data().resource_metrics
            for s in r.scope_metrics
            for m in s.metrics
        }
        print(json.dumps(names["courier_analytics.messages"]))
        """
        )
    )

    assert result == [1]  # type: ignore[comparison-overlap]


def test_without_opentelemetry_nothing_is_recorded_or_imported() -> None:
    """With opentelemetry-api absent, a client delivers and records nothing, at no import."""
    result = run_python(
        textwrap.dedent(
            """
        import json, sys
        sys.modules["opentelemetry"] = None  # as if not installed: importing it fails
        import courier_analytics

        client = courier_analytics.Client(api_key="k", send=False)
        client.track("E", user_id="u1")
        print(json.dumps({"loaded": "opentelemetry.metrics" in sys.modules,
                          "skipped": client.stats.skipped}))
        """
        )
    )

    assert result == {"loaded": False, "skipped": 1}


def test_a_client_made_before_the_app_sets_opentelemetry_up_records_once_it_has() -> None:
    """A client made before the app sets a global provider records through it afterwards."""
    code = ONE_ANSWER + textwrap.dedent(
        """
        import json, sys
        import courier_analytics

        client = courier_analytics.Client(api_key="k", base_url=url, flush_at_exit=False)
        before = "opentelemetry.metrics" in sys.modules

        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        client.track("Signed Up", user_id="u1")
        client.flush(30)
        names = {
            m.name: [p.value for p in m.data.data_points
                     if dict(p.attributes).get("outcome") == "delivered"]
            for r in reader.get_metrics_data().resource_metrics
            for s in r.scope_metrics
            for m in s.metrics
        }
        print(json.dumps({"before": before,
                          "delivered": names.get("courier_analytics.messages")}))
        """
    )

    assert run_python(code) == {"before": False, "delivered": [1]}


def test_the_prometheus_example_serves_every_documented_metric() -> None:
    """docs/monitoring.md's Prometheus example runs; its scrape has each metric the page names."""
    pytest.importorskip("opentelemetry.exporter.prometheus")
    page = (Path(__file__).resolve().parents[2] / "docs" / "monitoring.md").read_text()
    example = page.split("<!-- no-run -->\n```python\n", 1)[1].split("```", 1)[0]
    documented = set(re.findall(r"\((?:Prometheus: )?`([a-z_]+)`\)", page))
    # Port 0 on 127.0.0.1 in the test: any free port, nothing served beyond this machine.
    example = example.replace("port=9464)", 'port=0, addr="127.0.0.1")')
    code = ONE_ANSWER + textwrap.dedent(
        """
        import json, os
        os.environ.update(COURIER_API_KEY="k", COURIER_BASE_URL=url)
        """
    )
    code += example + textwrap.dedent(
        """
        import prometheus_client
        analytics.flush(30)
        print(json.dumps(prometheus_client.generate_latest().decode()))
        """
    )

    scrape = run_python(code)

    assert "courier_analytics_messages_total{" in scrape
    assert re.search(r'outcome="delivered"} 1\.0', scrape)
    assert len(documented) == len(INSTRUMENTS)  # the page names each instrument
    if "spooled" not in Stats.__match_args__:
        documented.discard("courier_analytics_spooled")
    assert {name for name in documented if not re.search(rf"^{name}[{{_ ]", scrape, re.M)} == set()


def test_a_rebuilt_client_is_counted_once(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """A client rebuilt in place (adopting shared plugins, or after fork) is observed once."""
    client = make_client(FakeCourier(), meter_provider=provider)
    client._after_fork_in_child()  # rebuilds the client's worker, as in a forked child
    client.track("E", user_id="u1")
    assert client.flush(10)

    assert by_outcome(collect(reader)["courier_analytics.messages"])["delivered"] == 1


def test_counts_survive_a_module_setting_that_rebuilds_the_default_client(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """The default client rebuilt by a new setting: the counter goes on from its count."""
    analytics.api_key, analytics.send, analytics.meter_provider = "k", False, provider
    analytics.track("E", user_id="u1")
    analytics.event_prefix = "Other:"  # rebuilds the default client at the next call
    analytics.track("E", user_id="u1")
    for thread in threading.enumerate():  # the old client is shut down in the background
        if thread.name == "courier-analytics-retire":
            thread.join(30)
    gc.collect()  # and then collected

    assert by_outcome(collect(reader)["courier_analytics.messages"])["skipped"] == 2


def test_messages_left_at_shutdown_keep_no_start_time(provider: MeterProvider) -> None:
    """A message reported as not delivered at shutdown leaves no start time in the recorder."""
    courier = HoldingCourier()
    client = make_client(courier, meter_provider=provider)
    client.track("E", user_id="u1")
    client.track("E", user_id="u2")
    assert courier.arrived.acquire(timeout=10)
    client.shutdown(timeout=0)
    courier.gate.set()
    recorder = client._worker.metrics
    assert recorder is not None
    assert client.stats.failed == 2
    assert recorder._made == {}


def test_clients_attached_before_and_after_the_provider_is_set_are_all_counted() -> None:
    """One made while the API was loaded but no provider set, one after: both counted."""
    code = textwrap.dedent(
        """
        import json
        from tests.client.fakes import FakeCourier, make_client

        courier = FakeCourier()
        early = make_client(courier, flush_at_exit=False)
        from opentelemetry import metrics  # the app builds its provider: not set yet
        early.track("Signed Up", user_id="u1")
        early.flush(30)  # its worker attaches to the global provider (still a proxy)

        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        metrics.set_meter_provider(provider)
        late = make_client(courier, flush_at_exit=False)
        given = make_client(courier, flush_at_exit=False, meter_provider=provider)
        for client in (late, given):
            client.track("Signed Up", user_id="u2")
            client.flush(30)
        print(json.dumps([
            [p.value for p in m.data.data_points
             if dict(p.attributes).get("outcome") == "delivered"]
            for r in reader.get_metrics_data().resource_metrics
            for s in r.scope_metrics
            for m in s.metrics
            if m.name == "courier_analytics.messages"
        ]))
        """
    )

    assert run_python(code) == [[3]]


def test_a_deferred_recorder_closed_while_it_attaches_observes_nothing(
    provider: MeterProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() while the worker is attaching: the recorder it attaches is closed too."""
    from courier_analytics import _metrics

    attaching, go_on = threading.Event(), threading.Event()
    attach = _metrics._attach

    def slow_attach(_provider: Any, *args: Any) -> _metrics.Recorder:
        attaching.set()
        go_on.wait()
        return attach(provider, *args)

    monkeypatch.setattr(_metrics, "_attach", slow_attach)
    deferred = _metrics._Deferred(lambda: NO_STATS, lambda: 0, "https://api.courier.com")
    worker = threading.Thread(target=deferred.request, args=(0.1, 202, None))
    worker.start()
    attaching.wait()
    deferred.close()  # the client is rebuilt or forked meanwhile
    go_on.set()
    worker.join()

    assert list(_metrics._instruments[provider].recorders) == []


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_fork_while_another_thread_attaches_a_recorder_does_not_hang_the_child() -> None:
    """fork() while a thread holds the metrics lock (a worker attaching): the child goes on."""
    code = textwrap.dedent(
        """
        import json, os, select, threading
        from opentelemetry.sdk.metrics import MeterProvider
        from courier_analytics import _metrics
        from tests.client.fakes import FakeCourier, make_client

        client = make_client(FakeCourier(), meter_provider=MeterProvider(), flush_at_exit=False)
        held, release = threading.Event(), threading.Event()

        def attaching():
            with _metrics._lock:
                held.set()
                release.wait()

        thread = threading.Thread(target=attaching)
        thread.start()
        held.wait()
        ready, tell = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(tell, b"1")  # reached only once the child's client is rebuilt
            os._exit(0)
        release.set()
        """
    )
    code += CHILD_HUNG

    assert run_python(code) == {"hung": False}
