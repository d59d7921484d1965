"""The three roles of the one binary: `serve` (both), `ingest` (consumer) and `api` (HTTP API).

`serve` is one process that consumes the stream and serves the API (the default, and the
simplest deployment). A fleet splits it: any number of `wikipulse ingest` processes of one
stream, of which the one holding the store's lease writes (`fleet.py`), and any number of
`wikipulse api` processes (each with `--workers N` processes) that serve what is committed,
re-reading the shared store every batch interval.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from types import FrameType
from typing import TYPE_CHECKING, Any

from wikipulse import __version__

# No asyncio here: `cli` imports this module to build its parser, and `replay` forks its
# workers before asyncio is imported. Each role imports it when it runs.

if TYPE_CHECKING:
    from fastapi import FastAPI

    from wikipulse.config import Settings

__all__ = ["add_role_commands", "ingest_app"]

log = logging.getLogger("wikipulse")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def add_role_commands(
    sub: Any, common: argparse.ArgumentParser, settings: Callable[..., Settings]
) -> None:
    """Add `serve`, `ingest` and `api` to the command line (`settings` loads the settings)."""
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the HTTP API and the stream consumer",
        description="Consume the RecentChange stream and serve /status, /login, /stats and "
        "/docs on WIKIPULSE_HOST:WIKIPULSE_PORT (default 0.0.0.0:7000).",
    )
    serve.set_defaults(command="serve", handler=lambda args: _serve(settings(args)))
    ingest = sub.add_parser(
        "ingest",
        parents=[common],
        help="run only the stream consumer, one writer at a time (several for failover)",
        description="Consume the RecentChange stream into the configured store, without the "
        "statistics API. Several `ingest` processes of one stream elect one writer through "
        "the store's lease (WIKIPULSE_LEASE_SECONDS); the others stand by and take over when "
        "it stops renewing. /status, /ready and /metrics answer on "
        "WIKIPULSE_HOST:WIKIPULSE_PORT.",
    )
    ingest.set_defaults(command="ingest", handler=lambda args: _ingest(settings(args)))
    api = sub.add_parser(
        "api",
        parents=[common],
        help="run only the HTTP API over the shared store (no stream consumer)",
        description="Serve /login, /stats, /stats/timeseries, /stats/top, /stats/live, the "
        "dashboard, /status, /ready and /metrics on WIKIPULSE_HOST:WIKIPULSE_PORT from the "
        "store that `wikipulse ingest` writes (PostgreSQL, Cassandra, or a SQLite file on "
        "this machine), re-read every WIKIPULSE_BATCH_MAX_MS.",
    )
    api.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the port (default 1; more need WIKIPULSE_JWT_SECRET "
        "and WIKIPULSE_USERS, so that every worker accepts the same tokens)",
    )
    api.set_defaults(command="api", handler=lambda args: _api(settings(args), args.workers))


def _collect_less() -> None:
    """Pace Python's cycle collector for a service that folds events.

    Ingest allocates millions of short-lived objects and next to no reference cycles, so at the
    default pace (a young collection every 700 container allocations) the collector scanned the
    heap and found nothing for up to a fifth of `serve`'s CPU while catching up
    (benchmarks/serve_ingest.py into SQLite, per CPU-second: 0.90x the baseline before, 0.95x
    after, back to back on the shared VM). Replay sets the same. What start-up made (modules,
    the app) is frozen out of the scans.
    """
    import gc

    gc.set_threshold(50_000, 20, 100)
    gc.freeze()


def _serve(settings: Settings) -> int:
    import asyncio

    _collect_less()

    # Check the store before serving: a wrong DSN or a missing schema ends here with one
    # line and exit 1, not with a traceback from inside the server's start-up.
    asyncio.run(_check_store(settings))
    from wikipulse.app import build_app

    return _run(build_app(settings), settings)


def _ingest(settings: Settings) -> int:
    import asyncio

    _collect_less()

    asyncio.run(_check_store(settings))
    return _run(ingest_app(settings), settings)


def _api(settings: Settings, workers: int) -> int:
    if workers < 1:
        print("wikipulse: --workers must be 1 or more", file=sys.stderr)
        return EXIT_CONFIG
    if workers > 1 and (settings.jwt_secret is None or not settings.users):
        print(
            "wikipulse: api --workers N>1 needs WIKIPULSE_JWT_SECRET and WIKIPULSE_USERS: "
            "generated ones would differ from worker to worker",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    import asyncio

    asyncio.run(_check_store(settings))
    from wikipulse.app import build_app

    if workers == 1:
        return _run(build_app(settings, role="api"), settings)
    return _run_workers(settings, workers)


def _run_workers(settings: Settings, workers: int) -> int:
    """Bind the port once, fork `workers` processes serving it, stop them all together."""
    from wikipulse.app import build_app

    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: its own app, event loop and store connections
            code = EXIT_FAILURE
            try:
                code = _run(build_app(settings, role="api"), settings, sock)
            except SystemExit as exc:  # SIGTERM after a clean shutdown (`_exit_on_sigterm`)
                code = exc.code if isinstance(exc.code, int) else EXIT_FAILURE
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("wikipulse %s api: %d workers on %s:%d", __version__, workers, *sock.getsockname()[:2])
    # The first worker to end ends the others: a crashed one restarts the whole process.
    _, status = os.wait()
    forward(signal.SIGTERM, None)
    for _ in children[1:]:
        os.wait()
    sock.close()
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else EXIT_FAILURE


def _run(app: FastAPI, settings: Settings, sock: socket.socket | None = None) -> int:
    """Serve `app` with uvicorn (guarded protocol, live streams ended on shutdown)."""
    import uvicorn

    from wikipulse.httpserver import guarded_protocol
    from wikipulse.live import LiveServer

    if sock is None:
        log.info("wikipulse %s listening on %s:%d", __version__, settings.host, settings.port)
    # uvicorn shuts down gracefully on SIGTERM (the lifespan commits the last batch), then
    # restores the previous handler and raises the signal again. With the default handler
    # that kills the process (exit -15/143) after a clean stop; this one exits 0 instead,
    # and also stops a process that gets SIGTERM before uvicorn took the signal over.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # Header timeout and connection cap (uvicorn has neither before the first request).
        http=guarded_protocol(settings.http_header_timeout_seconds, settings.http_max_connections),
        timeout_keep_alive=settings.http_keepalive_timeout_seconds,
    )
    server = LiveServer(config)
    server.run(sockets=None if sock is None else [sock])
    # uvicorn.run exits 3 when the app fails to start; so does this.
    return EXIT_OK if server.started else 3


async def _check_store(settings: Settings) -> None:
    from wikipulse.stores import make_store

    store = make_store(settings)
    await store.open()
    await store.close()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(EXIT_OK)


def ingest_app(settings: Settings, *, source: Any = None, store: Any = None) -> FastAPI:
    """The app of an `ingest` process: the elector in its lifespan, /status, /ready, /metrics.

    `source` (a factory of an event source from the consumer state) and `store` (a factory
    of stores) replace the live stream and the configured store in tests.
    """
    import asyncio
    import secrets

    from fastapi import FastAPI
    from pydantic import SecretStr

    from wikipulse.api import get_metrics, get_ready, get_status
    from wikipulse.auth import Authenticator
    from wikipulse.bootstrap import Services, live_source
    from wikipulse.broadcast import LiveFeed
    from wikipulse.consumer import ConsumerState
    from wikipulse.fleet import Elector, LeaseCollector
    from wikipulse.metrics import Metrics
    from wikipulse.ratelimit import LoginGuard
    from wikipulse.stores import make_store

    state = ConsumerState()
    make = store if store is not None else (lambda: make_store(settings))
    metrics = Metrics(state, lambda: services.consumer_running())
    elector = Elector(
        settings,
        state,
        make,
        source if source is not None else (lambda st: live_source(settings, st)),
        observer=metrics,
    )
    metrics.registry.register(LeaseCollector(elector))
    services = Services(
        settings=settings,
        consumer=state,
        # No /login here: an authenticator nobody can log in to.
        auth=Authenticator(
            SecretStr(secrets.token_hex(32)),
            {},
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.jwt_ttl_seconds,
        ),
        metrics=metrics,
        clock=time.time,
        login_guard=LoginGuard.from_settings(settings),
        live=LiveFeed(min_interval=1.0),
        role="ingest",
        lease_status=elector.status,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lease_store = make()
        await lease_store.open()
        services.store = lease_store
        task = asyncio.create_task(elector.run(lease_store), name="wikipulse-elector")
        services.consumer_task = task
        try:
            yield
        finally:
            services.store = None
            task.cancel()
            await asyncio.wait({task})
            await lease_store.close()

    app = FastAPI(
        title="wikipulse ingest",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.services = services
    app.add_api_route("/status", get_status, methods=["GET"])
    app.add_api_route("/ready", get_ready, methods=["GET"])
    app.add_api_route("/metrics", get_metrics, methods=["GET"])
    return app
