"""The `replay` command: a recorded stream file's statistics, decoded by forked workers.

`cli.main` builds only this command's parser when the command line starts with `replay`, so
nothing of the other commands (their modules, their drivers) is imported before the workers
fork; this module itself imports only argparse and the store registry at the top, the rest
where it is needed.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wikipulse.stores import STORES

if TYPE_CHECKING:
    from wikipulse.config import Settings
    from wikipulse.ingest import Pipeline
    from wikipulse.replay.options import ReplaySettings
    from wikipulse.replay.parallel import RangeFolder
    from wikipulse.stores import StatsStore

__all__ = ["add_replay_command", "replay_parser"]

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

#: How `replay` loads the full settings (cli's `_settings`: validated, logging configured).
SettingsLoader = Callable[..., "Settings"]

_HELP = "aggregate a recorded stream file and print the statistics"
_DESCRIPTION = (
    "Read a recorded stream (NDJSON, one event a line, or a raw SSE capture; "
    "detected from its first bytes), print the final statistics as JSON (the /stats body) "
    "on stdout and progress on stderr."
)


def add_replay_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    settings: SettingsLoader,
) -> None:
    """Add `replay` to the command line's subcommands."""
    replay = sub.add_parser("replay", parents=[common], help=_HELP, description=_DESCRIPTION)
    _add_arguments(replay, settings)


def replay_parser(
    common: argparse.ArgumentParser, settings: SettingsLoader
) -> argparse.ArgumentParser:
    """The parser of `replay` alone, as `wikipulse replay` shows and parses it."""
    replay = argparse.ArgumentParser(
        prog="wikipulse replay", parents=[common], description=_DESCRIPTION
    )
    _add_arguments(replay, settings)
    return replay


def _add_arguments(replay: argparse.ArgumentParser, settings: SettingsLoader) -> None:
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
    replay.set_defaults(command="replay", handler=lambda args: _replay(args, settings))


def _replay(args: argparse.Namespace, load: SettingsLoader) -> int:
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
        summed = keep_windows and STORES[args.store].minute_sums
        folder = RangeFolder(path, size, workers, windows=keep_windows, summed=summed)
    import asyncio  # after the fork: the workers need none of it

    try:
        settings = _replay_settings(args, load)
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


def _replay_settings(args: argparse.Namespace, load: SettingsLoader) -> Settings | ReplaySettings:
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
    return load(args, store=args.store)


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
    import json  # not before the workers fork: nothing there needs it

    sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
    return EXIT_OK
