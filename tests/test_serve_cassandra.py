"""`wikipulse serve` end to end on a real Cassandra node: kill -9 and resume, a store outage."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests import test_serve_e2e as e2e
from tests.stores import conftest as store_fixtures
from tests.stores.conftest import CASSANDRA_HOSTS, CASSANDRA_PORT
from tests.support.counting import expected_stats
from tests.support.eventstreams import EventStreamsServer, Faults
from tests.support.windows_expected import counted_events, expected_series, expected_top
from tests.test_serve_e2e import Service, _env, _lines, _wait_for

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
SERVICES = REPO / ".ci" / "services"
OUTAGE_SECONDS = 10
BASH = shutil.which("bash") or "/bin/bash"

# Fixtures of other modules, used here by name.
services = e2e.services
cassandra_skip_reason = store_fixtures.cassandra_skip_reason
cassandra_keyspace = store_fixtures.cassandra_keyspace


def _cassandra_env(srv: EventStreamsServer, tmp_path: Path, keyspace: str) -> dict[str, str]:
    env = _env(srv, tmp_path, "cassandra")
    env.update(
        WIKIPULSE_CASSANDRA_HOSTS=CASSANDRA_HOSTS,
        WIKIPULSE_CASSANDRA_PORT=str(CASSANDRA_PORT),
        WIKIPULSE_CASSANDRA_KEYSPACE=keyspace,
        WIKIPULSE_CASSANDRA_CONSISTENCY="ONE",
        WIKIPULSE_MIGRATE_ON_START="true",
    )
    return env


@pytest.mark.timeout(420, method="thread")
def test_sigkill_midway_then_restart_on_cassandra_loses_and_doubles_nothing(
    tmp_path: Path, services: list[Service], cassandra_keyspace: str
) -> None:
    """Killed with SIGKILL midway and restarted on Cassandra, serve ends at the exact count."""
    lines = _lines(tmp_path, 6000)
    faults = Faults(
        close_every=300, cut_mid_event=0.5, chunk_max=64, tiny_fraction=0.02, when_done="hold"
    )
    with EventStreamsServer(lines, id_format="timestamp", faults=faults, seed=9) as srv:
        env = _cassandra_env(srv, tmp_path, cassandra_keyspace)
        first = Service(env, tmp_path)
        services.append(first)
        _wait_for(lambda: len(srv.delivered) >= len(lines) // 2, "half of the stream", 180)
        first.kill()
        killed_at = len(srv.delivered)
        second = Service(env, tmp_path)
        services.append(second)
        _wait_for(srv.finished.is_set, "the rest of the stream", 180)
        expected = expected_stats(lines)
        final = _settled_stats(second, expected)
        resumed = srv.requests[-1].last_event_id is not None
        print("kill -9 after", killed_at, "of", len(lines), "delivered; resumed by id", resumed)
        assert final == expected
        assert resumed
        assert len(srv.delivered) > len(lines)  # the resume replayed events, none counted twice
        _assert_windows_over_http(second, lines)
        second.stop()
    assert second.proc.returncode == 0


def _assert_windows_over_http(service: Service, lines: list[bytes]) -> None:
    """/stats/timeseries and /stats/top equal the independent count, across the kill -9."""
    service.stats()  # logs in
    auth = {"Authorization": f"Bearer {service._token}"}
    events = counted_events(lines)
    first = min(e.second for e in events)
    last = max(e.second for e in events)
    for step in (60, 3600):
        since, until = first - first % step, -(-(last + 1) // step) * step
        params: dict[str, Any] = {"since": since, "until": until, "step": step}
        got = service.http.get("/stats/timeseries", params=params, headers=auth)
        assert got.status_code == 200, got.text
        assert got.json() == expected_series(events, step, since, until), step
    since, until = first - first % 60, last - last % 60 + 60
    for by in ("server_name", "user", "page"):
        params = {"by": by, "since": since, "until": until, "limit": 20}
        got = service.http.get("/stats/top", params=params, headers=auth)
        assert got.status_code == 200, got.text
        assert got.json() == expected_top(events, by, since, until, 20), by


def _settled_stats(service: Service, expected: dict[str, Any]) -> dict[str, Any]:
    """The e2e helper with Cassandra's longer waits: 120 s in all, 10 s without change."""
    return e2e._settled_stats(service, expected, timeout=120, quiet=10)


def _services_cmd(*args: str) -> None:
    """Run `.ci/services` of this repository (the tests may run in a copy of the checkout)."""
    subprocess.run([BASH, str(SERVICES), *args], check=True, timeout=600)


def _ready(service: Service) -> int:
    return service.http.get("/ready").status_code


@pytest.mark.timeout(600, method="thread")
def test_cassandra_outage_makes_serve_unready_and_loses_nothing(
    tmp_path: Path, services: list[Service], cassandra_keyspace: str
) -> None:
    """Cassandra stopped for 10 s mid-stream: /ready says 503, and the counts still end exact."""
    if (CASSANDRA_HOSTS, CASSANDRA_PORT) != ("127.0.0.1", 9042):
        pytest.skip("stops the node of .ci/services (127.0.0.1:9042), not the one named here")
    lines = _lines(tmp_path, 4000)
    faults = Faults(close_every=500, events_per_second=100, when_done="hold")
    with EventStreamsServer(lines, id_format="timestamp", faults=faults, seed=5) as srv:
        service = Service(_cassandra_env(srv, tmp_path, cassandra_keyspace), tmp_path)
        services.append(service)
        _wait_for(lambda: service.status()["events_consumed"] >= 300, "some commits", 120)
        assert _ready(service) == 200
        stopped_at = len(srv.delivered)
        try:
            _services_cmd("down", "cassandra")
            down_at = time.monotonic()
            _wait_for(lambda: _ready(service) == 503, "/ready to say 503", 60)
            body = service.http.get("/ready").json()
            assert body["ready"] is False
            assert "the last commit to the statistics store failed" in body["reasons"]
            # The outage itself is the thing that lasts 10 s: nothing to poll for here.
            time.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))
        finally:
            _services_cmd("up", "cassandra")
        _wait_for(lambda: _ready(service) == 200, "/ready to say 200 again", 180)
        _wait_for(srv.finished.is_set, "the rest of the stream", 180)
        expected = expected_stats(lines)
        final = _settled_stats(service, expected)
        print("outage from event", stopped_at, json.dumps(service.status()))
        assert final == expected
        assert service.status()["events_consumed"] == expected["total"]
        service.stop()
    assert service.proc.returncode == 0
