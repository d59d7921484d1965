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
import math
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
#: `wikipulse serve` with the store's per-commit phase timings logged (DEBUG, that logger only).
SERVE = (
    "import logging, sys; "
    "logging.getLogger('wikipulse.stores.cassandra.store.timing').setLevel(logging.DEBUG); "
    "from wikipulse.cli import main; sys.argv = ['wikipulse', 'serve']; main()"
)
TARGET_P99 = 1.0  # issue #8: commit latency p99 under 1 s at 5,000 events/s


def phases(log: str) -> dict[str, list[float]]:
    """Per-commit phase timings (ms) from the store's timing lines in serve's log."""
    out: dict[str, list[float]] = {}
    for line in log.splitlines():
        if "commit seq=" not in line:
            continue
        for field in line.split("commit seq=", 1)[1].split():
            key, _, value = field.partition("=")
            try:
                out.setdefault(key, []).append(float(value))
            except ValueError:
                continue
    return out


def exact_quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile of some values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


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
        proc = subprocess.Popen([sys.executable, "-c", SERVE], env=env, stdout=log, stderr=log)
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        try:
            load_before = os.getloadavg()[0]
            node_pid = _cassandra_pid()
            node_before = _cpu_seconds(node_pid) if node_pid else 0.0
            figures = _watch(srv, http, proc, expected, args.seconds)
            metrics = http.get("/metrics").text
            cpu = _cpu_seconds(proc.pid)
            node_cpu = _cpu_seconds(node_pid) - node_before if node_pid else None
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
    log_text = (work / "serve.log").read_text(errors="replace")
    timings = phases(log_text)
    for key in ("events", "users", "new", "claims_ms", "windows_ms", "batch_ms", "total_ms"):
        values = timings.get(key, [])
        if values:
            print(
                f"  {key:<10} p50 {exact_quantile(values, 0.5):8.1f}  "
                f"p90 {exact_quantile(values, 0.9):8.1f}  p99 {exact_quantile(values, 0.99):8.1f}"
                f"  max {max(values):8.1f}  mean {sum(values) / len(values):8.1f}"
            )
    seals = [line.split("seal ", 1)[1] for line in log_text.splitlines() if " seal g=" in line]
    for seal in seals:
        if seal.startswith("g=3600"):
            print(f"  hour sealed off the commit path: {seal}")
    fives = sum(seal.startswith("g=300 ") for seal in seals)
    print(f"  5-minute buckets sealed off the commit path: {fives}")
    totals = timings.get("total_ms", [])
    if totals:
        p99 = exact_quantile(totals, 0.99) / 1000
        kept_up = expected / (counted_at - first_at) >= args.rate * 0.95
        verdict = "MET" if p99 < TARGET_P99 and kept_up else "NOT MET"
        print(
            f"commit max {max(totals):.0f} ms, p99 {p99 * 1000:.0f} ms over {len(totals)} "
            "commits (exact, store's own "
            f"timing), kept up: {kept_up}; target p99 < {TARGET_P99 * 1000:.0f} ms at "
            f"{args.rate:,.0f} events/s: {verdict}"
        )
    print(f"serve process CPU: {cpu:.1f} s ({cpu / max(counted_at - first_at, 1e-9):.2f} cores)")
    if node_cpu is not None:
        print(f"Cassandra node CPU meanwhile: {node_cpu:.1f} s (all clients of the node)")
    print(
        f"machine: {os.cpu_count()} cores, load {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )


def _cassandra_pid() -> int | None:
    """The local Cassandra node's pid, if .ci/services started it here (for its CPU time)."""
    # Where .ci/services keeps it (read only, for a figure; a missing file skips the figure).
    pidfile = Path("/var/tmp/wikipulse-services/cassandra/cassandra.pid")  # noqa: S108
    try:
        pid = int(pidfile.read_text().split()[0])
        _cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
