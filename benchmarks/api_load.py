"""Benchmark the HTTP API of `wikipulse serve` while it ingests a paced local stream.

Starts a local SSE server sending generated events at `--rate` events/s, then `wikipulse serve`
(SQLite in a temporary directory by default, an admin from `wikipulse hash-password`, a fixed
JWT secret) against it, logs in, and loads `/stats` (with the bearer token) and `/status` in
turn, `--runs` times each, with wrk (2 threads) if installed, else a Python generator. Prints
requests/s and p50/p99 latency per run, and the best and the median.

    python benchmarks/api_load.py                         # SQLite, 50 connections, 15 s
    python benchmarks/api_load.py --store memory --seconds 5 --runs 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from load import LoadResult, run_load
from service import PASSWORD, hash_password, login, serve, serve_env, sse_server
from wikipulse.generate import GeneratorOptions, write_file

#: Issue #9's target for `/stats` with a token while the consumer ingests into SQLite.
TARGET_P99_MS = 10.0
TARGET_RPS = 8_000


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--rate", type=float, default=1000.0, help="stream events/s")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--routes", default="/stats,/status")
    args = parser.parse_args()
    routes = args.routes.split(",")

    workdir = Path(tempfile.mkdtemp(prefix="wikipulse-api-bench-"))
    # Enough events for the whole run plus start-up, so the stream never runs dry.
    events = int(args.rate * (len(routes) * args.runs * (args.seconds + 2) + 60))
    data = workdir / "events.ndjson"
    print(f"generating {events:,} events ...", file=sys.stderr)
    write_file(GeneratorOptions(events, seed=7), data)
    users = f"admin:{hash_password(PASSWORD)}"

    results: dict[str, list[LoadResult]] = {route: [] for route in routes}
    with (
        sse_server(data, args.rate) as stream,
        serve(serve_env(workdir, stream.url, args.store, users), workdir) as (client, _),
    ):
        token = login(client)
        base = str(client.base_url).rstrip("/")
        time.sleep(2)  # let the consumer connect and the first batches commit
        for run in range(args.runs):
            for route in routes:
                headers = {"Authorization": f"Bearer {token}"} if route == "/stats" else {}
                result = run_load(
                    base + route, headers, connections=args.connections, seconds=args.seconds
                )
                results[route].append(result)
                print(
                    f"run {run + 1} {route:8} {result.tool}: {result.requests_per_second:9,.0f} "
                    f"req/s  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
                    + (f"  NON-2xx: {result.non_2xx}" if result.non_2xx else ""),
                    flush=True,
                )
        consumed = client.get("/status").json()["consumer"]["events_consumed"]
    print(
        f"\nstore {args.store}, stream {args.rate:,.0f} events/s ({consumed:,} consumed), "
        f"{args.connections} connections, {args.seconds:g} s per run, {args.runs} runs"
    )
    print(f"{'route':8} {'best req/s':>11} {'median req/s':>13} {'best p99':>9} {'median p99':>11}")
    for route, runs in results.items():
        rps = [r.requests_per_second for r in runs]
        p99 = [r.p99_ms for r in runs]
        print(
            f"{route:8} {max(rps):11,.0f} {statistics.median(rps):13,.0f} "
            f"{min(p99):7.2f}ms {statistics.median(p99):9.2f}ms"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if "/stats" in results:
        runs = results["/stats"]
        # The target holds for the median run, so one lucky run does not meet it.
        rps = statistics.median(r.requests_per_second for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        ok = rps >= TARGET_RPS and p99 <= TARGET_P99_MS
        setup = args.store == "sqlite" and args.connections == 50 and args.rate >= 1000
        print(
            f"target (issue #9): /stats p99 <= {TARGET_P99_MS:g} ms at >= {TARGET_RPS:,} req/s "
            f"(SQLite, 50 connections, ~1,000 events/s), median run: {rps:,.0f} req/s, "
            f"p99 {p99:.2f} ms: {'MET' if ok else 'NOT MET'}"
            + ("" if setup else " (not the target's set-up)")
        )


if __name__ == "__main__":
    main()
