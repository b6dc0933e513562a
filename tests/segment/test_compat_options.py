"""Client options and module settings: Segment's, mapped onto the Courier client."""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from typing import ClassVar

import httpx
import pytest

from courier_analytics import segment

from .conftest import FakeCourier


def test_write_key_missing_raises_assertion_error() -> None:
    """No write key anywhere while sending raises AssertionError, as Segment's require()."""
    with pytest.raises(AssertionError, match="write_key is required"):
        segment.Client()


def test_write_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without write_key, COURIER_API_KEY is used."""
    monkeypatch.setenv("COURIER_API_KEY", "env-key")
    assert segment.Client().courier_client.options.resolved_api_key() == "env-key"


def test_write_key_must_be_a_string() -> None:
    """A write_key that is not a str raises AssertionError."""
    with pytest.raises(AssertionError, match="write_key"):
        segment.Client(123)  # type: ignore[arg-type]


def test_a_bad_write_key_is_named_write_key() -> None:
    """A write_key with a space is refused in the drop-in's words: write_key, not api_key."""
    with pytest.raises(segment.InvalidArgumentError, match=r"^write_key has a space") as info:
        segment.Client("pk bad")
    assert "api_key" not in str(info.value)


def test_a_plain_http_host_is_named_host() -> None:
    """A plain http:// host is refused naming host and courier_options, not core names."""
    with pytest.raises(segment.InvalidArgumentError, match=r"^host uses plain http://") as info:
        segment.Client("k", host="http://courier.internal")
    assert "courier_options={'allow_insecure_http': True}" in str(info.value)
    assert "base_url" not in str(info.value)


def test_a_core_option_given_through_courier_options_keeps_its_name() -> None:
    """base_url set in courier_options is named base_url: that is what the user wrote."""
    with pytest.raises(segment.InvalidArgumentError, match=r"^base_url uses plain http://"):
        segment.Client("k", courier_options={"base_url": "http://courier.internal"})


@pytest.mark.parametrize("name", ["max_total_backoff_duration", "max_rate_limit_duration"])
def test_negative_durations_raise_value_error(name: str) -> None:
    """Negative backoff durations raise ValueError, as in Segment."""
    with pytest.raises(ValueError, match=name):
        segment.Client("k", **{name: -1})  # type: ignore[arg-type]


def test_options_meaningless_for_courier_are_accepted() -> None:
    """gzip, thread, upload_size, OAuth and rate-limit options are accepted and ignored."""
    client = segment.Client(
        "k",
        gzip=True,
        thread=4,
        upload_size=50,
        oauth_client_id="id",
        oauth_client_key="key",
        oauth_key_id="kid",
        oauth_auth_server="https://oauth.example",
        oauth_scope="scope",
        max_rate_limit_duration=60,
        send=False,
    )
    assert client.track("u1", "Clicked")[0] is True


def test_options_map_to_the_courier_client() -> None:
    """timeout, max_retries, max_queue_size, upload_interval and backoff map to core options."""
    client = segment.Client(
        "k",
        timeout=3,
        max_retries=2,
        max_queue_size=5,
        upload_interval=0.25,
        max_total_backoff_duration=60,
        send=False,
    )
    options = client.courier_client.options
    assert (options.timeout, options.max_retries, options.max_queue_size) == (3, 2, 5)
    assert (options.flush_interval, options.max_retry_time) == (0.25, 60)


def test_proxies_dict_becomes_a_proxy_transport() -> None:
    """A requests-style proxies dict becomes an httpx transport through that proxy."""
    client = segment.Client("k", proxies={"https": "http://127.0.0.1:3128"}, send=False)
    assert isinstance(client.courier_client.options.transport, httpx.AsyncHTTPTransport)


def test_proxies_of_another_scheme_are_ignored() -> None:
    """A proxy for http only leaves https requests direct."""
    client = segment.Client("k", proxies={"http": "http://127.0.0.1:3128"}, send=False)
    assert client.courier_client.options.transport is None


def test_proxies_of_wrong_type_raise() -> None:
    """proxies that are neither a dict nor a URL raise AssertionError."""
    with pytest.raises(AssertionError, match="proxies"):
        segment.Client("k", proxies=3128, send=False)  # type: ignore[arg-type]


class _RecordingProxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy that answers every request itself and records its target."""

    targets: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.targets.append(self.path)  # absolute-form: the proxy sees the full URL
        body = b'{"messageId": "m"}'
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def proxy_port() -> Iterator[int]:
    """A recording forward proxy on 127.0.0.1; yields its port."""
    _RecordingProxy.targets = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_scheme_less_proxies_are_http_proxies_as_requests_reads_them(proxy_port: int) -> None:
    """{"http": "host:port"} (no scheme, as requests accepts) sends through http://host:port."""
    address = f"127.0.0.1:{proxy_port}"
    client = segment.Client(
        "k", host="http://127.0.0.1:9", sync_mode=True, proxies={"http": address, "https": address}
    )
    ok, _ = client.track("u1", "Clicked")
    assert ok
    assert _RecordingProxy.targets == ["http://127.0.0.1:9/inbound/courier"]
    client.shutdown()


@pytest.mark.parametrize(
    "proxy",
    ["http://", "proxy.internal:99999", "proxy internal:3128", "ftp://user:s3cret@proxy:21"],
)
def test_an_invalid_proxy_raises_invalid_argument_error(proxy: str) -> None:
    """A proxy URL without a host, with a bad port or scheme, raises at construction."""
    with pytest.raises(segment.InvalidArgumentError, match=r"proxies\['https'\]") as info:
        segment.Client("k", proxies={"https": proxy}, send=False)
    assert "s3cret" not in str(info.value)


def test_log_handler_receives_debug_records() -> None:
    """log_handler is attached to the library's logger and receives its records."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    client = segment.Client("k", debug=True, send=False, log_handler=handler)
    try:
        client.track("u1", "Clicked")
    finally:
        logging.getLogger("courier_analytics").removeHandler(handler)
    assert any("skipped track" in r.getMessage() for r in records)


def test_courier_options_extend_the_client() -> None:
    """courier_options passes any courier_analytics.Client option through."""
    client = segment.Client("k", send=False, courier_options={"route": "api", "region": "eu"})
    assert client.courier_client.options.route == "api"
    assert client.courier_client.options.resolved_base_url() == "https://api.eu.courier.com"


def test_queue_view_reports_pending(courier: FakeCourier) -> None:
    """client.queue answers qsize(), empty() and full() like Segment's queue."""
    client = segment.Client("k", max_queue_size=3, courier_options={"transport": courier.transport})
    client.track("u1", "Clicked")
    client.flush()
    assert (client.queue.qsize(), client.queue.empty(), client.queue.full()) == (0, True, False)
    assert client.queue.maxsize == 3


def test_join_works_in_sync_mode(courier: FakeCourier) -> None:
    """join() works in sync_mode (Segment's raised TypeError)."""
    client = segment.Client("k", sync_mode=True, courier_options={"transport": courier.transport})
    client.track("u1", "Clicked")
    client.join()
    assert courier.paths == ["/inbound/courier"]


def test_calls_after_shutdown_are_still_delivered(courier: FakeCourier) -> None:
    """After shutdown() a new call starts a fresh worker instead of being lost."""
    client = segment.Client("k", courier_options={"transport": courier.transport})
    client.track("u1", "Before")
    client.shutdown()
    assert client.track("u1", "After")[0] is True
    client.flush()
    assert len(courier.requests) == 2


def test_flush_before_any_call_returns_true() -> None:
    """flush() on a client that never sent anything returns at once."""
    client = segment.Client("k", send=False)
    client.join()
    assert client.flush() is True


# ------------------------------------------------------------- module level


def test_module_functions_use_module_settings(courier: FakeCourier) -> None:
    """Module functions build the default client from the module settings."""
    segment.write_key = "module-key"
    segment.courier_options = {"transport": courier.transport}
    ok, _ = segment.track("u1", "Clicked")
    segment.flush()
    assert ok
    assert courier.requests[0].headers["Authorization"] == "Bearer module-key"
    assert segment.default_client is not None


def test_changing_a_setting_rebuilds_the_default_client(courier: FakeCourier) -> None:
    """A setting changed after the first call is used by the next call, not ignored."""
    segment.write_key = "first"
    segment.courier_options = {"transport": courier.transport}
    segment.identify("u1", {"a": 1})
    first = segment.default_client
    segment.write_key = "second"
    segment.identify("u1", {"a": 2})
    segment.flush()
    assert segment.default_client is not first
    # The first client delivers in the background as it retires, maybe after the second.
    (second,) = [r for r in courier.requests if b'{"a":2}' in r.content]
    assert second.headers["Authorization"] == "Bearer second"


@pytest.mark.parametrize("name", ["flush", "join", "shutdown"])
def test_lifecycle_functions_build_the_default_client_from_the_settings(name: str) -> None:
    """flush, join and shutdown before any call build the default client, as Segment's do."""
    segment.write_key = "module-key"
    segment.send = False
    getattr(segment, name)()
    assert segment.default_client is not None
    assert segment.default_client.write_key == "module-key"


@pytest.mark.parametrize("name", ["flush", "join", "shutdown"])
def test_lifecycle_functions_without_a_write_key_raise_as_segment_does(name: str) -> None:
    """With no write_key anywhere they raise at once, as Segment's require() does."""
    with pytest.raises(AssertionError, match="write_key"):
        getattr(segment, name)()


def test_module_every_call_type(courier: FakeCourier) -> None:
    """Every module function works; on the default route only identify and track are sent."""
    segment.write_key = "k"
    segment.courier_options = {"transport": courier.transport}
    results = [
        segment.identify("u1", {"email": "a@example.com"}),
        segment.track("u1", "Clicked"),
        segment.group("u1", "g1"),
        segment.page("u1", "Docs", "Intro"),
        segment.screen("u1", "App", "Home"),
        segment.alias("anon", "u1"),
    ]
    segment.shutdown()
    assert all(ok for ok, _ in results)
    assert sorted(courier.paths) == ["/inbound/courier", "/profiles/u1"]


def test_assigning_default_client_none_rebuilds() -> None:
    """Setting default_client = None (as Segment's tests do) makes the next call rebuild."""
    segment.write_key = "k"
    segment.send = False
    segment.track("u1", "Clicked")
    segment.default_client = None
    segment.track("u1", "Clicked")
    assert segment.default_client is not None


def test_assigning_a_client_to_default_client_makes_module_functions_use_it() -> None:
    """A Client assigned to default_client (as Segment allows) serves the module functions."""
    mine = segment.Client("mine", send=False)
    segment.default_client = mine
    ok, _ = segment.track("u1", "Clicked")
    assert ok
    assert segment.default_client is mine
    assert mine.stats.made == 1
