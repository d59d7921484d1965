"""End to end: `wikipulse serve` against the fake stream, stopped by SIGTERM like a container.

One module-scoped run serves every test here: the process consumes a known stream into a
SQLite file with batches so large and slow that nothing is committed until shutdown, then gets
SIGTERM. Its exit code, its stderr and the file it leaves behind are checked separately.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
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
from wikipulse.cli import main
from wikipulse.stores import ResumePoint
from wikipulse.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.slow

EVENTS = 2000
# Cheap to verify; the service never needs more than a valid hash here (no one logs in).
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
SECRET = "shutdown-test-secret-0123456789abcdef0123"
START_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServeRun:
    """What one `serve` process did: its exit, its stderr, what it consumed and stored."""

    lines: list[bytes]
    last_delivered_id: str | None
    status_before_sigterm: dict[str, Any]
    #: Exit codes of `wikipulse healthcheck` and `healthcheck --ready` while it served.
    probes: tuple[int, int]
    #: Its /metrics body while it served, after every event was consumed.
    metrics_before_sigterm: str
    stored_before_sigterm: int
    returncode: int
    stderr: str
    db_path: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stream_lines(directory: Path) -> list[bytes]:
    """Generated events, some sent twice, with canaries and malformed events mixed in."""
    with generate(directory, EVENTS, seed=11).open("rb") as f:
        lines = [line.rstrip(b"\n") for line in f if line.strip()]
    repeats = lines[100:130]  # a replay, as after a resume by timestamp
    extra = [*repeats, *malformed_events(), canary_event(1), canary_event(2)]
    return inject(lines, extra, seed=5)


def _environment(port: int, stream_url: str, db_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIKIPULSE_")}
    env.update(
        {
            "WIKIPULSE_HOST": "127.0.0.1",
            "WIKIPULSE_PORT": str(port),
            "WIKIPULSE_STORE": "sqlite",
            "WIKIPULSE_SQLITE_PATH": str(db_path),
            "WIKIPULSE_STREAM_URL": stream_url,
            # Only the shutdown flush may commit: no batch fills up or grows old meanwhile.
            "WIKIPULSE_BATCH_MAX_EVENTS": "1000000",
            "WIKIPULSE_BATCH_MAX_MS": "3600000",
            "WIKIPULSE_JWT_SECRET": SECRET,
            "WIKIPULSE_USERS": f"alice:{FAST.hash('a password nobody uses here')}",
            "WIKIPULSE_LOG_FORMAT": "json",
            "WIKIPULSE_LOG_LEVEL": "DEBUG",
        }
    )
    return env


def _wait_for_all_events(base: str, proc: subprocess.Popen[bytes], lines: int) -> dict[str, Any]:
    """Poll /status until every line sent has been accounted for; return that status."""
    deadline = time.monotonic() + START_TIMEOUT
    last: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited early with {proc.returncode}")
            try:
                last = client.get("/status").json()
            except httpx.TransportError:
                last = {}
            c = last.get("consumer", {})
            outcomes = ("events_consumed", "duplicates", "invalid", "canaries_dropped")
            seen = sum(c.get(k, 0) for k in outcomes)
            if seen == lines:
                return last
            time.sleep(0.05)
    raise AssertionError(f"not every event was consumed in {START_TIMEOUT}s: {last}")


async def _read_store(path: Path) -> tuple[dict[str, Any], ResumePoint]:
    store = SQLiteStore(path, create_schema=False)
    await store.open()
    try:
        stats = (await store.snapshot()).to_dict()
        return stats, await store.resume_point()
    finally:
        await store.close()


@pytest.fixture(scope="module")
def serve_run(tmp_path_factory: pytest.TempPathFactory) -> ServeRun:
    """Run `wikipulse serve` over the fake stream, SIGTERM it once all is consumed."""
    tmp = tmp_path_factory.mktemp("shutdown")
    lines = _stream_lines(tmp_path_factory.mktemp("generated"))
    db_path = tmp / "wikipulse.db"
    port = _free_port()
    # "hold": after the last event the stream stays open and silent, as the real one does.
    with EventStreamsServer(lines, faults=Faults(when_done="hold")) as srv:
        stderr_path = tmp / "stderr.log"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "wikipulse", "serve"],
                cwd=tmp,  # no stray .env is read
                env=_environment(port, srv.url, db_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            try:
                base = f"http://127.0.0.1:{port}"
                status = _wait_for_all_events(base, proc, len(lines))
                probes = (
                    main(["healthcheck", "--url", f"{base}/status"]),
                    main(["healthcheck", "--ready", "--url", f"{base}/ready"]),
                )
                metrics = httpx.get(f"{base}/metrics", timeout=2.0).text
                stored = asyncio.run(_read_store(db_path))[0]["total"]
                proc.send_signal(signal.SIGTERM)
                returncode = proc.wait(timeout=EXIT_TIMEOUT)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        last_delivered_id = srv.last_delivered_id
    return ServeRun(
        lines=lines,
        last_delivered_id=last_delivered_id,
        status_before_sigterm=status,
        probes=probes,
        metrics_before_sigterm=metrics,
        stored_before_sigterm=stored,
        returncode=returncode,
        stderr=stderr_path.read_text(encoding="utf-8"),
        db_path=db_path,
    )


def test_sigterm_exits_zero(serve_run: ServeRun) -> None:
    """SIGTERM stops `serve` gracefully with exit code 0 within the time limit."""
    assert serve_run.returncode == 0, serve_run.stderr[-3000:]


def test_sigterm_commits_the_last_batch(serve_run: ServeRun) -> None:
    """The batch held in memory at SIGTERM is in the store afterwards, equal to a stdlib count."""
    expected = expected_stats(serve_run.lines)
    assert serve_run.stored_before_sigterm == 0  # so only the shutdown flush wrote anything
    assert serve_run.status_before_sigterm["consumer"]["events_consumed"] == expected["total"]
    stats, resume = asyncio.run(_read_store(serve_run.db_path))
    assert stats == expected
    assert resume.position == serve_run.last_delivered_id


def test_probes_and_metrics_of_the_running_service(serve_run: ServeRun) -> None:
    """While serving, both health-check commands pass and /metrics counts what /status does."""
    expected = expected_stats(serve_run.lines)
    assert serve_run.probes == (0, 0)
    assert f"\nwikipulse_events_consumed_total {float(expected['total'])}\n" in (
        serve_run.metrics_before_sigterm
    )


def test_json_logs_are_one_object_a_line(serve_run: ServeRun) -> None:
    """With WIKIPULSE_LOG_FORMAT=json every stderr line, shutdown included, is a JSON record."""
    lines = serve_run.stderr.splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("connected to 127.0.0.1") for m in messages)
    assert any("shutdown" in m.lower() for m in messages)
