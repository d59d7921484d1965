"""The `wikipulse` command: serve, ingest, api (see `roles.py`), replay, generate, hash-password,
migrate, healthcheck."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wikipulse import __version__
from wikipulse.stores import STORES

if TYPE_CHECKING:
    from wikipulse.config import Settings
    from wikipulse.ingest import Pipeline
    from wikipulse.replay.options import ReplaySettings
    from wikipulse.replay.parallel import RangeFolder
    from wikipulse.stores import StatsStore

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

    from wikipulse.commands import add_tool_commands
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

    add_tool_commands(sub, common, _settings)
    return parser


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
        settings = _replay_settings(args)
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


def _replay_settings(args: argparse.Namespace) -> Settings | ReplaySettings:
    """The settings of a replay: its defaults as they are when nothing is configured.

    Loading and validating the settings costs a sixth of the CPU of a large replay into
    memory, which reads only a few of them (see replay/options.py).
    """
    import os

    from wikipulse.replay.options import ReplaySettings, unconfigured

    if args.store == "memory" and unconfigured(os.environ, args.config, args.env_file):
        from wikipulse.logs import configure_logging

        light = ReplaySettings()
        configure_logging(light.log_level, light.log_format)
        return light
    return _settings(args, store=args.store)


def _replay_store(
    settings: Settings | ReplaySettings, windows: bool
) -> tuple[StatsStore, Callable[[StatsStore], Pipeline]]:
    """The store of a replay, and how to make its pipeline once the store is open."""
    from wikipulse.replay.options import ReplaySettings

    if isinstance(settings, ReplaySettings):
        # Nothing configured: the memory store, without the bootstrap's imports.
        from wikipulse.ingest import Pipeline
        from wikipulse.stores.memory import MemoryStore

        def pipeline(store: StatsStore) -> Pipeline:
            return Pipeline(
                store,
                max_events=settings.batch_max_events,
                max_ms=settings.batch_max_ms,
                dedup_window=settings.dedup_window,
                windows=windows,
            )

        return MemoryStore(window_retention_hours=settings.window_retention_hours), pipeline
    from wikipulse.bootstrap import make_pipeline, store_for

    return store_for(settings), lambda store: make_pipeline(settings, store, windows=windows)


async def _replay_async(
    settings: Settings | ReplaySettings,
    path: Path,
    size: int,
    folder: RangeFolder | None,
    *,
    quiet: bool,
    windows: bool = False,
    keep_windows: bool = True,
) -> int:
    import time

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

    store, make_pipeline = _replay_store(settings, keep_windows)
    started = time.monotonic()
    fmt = read_format(path)
    try:
        await store.open()
        pipeline = make_pipeline(store)
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
