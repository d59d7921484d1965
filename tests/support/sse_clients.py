"""Many `/stats/live` clients in a process of their own, so they do not share the server's GIL.

    python -m tests.support.sse_clients BASE_URL TOKEN COUNT

Prints `ready` once every client has its first message; then reads one line of JSON from
stdin (the final `/stats` body), waits until every client has received exactly that (30 s at
most), prints a JSON summary and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx


class Client:
    """One SSE client that keeps the newest `stats` body and counts the messages."""

    def __init__(self) -> None:
        self.messages = 0
        self.last: dict[str, Any] | None = None
        self.first = asyncio.Event()
        self.failed: str | None = None

    async def run(self, http: httpx.AsyncClient, token: str) -> None:
        """Read the stream until cancelled."""
        try:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.stream("GET", "/stats/live", headers=headers) as response:
                if response.status_code != 200:
                    self.failed = f"HTTP {response.status_code}"
                    return
                async for line in response.aiter_lines():
                    if line.startswith('data: {"total"'):
                        self.last = json.loads(line.removeprefix("data: "))
                        self.messages += 1
                        self.first.set()
        except httpx.HTTPError as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
        finally:
            self.first.set()


async def main(base: str, token: str, count: int) -> dict[str, Any]:
    """Run the clients as the module docstring says; return the summary."""
    limits = httpx.Limits(max_connections=count + 5, max_keepalive_connections=count + 5)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=httpx.Timeout(30, read=None)
    ) as http:
        clients = [Client() for _ in range(count)]
        tasks = [asyncio.create_task(c.run(http, token)) for c in clients]
        await asyncio.wait_for(asyncio.gather(*(c.first.wait() for c in clients)), 60)
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        final = json.loads(line)
        started = time.monotonic()
        # Polls: one condition over many clients, checked every 50 ms for at most 30 s.
        while any(c.last != final for c in clients) and time.monotonic() - started < 30:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        summary = {
            "at_final": sum(c.last == final for c in clients),
            "still_open": sum(not t.done() for t in tasks),
            "max_messages": max(c.messages for c in clients),
            "failures": sorted({c.failed for c in clients if c.failed}),
        }
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return summary


if __name__ == "__main__":
    base_url, bearer, how_many = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(asyncio.run(main(base_url, bearer, how_many))), flush=True)
