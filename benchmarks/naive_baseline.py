"""The naive baseline: stdlib `json.loads` per line and dict/set updates, nothing else."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    """Count a file the obvious way and print the same JSON body as `wikipulse replay`."""
    seen: set[str] = set()
    users: set[str] = set()
    servers: dict[str, int] = {}
    total = bots = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            meta = event.get("meta") or {}
            if meta.get("domain") == "canary" or meta.get("id") in seen:
                continue
            seen.add(meta.get("id"))
            total += 1
            if event.get("bot"):
                bots += 1
            if event.get("user"):
                users.add(event["user"])
            name = event.get("server_name")
            servers[name] = servers.get(name, 0) + 1
    body = {
        "total": total,
        "distinct_users": len(users),
        "bots": bots,
        "non_bots": total - bots,
        "by_server_name": servers,
    }
    print(json.dumps(body))


if __name__ == "__main__":
    # No argparse: its import would count in the timed process.
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(f"usage: {sys.argv[0]} FILE\n{__doc__}", file=sys.stderr)
        raise SystemExit(0 if sys.argv[1:] in (["-h"], ["--help"]) else 2)
    main(sys.argv[1])
