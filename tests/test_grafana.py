"""The operators' Grafana dashboard asks only for metrics `/metrics` exports; compose wires it."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.test_api import KNOWN_EVENTS, FakeSource, _app, _token, running

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "wikipulse.json"
#: What the issue asks the operators to see, as words that must appear in panel titles.
TOPICS = ["by outcome", "lag", "reconnects", "commit latency", "commit failures", "HTTP latency"]
_METRIC = re.compile(r"\bwikipulse_[a-zA-Z0-9_:]+")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER_LABEL = re.compile(r"[{,]\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def _panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.extend([panel, *panel.get("panels", [])])  # rows hold panels of their own
    return panels


def _queries() -> list[str]:
    return [target["expr"] for panel in _panels() for target in panel.get("targets", [])]


async def _scrape() -> dict[str, set[str]]:
    """Sample name -> label names, from an app that has counted events and answered requests."""
    source = FakeSource(KNOWN_EVENTS)
    app = _app(source=source, batch_max_ms=10)
    async with running(app) as client:
        await source.drained.wait()
        token = await _token(client)
        for _ in range(100):  # the batch is committed within 10 ms; wait up to a second
            stats = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
            if stats.json()["total"] == 5:
                break
            await asyncio.sleep(0.01)
        text = (await client.get("/metrics")).text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


async def test_every_metric_a_panel_queries_is_exported_with_the_labels_it_uses() -> None:
    """Each query names exported samples, and groups or filters only by labels they carry."""
    samples = await _scrape()
    queries = _queries()
    assert queries
    for query in queries:
        names = set(_METRIC.findall(query))
        assert names, f"no wikipulse metric in {query!r}"
        missing = names - set(samples)
        assert not missing, f"{query!r} asks for {missing}, not in /metrics"
        labels = set().union(*(samples[name] for name in names))
        used = {
            label.strip()
            for group in _GROUPING.findall(query)
            for label in group.split(",")
            if label.strip()
        } | set(_MATCHER_LABEL.findall(query))
        assert used <= labels, f"{query!r} uses labels {used - labels} its metrics lack"


def test_the_dashboard_covers_what_operators_need_and_names_the_provisioned_source() -> None:
    """Panels for each topic of the issue, all on the datasource uid the provisioning defines."""
    titles = " | ".join(panel["title"] for panel in _panels())
    for topic in TOPICS:
        assert topic.lower() in titles.lower(), topic
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    for panel in _panels():
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in uids, panel["title"]
    ids = [panel["id"] for panel in _panels()]
    assert len(ids) == len(set(ids))


def test_compose_runs_prometheus_and_grafana_on_the_monitoring_profile() -> None:
    """Prometheus scrapes the app's port; Grafana mounts the provisioning and the dashboard."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            assert not source.startswith("./") or (ROOT / source).exists(), volume
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = scrape["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    app_port = services["app"]["ports"][0].split(":")[-1]
    assert job["static_configs"][0]["targets"] == [f"app:{app_port}"]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "wikipulse.yml").read_text()
    )["providers"][0]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert mounted[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert "app" not in [s for s, v in services.items() if "monitoring" in v.get("profiles", [])]
