"""The workers' bulk path folds exactly what the line-by-line path folds, on hostile input too."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.support.counting import expected_stats
from tests.support.generated import generate
from wikipulse.dedup import RecentIds
from wikipulse.replay import parallel
from wikipulse.replay.bulk import checked_blocks, fold_block
from wikipulse.replay.parallel import fold_range, read_range, split_ranges
from wikipulse.stats import Aggregator


def _event(n: int, **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "meta": {"id": f"id-{n}", "domain": "x.org", "dt": f"2026-11-01T12:{n % 60:02d}:00Z"},
        "server_name": f"s{n % 3}.org",
        "bot": n % 4 == 0,
        "user": f"User{n % 7}",
        "type": "edit",
        "title": f"Page {n}",
        "length": {"old": n, "new": 2 * n},
        "comment": "ünïcödé ページ",
    }
    body.update(fields)
    return json.dumps(body, ensure_ascii=False).encode()


GOOD = [_event(n) for n in range(40)]
#: Lines the line-by-line path refuses or skips, each in a block of valid events.
HOSTILE: dict[str, list[bytes]] = {
    "garbage": [b"nonsense"],
    "blank line": [b""],
    "blank with spaces": [b"  \t"],
    "json array": [b"[1,2]"],
    "wrong type of id": [b'{"meta":{"id":3},"server_name":"x","bot":false}'],
    "empty id": [b'{"meta":{"id":""},"server_name":"x","bot":false}'],
    "wrong type of title": [_event(900, title=5)],
    "wrong type of length": [_event(901, length={"old": "a"})],
    "bad UTF-8 in a skipped string": [_event(902).replace(b'"comment": "', b'"comment": "\xff')],
    "bad UTF-8 in a decoded string": [_event(903).replace(b'"Page 903"', b'"Page \xc3\x28"')],
    "bad UTF-8 in an unknown key": [_event(904).replace(b'"comment"', b'"comm\xffent"')],
    "bad UTF-8 outside strings": [b"\xff\xfe{"],
    "two events on one line": [_event(905) + b" " + _event(906)],
    "an event over two lines": [_event(907)[:30], _event(907)[30:]],
    "canary": [_event(908, meta={"id": "c1", "domain": "canary"})],
    "repeated id": [GOOD[3]],
    "NUL in names": [b'{"meta":{"id":"\\u0000"},"server_name":"a\\u0000b","bot":true}'],
    "CRLF": [_event(909) + b"\r"],
    "no meta.dt": [_event(910, meta={"id": "nodt"})],
}


def _state(agg: Aggregator) -> tuple[Any, ...]:
    b, c = agg.batch, agg.counters
    return (
        b.total,
        b.bots,
        b.by_server_name,
        b.users,
        b.event_ids,
        b.windows.raw,
        (c.counted, c.duplicates, c.canaries, c.invalid, c.last_dt),
        agg.last_error,
    )


@pytest.mark.parametrize("windows", [True, False])
@pytest.mark.parametrize("case", HOSTILE)
def test_a_block_folds_as_line_by_line(case: str, windows: bool) -> None:
    """A block with one hostile line gives exactly `Aggregator.fold`'s outcome, line by line."""
    lines = GOOD[:20] + HOSTILE[case] + GOOD[20:]
    expected = Aggregator(RecentIds(1), windows=windows)
    expected.fold(lines, dedup=False)
    bulk = Aggregator(RecentIds(1), windows=windows)
    fold_block(bulk, lines)
    assert _state(bulk) == _state(expected)


@pytest.mark.parametrize("windows", [True, False])
def test_a_valid_block_folds_as_line_by_line(windows: bool) -> None:
    """A block of valid events, canaries and a CRLF line included, folds exactly as per line."""
    lines = [*GOOD, *HOSTILE["canary"], *HOSTILE["CRLF"], *HOSTILE["no meta.dt"], GOOD[0]]
    expected = Aggregator(RecentIds(1), windows=windows)
    expected.fold(lines, dedup=False)
    bulk = Aggregator(RecentIds(1), windows=windows)
    fold_block(bulk, lines)
    assert _state(bulk) == _state(expected)
    assert expected.counters.canaries == 1
    assert expected.counters.invalid == 0  # so this block took the bulk path


def test_blocks_cover_every_line_of_a_range_once(tmp_path: Path) -> None:
    """Memory-mapped blocks give each range's lines as `read_range` does, wherever cuts fall."""
    rng = random.Random(4)
    lines = [b"x" * rng.randrange(0, 300) + (b"\r" if n % 5 == 0 else b"") for n in range(400)]
    for ending in (b"\n", b""):  # with and without a newline at the end of the file
        path = tmp_path / "lines"
        path.write_bytes(b"\n".join(lines) + ending)
        size = path.stat().st_size
        for range_bytes in (1, 7, 64, 1000, 5000, 10**6):
            for start, end in split_ranges(size, range_bytes, tail=3 * range_bytes):
                got = [
                    line.rstrip(b"\n")
                    for block, _ in checked_blocks(path, start, end, 3)
                    for line in block
                ]
                assert got == [line.rstrip(b"\n") for line in read_range(path, start, end)]


def test_an_empty_file_has_no_blocks(tmp_path: Path) -> None:
    """A file of zero bytes gives no block (a memory map of it cannot be made)."""
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert list(checked_blocks(path, 0, 10)) == []


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 1000, 12_345])
def test_ranges_with_a_fine_tail_cover_the_file(size: int) -> None:
    """The ranges are contiguous from 0 to the size, the last ones a quarter as long."""
    ranges = split_ranges(size, 100, tail=250)
    assert [start for start, _ in ranges] == [0, *(end for _, end in ranges[:-1])][: len(ranges)]
    assert (ranges[-1][1] if ranges else 0) == size
    assert all(end - start <= 100 for start, end in ranges)
    if size >= 1000:
        assert ranges[-1][1] - ranges[-1][0] <= 25


def test_a_range_with_hostile_lines_folds_as_line_by_line(tmp_path: Path) -> None:
    """A whole range of generated events and every hostile line folds exactly as per line."""
    lines = generate(tmp_path, 2000, seed=21, canaries=5).read_bytes().splitlines()
    for n, bad in enumerate(HOSTILE.values()):
        lines[100 * n + 7 : 100 * n + 7] = bad
    path = tmp_path / "hostile.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    size = path.stat().st_size
    for start, end in ((0, size), (size // 3, size // 2)):
        result = fold_range(path, start, end, windows=True)
        expected = Aggregator(RecentIds(1), windows=True)
        expected.fold(read_range(path, start, end), dedup=False)
        assert result.total == expected.batch.total
        assert result.bots == expected.batch.bots
        assert result.by_server_name == expected.batch.by_server_name
        assert sorted(parallel._unpack(result.users)) == sorted(expected.batch.users)
        assert parallel._unpack(result.ids) == expected.batch.event_ids
        assert (result.canaries, result.invalid, result.last_dt) == (
            expected.counters.canaries,
            expected.counters.invalid,
            expected.counters.last_dt,
        )
        assert result.windows.compact().counts == expected.batch.windows.compact().counts
    assert expected_stats(lines)["total"] < len(lines)


def test_a_worker_sends_each_user_once_per_folder(tmp_path: Path) -> None:
    """With a folder token a worker leaves out names it sent before; a new token starts afresh."""
    path = tmp_path / "users.ndjson"
    path.write_bytes(b"\n".join(GOOD) + b"\n")
    size = path.stat().st_size
    half = size // 2
    all_users = {f"User{n % 7}" for n in range(40)}
    first = parallel._unpack(fold_range(path, 0, half, folder="a").users)
    second = parallel._unpack(fold_range(path, half, size, folder="a").users)
    assert set(first) == all_users
    assert second == []
    again = parallel._unpack(fold_range(path, half, size, folder="b").users)
    assert set(again) == all_users
    untracked = parallel._unpack(fold_range(path, half, size).users)
    assert set(untracked) == all_users
