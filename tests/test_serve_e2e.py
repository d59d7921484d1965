"""`wikipulse serve` end to end: a real process, the misbehaving test stream, HTTP with JWT."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from tests.support.counting import expected_stats
from tests.support.eventstreams import (
    EventStreamsServer,
    Faults,
    canary_event,
    inject,
    malformed_events,
)
from tests.support.generated import generate

PASSWORD = "e2e-password"
SECRET = "e2e-secret-that-is-at-least-32-bytes-long"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _lines(tmp: Path, events: int) -> list[bytes]:
    base = generate(tmp, events, seed=21, canaries=5).read_bytes().splitlines()
    return inject(base, [*malformed_events(), canary_event(1)], seed=4)


class Service:
    """One `wikipulse serve` process and an HTTP client for it."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.port = int(env["WIKIPULSE_PORT"])
        self.log = cwd / f"serve-{time.monotonic_ns()}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wikipulse", "serve"],
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        self._token: str | None = None
        self._wait_up()

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.log.read_text()}")
            try:
                if self.http.get("/status").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve did not come up:\n{self.log.read_text()}")

    def status(self) -> dict[str, Any]:
        """The consumer part of /status."""
        body: dict[str, Any] = self.http.get("/status").json()["consumer"]
        return body

    def stats(self) -> dict[str, Any]:
        """/stats, logging in once (polling with a login each time would meet the rate limit)."""
        if self._token is None:
            login = self.http.post("/login", json={"username": "alice", "password": PASSWORD})
            assert login.status_code == 200
            self._token = login.json()["access_token"]
        response = self.http.get("/stats", headers={"Authorization": f"Bearer {self._token}"})
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.http.close()

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        self.http.close()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Services started by a test, killed at its end whatever happens."""
    started: list[Service] = []
    yield started
    for service in started:
        if service.proc.poll() is None:
            service.kill()


def _env(srv: EventStreamsServer, tmp_path: Path, store: str) -> dict[str, str]:
    user_hash = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "WIKIPULSE_PORT": str(_free_port()),
        "WIKIPULSE_HOST": "127.0.0.1",
        "WIKIPULSE_STREAM_URL": srv.url,
        "WIKIPULSE_STORE": store,
        "WIKIPULSE_SQLITE_PATH": str(tmp_path / "wikipulse.db"),
        "WIKIPULSE_JWT_SECRET": SECRET,
        "WIKIPULSE_USERS": f"alice:{user_hash}",
        "WIKIPULSE_BATCH_MAX_EVENTS": "100",
        "WIKIPULSE_BATCH_MAX_MS": "50",
        "WIKIPULSE_STALL_TIMEOUT_SECONDS": "0.5",
        "WIKIPULSE_BACKOFF_INITIAL_SECONDS": "0.05",
        "WIKIPULSE_BACKOFF_MAX_SECONDS": "0.2",
    }


def _wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _settled_stats(
    service: Service, expected: dict[str, Any], timeout: float = 60, quiet: float = 5
) -> dict[str, Any]:
    """Poll /stats until it equals the expectation or stops changing for `quiet` seconds."""
    last: dict[str, Any] = {}
    unchanged_since = time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = service.stats()
        if current == expected:
            return current
        if current != last:
            last, unchanged_since = current, time.monotonic()
        elif time.monotonic() - unchanged_since > quiet:
            break
        time.sleep(0.1)
    return last


@pytest.mark.slow
def test_serve_counts_the_faulty_stream_exactly(tmp_path: Path, services: list[Service]) -> None:
    """A served, faulty stream ends in /stats equal to the independent count, behind a JWT."""
    lines = _lines(tmp_path, 3000)
    faults = Faults.everything(close_every=200, stall_seconds=2.0)
    faults = Faults(**{**faults.__dict__, "when_done": "hold"})
    with EventStreamsServer(lines, id_format="timestamp", faults=faults, seed=8) as srv:
        service = Service(_env(srv, tmp_path, "memory"), tmp_path)
        services.append(service)
        assert service.http.get("/stats").status_code == 401
        _wait_for(srv.finished.is_set, "the stream to be served")
        expected = expected_stats(lines)
        assert _settled_stats(service, expected) == expected
        status = service.status()
        assert status["connected"] is True
        assert status["events_consumed"] == expected["total"]
        assert status["invalid"] == len(malformed_events())
        assert status["reconnects"] >= 5
        service.stop()
    assert service.proc.returncode == 0


@pytest.mark.slow
def test_sigkill_midway_then_restart_loses_and_doubles_nothing(
    tmp_path: Path, services: list[Service]
) -> None:
    """Killed with SIGKILL midway and restarted on SQLite, serve still ends at the exact count."""
    lines = _lines(tmp_path, 6000)
    faults = Faults(
        close_every=300,
        cut_mid_event=0.5,
        chunk_max=64,
        tiny_fraction=0.02,
        line_ending="mixed",
        split_data=0.05,
        error_every=500,
        when_done="hold",
    )
    with EventStreamsServer(lines, id_format="timestamp", faults=faults, seed=9) as srv:
        env = _env(srv, tmp_path, "sqlite")
        first = Service(env, tmp_path)
        services.append(first)
        _wait_for(lambda: len(srv.delivered) >= len(lines) // 2, "half of the stream")
        first.kill()
        killed_at = len(srv.delivered)
        second = Service(env, tmp_path)
        services.append(second)
        _wait_for(srv.finished.is_set, "the rest of the stream")
        expected = expected_stats(lines)
        final = _settled_stats(second, expected)
        print(
            "kill -9 after",
            killed_at,
            "of",
            len(lines),
            "events delivered; resumed with Last-Event-ID",
            srv.requests[-1].last_event_id is not None,
            "; final",
            json.dumps({k: final.get(k) for k in ("total", "distinct_users", "bots", "non_bots")}),
            "; independent",
            json.dumps({k: expected[k] for k in ("total", "distinct_users", "bots", "non_bots")}),
        )
        assert final == expected
        assert len(srv.delivered) > len(lines)  # the resume replayed events, and none counted twice
        second.stop()
