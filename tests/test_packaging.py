"""The Docker image, compose files and .env.example agree with the package and its settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import pytest
import yaml

from wikipulse.config import ENV_PREFIX, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SQLITE = ROOT / "docker-compose.sqlite.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# Read by load_settings itself to find the TOML file, so it is a setting without a field.
CONFIG_VARIABLE = f"{ENV_PREFIX}CONFIG"
FIELD_VARIABLES = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
# An argon2 hash in the shape parse_users accepts; nothing here verifies a password with it.
SAMPLE_USERS = "admin:$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
SAMPLE_SECRET = "0123456789abcdef" * 4


def _instructions(path: Path) -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


def _runtime_stage() -> list[tuple[str, str]]:
    """Return the instructions of the Dockerfile's last stage, the one that is shipped."""
    instructions = _instructions(DOCKERFILE)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _exec_form(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    """Return the JSON (exec form) arguments of the stage's only `keyword` instruction."""
    found = [args for kw, args in stage if kw == keyword]
    assert len(found) == 1, f"expected one {keyword} in the runtime stage, found {len(found)}"
    args = found[0]
    if keyword == "HEALTHCHECK":
        args = args.split(" CMD ", 1)[1]
    value = json.loads(args)
    assert isinstance(value, list)
    return [str(item) for item in value]


def _env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    """Return the variables set by the stage's ENV instructions (KEY=value form)."""
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def _console_scripts() -> dict[str, str]:
    """Return the console scripts of the installed wikipulse distribution, name to target."""
    scripts = distribution("wikipulse").entry_points.select(group="console_scripts")
    return {script.name: script.value for script in scripts}


def _compose(path: Path) -> dict[str, Any]:
    """Parse a compose file, resolving its anchors and merge keys as Compose does."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m wikipulse ARGS` in an empty directory with no WIKIPULSE_ variables."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    return subprocess.run(
        [sys.executable, "-m", "wikipulse", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _example_variables(*, include_commented: bool) -> dict[str, str]:
    """Return the WIKIPULSE_ assignments of .env.example, optionally the commented ones too."""
    pattern = re.compile(r"^(#\s*)?(WIKIPULSE_[A-Z0-9_]+)=(.*)$")
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = pattern.match(line.strip())
        if match and (include_commented or match.group(1) is None):
            found[match.group(2)] = match.group(3)
    return found


# --- Dockerfile -----------------------------------------------------------------------------


def test_entrypoint_is_a_console_script_of_the_package() -> None:
    """The image's ENTRYPOINT runs `wikipulse`, a console script the package installs."""
    entrypoint = _exec_form(_runtime_stage(), "ENTRYPOINT")
    assert entrypoint == ["wikipulse"]
    assert _console_scripts()["wikipulse"] == "wikipulse.cli:main"
    assert (Path(sys.executable).parent / "wikipulse").is_file()


def test_healthcheck_runs_the_packages_healthcheck_command() -> None:
    """The image's HEALTHCHECK runs `wikipulse healthcheck` in exec form (no shell, no curl)."""
    command = _exec_form(_runtime_stage(), "HEALTHCHECK")
    assert command == ["wikipulse", "healthcheck"]
    assert command[0] in _console_scripts()


def test_runtime_stage_runs_unprivileged_on_the_default_port() -> None:
    """The shipped stage runs as uid 10001, serves by default, and exposes the service's port."""
    stage = _runtime_stage()
    assert [args for kw, args in stage if kw == "USER"] == ["10001:10001"]
    assert _exec_form(stage, "CMD") == ["serve"]
    assert [args for kw, args in stage if kw == "WORKDIR"] == ["/data"]
    assert [args for kw, args in stage if kw == "EXPOSE"] == [
        str(Settings.model_fields["port"].default)
    ]


def test_runtime_stage_installs_only_prebuilt_wheels() -> None:
    """The shipped stage installs wheels from the build stage offline, never the source tree."""
    stage = _runtime_stage()
    runs = " ".join(args for kw, args in stage if kw == "RUN")
    assert "--no-index" in runs
    assert "/wheels/*.whl" in runs
    assert not [args for kw, args in stage if kw in {"COPY", "ADD"}]


def test_runtime_environment_names_real_settings() -> None:
    """Every WIKIPULSE_ variable the image sets is a setting, and together they are valid."""
    env = {k: v for k, v in _env_of(_runtime_stage()).items() if k.startswith(ENV_PREFIX)}
    # A container must listen on every interface to be reachable through a published port.
    assert env["WIKIPULSE_HOST"] == "0.0.0.0"  # noqa: S104
    assert env["WIKIPULSE_SQLITE_PATH"] == "/data/wikipulse.db"
    assert set(env) <= FIELD_VARIABLES
    settings = load_settings(environ=env, env_file=None)
    assert settings.sqlite_path == "/data/wikipulse.db"


def test_build_stage_copies_files_that_exist() -> None:
    """Every path the Dockerfile copies from the build context exists in the repository."""
    sources = []
    for keyword, args in _instructions(DOCKERFILE):
        if keyword == "COPY" and not args.startswith("--from"):
            sources.extend(args.split()[:-1])
    assert sources
    missing = [source for source in sources if not (ROOT / source).exists()]
    assert missing == []


def test_dockerignore_keeps_secrets_and_state_out_of_the_context() -> None:
    """The build context excludes the local .env, virtualenv, git history and databases."""
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git", "*.db"} <= patterns


# --- the commands the image and compose run --------------------------------------------------


def _commands_run_by_containers() -> list[list[str]]:
    """Return every argument list the image or a compose service passes to `wikipulse`."""
    stage = _runtime_stage()
    commands = [_exec_form(stage, "CMD"), _exec_form(stage, "HEALTHCHECK")[1:]]
    for path in (COMPOSE, COMPOSE_SQLITE):
        for service in _compose(path)["services"].values():
            if service.get("image", "").startswith("wikipulse"):
                commands.append(list(service["command"]))
                test = service.get("healthcheck", {}).get("test")
                if test:
                    assert test[:2] == ["CMD", "wikipulse"]
                    commands.append(list(test[2:]))
    return commands


def test_cli_help_exits_zero(tmp_path: Path) -> None:
    """`wikipulse --help` prints the usage and exits 0."""
    result = _run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


@pytest.mark.parametrize(
    "subcommand", sorted({command[0] for command in _commands_run_by_containers()})
)
def test_container_subcommands_exist(subcommand: str, tmp_path: Path) -> None:
    """Each subcommand the image or compose runs (serve, migrate, healthcheck) has a --help."""
    result = _run_cli(subcommand, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# --- compose ------------------------------------------------------------------------------


def test_compose_starts_cassandra_then_migrate_then_app() -> None:
    """The app waits for a healthy Cassandra and a successful one-shot migration."""
    services = _compose(COMPOSE)["services"]
    assert "cqlsh" in " ".join(services["cassandra"]["healthcheck"]["test"])
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"cassandra": {"condition": "service_healthy"}}
    assert services["app"]["depends_on"] == {
        "cassandra": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert services["app"]["healthcheck"]["test"] == ["CMD", "wikipulse", "healthcheck"]
    assert services["app"]["ports"] == ["7000:7000"]
    assert services["app"]["restart"] == "unless-stopped"


def test_compose_services_use_the_cassandra_service() -> None:
    """Both wikipulse services select the Cassandra store and reach it by its service name."""
    services = _compose(COMPOSE)["services"]
    for name in ("migrate", "app"):
        env = services[name]["environment"]
        assert env["WIKIPULSE_STORE"] == "cassandra"
        assert env["WIKIPULSE_CASSANDRA_HOSTS"] == "cassandra"
        assert services[name]["env_file"] == [{"path": ".env", "required": False}]


def test_sqlite_compose_keeps_the_database_on_a_named_volume() -> None:
    """The SQLite setup runs the app alone with its database file on a named volume."""
    compose = _compose(COMPOSE_SQLITE)
    app = compose["services"]["app"]
    assert set(compose["services"]) == {"app"}
    assert "depends_on" not in app
    assert app["environment"]["WIKIPULSE_STORE"] == "sqlite"
    assert app["environment"]["WIKIPULSE_SQLITE_PATH"].startswith("/data/")
    volume, _, target = app["volumes"][0].partition(":")
    assert target == "/data"
    assert volume in compose["volumes"]
    assert app["healthcheck"]["test"] == ["CMD", "wikipulse", "healthcheck"]


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_SQLITE], ids=lambda p: p.name)
def test_compose_environment_names_real_settings(path: Path) -> None:
    """Every WIKIPULSE_ variable a compose file sets is a setting and a valid value for it."""
    for service in _compose(path)["services"].values():
        env = {
            key: str(value)
            for key, value in service.get("environment", {}).items()
            if key.startswith(ENV_PREFIX)
        }
        assert set(env) <= FIELD_VARIABLES
        load_settings(environ=env, env_file=None)


# --- .env.example -----------------------------------------------------------------------------


def test_env_example_names_only_real_settings() -> None:
    """Every WIKIPULSE_ name in .env.example, commented or not, is a setting of the service."""
    names = set(_example_variables(include_commented=True))
    assert names - FIELD_VARIABLES - {CONFIG_VARIABLE} == set()


def test_env_example_documents_every_setting() -> None:
    """Every setting of the service appears in .env.example."""
    names = set(_example_variables(include_commented=True))
    assert FIELD_VARIABLES - names == set()


def test_env_example_placeholders_are_refused() -> None:
    """Loading .env.example as it stands fails on its placeholder secret and users."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, env_file=ENV_EXAMPLE)
    assert "WIKIPULSE_JWT_SECRET" in str(caught.value)
    assert "WIKIPULSE_USERS" in str(caught.value)


def test_env_example_placeholder_secret_alone_is_refused() -> None:
    """The example's JWT secret is refused even when every other setting is valid."""
    secret = _example_variables(include_commented=False)["WIKIPULSE_JWT_SECRET"]
    with pytest.raises(ConfigError, match="WIKIPULSE_JWT_SECRET"):
        load_settings(environ={"WIKIPULSE_JWT_SECRET": secret}, env_file=None)


def test_env_example_is_valid_once_secrets_are_set(tmp_path: Path) -> None:
    """With real secrets and every commented default uncommented, the example loads."""
    lines = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        uncommented = re.sub(r"^#\s*(WIKIPULSE_[A-Z0-9_]+=)", r"\1", line)
        if uncommented.startswith((CONFIG_VARIABLE + "=", "WIKIPULSE_JWT_SECRET=")):
            continue
        if uncommented.startswith("WIKIPULSE_USERS="):
            uncommented = f"WIKIPULSE_USERS='{SAMPLE_USERS}'"
        lines.append(uncommented)
    lines.append(f"WIKIPULSE_JWT_SECRET={SAMPLE_SECRET}")
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    settings = load_settings(environ={}, env_file=env_file)

    assert settings.users == {"admin": SAMPLE_USERS.partition(":")[2]}
    assert settings.cassandra_replication == Settings.model_fields["cassandra_replication"].default
