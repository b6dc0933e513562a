"""Client options: defaults, environment, validation and keeping the key secret."""

from __future__ import annotations

import inspect
import logging

import httpx
import pytest

import courier_analytics
from courier_analytics import Client, ConfigurationError, Options, _options, segment

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


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_plain_http_is_allowed_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """COURIER_ANALYTICS_ALLOW_INSECURE_HTTP=1 (or true/yes/on) lets http:// through."""
    monkeypatch.setenv("COURIER_ANALYTICS_ALLOW_INSECURE_HTTP", value)
    client = Client(api_key="k", base_url="http://courier-dev:8000")
    assert client.options.resolved_base_url() == "http://courier-dev:8000"


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_plain_http_stays_refused_when_the_environment_says_no(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """The variable set to 0/false/no/off/empty refuses http:// as the default does."""
    monkeypatch.setenv("COURIER_ANALYTICS_ALLOW_INSECURE_HTTP", value)
    with pytest.raises(ConfigurationError, match="COURIER_ANALYTICS_ALLOW_INSECURE_HTTP=1"):
        Client(api_key="k", base_url="http://courier-dev:8000")


def test_allow_insecure_http_given_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """allow_insecure_http=False refuses http:// even when the variable allows it."""
    monkeypatch.setenv("COURIER_ANALYTICS_ALLOW_INSECURE_HTTP", "1")
    with pytest.raises(ConfigurationError, match="unencrypted"):
        Client(api_key="k", base_url="http://courier-dev:8000", allow_insecure_http=False)


def test_allow_insecure_http_variable_with_a_bad_value_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value that is not yes/no raises ConfigurationError naming the variable."""
    monkeypatch.setenv("COURIER_ANALYTICS_ALLOW_INSECURE_HTTP", "sure")
    with pytest.raises(ConfigurationError, match=r"COURIER_ANALYTICS_ALLOW_INSECURE_HTTP.*'sure'"):
        Client(api_key="k", base_url="http://courier-dev:8000")


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


def test_from_options_of_a_subclass_runs_its_init() -> None:
    """A subclass's from_options goes through the subclass's own __init__."""

    class Tagged(Client):
        def __init__(self, **options: object) -> None:
            super().__init__(**options)  # type: ignore[arg-type]
            self.tag = "billing"

    client = Tagged.from_options(Options(api_key="k", send=False, max_in_flight=3))
    assert (type(client), client.tag, client.options.max_in_flight) == (Tagged, "billing", 3)


#: Keys with a character no Courier key has; each holds the secret part of KEY.
BAD_KEYS = {
    "vertical-tab": KEY + "\x0b",
    "nul": KEY[:4] + "\x00" + KEY[4:],
    "escape": "\x1b" + KEY,
    "delete": KEY + "\x7f",
    "tab": KEY + "\t",
    "newline": KEY + "\n",
    "space": KEY[:7] + " " + KEY[7:],
    "non-ascii": KEY + "é",
    "zero-width-space": KEY + "\u200b",
}


@pytest.mark.parametrize("key", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
def test_a_key_that_is_not_printable_ascii_is_refused_without_echoing_it(key: str) -> None:
    """Client(api_key=...) refuses control characters, spaces and non-ASCII, not showing the key."""
    with pytest.raises(ConfigurationError, match=r"^api_key has .* at position \d+") as info:
        Client(api_key=key)
    assert "SECRET" not in str(info.value)
    assert "SECRET" not in repr(info.value)


def test_a_bad_key_from_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad COURIER_API_KEY is refused naming the variable, not the key."""
    monkeypatch.setenv("COURIER_API_KEY", KEY + "\r")
    with pytest.raises(ConfigurationError, match="COURIER_API_KEY environment variable") as info:
        Client()
    assert "SECRET" not in str(info.value)


def test_a_bad_key_in_module_settings_is_refused_at_the_first_call() -> None:
    """courier_analytics.api_key with a control character: the call is reported, keyless."""
    errors: list[BaseException] = []
    courier_analytics.on_error = lambda error, message: errors.append(error)
    courier_analytics.api_key = KEY + "\x0b"
    courier_analytics.track("Signed Up", user_id="u1")
    assert [type(error) for error in errors] == [ConfigurationError]
    assert "control character" in str(errors[0])
    assert "SECRET" not in str(errors[0])
    with pytest.raises(ConfigurationError, match="control character") as info:
        courier_analytics.default_client()
    assert "SECRET" not in str(info.value)


def test_a_bad_write_key_is_refused_by_the_segment_drop_in() -> None:
    """The Segment drop-in refuses such a write_key (InvalidArgumentError, ConfigurationError)."""
    with pytest.raises(segment.InvalidArgumentError, match="control character") as info:
        segment.Client(write_key=KEY + "\x1b")
    assert isinstance(info.value.__cause__, ConfigurationError)
    assert "SECRET" not in str(info.value)
    segment.write_key = "\x7f" + KEY
    try:
        with pytest.raises(segment.InvalidArgumentError, match="control character") as info:
            segment.track("u1", "Signed Up")
    finally:
        segment.write_key = None
    assert "SECRET" not in str(info.value)


def test_a_non_str_key_is_refused() -> None:
    """A key of another type (bytes) raises ConfigurationError naming api_key's type."""
    with pytest.raises(ConfigurationError, match="api_key must be a str, not bytes"):
        Client(api_key=b"sk_live_SECRET")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://api courier.com", "spaces or control characters"),
        ("https://api.courier.com/v1 x", "spaces or control characters"),
        ("https://api.courier.com/\t", "spaces or control characters"),
        ("https://bücher.example", "'xn--bcher-kva.example'"),
        ("https://api.courier.com/pfäd", "must be ASCII"),
        ("https://api.courier.com/?region=eu", "query string"),
        ("https://api.courier.com?", "query string"),
        ("https://api.courier.com/#top", "fragment"),
        ("https://user:pw-SECRET@api.courier.com", "credentials"),
        ("https://sk_live_SECRET@api.courier.com", "credentials"),
        ("https://api.courier.com:99999", "not a valid URL"),
        ("https://api.courier.com:port", "not a valid URL"),
        ("https://[::1", "not a valid URL"),
        ("https://", "with a host"),
        ("https://api..courier.com", "not a valid host name"),
        ("https://.courier.com", "not a valid host name"),
        ("https://" + "a" * 64 + ".courier.com", "not a valid host name"),
    ],
)
def test_a_base_url_that_requests_would_mangle_is_refused(url: str, words: str) -> None:
    """Spaces, non-ASCII, queries, fragments, userinfo, bad ports and hosts fail at construction."""
    with pytest.raises(ConfigurationError, match=r"^base_url ") as info:
        Client(api_key="k", base_url=url)
    assert words in str(info.value)
    assert "SECRET" not in str(info.value)


def test_a_bad_base_url_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad COURIER_BASE_URL is refused naming the variable."""
    monkeypatch.setenv("COURIER_BASE_URL", "https://api.courier.com/?x=1")
    with pytest.raises(ConfigurationError, match=r"^the COURIER_BASE_URL environment variable"):
        Client(api_key="k")


@pytest.mark.parametrize(
    "url",
    ["https://api.courier.com", "https://api.eu.courier.com/", "https://gw.example/courier/v1",
     "https://xn--bcher-kva.example:8443/a%20b", "http://[::1]:8080"],
)  # fmt: skip
def test_ordinary_base_urls_are_accepted(url: str) -> None:
    """Hosts, ports, path prefixes, IDNA hosts and percent-encoded paths are fine."""
    assert Client(api_key="k", base_url=url).options.resolved_base_url() == url


def test_client_takes_exactly_the_options_fields_with_the_same_defaults() -> None:
    """Client.__init__'s keyword parameters are Options' fields, names, order and defaults."""
    parameters = list(inspect.signature(Client.__init__).parameters.values())[1:]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    fields = list(inspect.signature(Options).parameters.values())
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in fields)
    assert [p.name for p in parameters] == [p.name for p in fields] == list(Options.__match_args__)
    assert {p.name: p.default for p in parameters} == {p.name: p.default for p in fields}


def test_the_key_sent_is_the_key_checked_though_the_environment_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The environment is read once, at construction: a later COURIER_API_KEY is not sent."""
    monkeypatch.setenv("COURIER_API_KEY", "checked-key")
    courier = FakeCourier()
    with make_client(courier, api_key=None) as client:
        monkeypatch.setenv("COURIER_API_KEY", "a key with spaces")  # would fail the check
        client.track("E", user_id="u")  # the worker starts, and makes its sender, now
        assert client.flush(10)
    assert [r.headers["authorization"] for r in courier.requests] == ["Bearer checked-key"]
    assert client.options.resolved_api_key() == "checked-key"


def test_the_url_used_is_the_url_checked_though_the_environment_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """COURIER_BASE_URL is read once, at construction, for the check and for the requests."""
    monkeypatch.setenv("COURIER_BASE_URL", "https://courier.example")
    courier = FakeCourier()
    with make_client(courier) as client:
        monkeypatch.setenv("COURIER_BASE_URL", "http://elsewhere.example")  # would be refused
        client.track("E", user_id="u")
        assert client.flush(10)
    assert [str(r.url) for r in courier.requests] == ["https://courier.example/inbound/courier"]


def test_options_are_built_once_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Client(...) and Client.from_options check the options once, and keep that value."""
    built: list[Options] = []
    check = Options._check

    def counted(self: Options) -> None:
        check(self)
        built.append(self)

    monkeypatch.setattr(Options, "_check", counted)
    client = Client(api_key="k", send=False)
    assert built == [client.options]
    options = Options(api_key="k", send=False)
    assert Client.from_options(options).options is options
    assert len(built) == 2


def test_every_check_names_an_option() -> None:
    """The table of checks names only Options' fields, in their order (a typo checks nothing)."""
    names = [name for name in Options.__match_args__ if name in _options._CHECKS]
    assert list(_options._CHECKS) == names
