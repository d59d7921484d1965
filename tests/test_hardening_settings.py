"""The hardening settings: their defaults, their parsing and the bounds they refuse."""

from __future__ import annotations

import pytest

from wikipulse.config import ConfigError, load_settings
from wikipulse.ratelimit import LoginGuard


def test_defaults_are_the_documented_ones() -> None:
    """Without configuration the limits are 1 MiB, 5 per 5 s, 8 queued, 10 s, 5 s, 1000."""
    settings = load_settings(environ={}, env_file=None)
    assert settings.max_event_bytes == 1024 * 1024
    assert (settings.login_burst, settings.login_interval_seconds) == (5, 5.0)
    assert settings.login_queue_max == 8
    assert settings.trusted_proxies == frozenset()
    assert settings.http_header_timeout_seconds == 10.0
    assert settings.http_keepalive_timeout_seconds == 5
    assert settings.http_max_connections == 1000


def test_trusted_proxies_are_a_comma_separated_list() -> None:
    """WIKIPULSE_TRUSTED_PROXIES takes addresses separated by commas, spaces ignored."""
    settings = load_settings(
        environ={"WIKIPULSE_TRUSTED_PROXIES": " 10.0.0.1, 10.0.0.2 ,,"}, env_file=None
    )
    assert settings.trusted_proxies == frozenset({"10.0.0.1", "10.0.0.2"})
    guard = LoginGuard.from_settings(settings)
    assert guard.trusted_proxies == frozenset({"10.0.0.1", "10.0.0.2"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WIKIPULSE_MAX_EVENT_BYTES", "100"),
        ("WIKIPULSE_LOGIN_BURST", "0"),
        ("WIKIPULSE_LOGIN_INTERVAL_SECONDS", "0"),
        ("WIKIPULSE_LOGIN_QUEUE_MAX", "0"),
        ("WIKIPULSE_HTTP_HEADER_TIMEOUT_SECONDS", "0"),
        ("WIKIPULSE_HTTP_KEEPALIVE_TIMEOUT_SECONDS", "0"),
        ("WIKIPULSE_HTTP_MAX_CONNECTIONS", "0"),
    ],
)
def test_values_out_of_bounds_are_refused_naming_the_setting(name: str, value: str) -> None:
    """A limit of zero (or an event size under 1 KiB) stops start-up with the setting's name."""
    with pytest.raises(ConfigError, match=name):
        load_settings(environ={name: value}, env_file=None)


def test_serve_guards_the_fast_http_parser_where_it_is_installed() -> None:
    """The guarded protocol is httptools' (C parser) when installed, with the limits given."""
    from wikipulse.httpserver import GuardedHttpToolsProtocol, guarded_protocol

    protocol = guarded_protocol(7.0, 12)
    assert issubclass(protocol, GuardedHttpToolsProtocol)
    assert (protocol.header_timeout, protocol.max_connections) == (7.0, 12)
