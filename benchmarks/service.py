"""What the serve benchmarks share: a local SSE server, a `wikipulse serve` process, a token.

Everything listens on 127.0.0.1 and every process is stopped when its context ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
PASSWORD = "benchmark-password"  # noqa: S105  # a throw-away user of a throw-away process
SECRET = "benchmark-jwt-secret-0123456789abcdef0123456789"  # noqa: S105  # same


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def hash_password(password: str) -> str:
    """An argon2 hash made by `wikipulse hash-password`, as an operator would make it."""
    result = subprocess.run(
        [sys.executable, "-m", "wikipulse", "hash-password"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def sse_server(path: Path, rate: float, *, hold: bool = False) -> Iterator[SSEServer]:
    """Run `sse_server.py` over the file; yield its URL and, with `hold`, how to start it."""
    port = free_port()
    cmd = [sys.executable, str(HERE / "sse_server.py"), str(path), "--port", str(port)]
    cmd += ["--rate", str(rate), *(["--hold"] if hold else [])]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise SystemExit("the SSE server did not start")
        yield SSEServer(f"http://127.0.0.1:{port}/v2/stream/recentchange", proc)
    finally:
        stop(proc)


class SSEServer:
    """A running `sse_server.py`: its stream URL, and `go` to release a held stream."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self._proc = proc

    def go(self) -> None:
        """Let a server started with `hold` send its events."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(b"go\n")
        self._proc.stdin.flush()


def serve_env(workdir: Path, stream_url: str, store: str, users: str) -> dict[str, str]:
    """The environment of a `serve` process: its own port, store file, user and secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIKIPULSE_")}
    env.update(
        WIKIPULSE_HOST="127.0.0.1",
        WIKIPULSE_PORT=str(free_port()),
        WIKIPULSE_STREAM_URL=stream_url,
        WIKIPULSE_STORE=store,
        WIKIPULSE_SQLITE_PATH=str(workdir / "bench.db"),
        WIKIPULSE_USERS=users,
        WIKIPULSE_JWT_SECRET=SECRET,
        WIKIPULSE_LOG_LEVEL="WARNING",
    )
    return env


@contextlib.contextmanager
def serve(
    env: dict[str, str], workdir: Path, timeout: float = 60.0
) -> Iterator[tuple[httpx.Client, int]]:
    """Run `wikipulse serve`; yield a client of its API and its pid once `/status` answers."""
    log = (workdir / "serve.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wikipulse", "serve"],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{env['WIKIPULSE_PORT']}", timeout=10)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited with {proc.returncode}; see {log.name}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/status").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("serve did not answer /status in time")
            time.sleep(0.05)
        yield client, proc.pid
    finally:
        client.close()
        stop(proc)
        log.close()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def login(client: httpx.Client) -> str:
    """A bearer token for the benchmark user."""
    response = client.post("/login", json={"username": "admin", "password": PASSWORD})
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
