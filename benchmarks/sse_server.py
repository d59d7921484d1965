"""A local EventStreams stand-in for the benchmarks: NDJSON lines served as SSE on 127.0.0.1.

Each line of the file becomes one `message` event with a Wikimedia-style `id` (the line's
number as the Kafka offset). `--rate` paces the events (events per second, sent in small
groups every few milliseconds); `--rate 0` sends them as fast as the socket allows. After the
last event the connection stays open and idle, like the real stream between edits, so the
client never reconnects. A `Last-Event-ID` resumes after that offset. With `--hold` the
stream starts only when a line arrives on stdin, so a benchmark can time from that moment.
It runs as a process of its own, so its work never competes with the measured one for the GIL.

    python benchmarks/sse_server.py events.ndjson --port 8765 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Connection: close\r\n"
    b"\r\n"
)
_TOPIC = "eqiad.mediawiki.recentchange"
# Events per write when unpaced: a few hundred KiB, like a busy TCP stream's reads.
_GROUP = 256
_TICK = 0.005


def frame(offset: int, line: bytes) -> bytes:
    """One SSE event as EventStreams sends it: event type, id and the JSON on one data line."""
    ident = json.dumps([{"topic": _TOPIC, "partition": 0, "offset": offset}], separators=(",", ":"))
    return b"event: message\nid: " + ident.encode() + b"\ndata: " + line + b"\n\n"


def resume_offset(last_event_id: str | None) -> int:
    """The offset after which to resume, from a Last-Event-ID header (0: from the start)."""
    if not last_event_id:
        return 0
    try:
        return int(json.loads(last_event_id)[0]["offset"]) + 1
    except (ValueError, LookupError, TypeError):
        return 0


class Server:
    """Serve every connection the same events, from the offset its Last-Event-ID names."""

    def __init__(self, frames: list[bytes], rate: float, go: asyncio.Event) -> None:
        self.frames = frames
        self.rate = rate
        self.go = go

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request, then stream the events and stay open until the client leaves."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            last_id = None
            for raw in head.split(b"\r\n")[1:]:
                name, _, value = raw.partition(b":")
                if name.strip().lower() == b"last-event-id":
                    last_id = value.strip().decode()
            writer.write(_HEAD)
            await writer.drain()
            await self.go.wait()
            start = resume_offset(last_id)
            if self.rate > 0:
                await self._paced(writer, start)
            else:
                for i in range(start, len(self.frames), _GROUP):
                    writer.write(b"".join(self.frames[i : i + _GROUP]))
                    await writer.drain()
            await reader.read()  # idle until the client closes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _paced(self, writer: asyncio.StreamWriter, start: int) -> None:
        began = time.monotonic()
        sent = start
        while sent < len(self.frames):
            await asyncio.sleep(_TICK)
            due = start + int((time.monotonic() - began) * self.rate)
            if due > sent:
                writer.write(b"".join(self.frames[sent:due]))
                await writer.drain()
                sent = min(due, len(self.frames))


def load_frames(path: Path) -> list[bytes]:
    """Every non-empty line of the file as an SSE frame."""
    lines = [line for line in path.read_bytes().split(b"\n") if line]
    return [frame(i, line) for i, line in enumerate(lines)]


async def serve(frames: list[bytes], port: int, rate: float, hold: bool) -> None:
    """Serve the events on 127.0.0.1:`port` until killed (with `hold`: once stdin says go)."""
    go = asyncio.Event()
    server = Server(frames, rate, go)
    async with await asyncio.start_server(server.handle, "127.0.0.1", port) as listener:
        print("ready", flush=True)
        if hold:
            # Connections are answered but get no event until a line arrives on stdin.
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        go.set()
        await listener.serve_forever()


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0: unpaced")
    parser.add_argument("--hold", action="store_true", help="send nothing before a stdin line")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(load_frames(args.path), args.port, args.rate, args.hold))
    sys.exit(0)


if __name__ == "__main__":
    main()
