"""The fork pool gives every task's result in task order, and fails loudly, never hangs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from wikipulse.replay.pool import ForkPool, WorkerFailed


def _square(n: int, delay: float) -> tuple[int, int, int]:
    time.sleep(delay)
    return n, n * n, os.getpid()


def _niceness(_: int) -> int:
    return os.nice(0)


def _fail_on_7(n: int) -> int:
    if n == 7:
        raise ValueError("seven is refused")
    return n


def _die_on_5(n: int) -> int:
    if n == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return n


async def _collect(pool: ForkPool[object], ahead: int = 2) -> list[object]:
    return [result async for result in pool.results(ahead)]


@pytest.mark.anyio
@pytest.mark.parametrize("workers", [1, 2, 3])
async def test_results_come_in_task_order_from_every_worker(workers: int) -> None:
    """Tasks finishing out of order still come back in order, each exactly once."""
    # Early tasks are the slow ones, so later ones finish first on other workers.
    tasks = [(n, 0.02 if n % 4 == 0 else 0.0) for n in range(40)]
    pool: ForkPool[tuple[int, int, int]] = ForkPool(_square, tasks, workers, ahead=3)
    try:
        results = [r async for r in pool.results(ahead=2)]
    finally:
        pool.close()
    assert [(n, sq) for n, sq, _ in results] == [(n, n * n) for n in range(40)]
    assert len({pid for _, _, pid in results}) == workers
    assert os.getpid() not in {pid for _, _, pid in results}


@pytest.mark.anyio
async def test_workers_run_at_the_niceness_asked_below_the_parent() -> None:
    """The workers yield the CPU to the parent by `niceness`; the parent's own is unchanged."""
    mine = os.nice(0)
    pool = ForkPool(_niceness, [(n,) for n in range(4)], 2, ahead=4, niceness=3)
    try:
        results = await _collect(pool)
    finally:
        pool.close()
    assert results == [min(mine + 3, 19)] * 4
    assert os.nice(0) == mine


@pytest.mark.anyio
async def test_a_failing_task_raises_its_traceback_in_the_parent() -> None:
    """An exception in a worker stops the results with the worker's traceback."""
    pool = ForkPool(_fail_on_7, [(n,) for n in range(20)], 2, ahead=4)
    got: list[int] = []

    async def take() -> None:
        async for result in pool.results(ahead=4):
            got.append(result)

    try:
        with pytest.raises(WorkerFailed, match="seven is refused"):
            await take()
    finally:
        pool.close()
    assert got == list(range(7))


@pytest.mark.anyio
async def test_a_worker_that_dies_fails_the_results_instead_of_hanging() -> None:
    """A worker killed in the middle of a task ends the results with an error."""
    pool = ForkPool(_die_on_5, [(n,) for n in range(30)], 2, ahead=4)
    try:
        with pytest.raises(WorkerFailed, match="ended before"):
            await _collect(pool)  # type: ignore[arg-type]
    finally:
        pool.close()


@pytest.mark.anyio
async def test_close_stops_the_workers_and_removes_their_files() -> None:
    """Closing before every result was taken ends the workers and leaves no file behind."""
    pool = ForkPool(_square, [(n, 0.01) for n in range(100)], 2, ahead=6)
    directory = Path(pool._dir)
    pids = list(pool._pids)
    async for n, _, _ in pool.results(ahead=6):
        if n == 3:
            break
    pool.close()
    _assert_gone(directory, pids)


def _assert_gone(directory: Path, pids: list[int]) -> None:
    assert not directory.exists()
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # already reaped by close()


@pytest.mark.anyio
async def test_no_tasks_gives_no_results() -> None:
    """An empty task list ends at once and the workers exit."""
    pool = ForkPool(_fail_on_7, [], 2, ahead=4)
    try:
        assert await _collect(pool) == []  # type: ignore[arg-type]
    finally:
        pool.close()


@pytest.mark.anyio
@pytest.mark.parametrize("range_bytes", [5_000, 40_000])
async def test_forked_ranges_of_hostile_lines_equal_the_sequential_replay(
    tmp_path: Path, range_bytes: int
) -> None:
    """Every hostile line, repeats across range cuts and a cut inside lines: the same counts."""
    from tests.support.counting import expected_stats
    from tests.support.generated import generate
    from tests.test_replay_bulk import HOSTILE
    from wikipulse.ingest import Pipeline
    from wikipulse.replay.files import file_feed
    from wikipulse.replay.parallel import RangeFolder, folded_ranges
    from wikipulse.stores.memory import MemoryStore

    lines = generate(tmp_path, 1500, seed=41, canaries=4).read_bytes().splitlines()
    for n, bad in enumerate(HOSTILE.values()):
        lines[60 * n + 5 : 60 * n + 5] = bad
    lines += lines[-150:-100] + lines[700:760] + lines[10:20]  # repeats near and far
    path = tmp_path / "hostile.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\r\n")
    sequential = Pipeline(MemoryStore(), dedup_window=300)
    await sequential.run(file_feed(path))
    parallel = Pipeline(MemoryStore(), dedup_window=300)
    with RangeFolder(path, path.stat().st_size, 2, range_bytes=range_bytes) as folder:
        await parallel.run(folded_ranges(folder))
    assert (await parallel.store.snapshot()) == (await sequential.store.snapshot())
    assert parallel.state.counters == sequential.state.counters
    counters = sequential.state.counters
    assert counters.invalid >= 10
    assert counters.canaries >= 4
    assert counters.duplicates > 0  # the near repeats were dropped
    # and the far ones, forgotten by the window, were counted again
    assert (await sequential.store.snapshot()).total > expected_stats(lines)["total"]


def _leftovers(base: Path) -> tuple[Path, Path]:
    """A directory of a replay whose process is gone, and one of a live process (this one)."""
    dead = os.fork()
    if dead == 0:  # pragma: no cover
        os._exit(0)
    os.waitpid(dead, 0)  # a pid that existed and is gone now
    orphan = base / f"wikipulse-replay-{dead}-0123456789abcdef"
    alive = base / f"wikipulse-replay-{os.getpid()}-fedcba9876543210"
    for directory in (orphan, alive):
        directory.mkdir()
        (directory / "3").write_bytes(b"left")
    return orphan, alive


def _check_swept(orphan: Path, alive: Path) -> None:
    assert not orphan.exists()
    assert alive.exists()
    (alive / "3").unlink()
    alive.rmdir()


@pytest.mark.anyio
async def test_closing_removes_the_directories_of_replays_that_died() -> None:
    """A directory left by a killed replay (its process gone) goes; a live one's stays."""
    pool = ForkPool(_fail_on_7, [(1,)], 1, ahead=1)
    orphan, alive = _leftovers(Path(pool._dir).parent)
    try:
        assert await _collect(pool) == [1]  # type: ignore[arg-type]
    finally:
        pool.close()
    _check_swept(orphan, alive)
