#!/usr/bin/env python3
"""Talks just enough of the CQL native protocol (v4) to tell .ci/services whether a node is ready.

Standard library only, so that `.ci/services up` works before the project's virtualenv (and so
its cassandra-driver) exists.

    cqlprobe.py ping HOST [PORT]       exit 0 if HOST answers an OPTIONS frame with SUPPORTED
    cqlprobe.py peers HOST [PORT]      prints the peers in HOST's system.peers, one a line
    cqlprobe.py all HOST [PORT]        exit 0 if a read at consistency ALL of a keyspace that
                                       every node replicates (system_distributed, RF 3) succeeds,
                                       i.e. the coordinator HOST sees every replica as up
    cqlprobe.py schema HOST [PORT]     prints HOST's schema version (nodes agree when equal)

Any failure exits 1 with a one-line reason on stderr.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_OPTIONS, OP_SUPPORTED, OP_QUERY, OP_RESULT = (
    0x00,
    0x01,
    0x02,
    0x05,
    0x06,
    0x07,
    0x08,
)
RESULT_ROWS = 0x0002
CONSISTENCY_ONE, CONSISTENCY_ALL = 0x0001, 0x0005
TIMEOUT_S = 5.0


class ProbeError(Exception):
    pass


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">H", len(data)) + data


def _long_string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT_S)
        self.stream = 0

    def close(self) -> None:
        self.sock.close()

    def _read_exact(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.sock.recv(size)
            if not chunk:
                raise ProbeError("connection closed by the node")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def request(self, opcode: int, body: bytes = b"") -> tuple[int, bytes]:
        self.stream += 1
        header = struct.pack(">BBhBi", VERSION, 0, self.stream, opcode, len(body))
        self.sock.sendall(header + body)
        version, _flags, _stream, op, length = struct.unpack(">BBhBi", self._read_exact(9))
        if version != 0x80 | VERSION:
            raise ProbeError(f"unexpected protocol version 0x{version:02x} in the reply")
        payload = self._read_exact(length)
        if op == OP_ERROR:
            code = struct.unpack(">i", payload[:4])[0]
            (msg_len,) = struct.unpack(">H", payload[4:6])
            message = payload[6 : 6 + msg_len].decode(errors="replace")
            raise ProbeError(f"error 0x{code:04x}: {message}")
        return op, payload

    def startup(self) -> None:
        body = struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0")
        op, _ = self.request(OP_STARTUP, body)
        if op != OP_READY:
            raise ProbeError(f"STARTUP answered with opcode 0x{op:02x}, not READY")

    def query_first_column(self, cql: str, consistency: int) -> list[bytes | None]:
        """Runs CQL and returns the raw first cell of every row (no paging: small results only)."""
        body = _long_string(cql) + struct.pack(">HB", consistency, 0)
        op, payload = self.request(OP_QUERY, body)
        if op != OP_RESULT:
            raise ProbeError(f"QUERY answered with opcode 0x{op:02x}, not RESULT")
        return _first_column(payload)


def _skip_type(payload: bytes, pos: int) -> int:
    (type_id,) = struct.unpack(">H", payload[pos : pos + 2])
    pos += 2
    if type_id == 0x0000:  # custom: a class name
        n: int = struct.unpack(">H", payload[pos : pos + 2])[0]
        return pos + 2 + n
    if type_id in (0x0020, 0x0022):  # list, set
        return _skip_type(payload, pos)
    if type_id == 0x0021:  # map
        return _skip_type(payload, _skip_type(payload, pos))
    if type_id in (0x0030, 0x0031):  # UDT, tuple
        raise ProbeError("the probe does not decode user types or tuples")
    return pos


def _first_column(payload: bytes) -> list[bytes | None]:
    (kind,) = struct.unpack(">i", payload[:4])
    if kind != RESULT_ROWS:
        return []
    flags, columns = struct.unpack(">ii", payload[4:12])
    pos = 12
    if flags & 0x0002:  # has_more_pages: a paging state follows
        (n,) = struct.unpack(">i", payload[pos : pos + 4])
        pos += 4 + max(n, 0)
    if flags & 0x0004:  # no_metadata
        raise ProbeError("the node sent rows without metadata")
    global_spec = flags & 0x0001
    if global_spec:
        for _ in range(2):  # keyspace, table
            (n,) = struct.unpack(">H", payload[pos : pos + 2])
            pos += 2 + n
    for _ in range(columns):
        for _ in range(1 if global_spec else 3):  # [keyspace, table,] name
            (n,) = struct.unpack(">H", payload[pos : pos + 2])
            pos += 2 + n
        pos = _skip_type(payload, pos)
    (rows,) = struct.unpack(">i", payload[pos : pos + 4])
    pos += 4
    firsts: list[bytes | None] = []
    for _ in range(rows):
        for column in range(columns):
            (n,) = struct.unpack(">i", payload[pos : pos + 4])
            pos += 4
            cell = payload[pos : pos + n] if n >= 0 else None
            pos += max(n, 0)
            if column == 0:
                firsts.append(cell)
    return firsts


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or argv[1] not in ("ping", "peers", "all", "schema"):
        print(__doc__, file=sys.stderr)
        return 2
    command, host = argv[1], argv[2]
    port = int(argv[3]) if len(argv) == 4 else 9042
    try:
        conn = Connection(host, port)
        try:
            if command == "ping":
                op, _ = conn.request(OP_OPTIONS)
                if op != OP_SUPPORTED:
                    raise ProbeError(f"OPTIONS answered with opcode 0x{op:02x}, not SUPPORTED")
            elif command == "peers":
                conn.startup()
                for cell in conn.query_first_column(
                    "SELECT peer FROM system.peers", CONSISTENCY_ONE
                ):
                    if cell is not None:
                        print(ipaddress.ip_address(cell))
            elif command == "schema":
                conn.startup()
                for cell in conn.query_first_column(
                    "SELECT schema_version FROM system.local", CONSISTENCY_ONE
                ):
                    print(cell.hex() if cell is not None else "none")
            else:
                conn.startup()
                conn.query_first_column(
                    "SELECT id FROM system_distributed.repair_history LIMIT 1", CONSISTENCY_ALL
                )
        finally:
            conn.close()
    except (OSError, ProbeError, struct.error) as exc:
        print(f"cqlprobe {command} {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
