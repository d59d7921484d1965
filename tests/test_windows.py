"""The pure window core: event minutes, deltas, ranges, parameters; and replay --windows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA_DIR
from tests.support.counting import expected_stats
from tests.support.generated import generate
from tests.support.windows_expected import counted_events, expected_series, expected_top
from wikipulse.cli import main
from wikipulse.dedup import RecentIds
from wikipulse.events import decode
from wikipulse.ingest import Pipeline
from wikipulse.replay.files import file_feed
from wikipulse.replay.parallel import RangeFolder, folded_ranges
from wikipulse.stats import Aggregator
from wikipulse.stores.memory import MemoryStore
from wikipulse.stores.window_held import Encoded, acc_of, batch_minutes, blob_rows
from wikipulse.stores.window_rank import blobs
from wikipulse.window_blobs import Acc
from wikipulse.window_delta import WindowDelta
from wikipulse.window_minutes import events_accs, minute_accs, recorded_minutes
from wikipulse.window_query import (
    Range,
    SeriesQuery,
    SeriesRows,
    TopQuery,
    WindowQueryError,
    parse_instant,
    series_body,
    series_query,
    split_range,
    top_body,
    top_query,
)
from wikipulse.windows import MINUTE_CACHE, minute_of

T0 = 1_793_534_400  # 2026-11-01T12:00:00Z


def _event(n: int, dt: str | None, **fields: Any) -> bytes:
    body: dict[str, Any] = {"meta": {"id": f"e{n}", "domain": "x", "dt": dt}}
    body.update({"server_name": "a.org", "bot": False, **fields})
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("dt", "minute"),
    [
        ("2026-11-01T12:00:59Z", T0),
        ("2026-11-01T12:01:00.123Z", T0 + 60),
        ("2026-11-01T14:01:30+02:00", T0 + 60),
        ("2026-11-01T12:02:00", T0 + 120),
        ("1969-12-31T23:59:30Z", -60),
        ("not a time", None),
        ("", None),
        (None, None),
    ],
)
def test_minute_of_reads_utc_offsets_and_refuses_garbage(
    dt: str | None, minute: int | None
) -> None:
    """The event minute is the UTC minute of meta.dt; an unreadable dt has none."""
    assert minute_of(dt) == minute
    assert minute_of(dt) == minute  # the second read comes from the cache


def test_delta_sums_bytes_types_users_and_pages() -> None:
    """Bytes added and removed (positive), a missing old as 0, no length as nothing."""
    delta = WindowDelta()
    dt = "2026-11-01T12:00:10Z"
    for raw in (
        _event(1, dt, type="edit", user="U", title="P", length={"old": 10, "new": 25}),
        _event(2, dt, type="edit", user="U", title="P", length={"old": 30, "new": 5}),
        _event(3, dt, type="new", user="V", title="Q", length={"old": None, "new": 7}),
        _event(4, dt, type="log", bot=True, title="P"),
        _event(5, dt, user="U", length={"old": 5}),
        _event(6, None, type="edit", user="W", title="R"),
    ):
        delta.add(decode(raw))
    delta.compact()
    assert delta.counts == {
        (T0, "a.org", "edit"): [2, 0, 15, 25],
        (T0, "a.org", "new"): [1, 0, 7, 0],
        (T0, "a.org", "log"): [1, 1, 0, 0],
        (T0, "a.org", "unknown"): [1, 0, 0, 0],
    }
    assert delta.users == {(T0, "a.org", "U"): 3, (T0, "a.org", "V"): 1}
    assert delta.pages == {(T0, "a.org", "P"): 3, (T0, "a.org", "Q"): 1}


def test_hot_loop_and_event_by_event_fold_the_same_windows(tmp_path: Path) -> None:
    """Aggregator.fold (the replay hot loop) and add_raw give the same deltas."""
    lines = generate(tmp_path, 800, seed=9, page_skew=3, rate=0.5).read_bytes().splitlines()
    fast, slow = Aggregator(RecentIds(10_000)), Aggregator(RecentIds(10_000))
    fast.fold(lines[:400])
    fast.fold(lines[400:])
    for line in lines:
        slow.add_raw(line)
    a, b = fast.take().windows.compact(), slow.take().windows.compact()
    assert (a.counts, a.users, a.pages) == (b.counts, b.users, b.pages)
    assert len(a.counts) > 10


def test_merged_parts_sum_like_one_delta(tmp_path: Path) -> None:
    """Deltas merged as parts compact to the delta of all their events together."""
    lines = generate(tmp_path, 600, seed=4, page_skew=3, rate=0.5).read_bytes().splitlines()
    whole, first, second, third = (Aggregator(RecentIds(10_000)) for _ in range(4))
    whole.fold(lines)
    first.fold(lines[:200])
    second.fold(lines[200:450])
    third.fold(lines[450:])
    merged = first.take().windows
    merged.merge(second.take().windows.compact())
    merged.merge(third.take().windows)
    merged.compact()
    want = whole.take().windows.compact()
    assert (merged.counts, merged.users, merged.pages) == (want.counts, want.users, want.pages)


@pytest.mark.parametrize(
    ("since", "until", "ranges"),
    [
        (T0, T0 + 3600, [Range(3600, T0, T0 + 3600)]),
        (T0 + 60, T0 + 600, [Range(60, T0 + 60, T0 + 600)]),
        (
            T0 - 120,
            T0 + 7260,
            [Range(60, T0 - 120, T0), Range(3600, T0, T0 + 7200), Range(60, T0 + 7200, T0 + 7260)],
        ),
        (T0, T0, []),
    ],
)
def test_split_range_uses_hours_inside_and_minutes_at_the_edges(
    since: int, until: int, ranges: list[Range]
) -> None:
    """Whole hours come from hour rows, the rest from minute rows, nothing twice."""
    assert split_range(since, until) == ranges


def test_instants_in_iso_or_unix_seconds() -> None:
    """Unix seconds, ISO with Z, with an offset and without one (UTC) all parse."""
    assert parse_instant(str(T0), "since") == T0
    assert parse_instant(f"{T0}.9", "since") == T0
    assert parse_instant("2026-11-01T12:00:00Z", "since") == T0
    assert parse_instant("2026-11-01T13:00:00+01:00", "since") == T0
    assert parse_instant("2026-11-01T12:00:00", "since") == T0
    with pytest.raises(WindowQueryError, match=r"^until: "):
        parse_instant("-5", "until")


def test_series_defaults_to_the_hour_ending_at_the_newest_event() -> None:
    """No since/until: the hour ending after the newest minute; without events, the clock."""
    query = series_query(
        since=None, until=None, step=None, server_name=None, newest=T0 + 120, now=0
    )
    assert (query.step, query.since, query.until) == (60, T0 + 180 - 3600, T0 + 180)
    query = series_query(
        since=None, until=None, step="3600", server_name=None, newest=None, now=T0 + 10
    )
    assert (query.since, query.until) == (T0, T0 + 3600)
    query = top_query(by="page", since=str(T0 + 7), until=None, limit=None, newest=None, now=0)
    assert (query.since, query.until, query.limit) == (T0, T0 + 3660, 10)


def test_bodies_fill_empty_buckets_and_order_ties_by_key() -> None:
    """Every bucket is present, zeros included; top items tie-break by key ascending."""
    query = SeriesQuery(300, T0, T0 + 900)
    body = series_body(query, SeriesRows([(T0 + 300, "edit", 3, 1, 10, 4)], [(T0 + 300, 2)]))
    assert [b["total"] for b in body["buckets"]] == [0, 3, 0]
    assert body["buckets"][1]["non_bots"] == 2
    top = top_body(TopQuery("user", T0, T0 + 60, 2), [(("b",), 5), (("a",), 5), (("c",), 9)])
    assert top["items"] == [{"user": "c", "count": 9}, {"user": "a", "count": 5}]


@pytest.mark.anyio
async def test_parallel_replay_gives_the_sequential_windows(tmp_path: Path) -> None:
    """Workers folding byte ranges, repeats across ranges included, give the same windows."""
    source = generate(tmp_path, 2000, seed=8, page_skew=4, rate=0.4).read_bytes().splitlines()
    lines = source + source[1500:1600] + source[:50]
    path = tmp_path / "again.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    sequential = Pipeline(MemoryStore(), dedup_window=10_000, max_events=300)
    await sequential.run(file_feed(path))
    parallel = Pipeline(MemoryStore(), dedup_window=10_000, max_events=300)
    with RangeFolder(path, path.stat().st_size, 2, range_bytes=60_000) as folder:
        await parallel.run(folded_ranges(folder))
    events = counted_events(lines)
    first, last = min(e.second for e in events), max(e.second for e in events)
    since, until = first - first % 3600, last - last % 3600 + 3600
    for pipeline in (sequential, parallel):
        store = pipeline.store
        assert isinstance(store, MemoryStore)
        query = SeriesQuery(300, since, until)
        assert series_body(query, await store.window_series(query)) == expected_series(
            events, 300, since, until
        )
        top = TopQuery("page", since + 60, until - 60, 20)
        assert top_body(top, await store.window_top(top)) == expected_top(
            events, "page", since + 60, until - 60, 20
        )


def test_replay_windows_prints_the_recording_s_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replay --windows` prints the stats, the whole recording's timeseries and top lists."""
    monkeypatch.chdir(tmp_path)
    path = DATA_DIR / "recentchange-polars-guide.ndjson"
    assert main(["replay", str(path), "--windows", "--quiet", "--workers", "1"]) == 0
    body = json.loads(capsys.readouterr().out)
    lines = path.read_bytes().splitlines()
    events = counted_events(lines)
    first, last = min(e.second for e in events), max(e.second for e in events)
    since, until = first - first % 60, last - last % 60 + 60
    assert body["stats"] == expected_stats(lines)
    assert body["timeseries"] == expected_series(events, 60, since, until)
    for by in ("server_name", "user", "page"):
        assert body["top"][by] == expected_top(events, by, since, until, 10)


def test_packed_events_sum_like_the_tuples(tmp_path: Path) -> None:
    """Events packed column-wise (as workers send them) compact to the same maps."""
    lines = generate(tmp_path, 500, seed=2, page_skew=3, rate=0.5).read_bytes().splitlines()
    lines += [
        _event(90, "2026-11-01T12:00:00Z", type="", user="", title="T", length={"new": 3}),
        _event(91, "2026-11-01T12:00:00Z", type="edit", length={"old": 9, "new": 2}),
    ]
    plain, packed = Aggregator(RecentIds(10_000)), Aggregator(RecentIds(10_000))
    plain.fold(lines)
    packed.fold(lines)
    delta = packed.take().windows.pack()
    assert delta.raw == []
    assert len(delta.packed) == 1
    delta.compact()
    want = plain.take().windows.compact()
    assert (delta.counts, delta.users, delta.pages) == (want.counts, want.users, want.pages)
    assert want.counts[(T0, "a.org", "unknown")] == [1, 0, 3, 0]


def test_names_holding_nul_are_not_packed() -> None:
    """A name with the separator in it keeps the events as tuples, still summed right."""
    agg = Aggregator(RecentIds(10))
    agg.fold([_event(1, "2026-11-01T12:00:00Z", user="a\u0000b", title="P")])
    delta = agg.take().windows.pack()
    assert delta.packed == []
    assert len(delta.raw) == 1
    assert delta.compact().users == {(T0, "a.org", "a\u0000b"): 1}


def test_an_unreadable_time_does_not_make_its_minute_unreadable() -> None:
    """`...T12:00:99Z` is in no minute; a readable time of the same minute after it still is
    (the minute cache keeps only times that parsed)."""
    MINUTE_CACHE.clear()
    assert minute_of("2024-05-01T12:00:99Z") is None
    assert minute_of("2024-05-01T12:00:05Z") == 1714564800


def test_minute_sums_of_a_worker_are_read_by_the_writer_alone(tmp_path: Path) -> None:
    """A delta holding a replay worker's minutes (the blobs of parts) gives the writer the
    minutes of its events, twice alike (a retried commit), the minutes that worker alone
    holds as its blobs, to store as they are; any other reader refuses it."""
    lines = generate(tmp_path, 600, seed=4, canaries=0, page_skew=4, rate=3.0).read_bytes()
    events = [decode(line) for line in lines.splitlines()]
    plain, worker, rest = WindowDelta(), WindowDelta(), WindowDelta()
    for event in events:
        plain.add(event)
    for event in events[:400]:
        worker.add(event)
    summed = events_accs(recorded_minutes(worker) or [])
    worker.minutes.append({minute: blobs(acc) for minute, acc in summed.items()})
    worker.raw = []
    for event in events[400:]:
        rest.add(event)
    worker.merge(rest)  # a range folded again by the parent: events, beside the sums

    def sums(accs: dict[int, Acc]) -> dict[int, Any]:
        return {m: (a.types, a.rows, a.users, a.members, a.pages) for m, a in accs.items()}

    expected = minute_accs(plain)
    assert sums(minute_accs(worker)) == sums(expected)
    held = batch_minutes(worker)
    assert sums({m: acc_of(item) for m, item in held.items()}) == sums(expected)
    again = batch_minutes(worker)  # the delta was left as it was
    assert sums({m: acc_of(item) for m, item in again.items()}) == sums(expected)
    shared = {minute_of(event.meta.dt) for event in events[400:]}
    whole = {m: item for m, item in held.items() if m not in shared}
    assert whole  # most minutes lie within the worker's events
    for minute, item in whole.items():  # held as the worker sent them, to store as they are
        assert isinstance(item, Encoded)
        assert blob_rows(item) == worker.minutes[0][minute]
    with pytest.raises(TypeError, match="summed per minute"):
        worker.compact()
    with pytest.raises(TypeError, match="summed per minute"):
        worker.recorded()
