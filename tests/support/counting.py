"""An independent count of the statistics of a file of events, written with the stdlib only.

It shares no code with the package so that a bug there cannot hide in both places.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def counted(lines: Iterable[bytes | str]) -> Iterator[dict[str, Any]]:
    """The events `/stats` counts, parsed: valid, non-canary, each meta.id once, in file order."""
    seen: set[str] = set()
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or not _valid(event):
            continue
        meta = event["meta"]
        if meta.get("domain") == "canary" or meta["id"] in seen:
            continue
        seen.add(meta["id"])
        yield event


def expected_stats(lines: Iterable[bytes | str]) -> dict[str, Any]:
    """The `/stats` body for these NDJSON lines: valid, non-canary, each meta.id once."""
    users: set[str] = set()
    servers: dict[str, int] = {}
    total = bots = 0
    for event in counted(lines):
        total += 1
        bots += event["bot"]
        if event.get("user"):
            users.add(event["user"])
        servers[event["server_name"]] = servers.get(event["server_name"], 0) + 1
    return {
        "total": total,
        "distinct_users": len(users),
        "bots": bots,
        "non_bots": total - bots,
        "by_server_name": servers,
    }


def expected_stats_of_file(path: Path) -> dict[str, Any]:
    """`expected_stats` over a file's lines."""
    with path.open("rb") as f:
        return expected_stats(f)


def _valid(event: dict[str, Any]) -> bool:
    meta = event.get("meta")
    return (
        isinstance(meta, dict)
        and isinstance(meta.get("id"), str)
        and meta["id"] != ""
        and isinstance(meta.get("domain", ""), str | None)
        and isinstance(meta.get("dt", ""), str | None)
        and isinstance(event.get("server_name"), str)
        and isinstance(event.get("bot"), bool)
        and isinstance(event.get("user", ""), str | None)
        # What the time windows read must be well-formed too (the schema's types).
        and isinstance(event.get("type", ""), str | None)
        and isinstance(event.get("title", ""), str | None)
        and _valid_length(event.get("length"))
    )


def _valid_length(length: Any) -> bool:
    if length is None:
        return True
    if not isinstance(length, dict):
        return False
    # a byte count: 0 to 2^32 - 1 (events.MAX_LENGTH), or null
    return all(
        length.get(side) is None
        or (type(length.get(side)) is int and 0 <= length[side] <= 2**32 - 1)
        for side in ("old", "new")
    )
