"""The command line of .ci/services and its CQL probe, without starting any server.

`status`, `--help` and the refusals run against an empty state directory; the probe talks to a
fake CQL server in a thread. Starting PostgreSQL and Cassandra is what CI's `.ci/run` does.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / ".ci" / "services"
CQLPROBE = ROOT / ".ci" / "cassandra" / "cqlprobe.py"
BASH = shutil.which("bash") or "/bin/bash"
NAMES = ["postgres", "cassandra", "cassandra3-node1", "cassandra3-node2", "cassandra3-node3"]


def _services(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WIKIPULSE_SERVICES_DIR": str(tmp_path / "state")}
    return subprocess.run(
        [BASH, str(SERVICES), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=tmp_path,  # the script finds the clone from its own path, not from the cwd
    )


@pytest.mark.parametrize("args", [(), ("--help",), ("-h",)])
def test_help_prints_usage_and_exits_0(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = _services(tmp_path, *args)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: bash .ci/services COMMAND")
    for word in ("up", "down", "kill", "wipe", "status", "cassandra3-nodeN"):
        assert word in result.stdout


def test_status_lists_every_server_as_down_on_an_empty_machine(tmp_path: Path) -> None:
    result = _services(tmp_path, "status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    assert all(line.split()[1] == "down" for line in lines)
    assert "127.0.0.2:9042" in lines[3]
    assert "127.0.0.1:5432" in lines[0]


@pytest.mark.parametrize(
    ("args", "code"),
    [(("frobnicate",), 2), (("up", "mysql"), 2), (("down", "cassandra4"), 2), (("kill",), 1)],
)
def test_bad_usage_fails_with_one_line_on_stderr(
    tmp_path: Path, args: tuple[str, ...], code: int
) -> None:
    result = _services(tmp_path, *args)
    assert result.returncode == code
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("services: ")


def test_down_and_kill_of_what_does_not_run_succeed(tmp_path: Path) -> None:
    assert _services(tmp_path, "down", "cassandra3").returncode == 0
    assert _services(tmp_path, "kill", "cassandra3-node2").returncode == 0


def test_a_cluster_node_alone_is_refused_before_the_cluster_ever_ran(tmp_path: Path) -> None:
    result = _services(tmp_path, "up", "cassandra3-node2")
    assert result.returncode == 1
    assert "up cassandra3" in result.stderr


def _fake_cql_server(reply_opcode: int) -> tuple[socket.socket, threading.Thread]:
    """A server that answers one frame with an empty frame of the given opcode."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            header = conn.recv(9)
            _version, _flags, stream, _op, _length = struct.unpack(">BBhBi", header)
            conn.sendall(struct.pack(">BBhBi", 0x84, 0, stream, reply_opcode, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def supported_server() -> Iterator[int]:
    server, thread = _fake_cql_server(0x06)  # SUPPORTED
    yield server.getsockname()[1]
    thread.join(timeout=5)
    server.close()


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CQLPROBE), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_probe_ping_accepts_a_supported_reply(supported_server: int) -> None:
    result = _probe("ping", "127.0.0.1", str(supported_server))
    assert result.returncode == 0, result.stderr


def test_probe_ping_fails_with_one_line_when_nothing_listens() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    result = _probe("ping", "127.0.0.1", str(port))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert f"127.0.0.1:{port}" in result.stderr


@pytest.mark.cassandra
def test_probe_sees_the_cassandra_named_for_the_tests() -> None:
    hosts = os.environ.get("WIKIPULSE_TEST_CASSANDRA_HOSTS")
    if not hosts:
        pytest.skip("set WIKIPULSE_TEST_CASSANDRA_HOSTS to a reachable cluster to run this")
    host = hosts.split(",")[0].strip()
    assert _probe("ping", host).returncode == 0
    schema = _probe("schema", host)
    assert schema.returncode == 0, schema.stderr
    assert len(schema.stdout.strip()) == 32  # a UUID in hex
