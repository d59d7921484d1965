"""The tool commands of `wikipulse`: generate, hash-password, migrate and healthcheck.

Kept apart from `cli` (which builds the parser and runs `replay`) and `roles` (serve, ingest,
api): none of these needs asyncio or the settings until it runs.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["add_tool_commands"]

log = logging.getLogger("wikipulse")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def add_tool_commands(
    sub: Any, common: argparse.ArgumentParser, settings: Callable[..., Settings]
) -> None:
    """Add the tool commands to the command line (`settings` loads the settings)."""
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
    migrate.set_defaults(command="migrate", handler=lambda args: _migrate(settings(args)))

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


def _migrate(settings: Settings) -> int:
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
