"""The CQL of the Cassandra store: its tables and every statement it prepares."""

from __future__ import annotations

import zlib

from wikipulse.stores.cassandra.window_cql import (
    STALE_MARK,
    WINDOW_MARK,
    window_statement,
    windows_table_cql,
)

__all__ = [
    "CLAIMS_PER_BATCH",
    "FIRST_SHARD",
    "OLD_SHARDS",
    "SLOTS",
    "STATEMENTS",
    "USER_SHARDS",
    "fenced",
    "schema_cql",
    "shard_of",
    "statement",
]

#: How many rows of `kind = 'recent'` hold the dedup window: a ring overwritten in place, so
#: trimming the window never writes a tombstone (see the package docstring).
SLOTS = 64
#: Users are spread over this many partitions of `users`, so that one conditional batch per
#: shard claims many users in one Paxos round instead of one round per user. Fewer shards,
#: fewer rounds: a commit of a few thousand new users at 5,000 events/s made 256 Paxos rounds
#: with 256 shards and 64 with 64, which halved the commit's latency and the node's and the
#: client's CPU (benchmarks/cassandra_ingest.py; README). 64 partitions still keep each one
#: small (tens of MB with tens of millions of users).
USER_SHARDS = 64
#: Shard numbers 0-255 belong to the earlier layout (256 shards): the current one numbers its
#: shards from here, beside them in the same table, so `wikipulse migrate` can move old claims
#: over (`reshard.py`) and nothing can mistake an old row for a new one.
FIRST_SHARD = 256
#: The shard count of the earlier layout, whose rows `wikipulse migrate` moves.
OLD_SHARDS = 256
#: The most claims one conditional batch carries (larger groups go in several rounds): a
#: batch of 20,000 events brings up to ~12,000 new users, under this per shard (the default
#: batch of 50,000 in a catch-up: up to ~30,000, about 470 a shard, so two rounds).
CLAIMS_PER_BATCH = 250


_STATE = (
    "UPDATE ingesters SET seq = ?, batch_token = ?, total = ?, bots = ?, distinct_users = ?, "
    "position = ?, by_server = by_server + ? WHERE ingester_id = ? IF seq = ?; "
    "INSERT INTO ingesters (ingester_id, kind, name, last_seq) VALUES (?, 'epoch', ?, ?); "
)
_RECENT = (
    "INSERT INTO ingesters (ingester_id, kind, name, last_seq, ids) VALUES (?, 'recent', ?, ?, ?); "
)

#: Every statement the store prepares, by name; a commit is one of the two `state` batches.
STATEMENTS = {
    # The whole partition of one ingester, read once at SERIAL consistency on open.
    "load": "SELECT kind, name, seq, batch_token, total, bots, distinct_users, position, "
    "by_server, last_seq, ids FROM ingesters WHERE ingester_id = ?",
    "epochs": "SELECT name, last_seq FROM ingesters WHERE ingester_id = ? AND kind = 'epoch'",
    "init": "INSERT INTO ingesters (ingester_id, seq, total, bots, distinct_users) "
    "VALUES (?, 0, 0, 0, 0) IF NOT EXISTS",
    "snapshot": "SELECT DISTINCT ingester_id, total, bots, distinct_users, by_server "
    "FROM ingesters",
    # The claims of some users of one shard, read at SERIAL when a claim batch did not apply.
    "claims": "SELECT name, ingester_id, epoch, seq FROM users WHERE shard = ? AND name IN ?",
    # One claim, and one take-over of an orphan: sent many rows of one shard at a time as one
    # conditional batch (`driver.row_batch`), so the node parses and caches these two only.
    "claim": "INSERT INTO users (shard, name, ingester_id, epoch, seq) VALUES (?, ?, ?, ?, ?) "
    "IF NOT EXISTS",
    "reclaim": "UPDATE users SET ingester_id = ?, epoch = ?, seq = ? WHERE shard = ? AND name = ? "
    "IF ingester_id = ? AND epoch = ? AND seq = ?",
    "state": f"BEGIN BATCH {_STATE}APPLY BATCH",
    "state+recent": f"BEGIN BATCH {_STATE}{_RECENT}APPLY BATCH",
}


def fenced(cql: str, *, token: bool = True) -> str:
    """A commit batch that also checks the writer's lease (see `lease.py`) in its condition.

    With `token`, the holder and token must be the committer's; without, the holder must be
    null (nobody holds the lease: a lone `serve` does not write under an ingester fleet).
    """
    check = "lease_holder = ? AND lease_token = ?" if token else "lease_holder = ?"
    return cql.replace("IF seq = ?;", f"IF seq = ? AND {check};", 1)


def statement(name: str) -> str:
    """The CQL of a statement by name: `STATEMENTS`, `state+...*N` (a commit; with a `+win`
    suffix it also records the newest window minute, then with `+stale*N` marks N past hours
    stale), or `win_...`.

    `<name>@fenced` is that commit batch checking the lease too; `<name>@solo` checks that
    nobody holds it.
    """
    base, _, check = name.partition("@")
    if check:
        return fenced(statement(base), token=check == "fenced")
    if name in STATEMENTS:
        return STATEMENTS[name]
    head, marked, count = name.rpartition("+stale*")
    if marked:  # also marks `count` past hours' sealed rows stale (`window_seal.py`)
        cql = statement(head)
        return cql.replace("APPLY BATCH", f"{STALE_MARK * int(count)}APPLY BATCH")
    if name.endswith("+win"):
        cql = statement(name.removesuffix("+win"))
        return cql.replace("APPLY BATCH", f"{WINDOW_MARK}APPLY BATCH")
    window = window_statement(name)
    if window is not None:
        return window
    kind, _, count = name.partition("*")
    if kind != "state+recent+clear":
        raise KeyError(name)
    # also empties `count` window slots
    return f"BEGIN BATCH {_STATE}{_RECENT * (1 + int(count))}APPLY BATCH"


def shard_of(user: str) -> int:
    """The `users` partition a user name belongs to (stable across processes and versions)."""
    return FIRST_SHARD + zlib.crc32(user.encode()) % USER_SHARDS


def schema_cql(keyspace: str, replication: str) -> list[str]:
    """The CQL statements that create the keyspace and tables, each idempotent."""
    k = keyspace
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {k} WITH replication = {replication}",
        # Ids are a frozen list: overwriting one cell leaves no tombstone behind.
        f"CREATE TABLE IF NOT EXISTS {k}.ingesters ("
        "ingester_id text, kind text, name text, "
        "seq bigint STATIC, batch_token text STATIC, total bigint STATIC, bots bigint STATIC, "
        "distinct_users bigint STATIC, position text STATIC, by_server map<text, bigint> STATIC, "
        "last_seq bigint, ids frozen<list<text>>, "
        "lease_holder text STATIC, lease_token bigint STATIC, "
        "PRIMARY KEY ((ingester_id), kind, name))",
        f"CREATE TABLE IF NOT EXISTS {k}.users ("
        "shard int, name text, ingester_id text, epoch text, seq bigint, "
        "PRIMARY KEY ((shard), name))",
        windows_table_cql(k),
    ]
