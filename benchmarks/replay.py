"""Benchmark `wikipulse replay` against a naive stdlib baseline and a decode-only loop.

Each command runs as its own process, timed from start to exit (interpreter start-up and
imports included), several times; the best and the median wall time are printed with
events/s and the peak resident memory of the process.

    python benchmarks/replay.py                       # 500,000 generated events
    python benchmarks/replay.py --events 1000000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datafiles import compile_package, generated, memory_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POSTGRES_DSN = os.environ.get(
    "WIKIPULSE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
CASSANDRA_HOSTS = os.environ.get("WIKIPULSE_TEST_CASSANDRA_HOSTS", "127.0.0.1")
#: Issue #9: the replay into memory, best and median, against the naive baseline.
TARGET_SPEEDUP = 6.0


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, bytes, float]:
    """Run a command; return its wall time, its peak RSS in KiB, its stdout and its CPU time.

    The CPU time (user + system, the worker processes it waited for included) is what a busy
    machine disturbs least: on a shared machine compare it when the wall times are noisy.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return elapsed, usage.ru_maxrss, stdout, usage.ru_utime + usage.ru_stime


def postgres_reachable() -> bool:
    """Whether the benchmark's PostgreSQL answers."""
    probe = (
        "import asyncio, asyncpg, sys\n"
        "async def main():\n"
        "    c = await asyncpg.connect(sys.argv[1], timeout=3)\n"
        "    await c.close()\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, POSTGRES_DSN], capture_output=True, check=False
    )
    return result.returncode == 0


def cassandra_reachable() -> bool:
    """Whether the benchmark's Cassandra node answers."""
    probe = (
        "import sys\n"
        "from cassandra.cluster import Cluster\n"
        "c = Cluster(sys.argv[1].split(','), connect_timeout=3)\n"
        "c.connect().shutdown(); c.shutdown()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, CASSANDRA_HOSTS], capture_output=True, check=False
    )
    return result.returncode == 0


def _drop_cassandra(env: dict[str, str]) -> None:
    # Each Cassandra run writes a keyspace of its own; drop it afterwards (untimed).
    code = (
        "import sys\n"
        "from cassandra.cluster import Cluster\n"
        "c = Cluster(sys.argv[1].split(','))\n"
        "c.connect().execute('DROP KEYSPACE IF EXISTS ' + sys.argv[2], timeout=120)\n"
        "c.shutdown()\n"
    )
    keyspace = env["WIKIPULSE_CASSANDRA_KEYSPACE"]
    subprocess.run([sys.executable, "-c", code, CASSANDRA_HOSTS, keyspace], check=True)


def main() -> None:
    """Run every variant and print a table of figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    # tmpfs keeps the data file in memory: on some machines the page cache drops a file of
    # this size between runs, and then every variant would be timing the disk, not itself.
    default_dir = memory_dir()
    parser.add_argument("--dir", type=Path, default=default_dir, help="where the data goes")
    parser.add_argument("--no-stores", action="store_true", help="memory store only")
    parser.add_argument("--only", help="run only the variants whose name contains this")
    args = parser.parse_args()

    data = generated(args.events, args.seed, args.dir)
    package = compile_package()
    print(f"bytecode of {package} compiled, as an installed package has it", file=sys.stderr)
    wikipulse = [sys.executable, "-m", "wikipulse"]
    db_dir = Path(tempfile.mkdtemp(prefix="wikipulse-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIKIPULSE_")}
    variants: list[tuple[str, list[str], dict[str, str]]] = [
        (
            "naive stdlib baseline",
            [sys.executable, str(HERE / "naive_baseline.py"), str(data)],
            env,
        ),
        (
            "decode-only loop (msgspec)",
            [sys.executable, str(HERE / "decode_only.py"), str(data)],
            env,
        ),
        (
            "wikipulse replay, 1 process",
            [*wikipulse, "replay", "-q", "--workers", "1", str(data)],
            env,
        ),
        ("wikipulse replay (memory)", [*wikipulse, "replay", "-q", str(data)], env),
    ]
    if not args.no_stores:
        sqlite_env = {**env, "WIKIPULSE_SQLITE_PATH": str(db_dir / "bench.db")}
        variants.append(
            (
                "wikipulse replay (sqlite)",
                [*wikipulse, "replay", "-q", "--store", "sqlite", str(data)],
                sqlite_env,
            )
        )
        if postgres_reachable():
            pg_env = {**env, "WIKIPULSE_POSTGRES_DSN": POSTGRES_DSN}
            variants.append(
                (
                    "wikipulse replay (postgres)",
                    [*wikipulse, "replay", "-q", "--store", "postgres", str(data)],
                    pg_env,
                )
            )
        else:
            print(f"postgres: not reachable at {POSTGRES_DSN}; skipped", file=sys.stderr)
        if cassandra_reachable():
            cassandra_env = {
                **env,
                "WIKIPULSE_CASSANDRA_HOSTS": CASSANDRA_HOSTS,
                "WIKIPULSE_CASSANDRA_CONSISTENCY": "ONE",
                "WIKIPULSE_MIGRATE_ON_START": "true",
            }
            variants.append(
                (
                    "wikipulse replay (cassandra)",
                    [*wikipulse, "replay", "-q", "--store", "cassandra", str(data)],
                    cassandra_env,
                )
            )
        else:
            print(f"cassandra: not reachable at {CASSANDRA_HOSTS}; skipped", file=sys.stderr)

    if args.only:
        variants = [v for v in variants if args.only in v[0]]
    print(
        f"{args.events:,} events, {data.stat().st_size / 1e6:.0f} MB, "
        f"best and median of {args.runs} runs, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}"
    )
    print(
        f"{'variant':32} {'best s':>8} {'median s':>9} {'events/s':>11} "
        f"{'best vs':>9} {'median vs':>9} {'peak RSS':>9} {'CPU s':>6}"
    )
    expected = None
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    rss: dict[str, int] = dict.fromkeys(times, 0)
    cpu: dict[str, list[float]] = {name: [] for name in times}
    # Round-robin: each run times every variant once, so a machine that speeds up or slows
    # down during the benchmark affects all variants alike.
    for _ in range(args.runs):
        for name, cmd, variant_env in variants:
            for db in db_dir.glob("bench.db*"):
                db.unlink()  # every store run starts empty so it counts the same events
            if "postgres" in name:
                _reset_postgres(variant_env)
            if "cassandra" in name:
                variant_env["WIKIPULSE_CASSANDRA_KEYSPACE"] = f"wp_bench_{time.time_ns()}"
            elapsed, peak, stdout, used = run(cmd, variant_env)
            if "cassandra" in name:
                _drop_cassandra(variant_env)
            times[name].append(elapsed)
            cpu[name].append(used)
            rss[name] = max(rss[name], peak)
            if stdout.startswith(b"{"):
                body = json.loads(stdout)
                if expected is None:
                    expected = body
                elif body != expected:
                    raise SystemExit(f"{name} printed different statistics from the baseline")
    baseline = min(times[variants[0][0]])
    baseline_median = statistics.median(times[variants[0][0]])
    for name, spent in times.items():
        best, median = min(spent), statistics.median(spent)
        print(
            f"{name:32} {best:8.2f} {median:9.2f} {args.events / best:11,.0f} "
            f"{baseline / best:8.1f}x {baseline_median / median:8.1f}x {rss[name] / 1024:6.0f} MB"
            f" {statistics.median(cpu[name]):6.2f}"
        )
    print("every variant that prints statistics printed the same numbers as the baseline")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (CPU s: median user + system)")
    target = "wikipulse replay (memory)"
    if target in times and variants[0][0] in times:
        best_x = baseline / min(times[target])
        median_x = baseline_median / statistics.median(times[target])
        print(
            f"target (issue #9): {target} >= {TARGET_SPEEDUP:g}x the baseline, best and median, "
            f"peak RSS no higher than the baseline's: {best_x:.1f}x / {median_x:.1f}x, "
            f"{rss[target] / 1024:.0f} MB vs {rss[variants[0][0]] / 1024:.0f} MB: "
            + met(min(best_x, median_x) >= TARGET_SPEEDUP and rss[target] <= rss[variants[0][0]])
        )


def met(ok: bool) -> str:
    """How a benchmark states a target's outcome."""
    return "MET" if ok else "NOT MET"


def _reset_postgres(env: dict[str, str]) -> None:
    # The PostgreSQL store keeps its tables; drop them so each run counts from zero.
    code = (
        "import asyncio, asyncpg, sys\n"
        "async def main():\n"
        "    c = await asyncpg.connect(sys.argv[1])\n"
        "    await c.execute('DROP TABLE IF EXISTS wp_state, wp_servers, wp_users, wp_recent')\n"
        "    await c.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code, env["WIKIPULSE_POSTGRES_DSN"]], check=True)


if __name__ == "__main__":
    main()
