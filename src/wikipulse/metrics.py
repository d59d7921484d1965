"""Prometheus metrics: one registry per app, consumer figures read at scrape time.

The consumer's counters already live in `ConsumerState`; a custom collector reads them when
Prometheus scrapes instead of mirroring every increment into a second set of counters. Only
what has no other home is recorded as it happens: store commit latency and failures, and
HTTP requests (labelled by route template, never by raw path, so cardinality stays bounded).

`/metrics` carries no user data or secrets, only counts and timings, and needs no token so that
any Prometheus can scrape it; like every scrape target it belongs on an internal network and
should not be routed by a public ingress or proxy (see `api.get_metrics`).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wikipulse import __version__
from wikipulse.consumer import ConsumerState

__all__ = ["HttpMetricsMiddleware", "Metrics", "SampledCollector"]

PREFIX: Final = "wikipulse"
#: The `route` label of requests that matched no route (404s of scanners, typos).
UNMATCHED_ROUTE: Final = "<unmatched>"
#: Any other method a client makes up is labelled "OTHER", to keep the label set bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Commits of a local SQLite file take about a millisecond; a remote cluster tens; a store
# that is down times out in seconds.
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class SampledCollector:
    """A custom collector whose metrics come from one generator: without values when the
    registry describes it (to check names for clashes), with them when it collects."""

    def describe(self) -> list[Metric]:
        """The metrics without values, so the registry can check names for clashes."""
        return list(self._metrics(sample=False))

    def collect(self) -> list[Metric]:
        """The metrics with their current values."""
        return list(self._metrics(sample=True))

    def _metrics(self, *, sample: bool) -> Iterator[Metric]:
        raise NotImplementedError


class Metrics:
    """The service's metrics in a registry of their own, so apps in one process never collide."""

    def __init__(
        self,
        state: ConsumerState,
        consumer_running: Callable[[], bool],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry()
        self.commit_seconds = Histogram(
            f"{PREFIX}_store_commit_duration_seconds",
            "Time taken by each successful commit of a batch to the store.",
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.commit_failures = Counter(
            f"{PREFIX}_store_commit_failures",
            "Commits of a batch that raised; each is retried until it succeeds.",
            registry=self.registry,
        )
        self._http = _HttpCollector()
        self.registry.register(self._http)
        self.registry.register(_ConsumerCollector(state, consumer_running, clock))

    def commit_succeeded(self, seconds: float) -> None:
        """Record the duration of a successful store commit."""
        self.commit_seconds.observe(seconds)

    def commit_failed(self, seconds: float) -> None:
        """Count a failed store commit (its duration is not a commit latency)."""
        self.commit_failures.inc()

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request and record how long it took."""
        self._http.observe(method, route, status, seconds)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the `Accept` header asks for, and its content type.

        Prometheus text format 0.0.4 unless OpenMetrics is asked for.
        """
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it: `+Inf`, or the shortest repr of the float."""
    return "+Inf" if bound == math.inf else repr(float(bound))


class _HttpSeries:
    """One label set's request count, latency sum and per-bucket counts (not cumulative)."""

    __slots__ = ("buckets", "count", "created", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(_HTTP_BUCKETS) + 1)
        self.created = time.time()


class _HttpCollector(SampledCollector):
    """HTTP request counts and latencies, recorded without a lock and read at scrape time.

    Every request is answered on the event loop's thread, so plain integer updates need no
    lock; prometheus_client's labelled metrics take two locks per request.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, int], _HttpSeries] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request under its labels and put its duration in its bucket."""
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _HttpSeries()
        series.count += 1
        series.total += seconds
        series.buckets[bisect_left(_HTTP_BUCKETS, seconds)] += 1

    def _metrics(self, *, sample: bool) -> Iterator[Metric]:
        labels = ["method", "route", "status"]
        requests = CounterMetricFamily(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            labels=labels,
        )
        name = f"{PREFIX}_http_request_duration_seconds"
        seconds = HistogramMetricFamily(
            name,
            "Time from receiving an HTTP request to sending the last byte of the answer.",
            labels=labels,
        )
        for (method, route, status), series in list(self._series.items()) if sample else ():
            values = [method, route, str(status)]
            requests.add_metric(values, series.count, created=series.created)
            cumulative, buckets = 0, []
            for bound, count in zip((*_HTTP_BUCKETS, math.inf), series.buckets, strict=True):
                cumulative += count
                buckets.append((_le(bound), float(cumulative)))
            seconds.add_metric(values, buckets, series.total)
            seconds.samples.append(
                Sample(f"{name}_created", dict(zip(labels, values, strict=True)), series.created)
            )
        yield requests
        yield seconds


class _ConsumerCollector(SampledCollector):
    """Read the consumer's figures from `ConsumerState` whenever the registry is collected."""

    def __init__(
        self, state: ConsumerState, running: Callable[[], bool], clock: Callable[[], float]
    ) -> None:
        self._state = state
        self._running = running
        self._clock = clock

    def _metrics(self, *, sample: bool) -> Iterator[Metric]:
        state = self._state
        c = state.counters

        def value(number: float) -> float | None:
            return number if sample else None

        yield CounterMetricFamily(
            f"{PREFIX}_events_consumed",
            "Events counted: valid, not canaries, each meta.id once.",
            value=value(c.counted),
        )
        # One family with a reason label: `sum by (reason)` and rates compare on one graph.
        dropped = CounterMetricFamily(
            f"{PREFIX}_events_dropped",
            "Events not counted: duplicate (meta.id already counted), invalid, or canary.",
            labels=["reason"],
        )
        if sample:
            dropped.add_metric(["duplicate"], c.duplicates)
            dropped.add_metric(["invalid"], c.invalid)
            dropped.add_metric(["canary"], c.canaries)
        yield dropped
        yield CounterMetricFamily(
            f"{PREFIX}_stream_reconnects",
            "Connections to the stream after the first.",
            value=value(state.reconnects),
        )
        cut = CounterMetricFamily(
            f"{PREFIX}_stream_connections_cut",
            "Stream connections dropped by the consumer: oversized_event (a line or event over "
            "WIKIPULSE_MAX_EVENT_BYTES) or redirect_refused (a redirect to another host).",
            labels=["reason"],
        )
        if sample:
            cut.add_metric(["oversized_event"], state.oversized_events)
            cut.add_metric(["redirect_refused"], state.redirects_refused)
        yield cut
        lag = state.lag_seconds(self._clock()) if sample else None
        if lag is not None or not sample:  # no sample rather than a made-up one before an event
            yield GaugeMetricFamily(
                f"{PREFIX}_stream_lag_seconds",
                "Seconds from the meta.dt of the last event counted to now.",
                value=lag,
            )
        yield GaugeMetricFamily(
            f"{PREFIX}_stream_connected",
            "1 while connected to the stream, else 0.",
            value=value(float(state.connected)),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_consumer_running",
            "1 while the stream consumer task runs, else 0.",
            # Asked only at scrape time: `describe` runs before the app that answers exists.
            value=float(self._running()) if sample else None,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_store_ok",
            "1 unless the last commit to the store failed, else 0.",
            value=value(float(state.store_ok)),
        )
        info = GaugeMetricFamily(
            f"{PREFIX}_build_info", "Always 1; the version is a label.", labels=["version"]
        )
        if sample:
            info.add_metric([__version__], 1.0)
        yield info


class HttpMetricsMiddleware:
    """ASGI middleware that times every HTTP request and counts it by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, noting the status sent and, afterwards, the route it matched."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            # The router stores the matched route in this very scope dict.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.request_done(method, route, status, time.perf_counter() - started)
