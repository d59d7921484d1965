"""HTTP load for the API benchmark: wrk where installed, else a small asyncio generator.

Both keep `connections` keep-alive connections busy for `seconds` against one URL with the
given headers and report requests/s and the 50th and 99th latency percentiles. The Python
generator is the fallback only: it spends more CPU per request than the server under test
(on a 2-core machine it competes with it), so its figures are a lower bound.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured."""

    tool: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def run_load(
    url: str, headers: dict[str, str], *, connections: int, seconds: float, threads: int = 2
) -> LoadResult:
    """Load `url` for `seconds` with wrk if it is on PATH, else with the asyncio generator."""
    if not (urlsplit(url).hostname or "").startswith("127."):
        raise ValueError("the benchmark loads 127.0.0.x only")
    seconds = min(seconds, 120.0)  # bounded whatever the arguments say
    connections = min(connections, 512)
    wrk = shutil.which("wrk")
    if wrk:
        return _wrk(wrk, url, headers, connections, seconds, threads)
    return asyncio.run(_python_load(url, headers, connections, seconds))


def _wrk(
    wrk: str, url: str, headers: dict[str, str], connections: int, seconds: float, threads: int
) -> LoadResult:
    script = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--latency",
                "-s",
                f.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        Path(f.name).unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        found = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        assert found is not None, out
        return float(found.group(1)) * _UNITS[found.group(2)] * 1000

    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return LoadResult(
        "wrk",
        rps,
        percentile("50"),
        percentile("99"),
        int(non_2xx.group(1)) if non_2xx else 0,
    )


async def _python_load(
    url: str, headers: dict[str, str], connections: int, seconds: float
) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode()
    latencies: list[float] = []
    bad = [0]
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (sent := time.perf_counter()) < deadline:
                writer.write(request)
                response = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in response.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - sent)
                if not 200 <= int(response[9:12]) < 400:
                    bad[0] += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return LoadResult("python", len(latencies) / elapsed, cuts[49] * 1000, cuts[98] * 1000, bad[0])
