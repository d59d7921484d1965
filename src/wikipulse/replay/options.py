"""The few settings a replay into memory reads, without loading the settings machinery.

Loading `wikipulse.config` (pydantic and pydantic-settings) costs a replay about 0.15 s of
CPU, a sixth of a 500,000-event replay on two cores, and it runs while the workers decode,
so it slows them down. A replay into the memory store reads six settings; when nothing is
configured at all (no `WIKIPULSE_*` variable, no `.env` file, no config file) every one of
them is its default, so the defaults are used as they are. As soon as anything is
configured, or another store is named, `replay` loads and validates the real settings,
exactly as every other command does (tests/test_replay_options.py holds both to the same
defaults).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["ENV_PREFIX", "ReplaySettings", "unconfigured"]

#: The prefix of every setting's environment variable (as in config.py).
ENV_PREFIX = "WIKIPULSE_"


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """The settings a replay into memory reads, at their defaults (see config.Settings)."""

    store: str = "memory"
    dedup_window: int = 100_000
    batch_max_events: int = 50_000
    batch_max_ms: int = 500
    window_retention_hours: float = 48.0
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"


def unconfigured(
    environ: Mapping[str, str], config_file: str | None, env_file: str | Path | None
) -> bool:
    """Whether no setting is given anywhere, so that each one has its default value.

    Environment variables match the prefix in any case, as the settings loader reads them;
    a `.env` file counts whatever it holds (it may name the config file).
    """
    if config_file:
        return False
    prefix = ENV_PREFIX.lower()
    if any(key.lower().startswith(prefix) for key in environ):
        return False
    return env_file is None or not Path(env_file).exists()
