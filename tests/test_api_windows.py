"""`/stats/timeseries` and `/stats/top`: token, parameters, defaults and exact answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import DATA_DIR
from tests.support.counting import expected_stats
from tests.support.generated import generate
from tests.support.windows_expected import counted_events, expected_series, expected_top
from tests.test_api import FakeSource, _app, _token, running
from wikipulse.stats import Batch, Stats
from wikipulse.stores import ResumePoint
from wikipulse.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

RECORDING = DATA_DIR / "recentchange-polars-guide.ndjson"


@asynccontextmanager
async def serving(lines: list[bytes], store: object = None) -> AsyncIterator[httpx.AsyncClient]:
    """An app that has consumed `lines` (each committed at once), with a logged-in client."""
    the_store = store if store is not None else MemoryStore()
    source = FakeSource([(line, str(n)) for n, line in enumerate(lines)])
    app = _app(store=the_store, source=source, batch_max_events=1)  # type: ignore[arg-type]
    expected = expected_stats(lines)["total"]
    async with running(app) as client:
        await asyncio.wait_for(source.drained.wait(), 10)
        for _ in range(200):  # the last event's commit may still be on its way
            if (await the_store.snapshot()).total == expected:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
        client.headers["Authorization"] = f"Bearer {await _token(client)}"
        yield client


@pytest.fixture(scope="module")
def hours_of_events(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """600 generated events over about 1.7 hours of event time, with hot pages."""
    out = tmp_path_factory.mktemp("api-windows")
    return generate(out, 600, seed=3, canaries=2, page_skew=4, rate=0.1).read_bytes().splitlines()


def _seconds(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


async def test_windows_need_a_token() -> None:
    """Both endpoints answer 401 without a bearer token."""
    async with serving([]) as client:
        del client.headers["Authorization"]
        for path in ("/stats/timeseries", "/stats/top?by=user"):
            response = await client.get(path)
            assert response.status_code == 401, path


async def test_default_timeseries_is_the_hour_ending_at_the_newest_event(
    hours_of_events: list[bytes],
) -> None:
    """Without since/until: 60 one-minute buckets ending with the newest event's minute."""
    events = counted_events(hours_of_events)
    newest = max(e.second for e in events)
    until = newest - newest % 60 + 60
    async with serving(hours_of_events) as client:
        response = await client.get("/stats/timeseries")
    assert response.status_code == 200
    body = response.json()
    assert len(body["buckets"]) == 60
    assert body == expected_series(events, 60, until - 3600, until)
    assert sum(b["total"] for b in body["buckets"]) > 0


async def test_timeseries_rounds_the_window_out_to_the_step(hours_of_events: list[bytes]) -> None:
    """since is rounded down and until up to the step; ISO and Unix seconds are both read."""
    events = counted_events(hours_of_events)
    first = min(e.second for e in events)
    async with serving(hours_of_events) as client:
        for step in (60, 300, 3600):
            since_param = datetime.fromtimestamp(first + 7, UTC).isoformat()
            params = {"since": since_param, "until": str(first + 2 * 3600 + 1), "step": str(step)}
            body = (await client.get("/stats/timeseries", params=params)).json()
            since = first + 7 - (first + 7) % step
            until = -(-(first + 2 * 3600 + 1) // step) * step
            assert (_seconds(body["since"]), _seconds(body["until"])) == (since, until)
            assert body == expected_series(events, step, since, until), step


async def test_timeseries_of_one_wiki_and_of_an_unknown_one(hours_of_events: list[bytes]) -> None:
    """server_name keeps that wiki's events only; an unknown wiki gives every bucket at zero."""
    events = counted_events(hours_of_events)
    first = min(e.second for e in events)
    since, until = first - first % 300, first - first % 300 + 6000
    async with serving(hours_of_events) as client:
        for server in ("commons.wikimedia.org", "no.such.wiki"):
            params = {"since": str(since), "until": str(until), "step": "300"}
            body = (
                await client.get("/stats/timeseries", params={**params, "server_name": server})
            ).json()
            assert body == expected_series(events, 300, since, until, server)
    assert len(body["buckets"]) == 20
    assert all(b["total"] == 0 and b["by_type"] == {} for b in body["buckets"])


@pytest.mark.parametrize("by", ["server_name", "user", "page"])
async def test_top_lists_equal_the_independent_count(hours_of_events: list[bytes], by: str) -> None:
    """The default window's and a given window's top lists are exact, ties by key."""
    events = counted_events(hours_of_events)
    newest = max(e.second for e in events)
    until = newest - newest % 60 + 60
    first = min(e.second for e in events)
    async with serving(hours_of_events) as client:
        body = (await client.get("/stats/top", params={"by": by})).json()
        assert body == expected_top(events, by, until - 3600, until)
        params = {"by": by, "since": str(first + 600), "until": str(newest), "limit": "25"}
        body = (await client.get("/stats/top", params=params)).json()
    since, end = first + 600 - (first + 600) % 60, -(-newest // 60) * 60
    assert body == expected_top(events, by, since, end, 25)
    assert body["items"][0]["count"] > 1


async def test_windows_of_the_real_recording() -> None:
    """The recording kept in the repository: default timeseries and top pages are exact."""
    lines = RECORDING.read_bytes().splitlines()
    events = counted_events(lines)
    newest = max(e.second for e in events)
    until = newest - newest % 60 + 60
    async with serving(lines) as client:
        series = (await client.get("/stats/timeseries")).json()
        top = (await client.get("/stats/top", params={"by": "page", "limit": "5"})).json()
    assert series == expected_series(events, 60, until - 3600, until)
    assert sum(b["total"] for b in series["buckets"]) == 100
    assert top == expected_top(events, "page", until - 3600, until, 5)


BAD = [
    ("/stats/timeseries", {"step": "7"}, "step"),
    ("/stats/timeseries", {"step": "sixty"}, "step"),
    ("/stats/timeseries", {"since": "yesterday"}, "since"),
    ("/stats/timeseries", {"until": "2026-13-01T00:00:00Z"}, "until"),
    ("/stats/timeseries", {"since": "2000", "until": "1000"}, "since"),
    ("/stats/timeseries", {"since": "0", "until": "600060", "step": "60"}, "since"),
    ("/stats/timeseries", {"server_name": ""}, "server_name"),
    ("/stats/top", {}, "by"),
    ("/stats/top", {"by": "title"}, "by"),
    ("/stats/top", {"by": "user", "limit": "0"}, "limit"),
    ("/stats/top", {"by": "user", "limit": "101"}, "limit"),
    ("/stats/top", {"by": "user", "limit": "ten"}, "limit"),
]


async def test_bad_parameters_are_422_naming_the_parameter() -> None:
    """Each bad parameter is refused with 422 and a message that starts with its name."""
    async with serving([]) as client:
        for path, params, name in BAD:
            response = await client.get(path, params=params)
            assert response.status_code == 422, (path, params)
            assert response.json()["detail"].startswith(f"{name}: "), (params, response.text)


async def test_ten_thousand_buckets_are_allowed() -> None:
    """A window of exactly 10,000 buckets is served, every bucket present."""
    async with serving([]) as client:
        params = {"since": "0", "until": "600000", "step": "60"}
        body = (await client.get("/stats/timeseries", params=params)).json()
    assert len(body["buckets"]) == 10_000


class NoWindowsStore:
    """A store that keeps counters but no time windows (as Cassandra, for now)."""

    def __init__(self) -> None:
        self._inner = MemoryStore()

    async def open(self) -> None:
        """Nothing to open."""

    async def commit(self, batch: Batch) -> None:
        """Counters only."""
        await self._inner.commit(batch)

    async def snapshot(self) -> Stats:
        """The counters."""
        return await self._inner.snapshot()

    async def resume_point(self) -> ResumePoint:
        """No position."""
        return ResumePoint()

    async def close(self) -> None:
        """Nothing to close."""


async def test_a_store_without_windows_answers_501() -> None:
    """A store that keeps no windows makes both endpoints say so with 501."""
    async with serving([], store=NoWindowsStore()) as client:
        for path in ("/stats/timeseries", "/stats/top?by=page"):
            response = await client.get(path)
            assert response.status_code == 501
            assert "keeps no time windows" in response.json()["detail"]
