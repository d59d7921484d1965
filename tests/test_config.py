"""Settings come from defaults < TOML file < .env < environment, and bad values are named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wikipulse.config import ConfigError, load_settings, parse_users
from wikipulse.stores import STORES, make_store

HASH = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$3e0M1Bq6dX6k4mZ6Yq1nVg"
SECRET = "s" * 32


def test_defaults() -> None:
    """With nothing configured, the documented defaults apply."""
    s = load_settings({}, env_file=None)
    assert (s.host, s.port, s.store, s.jwt_ttl_seconds) == ("0.0.0.0", 7000, "sqlite", 3600)  # noqa: S104
    assert s.stream_url == "https://stream.wikimedia.org/v2/stream/recentchange"
    assert s.user_agent.startswith("wikipulse/")
    assert "https://" in s.user_agent
    assert s.jwt_secret is None
    assert s.users == {}


def test_precedence_file_then_dotenv_then_environment(tmp_path: Path) -> None:
    """The environment beats .env, which beats the TOML file, which beats the defaults."""
    toml = tmp_path / "wikipulse.toml"
    toml.write_text('port = 7001\nhost = "127.0.0.1"\njwt_ttl_seconds = 60\nlog_level = "DEBUG"\n')
    dotenv = tmp_path / ".env"
    dotenv.write_text("WIKIPULSE_PORT=7002\nWIKIPULSE_JWT_TTL_SECONDS=120\n")
    s = load_settings({"WIKIPULSE_PORT": "7003"}, config_file=toml, env_file=dotenv)
    assert (s.port, s.jwt_ttl_seconds, s.host, s.log_level) == (7003, 120, "127.0.0.1", "DEBUG")


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    """WIKIPULSE_CONFIG names the TOML file when no path is passed."""
    toml = tmp_path / "c.toml"
    toml.write_text("port = 7100\n")
    assert load_settings({"WIKIPULSE_CONFIG": str(toml)}, env_file=None).port == 7100


def test_users_with_commas_inside_hashes() -> None:
    """WIKIPULSE_USERS splits entries at commas between entries, not inside argon2 parameters."""
    users = load_settings({"WIKIPULSE_USERS": f"alice:{HASH}, bob:{HASH}"}, env_file=None).users
    assert users == {"alice": HASH, "bob": HASH}


@pytest.mark.parametrize(
    "bad", ["alice", "alice:plaintext", f"alice:{HASH};bob:{HASH}", ":" + HASH]
)
def test_malformed_users_are_refused(bad: str) -> None:
    """A users entry that is not name:argon2hash is an error."""
    with pytest.raises(ValueError, match=r"argon2|separated"):
        parse_users(bad)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"WIKIPULSE_PORT": "seventy"}, "WIKIPULSE_PORT"),
        ({"WIKIPULSE_PORT": "70000"}, "WIKIPULSE_PORT"),
        ({"WIKIPULSE_JWT_SECRET": "too-short"}, "WIKIPULSE_JWT_SECRET"),
        ({"WIKIPULSE_JWT_SECRET": "changeme"}, "WIKIPULSE_JWT_SECRET"),
        ({"WIKIPULSE_JWT_TTL_SECONDS": "0"}, "WIKIPULSE_JWT_TTL_SECONDS"),
        ({"WIKIPULSE_USERS": "root:hunter2"}, "WIKIPULSE_USERS"),
        ({"WIKIPULSE_STORE": "mongodb"}, "WIKIPULSE_STORE"),
        ({"WIKIPULSE_STREAM_URL": "ftp://x"}, "WIKIPULSE_STREAM_URL"),
        ({"WIKIPULSE_USER_AGENT": "python-httpx/0.28.1"}, "WIKIPULSE_USER_AGENT"),
        ({"WIKIPULSE_LOG_FORMAT": "xml"}, "WIKIPULSE_LOG_FORMAT"),
        (
            {"WIKIPULSE_STORE": "cassandra", "WIKIPULSE_DEDUP_WINDOW": "300001"},
            "WIKIPULSE_DEDUP_WINDOW",
        ),
    ],
)
def test_invalid_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    """Each invalid value raises ConfigError whose message names the setting."""
    with pytest.raises(ConfigError, match=setting):
        load_settings(env, env_file=None)


def test_a_good_secret_is_kept_secret() -> None:
    """A 32-byte secret is accepted and not shown in the settings' repr."""
    s = load_settings({"WIKIPULSE_JWT_SECRET": SECRET}, env_file=None)
    assert s.jwt_secret is not None
    assert s.jwt_secret.get_secret_value() == SECRET
    assert SECRET not in repr(s)


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    """A named config file that is missing or not TOML is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, config_file=tmp_path / "nope.toml", env_file=None)
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_settings({}, config_file=broken, env_file=None)


def test_unknown_keys_in_the_config_file_are_refused(tmp_path: Path) -> None:
    """A misspelt key in the TOML file is an error, not silently ignored."""
    toml = tmp_path / "c.toml"
    toml.write_text("prot = 7000\n")
    with pytest.raises(ConfigError, match="WIKIPULSE_PROT"):
        load_settings({}, config_file=toml, env_file=None)


def test_serve_with_an_invalid_setting_exits_2_naming_it(tmp_path: Path) -> None:
    """`wikipulse serve` with a bad port exits 2, names the setting, and starts nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "wikipulse", "serve"],
        env={"WIKIPULSE_PORT": "not-a-port", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "WIKIPULSE_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stderr


def test_other_tools_variables_in_dotenv_are_ignored(tmp_path: Path) -> None:
    """A .env shared with docker compose may hold other variables; only ours are read."""
    dotenv = tmp_path / ".env"
    dotenv.write_text("COMPOSE_PROJECT_NAME=wp\nWIKIPULSE_PORT=7001\n")
    assert load_settings({}, env_file=dotenv).port == 7001


def test_a_misspelt_setting_in_dotenv_is_refused(tmp_path: Path) -> None:
    """An unknown WIKIPULSE_ variable in .env is an error naming it, not silently ignored."""
    dotenv = tmp_path / ".env"
    dotenv.write_text("WIKIPULSE_PORTT=7001\n")
    with pytest.raises(ConfigError, match="WIKIPULSE_PORTT"):
        load_settings({}, env_file=dotenv)


@pytest.mark.parametrize("name", list(STORES))
def test_every_registered_store_is_a_valid_setting_and_builds(name: str) -> None:
    """Each store in the registry is accepted by the settings and builds its adapter class."""
    settings = load_settings({"WIKIPULSE_STORE": name}, env_file=None)
    assert settings.store == name
    assert type(make_store(settings)).__name__ == STORES[name].cls


def test_replay_offers_exactly_the_registered_stores() -> None:
    """`replay --store` lists the registry's stores, no more and no fewer."""
    from wikipulse.cli import _parser

    replay = _parser()._subparsers._group_actions[0].choices["replay"]  # type: ignore[union-attr]
    (store,) = [a for a in replay._actions if a.dest == "store"]
    assert tuple(store.choices or ()) == tuple(STORES)


def test_a_large_dedup_window_is_refused_for_cassandra_only() -> None:
    """The cap is Cassandra's (its commit carries the window's ids); other stores take more."""
    env = {"WIKIPULSE_STORE": "cassandra", "WIKIPULSE_DEDUP_WINDOW": "300000"}
    assert load_settings(env, env_file=None).dedup_window == 300_000
    env = {"WIKIPULSE_STORE": "sqlite", "WIKIPULSE_DEDUP_WINDOW": "1000000"}
    assert load_settings(env, env_file=None).dedup_window == 1_000_000
