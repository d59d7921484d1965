"""Settings: one validated, frozen object from defaults < TOML file < `.env` < environment."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from wikipulse import __version__
from wikipulse.stores import STORES

__all__ = ["ENV_PREFIX", "ConfigError", "Settings", "load_settings", "parse_users"]

ENV_PREFIX = "WIKIPULSE_"
WIKIMEDIA_STREAM_URL = "https://stream.wikimedia.org/v2/stream/recentchange"
DEFAULT_USER_AGENT = (
    f"wikipulse/{__version__} (https://github.com/wikipulse/wikipulse; wikipulse@example.org)"
)
# Secrets that are clearly placeholders copied from an example file.
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "change_me", "changethis", "secret", "example"}
# What HTTP libraries send by default; Wikimedia blocks these with 403.
_LIBRARY_AGENTS = re.compile(r"^(python-httpx|python-requests|python-urllib|curl|wget|aiohttp)/")
# `name:$argon2id$v=19$m=65536,t=3,p=4$salt$hash`: the hash itself holds commas.
_USER_ENTRY = re.compile(
    r"\s*([^\s,:]+)\s*:\s*(\$argon2(?:id|i|d)\$[^$]+\$[^$]+\$[^$]+\$[^,\s]+)\s*"
)


class ConfigError(Exception):
    """Raised when the settings cannot be loaded; the message names the setting."""


def parse_users(value: str) -> dict[str, str]:
    """Parse `name:argon2hash,name:argon2hash` into a mapping of user name to hash."""
    users: dict[str, str] = {}
    pos = 0
    while pos < len(value):
        match = _USER_ENTRY.match(value, pos)
        if match is None:
            raise ValueError(
                "expected name:argon2hash[,name:argon2hash...] "
                "(make a hash with `wikipulse hash-password`)"
            )
        users[match.group(1)] = match.group(2)
        pos = match.end()
        if pos < len(value):
            if value[pos] != ",":
                raise ValueError("entries must be separated by commas")
            pos += 1
    return users


#: The largest `dedup_window` the Cassandra store takes (see `_window_fits_a_cassandra_commit`).
CASSANDRA_MAX_DEDUP_WINDOW = 300_000


class Settings(BaseSettings):
    """Every setting of the service; see the README for what each one does."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", validate_default=True
    )

    host: str = "0.0.0.0"  # noqa: S104  # a service in a container listens on every interface
    port: int = Field(7000, ge=1, le=65535)
    stream_url: str = WIKIMEDIA_STREAM_URL
    user_agent: str = DEFAULT_USER_AGENT
    jwt_secret: SecretStr | None = None
    jwt_ttl_seconds: int = Field(3600, ge=1, le=7 * 24 * 3600)
    jwt_issuer: str = "wikipulse"
    jwt_audience: str = "wikipulse-api"
    users: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    store: str = "sqlite"  # a name in wikipulse.stores.STORES
    sqlite_path: str = "wikipulse.db"
    postgres_dsn: SecretStr = SecretStr("postgresql://localhost:5432/wikipulse")
    cassandra_hosts: str = "127.0.0.1"  # comma-separated contact points
    cassandra_port: int = Field(9042, ge=1, le=65535)
    cassandra_keyspace: str = Field("wikipulse", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
    # The replication map of CREATE KEYSPACE, as CQL; NetworkTopologyStrategy in production.
    cassandra_replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    cassandra_consistency: Literal["ONE", "QUORUM", "LOCAL_QUORUM", "ALL", "LOCAL_ONE"] = (
        "LOCAL_QUORUM"
    )
    cassandra_username: str | None = None
    cassandra_password: SecretStr | None = None
    # Name of this ingester; Cassandra keeps one state row per ingester.
    ingester_id: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Whether `serve` creates the schema itself, as `wikipulse migrate` does.
    migrate_on_start: bool = True
    # The stream sends no heartbeats: this long without a byte means the connection is dead.
    stall_timeout_seconds: float = Field(60.0, gt=0)
    connect_timeout_seconds: float = Field(10.0, gt=0)
    backoff_initial_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(60.0, gt=0)
    forbidden_retry_seconds: float = Field(600.0, gt=0)
    dedup_window: int = Field(100_000, ge=1)
    batch_max_events: int = Field(50_000, ge=1)
    batch_max_ms: int = Field(500, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # Hardening (README, Operations). A line or event of the stream longer than this drops
    # the connection; real events are about 1 KB.
    max_event_bytes: int = Field(1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    # Login attempts: a burst of this many per client address and per user name, then one
    # every `login_interval_seconds`.
    login_burst: int = Field(5, ge=1)
    login_interval_seconds: float = Field(5.0, gt=0)
    # Password checks waiting or running at once; more are answered 503 at once.
    login_queue_max: int = Field(8, ge=1)
    # Comma-separated addresses of reverse proxies whose X-Forwarded-For is believed.
    trusted_proxies: Annotated[frozenset[str], NoDecode] = frozenset()
    # HTTP server: time to send a request's headers, keep-alive idle time, connection cap.
    http_header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    http_keepalive_timeout_seconds: int = Field(5, ge=1, le=300)
    http_max_connections: int = Field(1000, ge=1)
    # Time windows are kept this long behind the newest event time seen, then pruned.
    window_retention_hours: float = Field(48.0, gt=0, le=24 * 366)
    # The writer's lease of `wikipulse ingest`: a standby takes over this long after the
    # holder stopped renewing it (plus one batch interval); the holder renews at a third.
    lease_seconds: float = Field(10.0, ge=1, le=3600)

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value not in STORES:
            raise ValueError(f"unknown store {value!r}; choose one of {', '.join(STORES)}")
        return value

    @field_validator("dedup_window")
    @classmethod
    def _window_fits_a_cassandra_commit(cls, value: int, info: ValidationInfo) -> int:
        # Cassandra keeps the window's ids (~40 bytes each) in the ingester's partition, written
        # by the commit batch, which must stay under the node's max_mutation_size (16 MiB).
        if info.data.get("store") == "cassandra" and value > CASSANDRA_MAX_DEDUP_WINDOW:
            raise ValueError(
                f"at most {CASSANDRA_MAX_DEDUP_WINDOW:,} with the Cassandra store (a commit "
                "carries the window's ids and must stay under max_mutation_size, 16 MiB)"
            )
        return value

    @field_validator("stream_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("user_agent")
    @classmethod
    def _descriptive_agent(cls, value: str) -> str:
        if not value.strip() or _LIBRARY_AGENTS.match(value):
            raise ValueError(
                "must describe this tool and a contact, like 'Tool/1.0 (https://url; email)'; "
                "Wikimedia refuses library-default agents"
            )
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if secret.strip().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("is a placeholder; generate one with `openssl rand -hex 32`")
        if len(secret.encode()) < 32:
            raise ValueError("must be at least 32 bytes; generate one with `openssl rand -hex 32`")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, value: Any) -> Any:
        return parse_users(value) if isinstance(value, str) else value


class _MappingEnvSource(EnvSettingsSource):
    """Environment variables read from a given mapping rather than from `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self._environ.items()}


class _DotEnvSource(DotEnvSettingsSource):
    """The `.env` file: only WIKIPULSE_ variables, less WIKIPULSE_CONFIG (read earlier)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # A .env file often holds other tools' variables too (COMPOSE_PROJECT_NAME ...):
        # only ours are settings, and a misspelt one of ours is still an error.
        prefix, config = ENV_PREFIX.lower(), f"{ENV_PREFIX}config".lower()
        found = super()._load_env_vars()
        return {
            k: v for k, v in found.items() if k.lower().startswith(prefix) and k.lower() != config
        }


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    env_file: str | Path | None = ".env",
    **overrides: Any,
) -> Settings:
    """Load and validate the settings; raise ConfigError naming the first bad setting."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    config_file = config_file or env.get(f"{ENV_PREFIX}CONFIG") or None
    if config_file is None and env_file is not None and Path(env_file).is_file():
        config_file = dotenv_values(env_file).get(f"{ENV_PREFIX}CONFIG") or None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} (WIKIPULSE_CONFIG) does not exist")
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from exc

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [
                init_settings,
                _MappingEnvSource(settings_cls, env),
            ]
            if env_file is not None:
                sources.append(_DotEnvSource(settings_cls, env_file=env_file))
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            return tuple(sources)

    try:
        return _Loaded(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]).upper() if error["loc"] else "?"
        # Unknown keys arrive as they were written, possibly with the prefix already.
        setting = name if name.startswith(ENV_PREFIX) else f"{ENV_PREFIX}{name}"
        lines.append(f"invalid setting {setting}: {error['msg']}")
    return "; ".join(lines)
