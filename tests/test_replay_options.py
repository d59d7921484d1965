"""`replay` into memory uses the defaults as they are when nothing is configured, and only then."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from tests.support.counting import expected_stats
from tests.support.generated import generate
from wikipulse.config import load_settings
from wikipulse.replay.options import ReplaySettings, unconfigured


def test_the_light_defaults_are_the_settings_defaults() -> None:
    """Every setting the light path reads has the value the settings loader gives it."""
    loaded = load_settings(environ={}, env_file=None, store="memory")
    for field in fields(ReplaySettings):
        assert getattr(ReplaySettings(), field.name) == getattr(loaded, field.name), field.name


def test_anything_configured_counts(tmp_path: Path) -> None:
    """A variable of ours in any case, a config file or a `.env` file each count."""
    env_file = tmp_path / ".env"
    assert unconfigured({"PATH": "/bin", "HOME": "/root"}, None, env_file)
    assert unconfigured({}, None, None)
    assert not unconfigured({"WIKIPULSE_DEDUP_WINDOW": "5"}, None, env_file)
    assert not unconfigured({"wikipulse_dedup_window": "5"}, None, env_file)
    assert not unconfigured({}, "wikipulse.toml", env_file)
    env_file.write_text("OTHER=1\n")
    assert not unconfigured({}, None, env_file)


_PROBE = """
import sys
from wikipulse.cli import main
code = main(["replay", "--quiet", *sys.argv[1:]])
print("PYDANTIC", "pydantic" in sys.modules, "CODE", code, file=sys.stderr)
"""


def _replay(data: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, str(data), *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _with_repeats(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """Generated events, then the first 50 again: repeats only a window of 50 has forgotten."""
    lines = generate(tmp_path, 400, seed=31).read_bytes().splitlines()
    lines += lines[:50]
    path = tmp_path / "repeats.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, lines


def test_nothing_configured_replays_without_loading_the_settings(tmp_path: Path) -> None:
    """With nothing configured the result is exact and pydantic is never imported."""
    path, lines = _with_repeats(tmp_path)
    result = _replay(path, tmp_path)
    assert "PYDANTIC False CODE 0" in result.stderr, result.stderr
    assert json.loads(result.stdout) == expected_stats(lines)  # repeats dropped


@pytest.mark.parametrize("where", ["environment", ".env", "config file"])
def test_a_configured_setting_is_read_and_validated(tmp_path: Path, where: str) -> None:
    """A dedup window set anywhere changes the result; an invalid one stops the replay."""
    path, lines = _with_repeats(tmp_path)
    for window, code in (("50", 0), ("0", 2)):
        env: dict[str, str] = {}
        args: list[str] = []
        if where == "environment":
            env["WIKIPULSE_DEDUP_WINDOW"] = window
        elif where == ".env":
            (tmp_path / ".env").write_text(f"WIKIPULSE_DEDUP_WINDOW={window}\n")
        else:
            (tmp_path / "w.toml").write_text(f"dedup_window = {window}\n")
            args = ["--config", str(tmp_path / "w.toml")]
        result = _replay(path, tmp_path, *args, **env)
        assert f"PYDANTIC True CODE {code}" in result.stderr, result.stderr
        if code == 2:
            assert "DEDUP_WINDOW" in result.stderr.upper()
            continue
        # A window of 50 has forgotten the first 50 ids by the time they come again.
        assert json.loads(result.stdout)["total"] == expected_stats(lines)["total"] + 50
