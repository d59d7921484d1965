"""The `wikipulse` command: serve, ingest, api (see `roles.py`), replay, generate, hash-password,
migrate, healthcheck."""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wikipulse import __version__
from wikipulse.stores import STORES

if TYPE_CHECKING:
    from wikipulse.config import Settings
    from wikipulse.replay.parallel import RangeFolder

__all__ = ["main"]

log = logging.getLogger("wikipulse")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    # The settings (and pydantic) are imported by the commands that need them, not here:
    # `replay` starts its worker processes before loading them.
    try:
        result: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from wikipulse.config import ConfigError
        from wikipulse.stores import StoreError

        if isinstance(exc, ConfigError):
            print(f"wikipulse: configuration error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if isinstance(exc, StoreError):
            from wikipulse.redact import redact_text  # a driver may echo the DSN

            print(f"wikipulse: store error: {redact_text(str(exc))}", file=sys.stderr)
            return EXIT_FAILURE
        raise
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wikipulse",
        description="Live statistics of Wikimedia's RecentChange stream behind an authenticated "
        "HTTP API. Settings come from WIKIPULSE_* environment variables, a .env file and a "
        "TOML config file (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"wikipulse {__version__}")
    parser.set_defaults(command=None)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config file (default: $WIKIPULSE_CONFIG); .env and the environment override it",
    )
    common.add_argument(
        "--env-file", metavar="PATH", default=".env", help="dotenv file to read (default: .env)"
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    from wikipulse.roles import add_role_commands

    add_role_commands(sub, common, _settings)

    replay = sub.add_parser(
        "replay",
        parents=[common],
        help="aggregate a recorded stream file and print the statistics",
        description="Read a recorded stream (NDJSON, one event a line, or a raw SSE capture; "
        "detected from its first bytes), print the final statistics as JSON (the /stats body) "
        "on stdout and progress on stderr.",
    )
    replay.add_argument("path", type=Path, metavar="PATH", help="the recording to replay")
    replay.add_argument(
        "--store",
        choices=tuple(STORES),
        default="memory",
        help="store to write through (default: memory; the others use their WIKIPULSE_* "
        "settings and add to what they already hold)",
    )
    replay.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="processes decoding a large NDJSON file (default: one per core; 1: no workers)",
    )
    replay.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    replay.add_argument(
        "--windows",
        action="store_true",
        help="print {stats, timeseries, top} instead: the /stats body, the timeseries of the "
        "whole recording by event time and its top-10 wikis, users and pages (the API's shapes)",
    )
    replay.set_defaults(command="replay", handler=_replay)

    hash_pw = sub.add_parser(
        "hash-password",
        help="read a password on stdin and print its argon2 hash",
        description="Read a password from stdin (prompted twice on a terminal) and print an "
        "argon2id hash for WIKIPULSE_USERS=name:hash.",
    )
    hash_pw.set_defaults(command="hash-password", handler=_hash_password)

    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="create the schema of the configured store",
        description="Create the tables (and, for Cassandra, the keyspace) of the store named by "
        "WIKIPULSE_STORE. Safe to run again.",
    )
    migrate.set_defaults(command="migrate", handler=_migrate)

    generate = sub.add_parser(
        "generate",
        help="write realistic generated events as NDJSON (for trials and benchmarks)",
        description="Write COUNT generated RecentChange events, one JSON object a line, to "
        "stdout or --output: ~900 wikis with a heavy head, Zipf users, bots, temporary, IP and "
        "suppressed accounts, canaries. The same --seed always gives the same bytes.",
    )
    generate.add_argument("count", type=int, metavar="COUNT", help="how many events")
    generate.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    generate.add_argument(
        "--canaries", type=int, default=3, help="canary events mixed in (default: 3)"
    )
    generate.add_argument(
        "--page-skew",
        type=float,
        default=0.0,
        metavar="S",
        help="0: every title new (default); S > 0: hot pages, titles from a heavy head (e.g. 4)",
    )
    generate.add_argument(
        "--rate",
        type=float,
        default=55.0,
        help="events per second of event time (meta.dt), on average (default: 55, the live rate)",
    )
    generate.add_argument(
        "--start",
        default="2026-11-01T12:00:00Z",
        help="event time of the first event, ISO 8601 (default: 2026-11-01T12:00:00Z)",
    )
    generate.add_argument("--output", "-o", type=Path, metavar="PATH", help="file to write")
    generate.set_defaults(command="generate", handler=_generate)

    health = sub.add_parser(
        "healthcheck",
        parents=[common],
        help="exit 0 if the local service answers /status (or /ready with --ready)",
        description="GET /status of the running service (for container health checks); exit 0 "
        "if it answers 200 with status ok, 1 otherwise. With --ready, GET /ready instead: exit 0 "
        "only if the store is open and healthy and the stream consumer runs.",
    )
    health.add_argument(
        "--ready",
        action="store_true",
        help="check readiness (/ready) rather than liveness (/status)",
    )
    health.add_argument(
        "--url",
        help="URL to check (default: http://127.0.0.1:$WIKIPULSE_PORT/status, or /ready)",
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default: 3)")
    health.set_defaults(command="healthcheck", handler=_healthcheck)
    return parser


def _generate(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from wikipulse.generate import GeneratorOptions, write

    try:
        start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        options = GeneratorOptions(
            args.count, args.seed, args.canaries, start, args.rate, args.page_skew
        )
    except ValueError as exc:
        print(f"wikipulse: generate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.output is None:
        write(options, sys.stdout.buffer)
    else:
        with args.output.open("wb") as out:
            write(options, out)
    return EXIT_OK


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    from wikipulse.config import load_settings

    settings = load_settings(config_file=args.config, env_file=args.env_file, **overrides)
    from wikipulse.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings


def _replay(args: argparse.Namespace) -> int:
    path: Path = args.path
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except OSError as exc:
        print(f"wikipulse: cannot read {str(path)!r}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    if path.is_dir():
        print(f"wikipulse: cannot read {str(path)!r}: it is a directory", file=sys.stderr)
        return EXIT_FAILURE
    if args.workers < 0:
        print("wikipulse: --workers must be 0 (one per core) or more", file=sys.stderr)
        return EXIT_CONFIG
    from wikipulse.replay.files import PARALLEL_MIN_BYTES, read_format
    from wikipulse.replay.parallel import RangeFolder, default_workers

    # Replay allocates millions of short-lived objects and next to no reference cycles: the
    # cycle collector's default pace (every 700 container allocations) spends its time
    # finding nothing. Collect less often; set before the fork, the workers inherit it.
    gc.set_threshold(50_000, 20, 100)
    # Time windows cost a replay about a third of its memory: fold them only where something
    # reads them (--windows, or a durable store that keeps them for `serve`).
    keep_windows = args.windows or args.store != "memory"
    workers = args.workers or default_workers()
    folder = None
    if workers > 1 and size >= PARALLEL_MIN_BYTES and read_format(path) == "ndjson":
        # Fork the workers first: they decode while the settings load and the store opens,
        # and no thread exists yet to be copied into them.
        folder = RangeFolder(path, size, workers, windows=keep_windows)
    import asyncio  # after the fork: the workers need none of it

    try:
        settings = _settings(args, store=args.store)
        return asyncio.run(
            _replay_async(
                settings,
                path,
                size,
                folder,
                quiet=args.quiet,
                windows=args.windows,
                keep_windows=keep_windows,
            )
        )
    finally:
        if folder is not None:
            folder.close()


async def _replay_async(
    settings: Settings,
    path: Path,
    size: int,
    folder: RangeFolder | None,
    *,
    quiet: bool,
    windows: bool = False,
    keep_windows: bool = True,
) -> int:
    import time

    from wikipulse.bootstrap import make_pipeline, store_for
    from wikipulse.replay.files import file_feed, read_format

    next_report = time.monotonic() + 1.0

    def progress(done: int) -> None:
        nonlocal next_report
        now = time.monotonic()
        if quiet or now < next_report:
            return
        next_report = now + 1.0
        c = pipeline.state.counters
        seen = c.counted + c.duplicates + c.canaries + c.invalid
        print(
            f"replay: {done / 1e6:.1f} of {size / 1e6:.1f} MB ({100 * done / max(size, 1):.0f}%), "
            f"{seen} events, {seen / (now - started):,.0f} events/s",
            file=sys.stderr,
        )

    store = store_for(settings)
    started = time.monotonic()
    fmt = read_format(path)
    try:
        await store.open()
        pipeline = make_pipeline(settings, store, windows=keep_windows)
        await pipeline.resume()
        await pipeline.run(file_feed(path, progress, folder))
        stats = await store.snapshot()
        body: dict[str, Any] = stats.to_dict()
        if windows:
            from wikipulse.replay.windows import window_report
            from wikipulse.stores import StoreError
            from wikipulse.window_query import WindowStore

            if not isinstance(store, WindowStore):
                raise StoreError(f"the {settings.store} store keeps no time windows yet")
            body = {"stats": body, **await window_report(store)}
    finally:
        await store.close()
    elapsed = time.monotonic() - started
    c = pipeline.state.counters
    if not quiet:
        seen = c.counted + c.duplicates + c.canaries + c.invalid
        print(
            f"replay: {path} ({fmt}): {seen} events in {elapsed:.2f}s "
            f"({seen / max(elapsed, 1e-9):,.0f}/s): {c.counted} counted, {c.duplicates} "
            f"duplicates, {c.canaries} canaries, {c.invalid} invalid; store {settings.store}",
            file=sys.stderr,
        )
    sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
    return EXIT_OK


def _hash_password(args: argparse.Namespace) -> int:
    from wikipulse.auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("wikipulse: the passwords differ", file=sys.stderr)
            return EXIT_FAILURE
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("wikipulse: empty password; give one on stdin", file=sys.stderr)
        return EXIT_FAILURE
    print(hash_password(password))
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from wikipulse.stores import migrate

    try:
        import asyncio

        asyncio.run(migrate(settings))
    except Exception as exc:  # any driver error: say what failed, no traceback
        log.error("migration of the %s store failed: %s", settings.store, exc)
        return EXIT_FAILURE
    log.info("%s store schema is ready", settings.store)
    return EXIT_OK


def _healthcheck(args: argparse.Namespace) -> int:
    import urllib.request

    from wikipulse.config import load_settings

    url = args.url
    if url is None:
        port = load_settings(config_file=args.config, env_file=args.env_file).port
        url = f"http://127.0.0.1:{port}/{'ready' if args.ready else 'status'}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:  # noqa: S310  # our own URL
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        # A 503 from /ready carries the reasons in its body: show them, not just the status.
        detail = exc.read(2048).decode("utf-8", "replace").strip()
        print(f"unhealthy: {url}: HTTP {exc.code} {detail}".rstrip(), file=sys.stderr)
        return EXIT_FAILURE
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if not isinstance(body, dict):
        healthy = False
    elif args.ready:
        healthy = body.get("ready") is True
    else:
        healthy = body.get("status") == "ok"
    if not healthy:
        print(f"unhealthy: {url}: {body}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
