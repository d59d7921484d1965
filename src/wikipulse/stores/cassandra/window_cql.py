"""The CQL of the Cassandra store's time windows: one table, versioned whole-bucket rows.

`window_versions` holds, per ingester, granularity (60 or 3600) and hour (`period`), the buckets
of that hour; each bucket has two *slots* per writer epoch, each holding one whole version of the
bucket (its contents as msgpack blobs) with the seq of the commit that wrote it. See `windows.py`
for why.
"""

from __future__ import annotations

__all__ = [
    "HEAD_COLUMNS",
    "STALE_MARK",
    "WINDOW_MARK",
    "WINDOW_STATEMENTS",
    "minute_columns",
    "window_statement",
    "windows_table_cql",
]

#: Written before the conditional commit: a whole bucket, as the version of commit `seq`.
#: The timestamp is chosen by the writer (later than any write it has seen on the bucket),
#: the TTL counts the retention period from the newest event time.
_WRITE = (
    "INSERT INTO window_versions (ingester_id, g, period, bucket, slot, seq, epoch, users_n, "
    "totals, counts, users, pages, users_head, pages_head, wiki_users, user_names) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "USING TIMESTAMP ? AND TTL ?"
)

#: Every window statement by name; `win_read:<columns>` are made by `window_statement`.
WINDOW_STATEMENTS = {
    "win_write": _WRITE,
    # A whole partition as the writer loads it: every slot, and when each was written.
    "win_load": "SELECT bucket, slot, seq, epoch, counts, users, pages, writetime(seq) "
    "FROM window_versions WHERE ingester_id = ? AND g = ? AND period = ?",
    # A reader's view of one ingester: its committed epochs and its newest minute.
    "win_meta": "SELECT kind, name, last_seq FROM ingesters WHERE ingester_id = ? AND kind IN ?",
    "win_ingesters": "SELECT DISTINCT ingester_id FROM ingesters",
}

#: Appended to the commit batch: the newest minute of event time this ingester has committed.
WINDOW_MARK = (
    "INSERT INTO ingesters (ingester_id, kind, name, last_seq) VALUES (?, 'window', 'newest', ?); "
)

#: Appended to the commit batch for each past hour the batch touches (a late event): the hour's
#: rows sealed before this seq are stale from this commit on (`window_seal.py`). The mark
#: expires with the retention, as the rows it judges do.
STALE_MARK = (
    "INSERT INTO ingesters (ingester_id, kind, name, last_seq) VALUES (?, 'stale', ?, ?) "
    "USING TTL ?; "
)

_READABLE = {
    "users_n",
    "totals",
    "counts",
    "users",
    "pages",
    "users_head",
    "pages_head",
    "wiki_users",
    "user_names",
}

#: Columns added after the table was first released: `wikipulse migrate` adds them to an older
#: table; versions written before have none, and readers then read the full blob. The heads
#: (`window_head.py`); on sealed rows, `wiki_users`, each wiki's distinct users as a msgpack
#: map, so a one-wiki timeseries does not read every wiki's users, and `user_names`, the
#: bucket's distinct user names as a msgpack list, so a timeseries over all wikis unions names
#: without decoding every wiki's users and counts (`window_seal.py`).
HEAD_COLUMNS = ("users_head", "pages_head", "wiki_users", "user_names")


def minute_columns(cols: str) -> str:
    """The columns to read of minutes for `cols`: minutes carry no heads and no list of names
    (`windows.py`), so their full blobs are read instead."""
    return cols.replace("_head", "").replace("user_names", "users")


def window_statement(name: str) -> str | None:
    """The CQL of a window statement by name, or None if the name is not one."""
    if name in WINDOW_STATEMENTS:
        return WINDOW_STATEMENTS[name]
    kind, _, columns = name.partition(":")
    if kind != "win_read":
        return None
    wanted = [c for c in columns.split(",") if c]
    if not set(wanted) <= _READABLE:
        raise ValueError(f"unknown window columns in {name!r}")
    picked = "".join(f", {c}" for c in wanted)
    return (
        # Columns come from `_READABLE` only, never from a request.
        f"SELECT bucket, seq, epoch{picked} FROM window_versions WHERE ingester_id = ? AND g = ? "  # noqa: S608
        "AND period = ? AND bucket >= ? AND bucket < ?"
    )


def windows_table_cql(keyspace: str) -> str:
    """The CREATE TABLE of the windows (idempotent)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {keyspace}.window_versions ("
        "ingester_id text, g int, period bigint, bucket bigint, slot int, seq bigint, "
        "epoch text, users_n int, totals blob, counts blob, users blob, pages blob, "
        "users_head blob, pages_head blob, wiki_users blob, user_names blob, "
        "PRIMARY KEY ((ingester_id, g, period), bucket, epoch, slot))"
    )
