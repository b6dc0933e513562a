"""What the web integrations read from a request: client ip, anonymous id, locale, options."""

from __future__ import annotations

from typing import Any

import pytest

import courier_analytics as analytics
from courier_analytics.integrations._http import (
    RequestOptions,
    anonymous_id_from_cookie,
    apply_config,
    client_ip,
    locale_from,
    parse_cookie_header,
)

PROXIES = RequestOptions(trusted_proxies=["10.0.0.0/8", "2001:db8::/32"]).trusted_proxies


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.7", "203.0.113.1", "198.51.100.7"),  # untrusted peer: header ignored
        ("10.0.0.2", None, "10.0.0.2"),  # trusted peer, no header
        ("10.0.0.2", "203.0.113.1", "203.0.113.1"),
        ("10.0.0.2", "1.1.1.1, 203.0.113.1, 10.9.9.9", "203.0.113.1"),  # spoofed left entry
        ("10.0.0.2", "10.1.1.1, 10.2.2.2", "10.1.1.1"),  # all trusted: the leftmost
        ("10.0.0.2", "garbage, 203.0.113.1", "203.0.113.1"),
        ("10.0.0.2", "203.0.113.1, not-an-ip", "10.0.0.2"),  # broken chain: nearest good
        ("2001:db8::5", "[2001:db8:ffff::1]:443, 2001:0db8::9", "2001:db8:ffff::1"),
        ("10.0.0.2", "203.0.113.1:5555", "203.0.113.1"),
    ],
)
def test_client_ip_walks_forwarded_for_only_through_trusted_proxies(
    peer: str, forwarded: str | None, expected: str
) -> None:
    """X-Forwarded-For is read right to left, through trusted proxies only."""
    assert client_ip(peer, forwarded, PROXIES) == expected


UNIX = RequestOptions(trusted_proxies=["unix", "10.0.0.0/8"]).trusted_proxies


@pytest.mark.parametrize(
    ("peer", "forwarded", "proxies", "expected"),
    [
        (None, "203.0.113.1", UNIX, "203.0.113.1"),  # uvicorn on a unix socket: client None
        ("", "203.0.113.1", UNIX, "203.0.113.1"),  # gunicorn: REMOTE_ADDR ""
        ("<local>", "203.0.113.1", UNIX, "203.0.113.1"),  # werkzeug's server on a unix socket
        ("", "1.1.1.1, 203.0.113.1, 10.0.0.9", UNIX, "203.0.113.1"),  # through more proxies
        ("", "10.1.1.1, 10.0.0.9", UNIX, "10.1.1.1"),  # all trusted: the leftmost
        ("", "not-an-ip", UNIX, None),  # nothing known good
        ("", None, UNIX, None),
        (None, "203.0.113.1", PROXIES, None),  # not opted in: the header is anyone's
        ("", "203.0.113.1", (), None),
        ("<local>", "203.0.113.1", (), None),  # no address: "<local>" is not an ip
    ],
)
def test_a_peer_on_a_unix_socket_is_a_trusted_proxy_only_when_opted_in(
    peer: str | None, forwarded: str | None, proxies: tuple[Any, ...], expected: str | None
) -> None:
    """No peer address (a unix socket): X-Forwarded-For is read only with "unix" trusted."""
    assert client_ip(peer, forwarded, proxies) == expected


def test_without_trusted_proxies_forwarded_for_is_never_read() -> None:
    """No trusted_proxies: the socket peer, whatever the header says."""
    assert client_ip("10.0.0.2", "203.0.113.1", ()) == "10.0.0.2"


UUID = "6f0d6a3e-84b1-4c1e-9a57-2b3c4d5e6f70"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"%22{UUID}%22", UUID),  # as analytics.js writes it
        (f'"{UUID}"', UUID),
        (UUID, UUID),  # stored bare by old analytics.js
        (f"%22{UUID.upper()}%22", UUID.upper()),
        ("%221%22", None),  # a guessable user id: never an anonymous id
        ("1", None),
        ("%22ada%40example.com%22", None),
        ("%22abc-123%22", None),
        (f"%22{UUID}x%22", None),
        (f"%22{UUID[:-1]}%22", None),
        ("%22%22", None),
        ("%7B%7D", None),
        ("%22a%5Cu0000b%22", None),
        ("%22unterminated", None),
        ("", None),
        (None, None),
    ],
)
def test_anonymous_id_cookie_values(raw: str | None, expected: str | None) -> None:
    """analytics.js's JSON-encoded, URL-escaped UUID decodes; anything else is ignored."""
    assert anonymous_id_from_cookie(raw) == expected


def test_cookie_header_parsing_is_lenient() -> None:
    """A Cookie header's pairs, first one winning, junk chunks skipped."""
    header = "a=1; ajs_anonymous_id=%22x%22; junk; a=2; b="
    assert parse_cookie_header(header) == {"a": "1", "ajs_anonymous_id": "%22x%22", "b": ""}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("en-US,en;q=0.9", "en-US"),
        ("fr;q=0.5, de-CH;q=0.8", "de-CH"),
        ("*", None),
        ("<script>, en", "en"),
        ("", None),
        (None, None),
    ],
)
def test_locale_is_the_preferred_language_tag(header: str | None, expected: str | None) -> None:
    """Accept-Language gives its highest-q well-formed tag."""
    assert locale_from(header) == expected


def test_bad_trusted_proxies_are_refused_naming_the_option() -> None:
    """A single string or a non-address is a clear error at start-up."""
    with pytest.raises(TypeError, match="trusted_proxies"):
        RequestOptions(trusted_proxies="10.0.0.1")
    with pytest.raises(ValueError, match=r"trusted_proxies: 'proxy\.local'"):
        RequestOptions(trusted_proxies=["proxy.local"])


def test_apply_config_assigns_only_changed_settings() -> None:
    """Settings equal to the current values are not reassigned (no client rebuild)."""
    apply_config({"api_key": "k", "send": False}, "config")
    client = analytics.default_client()
    options = apply_config({"api_key": "k", "send": False, "trusted_proxies": []}, "config")
    assert analytics.default_client() is client
    assert options == RequestOptions()


def test_apply_config_refuses_unknown_names_and_non_mappings() -> None:
    """A misspelt name or a non-dict fails with the name in the message."""
    with pytest.raises(TypeError, match="unknown name\\(s\\) apikey"):
        apply_config({"apikey": "k"}, "config")
    with pytest.raises(TypeError, match="config must be a dict"):
        apply_config(["api_key"], "config")
