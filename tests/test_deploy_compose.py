"""The compose files through the real Compose v2 binary, as `.ci/lint-ops.sh` checks them.

Every file and profile passes `docker compose config`, a broken copy fails it (and the package's
console script, which the check must not use, would have let it pass), an error that only a
profile reaches is found, and the PostgreSQL file runs two ingesters and the API.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT
from tests.support.deploy import check, compose_binary_or_skip
from wikipulse.config import Settings, load_settings


def test_every_compose_file_and_profile_is_valid() -> None:
    compose_binary_or_skip()
    files = check.compose_files()
    assert {f.name for f in files} >= {
        "docker-compose.yml",
        "docker-compose.sqlite.yml",
        "docker-compose.postgres.yml",
    }
    assert check.compose_profiles(ROOT / "docker-compose.yml") == ["monitoring"]
    for file in files:
        assert check.check_compose(file) == [], file


def test_a_broken_compose_file_makes_the_check_fail(tmp_path: Path) -> None:
    compose_binary_or_skip()
    broken = tmp_path / "docker-compose.postgres.yml"
    text = (ROOT / "docker-compose.postgres.yml").read_text(encoding="utf-8")
    broken.write_text(text.replace("replicas: 2", "replicas: two", 1), encoding="utf-8")
    errors = check.check_compose(broken)
    assert len(errors) == 1
    assert errors[0].startswith("docker-compose.postgres.yml: exit 1:")
    assert "replicas" in errors[0]
    # The package's own console script exits 0 on the same file: the check must not use it.
    wrapper = Path(sys.executable).parent / "docker-compose"
    if wrapper.is_file():
        done = subprocess.run([str(wrapper), "-f", str(broken), "config", "-q"], check=False)
        assert done.returncode == 0


def test_an_error_only_in_a_profile_is_found(tmp_path: Path) -> None:
    compose_binary_or_skip()
    file = tmp_path / "docker-compose.yml"
    file.write_text(
        "services:\n"
        "  app:\n    image: busybox\n"
        "  extra:\n    image: busybox\n    profiles: [debug]\n"
        "    depends_on: [missing]\n",
        encoding="utf-8",
    )
    errors = check.check_compose(file)
    assert len(errors) == 1
    assert errors[0].startswith("docker-compose.yml (profile debug): exit 1:")


def test_the_postgres_compose_file_runs_two_ingesters_and_the_api() -> None:
    file = ROOT / "docker-compose.postgres.yml"
    done = subprocess.run(
        [str(compose_binary_or_skip()), "-f", str(file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    services = json.loads(done.stdout)["services"]
    assert set(services) == {"postgres", "migrate", "ingest", "api"}
    assert services["ingest"]["command"] == ["ingest"]
    assert services["ingest"]["deploy"]["replicas"] == 2
    assert services["api"]["command"][0] == "api"
    assert "ports" not in services["ingest"]  # two replicas cannot share a host port
    for role in ("migrate", "ingest", "api"):
        env = services[role]["environment"]
        assert env["WIKIPULSE_STORE"] == "postgres"
        assert env["WIKIPULSE_POSTGRES_DSN"].startswith("postgresql://wikipulse:")
        assert env["WIKIPULSE_POSTGRES_DSN"].endswith("@postgres:5432/wikipulse")
        # Real settings with valid values (the lease: issue #12, built on another branch).
        known = {f"WIKIPULSE_{name.upper()}" for name in Settings.model_fields}
        assert set(env) - known <= {"WIKIPULSE_LEASE_SECONDS"}
        load_settings(environ={k: str(v) for k, v in env.items() if k in known}, env_file=None)
    for role in ("ingest", "api"):
        assert services[role]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert yaml.safe_load(done.stdout)["name"] == "wikipulse-postgres"
