"""The `wikipulse` command: serve, ingest, api (see `roles.py`), replay, generate, hash-password,
migrate, healthcheck."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wikipulse import __version__
from wikipulse.replay.command import add_replay_command, replay_parser

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["main"]

log = logging.getLogger("wikipulse")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    command_line = argv is None  # the process's own command line, not a caller's list
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["replay"]:
        # `replay` alone: its workers fork sooner without the other commands' modules.
        args = replay_parser(_common(), _settings).parse_args(argv[1:])
    else:
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
    if command_line and args.command == "replay":
        # A one-shot command whose answer is out: the interpreter's teardown would free every
        # user name and event id it holds one by one (30-100 ms) only to exit afterwards.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            return result  # a closed pipe: the interpreter reports it at exit, as it did
        os._exit(result)
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
    common = _common()
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    from wikipulse.commands import add_tool_commands
    from wikipulse.roles import add_role_commands

    add_role_commands(sub, common, _settings)

    add_replay_command(sub, common, _settings)

    add_tool_commands(sub, common, _settings)
    return parser


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config file (default: $WIKIPULSE_CONFIG); .env and the environment override it",
    )
    common.add_argument(
        "--env-file", metavar="PATH", default=".env", help="dotenv file to read (default: .env)"
    )
    return common


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    from wikipulse.config import load_settings

    settings = load_settings(config_file=args.config, env_file=args.env_file, **overrides)
    from wikipulse.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings
