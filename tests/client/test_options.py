"""Client options: defaults, environment, validation and keeping the key secret."""

from __future__ import annotations

import logging

import httpx
import pytest

from courier_analytics import Client, ConfigurationError, Options

from .fakes import FakeCourier, make_client

KEY = "sk_live_SECRET_7f3a9"


def test_api_key_is_required_to_send() -> None:
    """Without a key anywhere, Client() raises ConfigurationError naming api_key."""
    with pytest.raises(ConfigurationError, match="api_key is required"):
        Client()


def test_api_key_is_read_from_courier_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """COURIER_API_KEY supplies the key."""
    monkeypatch.setenv("COURIER_API_KEY", "from-env")
    assert Client().options.resolved_api_key() == "from-env"


def test_courier_auth_token_is_accepted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """COURIER_AUTH_TOKEN supplies the key when COURIER_API_KEY is unset."""
    monkeypatch.setenv("COURIER_AUTH_TOKEN", "token")
    assert Client().options.resolved_api_key() == "token"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("route", "batch"),
        ("region", "asia"),
        ("max_queue_size", 0),
        ("max_in_flight", -1),
        ("timeout", 0),
        ("on_error", "print"),
        ("max_retries", -1),
        ("base_url", "ftp://example.com"),
    ],
)
def test_invalid_options_raise_configuration_error_naming_them(option: str, value: object) -> None:
    """Each invalid option raises ConfigurationError (a ValueError) naming it."""
    with pytest.raises(ConfigurationError, match=option):
        Client(api_key="k", **{option: value})  # type: ignore[arg-type]


def test_plain_http_to_another_host_is_refused() -> None:
    """http:// to a non-loopback host is refused: the key would travel in clear."""
    with pytest.raises(ConfigurationError, match="unencrypted"):
        Client(api_key="k", base_url="http://courier.internal")


def test_plain_http_is_allowed_when_explicitly_asked() -> None:
    """allow_insecure_http=True lets http:// through."""
    client = Client(api_key="k", base_url="http://courier.internal", allow_insecure_http=True)
    assert client.options.resolved_base_url() == "http://courier.internal"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:2"])
def test_plain_http_to_this_machine_is_fine(url: str) -> None:
    """http:// to loopback (the local stand-in) needs no opt-in."""
    assert Client(api_key="k", base_url=url).options.resolved_base_url() == url


def test_key_is_not_in_repr_of_client_or_options() -> None:
    """repr() of the client and its options never shows the key."""
    client = Client(api_key=KEY)
    assert KEY not in repr(client)
    assert KEY not in repr(client.options)
    assert KEY not in repr(Options(api_key=KEY))


def test_key_never_reaches_log_lines_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG, through retries and failures, no log line or reported error holds the key."""
    errors: list[BaseException] = []

    def rule(request: httpx.Request, body: dict[str, object], attempt: int) -> httpx.Response:
        return httpx.Response(401 if body.get("event") == "Bad" else 503, json={"message": "no"})

    client = make_client(
        FakeCourier(rule), api_key=KEY, debug=True, on_error=lambda e, m: errors.append(e)
    )
    with caplog.at_level(logging.DEBUG, "courier_analytics"), client:
        client.identify("u1", {"email": "a@example.com"})
        client.track("Bad", user_id="u1")
        client.page("Home", user_id="u1")
        client.flush(5)
    assert errors
    assert caplog.records
    for text in [r.getMessage() for r in caplog.records] + [repr(e) for e in errors]:
        assert KEY not in text
        assert "a@example.com" not in text  # nor payloads


def test_from_options_builds_an_equivalent_client() -> None:
    """Client.from_options rebuilds a client with the same options."""
    client = Client(api_key="k", route="api", max_in_flight=3)
    assert Client.from_options(client.options).options == client.options
