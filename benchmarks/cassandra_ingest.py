"""Live ingest into Cassandra: can `wikipulse serve` keep up with a paced stream, and how fast
does each commit go?

A local EventStreams stand-in (tests/support/eventstreams.py) sends generated events at a fixed
rate for a while; `wikipulse serve` consumes them into a fresh keyspace of the local node
(consistency ONE). Printed: the rate offered and the rate counted, the largest backlog seen,
how long the last events took to be counted after the stream ended, and the commit latency
quantiles read from `/metrics` (`wikipulse_store_commit_duration_seconds`).

    python benchmarks/cassandra_ingest.py                    # 5,000 events/s for 60 s
    python benchmarks/cassandra_ingest.py --rate 8000 --seconds 30
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the stream stand-in lives with the tests

import httpx  # noqa: E402
from argon2 import PasswordHasher  # noqa: E402
from tests.support.counting import expected_stats  # noqa: E402
from tests.support.eventstreams import EventStreamsServer, Faults  # noqa: E402

from wikipulse.generate import GeneratorOptions, write_file  # noqa: E402

HOSTS = os.environ.get("WIKIPULSE_TEST_CASSANDRA_HOSTS", "127.0.0.1")
METRIC = "wikipulse_store_commit_duration_seconds"
PASSWORD = secrets.token_urlsafe(16)  # a throwaway login for this run only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The upper bound of the histogram bucket holding quantile `q` (cumulative buckets)."""
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def commit_histogram(metrics: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative buckets, sum, count) of the commit duration histogram in a /metrics page."""
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith(f"{METRIC}_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(f"{METRIC}_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{METRIC}_count"):
            count = float(line.rsplit(" ", 1)[1])
    return buckets, total, count


def drop_keyspace(keyspace: str) -> None:
    """Drop the benchmark's keyspace."""
    from cassandra.cluster import Cluster

    cluster = Cluster(HOSTS.split(","))
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        cluster.shutdown()


def main() -> None:
    """Offer the paced stream to `serve`, watch it count, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000, help="events per second offered")
    parser.add_argument("--seconds", type=float, default=60, help="how long the stream lasts")
    parser.add_argument("--batch-max-ms", type=int, default=500)
    args = parser.parse_args()

    events = int(args.rate * args.seconds)
    work = Path(tempfile.mkdtemp(prefix="wikipulse-ingest-"))
    data = work / "events.ndjson"
    write_file(GeneratorOptions(events, seed=3), data)
    lines = data.read_bytes().splitlines()
    expected = expected_stats(lines)["total"]
    keyspace = f"wp_ingest_{time.time_ns()}"
    port = _free_port()
    faults = Faults(events_per_second=args.rate, when_done="hold")
    with EventStreamsServer(lines, id_format="offset", faults=faults) as srv:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "WIKIPULSE_PORT": str(port),
            "WIKIPULSE_HOST": "127.0.0.1",
            "WIKIPULSE_STREAM_URL": srv.url,
            "WIKIPULSE_STORE": "cassandra",
            "WIKIPULSE_CASSANDRA_HOSTS": HOSTS,
            "WIKIPULSE_CASSANDRA_KEYSPACE": keyspace,
            "WIKIPULSE_CASSANDRA_CONSISTENCY": "ONE",
            "WIKIPULSE_MIGRATE_ON_START": "true",
            "WIKIPULSE_BATCH_MAX_MS": str(args.batch_max_ms),
            "WIKIPULSE_JWT_SECRET": secrets.token_urlsafe(32),
            "WIKIPULSE_USERS": f"bench:{PasswordHasher().hash(PASSWORD)}",
        }
        log = (work / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "wikipulse", "serve"], env=env, stdout=log, stderr=log
        )
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        try:
            figures = _watch(srv, http, proc, expected, args.seconds)
            metrics = http.get("/metrics").text
        finally:
            proc.terminate()
            proc.wait(30)
            http.close()
    drop_keyspace(keyspace)
    buckets, spent, commits = commit_histogram(metrics)
    started, first_at, streamed_at, counted_at, backlog = figures
    print(f"offered {args.rate:,.0f} events/s for {args.seconds:.0f} s ({events:,} events)")
    print(f"stream delivered in {streamed_at - first_at:.1f} s")
    print(f"counted {expected:,} events {counted_at - streamed_at:.1f} s after the stream ended")
    print(f"counted rate {expected / (counted_at - first_at):,.0f} events/s")
    print(f"largest backlog seen: {backlog:,} events")
    print(f"serve start-up to first count: {first_at - started:.1f} s")
    print(
        f"{commits:.0f} commits, mean {spent / max(commits, 1) * 1000:.0f} ms, "
        f"p50 <= {quantile(buckets, 0.5)} s, p99 <= {quantile(buckets, 0.99)} s "
        "(upper bounds of histogram buckets)"
    )
    within = dict(buckets)
    print(
        f"commits over 0.5 s: {commits - within.get(0.5, commits):.0f}, "
        f"over 1 s: {commits - within.get(1.0, commits):.0f}, "
        f"over 2.5 s: {commits - within.get(2.5, commits):.0f}"
    )
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end")


def _watch(
    srv: EventStreamsServer,
    http: httpx.Client,
    proc: subprocess.Popen[bytes],
    expected: int,
    seconds: float,
) -> tuple[float, float, float, float, int]:
    """Poll /stats each 0.5 s until every event is committed; return the timings and backlog.

    The backlog is the events delivered by the stream and not yet committed to the store.
    """
    started = time.monotonic()
    first_at = streamed_at = 0.0
    backlog = 0
    deadline = started + seconds * 3 + 120
    headers: dict[str, str] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("serve exited; see its log")
        try:
            if not headers:
                login = http.post("/login", json={"username": "bench", "password": PASSWORD})
                headers["Authorization"] = f"Bearer {login.json()['access_token']}"
            consumed = http.get("/stats", headers=headers).json()["total"]
        except (httpx.TransportError, KeyError):
            time.sleep(0.5)
            continue
        now = time.monotonic()
        if consumed and not first_at:
            first_at = now
        if srv.finished.is_set() and not streamed_at:
            streamed_at = now
        backlog = max(backlog, len(srv.delivered) - consumed)
        if consumed >= expected and streamed_at:
            return started, first_at, streamed_at, now, backlog
        time.sleep(0.5)
    raise SystemExit("serve did not count every event in time")


if __name__ == "__main__":
    main()
