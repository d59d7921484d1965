"""`GET /metrics`: Prometheus names and values after known events, requests and commits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.test_api import (
    KNOWN_EVENTS,
    FailingOnceStore,
    FakeSource,
    _event,
    running,
)
from tests.test_api import _app as _api_app
from wikipulse.consumer import ConsumerState

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
#: 2024-05-01T12:00:10Z, the "now" of the lag tests.
NOW = datetime(2024, 5, 1, 12, 0, 10, tzinfo=UTC).timestamp()


def _app(*, clock: float = NOW, **options: Any) -> FastAPI:
    """The API tests' app, with a quick shutdown and a fixed "now" for the lag."""
    return _api_app(shutdown_grace=0.05, clock=lambda: clock, **options)


def _parse(text: str) -> tuple[set[str], Samples]:
    """The family names and every sample, keyed by sample name and labels."""
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return names, samples


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def _http(method: str, route: str, status: int) -> frozenset[tuple[str, str]]:
    return frozenset({("method", method), ("route", route), ("status", str(status))})


async def _scrape(app: FastAPI) -> Samples:
    """Run the app until its source ends, then scrape /metrics once."""
    async with running(app) as client:
        await app.state.services.consumer_task
        response = await client.get("/metrics")
    assert response.status_code == 200
    return _parse(response.text)[1]


async def test_metrics_expose_the_documented_families_in_text_format() -> None:
    """/metrics needs no token, answers Prometheus text 0.0.4 and names every metric family."""
    source = FakeSource(KNOWN_EVENTS, block=False)
    app = _app(source=source)
    async with running(app) as client:
        await app.state.services.consumer_task
        await client.get("/status")
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    names, _ = _parse(response.text)
    # Counters, histograms and labelled counters each bring their `_created` companions.
    assert names == {
        "wikipulse_events_consumed",
        "wikipulse_events_dropped",
        "wikipulse_stream_reconnects",
        "wikipulse_stream_connections_cut",
        "wikipulse_stream_lag_seconds",
        "wikipulse_stream_connected",
        "wikipulse_consumer_running",
        "wikipulse_store_ok",
        "wikipulse_build_info",
        "wikipulse_store_commit_duration_seconds",
        "wikipulse_store_commit_duration_seconds_created",
        "wikipulse_store_commit_failures",
        "wikipulse_store_commit_failures_created",
        "wikipulse_http_requests",
        "wikipulse_http_requests_created",
        "wikipulse_http_request_duration_seconds",
        "wikipulse_http_request_duration_seconds_created",
        "wikipulse_live_clients",
        "wikipulse_live_messages_published",
    }


async def test_metrics_offer_openmetrics_to_a_scraper_that_asks() -> None:
    """A scraper that accepts OpenMetrics gets it, ending with the `# EOF` marker."""
    async with running(_app()) as client:
        response = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_consumer_metrics_equal_the_known_counts() -> None:
    """The event, reconnect and connection figures are read from the consumer's state."""
    state = ConsumerState(reconnects=2, connected=True)
    samples = await _scrape(_app(source=FakeSource(KNOWN_EVENTS, block=False), state=state))
    assert _value(samples, "wikipulse_events_consumed_total") == 5
    assert _series(samples, "wikipulse_events_dropped_total") == {
        frozenset({("reason", "duplicate")}): 1,
        frozenset({("reason", "invalid")}): 1,
        frozenset({("reason", "canary")}): 1,
    }
    assert _value(samples, "wikipulse_stream_reconnects_total") == 2
    assert _value(samples, "wikipulse_stream_connected") == 1
    assert _value(samples, "wikipulse_consumer_running") == 0  # the source ended
    assert _value(samples, "wikipulse_store_ok") == 1
    # The source ended, so the pipeline committed its one batch and nothing failed.
    assert _value(samples, "wikipulse_store_commit_duration_seconds_count") == 1
    assert _value(samples, "wikipulse_store_commit_failures_total") == 0
    assert _value(samples, "wikipulse_build_info", version="0.1.0") == 1


async def test_http_requests_are_counted_by_route_template_method_and_status() -> None:
    """Requests are labelled by route template, not raw path; unknown paths share one label."""
    app = _app()

    @app.get("/echo/{word}")
    async def echo(word: str) -> dict[str, str]:
        return {"word": word}

    async with running(app) as client:
        assert (await client.get("/echo/abc")).status_code == 200
        assert (await client.get("/echo/def?x=1")).status_code == 200
        assert (await client.get("/status")).status_code == 200
        assert (await client.get("/no/such/page")).status_code == 404
        assert (await client.post("/status")).status_code == 405
        assert (await client.get("/stats")).status_code == 401
        assert (await client.request("BREW", "/status")).status_code == 405
        first = _parse((await client.get("/metrics")).text)[1]
        second = _parse((await client.get("/metrics")).text)[1]
    # A scrape is counted once its answer is sent, so the first does not see itself.
    assert _series(first, "wikipulse_http_requests_total") == {
        _http("GET", "/echo/{word}", 200): 2,
        _http("GET", "/status", 200): 1,
        _http("GET", "<unmatched>", 404): 1,
        _http("POST", "/status", 405): 1,
        _http("GET", "/stats", 401): 1,
        _http("OTHER", "/status", 405): 1,
    }
    assert _series(first, "wikipulse_http_request_duration_seconds_count") == _series(
        first, "wikipulse_http_requests_total"
    )
    assert _series(second, "wikipulse_http_requests_total")[_http("GET", "/metrics", 200)] == 1


@pytest.mark.parametrize(
    ("dt", "lag"),
    [
        ("2024-05-01T12:00:07Z", 3.0),
        ("2024-05-01T12:00:07.250Z", 2.75),
        ("2024-05-01T12:00:07.250+00:00", 2.75),
        ("2024-05-01T14:00:07.250+02:00", 2.75),
    ],
    ids=["seconds-Z", "millis-Z", "millis-offset-0", "millis-offset-2h"],
)
async def test_lag_is_now_minus_the_last_counted_events_meta_dt(dt: str, lag: float) -> None:
    """Lag is the clock's now minus meta.dt of the last event counted, in /metrics and /status."""
    first = _event("a1", "en.wikipedia.org", "Alice", False)
    last = _event("a2", "en.wikipedia.org", "Bob", False).replace(
        b'"2024-05-01T12:00:00Z"', f'"{dt}"'.encode()
    )
    # The canary after it is dropped, so it does not move the lag.
    canary = _event("c1", "canary", "Canary", False, domain="canary")
    source = FakeSource([(first, "p1"), (last, "p2"), (canary, "p3")], block=False)
    app = _app(source=source)
    async with running(app) as client:
        await app.state.services.consumer_task
        samples = _parse((await client.get("/metrics")).text)[1]
        status = (await client.get("/status")).json()
    assert _value(samples, "wikipulse_stream_lag_seconds") == lag
    assert status["consumer"]["last_event_dt"] == dt
    assert status["consumer"]["lag_seconds"] == lag


async def test_there_is_no_lag_sample_before_the_first_event() -> None:
    """Before any event is counted the lag gauge has no sample and /status shows null."""
    async with running(_app()) as client:
        samples = _parse((await client.get("/metrics")).text)[1]
        status = (await client.get("/status")).json()
    assert _series(samples, "wikipulse_stream_lag_seconds") == {}
    assert status["consumer"]["lag_seconds"] is None


async def test_commit_failures_and_latency_are_recorded() -> None:
    """A failed commit counts one failure and lowers store_ok; its retry adds one latency."""
    store = FailingOnceStore()
    source = FakeSource(KNOWN_EVENTS[:1], block=True)
    async with running(_app(store=store, source=source, batch_max_events=1)) as client:
        async with asyncio.timeout(5):
            await store.failed.wait()
        failing = _parse((await client.get("/metrics")).text)[1]
        store.release.set()
        async with asyncio.timeout(5):
            await store.committed.wait()
        recovered = _parse((await client.get("/metrics")).text)[1]
    assert _value(failing, "wikipulse_store_commit_failures_total") == 1
    assert _value(failing, "wikipulse_store_ok") == 0
    assert _value(failing, "wikipulse_store_commit_duration_seconds_count") == 0
    assert _value(recovered, "wikipulse_store_commit_failures_total") == 1
    assert _value(recovered, "wikipulse_store_ok") == 1
    assert _value(recovered, "wikipulse_store_commit_duration_seconds_count") == 1


async def test_two_apps_in_one_process_keep_their_metrics_apart() -> None:
    """Each app has its own registry: building two does not clash and neither sees the other."""
    busy = _app(source=FakeSource(KNOWN_EVENTS, block=False))
    idle = _app(source=FakeSource(block=False))
    busy_samples = await _scrape(busy)
    idle_samples = await _scrape(idle)
    assert _value(busy_samples, "wikipulse_events_consumed_total") == 5
    assert _value(idle_samples, "wikipulse_events_consumed_total") == 0
    assert _value(idle_samples, "wikipulse_store_commit_duration_seconds_count") == 0
