"""The CQL of the Cassandra store: its tables and every statement it prepares."""

from __future__ import annotations

__all__ = ["SLOTS", "STATEMENTS", "schema_cql"]

#: How many rows of `kind = 'recent'` hold the dedup window: a ring overwritten in place, so
#: trimming the window never writes a tombstone (see the package docstring).
SLOTS = 64

_STATE = (
    "UPDATE ingesters SET seq = ?, token = ?, total = ?, bots = ?, distinct_users = ?, "
    "position = ?, by_server = by_server + ? WHERE ingester_id = ? IF seq = ?; "
    "INSERT INTO ingesters (ingester_id, kind, name, last_seq) VALUES (?, 'epoch', ?, ?); "
)
_RECENT = (
    "INSERT INTO ingesters (ingester_id, kind, name, last_seq, ids) VALUES (?, 'recent', ?, ?, ?); "
)

#: Every statement the store prepares, by name; a commit is one of the two `state` batches.
STATEMENTS = {
    # The whole partition of one ingester, read once at SERIAL consistency on open.
    "load": "SELECT kind, name, seq, token, total, bots, distinct_users, position, by_server, "
    "last_seq, ids FROM ingesters WHERE ingester_id = ?",
    "epochs": "SELECT name, last_seq FROM ingesters WHERE ingester_id = ? AND kind = 'epoch'",
    "init": "INSERT INTO ingesters (ingester_id, seq, total, bots, distinct_users) "
    "VALUES (?, 0, 0, 0, 0) IF NOT EXISTS",
    "snapshot": "SELECT DISTINCT ingester_id, total, bots, distinct_users, by_server "
    "FROM ingesters",
    "claim": "INSERT INTO users (name, ingester_id, epoch, seq) VALUES (?, ?, ?, ?) IF NOT EXISTS",
    "reclaim": "UPDATE users SET ingester_id = ?, epoch = ?, seq = ? WHERE name = ? "
    "IF ingester_id = ? AND epoch = ? AND seq = ?",
    "state": f"BEGIN BATCH {_STATE}APPLY BATCH",
    "state+recent": f"BEGIN BATCH {_STATE}{_RECENT}APPLY BATCH",
}


def schema_cql(keyspace: str, replication: str) -> list[str]:
    """The CQL statements that create the keyspace and tables, each idempotent."""
    k = keyspace
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {k} WITH replication = {replication}",
        # Ids are a frozen list: overwriting one cell leaves no tombstone behind.
        f"CREATE TABLE IF NOT EXISTS {k}.ingesters ("
        "ingester_id text, kind text, name text, "
        "seq bigint STATIC, token text STATIC, total bigint STATIC, bots bigint STATIC, "
        "distinct_users bigint STATIC, position text STATIC, by_server map<text, bigint> STATIC, "
        "last_seq bigint, ids frozen<list<text>>, "
        "PRIMARY KEY ((ingester_id), kind, name))",
        f"CREATE TABLE IF NOT EXISTS {k}.users ("
        "name text PRIMARY KEY, ingester_id text, epoch text, seq bigint)",
    ]
