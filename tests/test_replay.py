"""`wikipulse replay` prints statistics equal to an independent count, for every format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA_DIR
from tests.support.counting import expected_stats, expected_stats_of_file
from tests.support.generated import generate
from wikipulse.ingest import Pipeline
from wikipulse.replay.files import detect_format, file_feed
from wikipulse.replay.parallel import RangeFolder, folded_ranges, read_range, split_ranges
from wikipulse.stores.memory import MemoryStore
from wikipulse.stores.sqlite import SQLiteStore
from wikipulse.window_query import TOP_KINDS, SeriesQuery, TopQuery, series_body, top_body
from wikipulse.windows import STEPS

RECORDINGS = sorted(DATA_DIR.glob("*.ndjson"))


def wikipulse(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed command in a clean environment (plus `env`)."""
    return subprocess.run(
        [sys.executable, "-m", "wikipulse", *args],
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def replay_stats(path: Path, tmp_path: Path, *args: str) -> dict[str, Any]:
    """Replay through the command and return the JSON it printed."""
    result = wikipulse("replay", str(path), *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    body: dict[str, Any] = json.loads(result.stdout)
    return body


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120,000 generated events with a dozen canaries."""
    return generate(tmp_path_factory.mktemp("gen"), 120_000, seed=11, canaries=12)


def test_recordings_are_there() -> None:
    """The recordings kept in the repository exist, so the tests below are not vacuous."""
    assert RECORDINGS


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_replay_of_each_recording_equals_independent_count(path: Path, tmp_path: Path) -> None:
    """Replaying a real recording prints exactly the independently counted statistics."""
    assert replay_stats(path, tmp_path) == expected_stats_of_file(path)


def test_replay_of_the_polars_recording_matches_its_readme(tmp_path: Path) -> None:
    """The 100-event recording gives the figures its README states: 2 bots, 81 users."""
    body = replay_stats(DATA_DIR / "recentchange-polars-guide.ndjson", tmp_path)
    assert (body["total"], body["bots"], body["distinct_users"]) == (100, 2, 81)
    assert body["by_server_name"] == {"en.wikipedia.org": 100}


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_replay_of_120k_generated_events(big_file: Path, tmp_path: Path, workers: str) -> None:
    """120k generated events count exactly, with and without worker processes."""
    body = replay_stats(big_file, tmp_path, "--workers", workers)
    expected = expected_stats_of_file(big_file)
    assert body == expected
    assert expected["total"] == 120_000 - 12


def test_replay_of_an_sse_capture(tmp_path: Path) -> None:
    """An SSE capture (CRLF, comments, multi-line data, errors, a cut tail) counts exactly."""
    lines = (DATA_DIR / "recentchange-polars-guide.ndjson").read_bytes().splitlines()
    parts = [b":ok\r\n\r\n"]
    for n, line in enumerate(lines):
        event = json.loads(line)
        pretty = json.dumps(event, indent=1).encode()  # JSON over many data: lines
        data = b"".join(b"data: " + part + b"\r\n" for part in pretty.split(b"\n"))
        parts.append(b'id: [{"offset":%d}]\r\n' % n + b"event: message\r\n" + data + b"\r\n")
        if n == 10:
            parts.append(b'event: error\r\ndata: {"meta":{"id":"x"}}\r\n\r\n')
    parts.append(b"data: " + lines[0][:40])  # cut in the middle of an event: counts nothing
    capture = tmp_path / "capture.sse"
    capture.write_bytes(b"".join(parts))
    assert detect_format(capture.read_bytes()[:100]) == "sse"
    assert replay_stats(capture, tmp_path) == expected_stats(lines)


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    """Garbage, arrays, bad types and bad UTF-8 lines are skipped; the rest counts exactly."""
    good = (DATA_DIR / "recentchange-polars-guide.ndjson").read_bytes().splitlines()[:20]
    bad = [b"nonsense", b"[1,2]", b'{"meta":{"id":3},"server_name":"x","bot":false}', b"\xff\xfe{"]
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"\n".join(good[:10] + bad + good[10:] + [b"", b""]))
    result = wikipulse("replay", str(path), cwd=tmp_path)
    assert result.returncode == 0
    assert json.loads(result.stdout) == expected_stats(good)
    assert "20 counted, 0 duplicates, 0 canaries, 4 invalid" in result.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A missing file prints a message naming it and exits 1, without a traceback."""
    result = wikipulse("replay", str(tmp_path / "nope.ndjson"), cwd=tmp_path)
    assert result.returncode == 1
    assert "nope.ndjson" in result.stderr
    assert "No such file" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    """A directory given as the file is refused with exit 1."""
    result = wikipulse("replay", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_subcommand_has_help(tmp_path: Path) -> None:
    """`--help` works for the command and each subcommand."""
    for args in ([], ["serve"], ["replay"], ["hash-password"], ["migrate"], ["healthcheck"]):
        result = wikipulse(*args, "--help", cwd=tmp_path)
        assert result.returncode == 0, args
        assert "usage: wikipulse" in result.stdout


def test_no_subcommand_prints_usage_and_fails(tmp_path: Path) -> None:
    """`wikipulse` alone shows the usage on stderr and exits 2."""
    result = wikipulse(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: wikipulse" in result.stderr


def test_hash_password_prints_a_verifiable_argon2_hash(tmp_path: Path) -> None:
    """hash-password reads stdin and prints an argon2id hash of that password."""
    from argon2 import PasswordHasher

    result = wikipulse("hash-password", cwd=tmp_path, stdin="correct horse\n")
    assert result.returncode == 0
    digest = result.stdout.strip()
    assert digest.startswith("$argon2id$")
    assert PasswordHasher().verify(digest, "correct horse")


def test_hash_password_refuses_an_empty_password(tmp_path: Path) -> None:
    """An empty password on stdin is refused with exit 1."""
    result = wikipulse("hash-password", cwd=tmp_path, stdin="\n")
    assert result.returncode == 1
    assert "empty password" in result.stderr


def _with_replays(lines: list[bytes]) -> list[bytes]:
    """Lines where every 50th event is sent again a little later, as a timestamp resume does."""
    out: list[bytes] = []
    for n, line in enumerate(lines):
        out.append(line)
        if n % 50 == 49:
            out.extend(lines[n - 5 : n + 1])
    return out


@pytest.mark.anyio
async def test_parallel_replay_equals_sequential_with_duplicates_across_ranges(
    tmp_path: Path,
) -> None:
    """Worker processes on tiny ranges give exactly the sequential result, repeats included."""
    source = generate(tmp_path, 3000, seed=5, canaries=4).read_bytes().splitlines()
    lines = _with_replays(source)
    lines[100:100] = [b"garbage", b'{"meta":{"id":"\\u0000"},"server_name":"a\\u0000b","bot":true}']
    path = tmp_path / "replayed.ndjson"
    path.write_bytes(b"\n".join(lines))  # no newline at the end, on purpose
    sequential = Pipeline(MemoryStore(), dedup_window=10_000)
    await sequential.run(file_feed(path))
    parallel = Pipeline(MemoryStore(), dedup_window=10_000)
    with RangeFolder(path, path.stat().st_size, 2, range_bytes=7_000) as folder:
        await parallel.run(folded_ranges(folder))
    expected = expected_stats(lines)
    assert (await sequential.store.snapshot()).to_dict() == expected
    assert (await parallel.store.snapshot()).to_dict() == expected
    assert parallel.state.counters == sequential.state.counters
    assert parallel.state.counters.duplicates > 0


def test_ranges_cover_every_line_once(tmp_path: Path) -> None:
    """Reading all ranges gives each line exactly once, wherever the cuts fall."""
    lines = [b"x" * n for n in range(1, 200)]
    path = tmp_path / "lines"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for size in (1, 7, 64, 1000, 10**6):
        got = [
            line.rstrip(b"\n")
            for start, end in split_ranges(path.stat().st_size, size)
            for line in read_range(path, start, end)
        ]
        assert got == lines, size


def test_an_unreachable_store_is_a_clear_error(tmp_path: Path) -> None:
    """Replaying into a PostgreSQL nobody listens on says so in one line and exits 1."""
    dsn = {"WIKIPULSE_POSTGRES_DSN": "postgresql://127.0.0.1:1/x"}
    result = wikipulse("replay", "--store", "postgres", str(RECORDINGS[0]), cwd=tmp_path, env=dsn)
    assert result.returncode == 1
    assert result.stderr.startswith("wikipulse: store error: PostgreSQL:")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_store_without_schema_says_to_migrate(tmp_path: Path) -> None:
    """With schema creation off, an empty SQLite file is refused with the command to run."""
    no_migrate = {"WIKIPULSE_MIGRATE_ON_START": "false"}
    result = wikipulse(
        "replay", "--store", "sqlite", str(RECORDINGS[0]), cwd=tmp_path, env=no_migrate
    )
    assert result.returncode == 1
    assert "run `wikipulse migrate`" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.anyio
@pytest.mark.parametrize("window", [3, 40, 700])
async def test_parallel_replay_equals_sequential_when_the_window_forgets(
    tmp_path: Path, window: int
) -> None:
    """With a window small enough to forget ids, workers still give the sequential result."""
    source = generate(tmp_path, 1500, seed=6, canaries=2).read_bytes().splitlines()
    # Repeats at several distances: some inside the window, some beyond it.
    lines = list(source)
    for distance in (2, 30, 500):
        lines += source[-distance - 20 : -distance]
    lines.insert(7, b"")  # a blank line
    lines.insert(9, b'{"meta":{"id":""},"server_name":"x","bot":false}')  # empty id: invalid
    path = tmp_path / f"window-{window}.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    sequential = Pipeline(MemoryStore(), dedup_window=window)
    await sequential.run(file_feed(path))
    parallel = Pipeline(MemoryStore(), dedup_window=window)
    with RangeFolder(path, path.stat().st_size, 2, range_bytes=9_000) as folder:
        await parallel.run(folded_ranges(folder))
    assert (await parallel.store.snapshot()) == (await sequential.store.snapshot())
    assert parallel.state.counters == sequential.state.counters
    assert sequential.state.counters.invalid == 1


_FORK_PROBE = """
import sys
import wikipulse.replay.files, wikipulse.replay.parallel as parallel
wikipulse.replay.files.PARALLEL_MIN_BYTES = 0  # fork workers even for a small file
loaded_at_fork = []
real_init = parallel.RangeFolder.__init__
def init(self, *args, **kwargs):
    watched = ("asyncio", "wikipulse.ingest", "wikipulse.config", "pydantic", "httpx")
    loaded_at_fork.extend(name for name in watched if name in sys.modules)
    real_init(self, *args, **kwargs)
parallel.RangeFolder.__init__ = init
from wikipulse.cli import main
code = main(["replay", sys.argv[1], "--workers", "2", "--quiet"])
print("LOADED", ",".join(loaded_at_fork), "CODE", code, file=sys.stderr)
"""


def test_replay_forks_its_workers_before_asyncio_is_imported(tmp_path: Path) -> None:
    """`replay` forks its decoding workers before asyncio, the pipeline or the settings load."""
    data = generate(tmp_path, 2000, seed=8)
    result = subprocess.run(
        [sys.executable, "-c", _FORK_PROBE, str(data)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "LOADED  CODE 0" in result.stderr, result.stderr  # nothing loaded, exit 0
    assert (
        json.loads(result.stdout)["total"]
        == expected_stats(data.read_bytes().splitlines())["total"]
    )


async def _windows_of(store: SQLiteStore) -> list[dict[str, Any]]:
    """Every timeseries step over the whole span, and each top list of 100 over it and over an
    unaligned part of it, as the API's bodies."""
    span = await store.window_span()
    assert span is not None
    since, until = span[0] - span[0] % 3600, span[1] + 3600
    out = []
    for step in STEPS:
        series = SeriesQuery(step, since, until)
        out.append(series_body(series, await store.window_series(series)))
    for by in TOP_KINDS:
        for top in (TopQuery(by, since, until, 100), TopQuery(by, since + 600, until - 4200, 100)):
            out.append(top_body(top, await store.window_top(top)))
    return out


@pytest.mark.anyio
async def test_workers_summing_minutes_give_the_sql_store_the_sequential_windows(
    tmp_path: Path,
) -> None:
    """Workers that sum their ranges per minute (as for the SQL stores) give SQLite the windows
    of the sequential replay: ranges folded again for their repeats mix with summed ones, and
    minutes, 5-minute buckets and hours all close along the way."""
    source = generate(tmp_path, 4000, seed=8, canaries=3, page_skew=4, rate=0.5)
    lines = source.read_bytes().splitlines()
    lines[2000:2000] = lines[1990:2000]  # a repeat: the ranges holding it are folded again
    path = tmp_path / "replayed.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    stores = [SQLiteStore(tmp_path / f"{name}.db") for name in ("sequential", "parallel")]
    for store in stores:
        await store.open()
    try:
        sequential = Pipeline(stores[0], max_events=700, dedup_window=10_000)
        await sequential.run(file_feed(path))
        parallel = Pipeline(stores[1], max_events=700, dedup_window=10_000)
        size = path.stat().st_size
        with RangeFolder(path, size, 2, range_bytes=40_000, summed=True) as folder:
            await parallel.run(folded_ranges(folder))
        assert parallel.state.counters == sequential.state.counters
        assert parallel.state.counters.duplicates > 0
        assert await _windows_of(stores[1]) == await _windows_of(stores[0])
    finally:
        for store in stores:
            await store.close()
