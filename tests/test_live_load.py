"""`/stats/live` under load: 200 clients and one that never reads, while ingest runs; SIGTERM."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.eventstreams import EventStreamsServer, Faults
from tests.support.generated import generate
from tests.support.served import PASSWORD, QueueSource, make_app, serving
from tests.test_serve_e2e import PASSWORD as E2E_PASSWORD
from tests.test_serve_e2e import Service, _env

CLIENTS = 200
EVENTS = 100_000
ROOT = Path(__file__).resolve().parent.parent


def _events(count: int) -> list[bytes]:
    """Small valid events over 400 wikis and 5,000 users, a quarter by bots."""
    return [
        json.dumps(
            {
                "meta": {"id": f"load-{n}", "domain": "x", "dt": "2024-05-01T12:00:00Z"},
                "server_name": f"wiki{n % 400}.wikipedia.org",
                "user": f"user-{n % 5000}",
                "bot": n % 4 == 0,
                "type": "edit",
            }
        ).encode()
        for n in range(count)
    ]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # this process: the server's thread
    return usage.ru_utime + usage.ru_stime


async def _consumed(
    client: httpx.AsyncClient, count: int, start: Callable[[], None]
) -> tuple[float, float]:
    """Seconds and CPU seconds from `start()` (which feeds the events) until /status says
    `count` events were consumed (90 s at most). The clock starts first: the server's thread
    may fold much of a feed before this coroutine runs again, and that CPU must count."""
    started, cpu = time.monotonic(), _cpu()
    start()
    while (await client.get("/status")).json()["consumer"]["events_consumed"] < count:
        assert time.monotonic() - started < 90, "ingest did not finish in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started, _cpu() - cpu


def _silent_client(base: str, token: str) -> socket.socket:
    """A raw client with a tiny receive buffer that asks for the stream and never reads it."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    request = f"GET /stats/live HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
    sock.sendall(request.encode())
    return sock


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_200_clients_follow_ingest_to_the_exact_end(tmp_path: Path) -> None:
    """200 clients (another process) all end on the final statistics; a silent one harms none."""
    lines = _events(2 * EVENTS)
    source = QueueSource()
    app = make_app(source)
    with serving(app) as base:
        figures = asyncio.run(_load(base, source, lines, app.state.services.live))
    (alone, alone_cpu), (loaded, loaded_cpu) = figures["alone"], figures["loaded"]
    print(  # shown with `pytest -s`: the figures the README quotes
        f"\n{EVENTS} events without clients: {alone:.2f} s, {alone_cpu:.2f} s CPU "
        f"({EVENTS / alone:,.0f}/s); with {CLIENTS} clients: {loaded:.2f} s, "
        f"{loaded_cpu:.2f} s CPU ({EVENTS / loaded:,.0f}/s); clients: {figures['summary']}"
    )
    summary = figures["summary"]
    assert summary["failures"] == []
    assert summary["at_final"] == summary["still_open"] == CLIENTS
    # At most one message per WIKIPULSE_BATCH_MAX_MS (50 ms here), plus the first.
    assert summary["max_messages"] <= loaded / 0.05 + 3
    # The fan-out takes at most a fifth of the loop (FANOUT_SHARE): ingest's own CPU stays
    # in charge. CPU time, not wall time: other work on a shared machine slows both phases.
    assert loaded_cpu < 2.5 * alone_cpu + 2


async def _load(base: str, source: QueueSource, lines: list[bytes], feed: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        login = await client.post("/login", json={"username": "alice", "password": PASSWORD})
        token = login.json()["access_token"]
        alone = await _consumed(client, EVENTS, lambda: source.feed(lines[:EVENTS]))

        clients = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.sse_clients",
            base,
            token,
            str(CLIENTS),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert clients.stdin is not None
        assert clients.stdout is not None
        silent = _silent_client(base, token)
        try:
            ready = await asyncio.wait_for(clients.stdout.readline(), 60)
            assert ready == b"ready\n"
            assert feed.clients == CLIENTS + 1
            loaded = await _consumed(client, 2 * EVENTS, lambda: source.feed(lines[EVENTS:]))
            # Consumed (in /status) comes before committed (in /stats): wait for the last commit.
            deadline = time.monotonic() + 30
            while True:
                final = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
                if final.json()["total"] == 2 * EVENTS or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert final.json()["total"] == 2 * EVENTS
            clients.stdin.write(final.content + b"\n")
            await clients.stdin.drain()
            summary = json.loads(await asyncio.wait_for(clients.stdout.readline(), 60))
            # The silent client still holds its stream; reading it now ends on the final figures.
            assert feed.clients >= 1
            silent.setblocking(False)
            _drain_until(silent, final.content)
        finally:
            silent.close()
            if clients.returncode is None:
                clients.kill()
            await clients.wait()
    return {"alone": alone, "loaded": loaded, "summary": summary}


def _drain_until(sock: socket.socket, wanted: bytes, timeout: float = 20) -> None:
    """Read the socket until `wanted` has arrived (the newest message reaches it in the end)."""
    received = b""
    deadline = time.monotonic() + timeout
    while wanted not in received[-len(wanted) * 2 - 64 :]:
        assert time.monotonic() < deadline, "the silent client never got the final statistics"
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        assert chunk, "the server closed the silent client's stream"
        received = received[-len(wanted) * 4 :] + chunk


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigterm_ends_serve_promptly_with_live_clients_connected(tmp_path: Path) -> None:
    """`wikipulse serve` with open /stats/live streams still stops on SIGTERM, with exit 0."""
    lines = generate(tmp_path, 500, seed=3, canaries=0).read_bytes().splitlines()
    with EventStreamsServer(lines, faults=Faults(when_done="hold")) as srv:
        service = Service(_env(srv, tmp_path, "memory"), tmp_path)
        try:
            login = service.http.post(
                "/login", json={"username": "alice", "password": E2E_PASSWORD}
            )
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            with service.http.stream("GET", "/stats/live", headers=auth) as live:
                assert live.status_code == 200
                lines = live.iter_lines()
                assert next(lines) == "event: stats"
                started = time.monotonic()
                service.proc.send_signal(signal.SIGTERM)
                assert service.proc.wait(timeout=20) == 0
                assert time.monotonic() - started < 10
                assert all(
                    not line.startswith("event: ") or line in ("event: stats", "event: bucket")
                    for line in lines
                )
        finally:
            if service.proc.poll() is None:
                service.kill()
            service.http.close()
