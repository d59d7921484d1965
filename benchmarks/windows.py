"""Benchmark the time windows: query latency over 1 h and 24 h, and disk per day, per store.

Generates `--events` events spread over `--hours` of event time (48 by default: two days)
with hot pages, replays them into each store it reaches, then times `/stats/timeseries`
and `/stats/top` queries as the API runs them (store read plus body), best and median of
`--runs`. It also prints how much disk the window tables take, per day of event time.

The live stream brings about 55 events/s (~5 million a day); with fewer events the output
states the scale (events/s of event time over the live rate), and latencies and disk grow
roughly in proportion to the rows a window holds, i.e. to the rate.

    python benchmarks/windows.py --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from wikipulse.generate import GeneratorOptions, write_file
from wikipulse.ingest import Pipeline
from wikipulse.replay.files import file_feed
from wikipulse.stores import StatsStore
from wikipulse.window_query import SeriesQuery, TopQuery, WindowStore, series_body, top_body

POSTGRES_DSN = os.environ.get(
    "WIKIPULSE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
CASSANDRA_HOSTS = os.environ.get("WIKIPULSE_TEST_CASSANDRA_HOSTS", "127.0.0.1")
LIVE_RATE = 55.0
#: The wiki of the one-wiki timeseries (one of the generator's busiest).
WIKI = "en.wikipedia.org"


def generate(events: int, hours: float, directory: Path) -> tuple[Path, float]:
    """Make (or reuse) the events file; return it and its rate in events/s of event time."""
    rate = events / (hours * 3600)
    path = directory / f"windows-{events}-{hours:g}h.ndjson"
    if not path.exists():
        print(f"generating {events:,} events over {hours:g} h into {path} ...", file=sys.stderr)
        write_file(GeneratorOptions(events, seed=7, rate=rate, page_skew=4), path)
    return path, rate


async def timed(work: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float, float]:
    """Best and median wall seconds of `runs` calls, and the median CPU seconds of the process.

    On a shared machine the wall time includes waiting for a core; the CPU time (all threads
    of this process, which runs nothing else meanwhile) is what the query itself costs.
    """
    times, cpu = [], []
    for _ in range(runs):
        started, used = time.perf_counter(), time.process_time()
        await work()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    return min(times), statistics.median(times), statistics.median(cpu)


#: The targets of issue #10, at the live rate with two days of data: (hours, seconds).
TARGETS = {1: 0.1, 24: 1.0}


async def queries(store: WindowStore, runs: int) -> list[tuple[str, int, float, float, float]]:
    """Time the timeseries (all wikis, and one) and top queries over the last 1 h and 24 h."""
    span = await store.window_span()
    assert span is not None
    until = span[1] + 60
    results = []
    for hours in (1, 24):
        since = until - hours * 3600
        for step in (60, 3600):
            q = SeriesQuery(step, since - since % step, -(-until // step) * step)

            async def series(q: SeriesQuery = q) -> None:
                series_body(q, await store.window_series(q))

            results.append(
                (f"timeseries {hours:>2} h step {step}", hours, *await timed(series, runs))
            )
        for step in (300,):
            w = SeriesQuery(step, since - since % step, -(-until // step) * step, WIKI)

            async def one_wiki(q: SeriesQuery = w) -> None:
                series_body(q, await store.window_series(q))

            label = f"timeseries {hours:>2} h step {step} 1 wiki"
            results.append((label, hours, *await timed(one_wiki, runs)))
        for by in ("server_name", "user", "page"):
            t = TopQuery(by, since, until, 10)

            async def top(t: TopQuery = t) -> None:
                top_body(t, await store.window_top(t))

            results.append((f"top {by:<11} {hours:>2} h", hours, *await timed(top, runs)))
    return results


async def disk_bytes(name: str, store: Any, path: Path | None, schema: str) -> int | None:
    """Bytes the window tables take (PostgreSQL: relations; SQLite: dbstat, else the file)."""
    if name == "postgres":
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(POSTGRES_DSN)
        try:
            size: int = await conn.fetchval(
                "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND c.relname LIKE 'wp_win_%' AND c.relkind = 'r'",
                schema,
            )
        finally:
            await conn.close()
        return size
    if name == "sqlite" and path is not None:
        return _sqlite_bytes(path)
    if name == "cassandra":
        await _cassandra_partitions(store)
        return await _cassandra_bytes(store)
    return None


async def _cassandra_partitions(store: Any) -> None:
    """Print the largest window partition (rows) and the TTLs left, to show they stay bounded."""
    from wikipulse.stores.cassandra import driver

    session = store._session
    rows = await driver.result(
        session.execute_async(
            "SELECT g, period, count(*) AS n, min(ttl(seq)) AS low, max(ttl(seq)) AS high "
            "FROM window_versions GROUP BY ingester_id, g, period"
        )
    )
    for g in (60, 300, 3600):
        mine = [r for r in rows if r["g"] == g]
        if mine:
            print(
                f"  windows partitions g={g}: {len(mine)}, rows each at most "
                f"{max(r['n'] for r in mine)}, TTL left {min(r['low'] for r in mine):,}"
                f"-{max(r['high'] for r in mine):,} s"
            )


async def _cassandra_bytes(store: Any) -> int:
    """Bytes of the window blobs as written (one version per bucket; the data on disk holds
    up to two per bucket before compaction, compressed by the table's LZ4)."""
    total = 0
    span = await store.window_span()
    assert span is not None
    for ingester in (r["ingester_id"] for r in await store._execute("win_ingesters", [])):
        for g in (60, 300, 3600):  # 5-minute and hour rows: sealed (derived) copies
            for period in range(span[0] - span[0] % 3600, span[1] + 1, 3600):
                for row in await store._execute(
                    "win_read:counts,users,pages", [ingester, g, period, period, period + 3600]
                ):
                    total += sum(len(row[c] or b"") for c in ("counts", "users", "pages"))
    return total


def _sqlite_bytes(path: Path) -> int:
    """Bytes of the SQLite window tables (dbstat), else of the whole file."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        row = conn.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'win_%' OR name LIKE "
            "'sqlite_autoindex_win_%'"
        ).fetchone()
        return int(row[0])
    except sqlite3.OperationalError:  # no dbstat in this build: the whole file
        return path.stat().st_size
    finally:
        conn.close()


def make(
    name: str, directory: Path, schema: str, db: Path | None = None
) -> tuple[StatsStore, Path | None]:
    """A fresh store of that kind keeping every window of the run (retention 1000 h); SQLite
    at `db` if given (kept, and reused when it already holds windows)."""
    if name == "memory":
        from wikipulse.stores.memory import MemoryStore

        return MemoryStore(window_retention_hours=1000), None
    if name == "sqlite":
        from wikipulse.stores.sqlite import SQLiteStore

        path = db or directory / f"bench-{schema}.db"
        return SQLiteStore(path, window_retention_hours=1000), path
    if name == "cassandra":
        from wikipulse.stores.cassandra import CassandraStore

        keyspace = schema
        store = CassandraStore(
            CASSANDRA_HOSTS.split(","),
            keyspace=keyspace,
            consistency="ONE",
            create_schema=True,
            window_retention_hours=1000,
        )
        return store, None
    from wikipulse.stores.postgres import PostgresStore

    return PostgresStore(POSTGRES_DSN, schema=schema, window_retention_hours=1000), None


async def bench(
    name: str,
    path: Path,
    hours: float,
    rate: float,
    runs: int,
    scratch: str | None,
    db: Path | None = None,
) -> None:
    """Replay into one store, then print its query latencies and disk per day."""
    schema = f"wp_bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        store, db_path = make(name, Path(d), schema, db if name == "sqlite" else None)
        try:
            await store.open()
        except Exception as exc:
            print(f"{name}: skipped ({exc})", file=sys.stderr)
            return
        try:
            assert isinstance(store, WindowStore)
            if db is not None and name == "sqlite" and await store.window_span() is not None:
                print(f"\n{name}: reusing the windows in {db}")
                await report(name, store, db_path, schema, hours, rate, runs)
                return
            started, used = time.perf_counter(), time.process_time()
            pipeline = Pipeline(store, max_events=20_000, dedup_window=100_000)
            await pipeline.run(file_feed(path))
            ingest, ingest_cpu = time.perf_counter() - started, time.process_time() - used
            events = pipeline.state.counters.counted
            if name == "cassandra":  # sealed 5-minute and hour rows are written after commits
                sealing = time.perf_counter()
                await store._windows.sealer.drain()  # type: ignore[attr-defined]
                print(f"cassandra: sealing caught up {time.perf_counter() - sealing:.1f} s later")
            assert isinstance(store, WindowStore)
            print(
                f"\n{name}: {events:,} events ingested in {ingest:.1f} s "
                f"({events / ingest:,.0f}/s; "
                f"{ingest_cpu:.1f} s of CPU in this process, {events / ingest_cpu:,.0f} events "
                f"per CPU-second) at load average {os.getloadavg()[0]:.1f}"
            )
            await report(name, store, db_path, schema, hours, rate, runs)
        finally:
            await store.close()
            if name == "postgres":
                import asyncpg

                conn = await asyncpg.connect(POSTGRES_DSN)
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await conn.close()
            if name == "cassandra":
                _drop_keyspace(schema)


async def report(
    name: str,
    store: Any,
    db_path: Path | None,
    schema: str,
    hours: float,
    rate: float,
    runs: int,
) -> None:
    """Print the query latencies against the targets and the disk per day."""
    live = rate >= LIVE_RATE * 0.9
    missed = 0
    for label, span, best, median, cpu in await queries(store, runs):
        ok = median < TARGETS[span]
        missed += not ok
        verdict = ("met" if ok else "MISSED") if live else "n/a below the live rate"
        print(
            f"  {label:<34} best {best * 1000:7.1f} ms  median {median * 1000:7.1f} ms"
            f"  (CPU {cpu * 1000:7.1f} ms)  target < {TARGETS[span] * 1000:,.0f} ms: "
            f"{verdict}"
        )
    if live:
        print(f"  targets: {'all met' if not missed else f'{missed} missed'} (median)")
    size = await disk_bytes(name, store, db_path, schema)
    if size is not None:
        per_day = size / hours * 24
        live = per_day * LIVE_RATE / rate
        print(
            f"  window tables: {size / 1e6:,.1f} MB for {hours:g} h = "
            f"{per_day / 1e6:,.1f} MB/day here, ~{live / 1e9:,.2f} GB/day at the live rate"
            " (linear extrapolation)"
        )


def _drop_keyspace(keyspace: str) -> None:
    """Drop the Cassandra keyspace of a run."""
    from cassandra.cluster import Cluster

    from wikipulse.stores.cassandra.driver import connection_class

    cluster = Cluster(CASSANDRA_HOSTS.split(","), connection_class=connection_class())
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        cluster.shutdown()


def main() -> None:
    """Parse the arguments and run the benchmark on each store."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=48.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="memory,sqlite,postgres,cassandra")
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the events go"
    )
    parser.add_argument("--scratch", help="where the SQLite file goes (default: a temp dir)")
    parser.add_argument(
        "--db", type=Path, help="SQLite file to keep; reused (no replay) if it holds windows"
    )
    args = parser.parse_args()
    path, rate = generate(args.events, args.hours, args.dir)
    print(
        f"{args.events:,} events over {args.hours:g} h of event time: {rate:.2f} events/s, "
        f"{rate / LIVE_RATE:.1%} of the live rate ({LIVE_RATE:g}/s)"
    )
    for name in args.stores.split(","):
        asyncio.run(bench(name, path, args.hours, rate, args.runs, args.scratch, args.db))


if __name__ == "__main__":
    main()
