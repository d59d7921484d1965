"""The time-window contract, run against every store: exact, exactly once, durable, pruned."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import DATA_DIR
from tests.stores.conftest import StoreKind
from tests.stores.test_contract import (
    _ack_lost_on_commit,
    _Crash,
    _crash_on_commit,
    _feed,
    _pipeline,
    opened,
)
from tests.support.generated import generate
from tests.support.windows_expected import (
    Counted,
    counted_events,
    expected_series,
    expected_top,
)
from wikipulse.events import MAX_LENGTH
from wikipulse.stores import StatsStore
from wikipulse.window_query import (
    SeriesQuery,
    TopQuery,
    WindowStore,
    series_body,
    top_body,
)

pytestmark = pytest.mark.anyio

#: Events per second of event time: 3000 events then span about 2.8 hours.
RATE = 0.3


@pytest.fixture(scope="module")
def window_lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """3000 generated events over hours, with hot pages and canaries, then 30 sent again."""
    out = tmp_path_factory.mktemp("windows")
    path = generate(out, 3000, seed=7, canaries=5, page_skew=4, rate=RATE)
    lines = path.read_bytes().splitlines()
    return lines + lines[-130:-100]


def _windows(store: StatsStore, kind: StoreKind) -> WindowStore:
    """The store as a window store: every store keeps time windows."""
    assert isinstance(store, WindowStore), f"the {kind.name} store must keep time windows"
    return store


async def _assert_windows_exact(store: WindowStore, lines: list[bytes]) -> None:
    """Every step, a wiki filter, and each top list equal the independent count of `lines`."""
    events = counted_events(lines)
    first = min(e.second for e in events)
    last = max(e.second for e in events)
    for step in (60, 300, 3600):
        since = first - first % step
        until = -(-(last + 1) // step) * step
        query = SeriesQuery(step, since, until)
        got = series_body(query, await store.window_series(query))
        assert got == expected_series(events, step, since, until), step
    since, until = first - first % 3600, -(-(last + 1) // 3600) * 3600
    for server in ("commons.wikimedia.org", "de.wikipedia.org", "no.such.wiki"):
        for step in (60, 300, 3600):
            query = SeriesQuery(step, since, until, server)
            got = series_body(query, await store.window_series(query))
            assert got == expected_series(events, step, since, until, server), (server, step)
    await _assert_tops_exact(store, events)


async def _assert_tops_exact(store: WindowStore, events: list[Counted]) -> None:
    """Top lists over the whole span and over a window with minute edges round hours."""
    first = min(e.second for e in events)
    last = max(e.second for e in events)
    whole = (first - first % 60, last - last % 60 + 60)
    edges = (whole[0] + 17 * 60, whole[1] - 23 * 60)  # minutes, whole hours, minutes
    for since, until in (whole, edges):
        for by in ("server_name", "user", "page"):
            for limit in (1, 10, 100):
                query = TopQuery(by, since, until, limit)  # type: ignore[arg-type]
                got = top_body(query, await store.window_top(query))
                assert got == expected_top(events, by, since, until, limit), (by, limit)


async def test_windows_equal_the_independent_count(
    kind: StoreKind, window_lines: list[bytes]
) -> None:
    """Committed batches give windows equal to a plain loop over the file, repeats once."""
    async with opened(kind.make()) as store:
        windows = _windows(store, kind)
        await _feed(_pipeline(store), window_lines)
        assert len({e.second // 3600 for e in counted_events(window_lines)}) >= 3
        await _assert_windows_exact(windows, window_lines)
        span = await windows.window_span()
        assert span is not None


async def test_lengths_at_the_bound_count_and_beyond_it_are_malformed(
    kind: StoreKind, window_lines: list[bytes]
) -> None:
    """Page lengths up to events.MAX_LENGTH (2^32 - 1) are summed exactly (2,000 of them in one
    minute add up past 2^42); a length beyond it, or negative, makes the event malformed
    instead of a sum no store can hold (such an event once made every commit fail)."""
    base = json.loads(window_lines[0])
    lines = []
    for i, (old, new) in enumerate([(0, MAX_LENGTH)] * 2000 + [(MAX_LENGTH, 0)] * 3):
        event = {
            **base,
            "meta": {**base["meta"], "id": f"big-{i}"},
            "length": {"old": old, "new": new},
        }
        lines.append(json.dumps(event).encode())
    for i, length in enumerate([{"new": 10**23}, {"old": -1, "new": 5}, {"new": MAX_LENGTH + 1}]):
        event = {**base, "meta": {**base["meta"], "id": f"bad-{i}"}, "length": length}
        lines.append(json.dumps(event).encode())
    async with opened(kind.make()) as store:
        await _feed(_pipeline(store), lines)
        assert (await store.snapshot()).total == 2003
        await _assert_windows_exact(_windows(store, kind), lines)
    assert len(counted_events(lines)) == 2003


@pytest.mark.parametrize("order", ["shuffled", "reversed"])
async def test_windows_exact_when_events_arrive_out_of_order(
    kind: StoreKind, window_lines: list[bytes], order: str
) -> None:
    """Late events land in buckets already rolled up (sealed) and in ones not yet: all exact."""
    import random

    lines = list(dict.fromkeys(window_lines))  # repeats far apart would outrun the dedup window
    if order == "shuffled":
        random.Random(11).shuffle(lines)
    else:
        lines.reverse()
    async with opened(kind.make()) as store:
        windows = _windows(store, kind)
        await _feed(_pipeline(store, max_events=97), lines)
        await _assert_windows_exact(windows, lines)


async def test_windows_read_then_written_again_stay_exact(
    kind: StoreKind, window_lines: list[bytes]
) -> None:
    """Top lists read (and whatever a store keeps of them) before more events land in the same
    buckets: the next answers count those events too."""
    lines = list(dict.fromkeys(window_lines))
    first, second = lines[::2], lines[1::2]
    async with opened(kind.make()) as store:
        windows = _windows(store, kind)
        await _feed(_pipeline(store), first)
        await _assert_tops_exact(windows, counted_events(first))
        pipeline = _pipeline(store)
        for index, line in enumerate(second):
            await pipeline.add(line, str(len(first) + index))
        await pipeline.flush()
        await _assert_windows_exact(windows, first + second)


async def test_windows_of_the_real_recording(kind: StoreKind) -> None:
    """The recording kept in the repository gives its independently counted windows."""
    lines = (DATA_DIR / "recentchange-polars-guide.ndjson").read_bytes().splitlines()
    async with opened(kind.make()) as store:
        windows = _windows(store, kind)
        await _feed(_pipeline(store, max_events=7), lines)
        await _assert_windows_exact(windows, lines)


@pytest.mark.parametrize("overlap", [0, 150])
async def test_windows_survive_a_crash_mid_commit_exactly_once(
    kind: StoreKind, window_lines: list[bytes], overlap: int
) -> None:
    """A process dying inside a commit, resumed and replayed, keeps every window exact."""
    if not kind.durable:
        pytest.skip(f"the {kind.name} store does not survive a crash")
    _windows(kind.make(), kind)
    async with opened(_crash_on_commit(kind, number=4)) as store:
        with pytest.raises(_Crash):
            await _feed(_pipeline(store), window_lines)
    async with opened(kind.make()) as store:
        pipeline = _pipeline(store)
        position = await pipeline.resume()
        assert position is not None
        await _feed(pipeline, window_lines, max(0, int(position) + 1 - overlap))
        await _assert_windows_exact(_windows(store, kind), window_lines)


async def test_windows_survive_reopening(kind: StoreKind, window_lines: list[bytes]) -> None:
    """A durable store closed and opened again serves the same windows."""
    if not kind.durable:
        pytest.skip(f"the {kind.name} store forgets everything when closed")
    async with opened(kind.make()) as store:
        _windows(store, kind)
        await _feed(_pipeline(store), window_lines)
    async with opened(kind.make()) as store:
        await _assert_windows_exact(_windows(store, kind), window_lines)


async def test_windows_of_a_commit_whose_acknowledgement_was_lost_count_once(
    kind: StoreKind, window_lines: list[bytes]
) -> None:
    """A commit that succeeded but reported failure, retried, adds its windows once."""
    if not kind.durable:
        pytest.skip(f"the {kind.name} store cannot fail to acknowledge a commit")
    _windows(kind.make(), kind)
    async with opened(_ack_lost_on_commit(kind, number=3)) as store:
        await _feed(_pipeline(store), window_lines)
        await _assert_windows_exact(_windows(store, kind), window_lines)


async def test_old_windows_are_pruned_behind_the_newest_event(
    kind: StoreKind, window_lines: list[bytes]
) -> None:
    """With one hour of retention, pruning keeps the last hour exact and drops what is older."""
    _windows(kind.make(), kind)
    store = _retention_store(kind, hours=1.0)
    async with opened(store):
        windows = _windows(store, kind)
        await _feed(_pipeline(store), window_lines)
        await windows.prune_windows()
        span = await windows.window_span()
        assert span is not None
        oldest, newest = span
        assert oldest >= newest - 3600
        events = counted_events(window_lines)
        assert max(e.second for e in events) - newest < 60
        since, until = newest - 3600 + 60, newest + 60
        query = SeriesQuery(60, since, until)
        got = series_body(query, await windows.window_series(query))
        assert got == expected_series(events, 60, since, until)
        query = SeriesQuery(60, since - 7200, since - 3600)
        dropped = series_body(query, await windows.window_series(query))
        assert all(bucket["total"] == 0 for bucket in dropped["buckets"])


def _retention_store(kind: StoreKind, hours: float) -> StatsStore:
    """A store of this kind (on the kind's backend) keeping windows for `hours`."""
    base: Any = type(kind.make())
    if kind.name == "memory":
        made: StatsStore = base(window_retention_hours=hours)
        return made

    def with_retention(*args: Any, **kwargs: Any) -> Any:
        return base(*args, window_retention_hours=hours, **kwargs)

    return kind.make(with_retention)


@pytest.mark.postgres
async def test_postgres_without_window_tables_says_to_migrate(postgres_schema: str) -> None:
    """A PostgreSQL schema from before the windows, opened without migrating, says to migrate."""
    import asyncpg  # type: ignore[import-untyped]

    from tests.stores.conftest import POSTGRES_DSN
    from wikipulse.stores import StoreError
    from wikipulse.stores.postgres import PostgresStore

    await PostgresStore(POSTGRES_DSN, schema=postgres_schema).migrate()
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'DROP TABLE "{postgres_schema}".wp_win_parts')
    finally:
        await conn.close()
    store = PostgresStore(POSTGRES_DSN, schema=postgres_schema, create_schema=False)
    with pytest.raises(StoreError, match="wikipulse migrate"):
        await store.open()
