"""The PostgreSQL store's tables and the statements of a commit (see postgres.py).

- `wp_state`: one row with total, bots, distinct_users, the position, the count of event ids
  ever recorded (`ids_end`) and the token of the last batch committed (the idempotence key).
- `wp_servers(name, events)`: per-server counts, upserted from two unnest()ed arrays.
- `wp_users(name)`: every user seen; the rows an `ON CONFLICT DO NOTHING` insert returns are the
  new users, so the exact distinct count is kept in `wp_state`.
- `wp_recent(seq, end_offset, ids text[])`: the dedup window, one row per batch, trimmed to the
  rows holding the newest `dedup_window` ids.
"""

from __future__ import annotations

__all__ = [
    "DDL",
    "INSERT_RECENT",
    "INSERT_USERS",
    "LOCK_STATE",
    "TRIM_RECENT",
    "UPDATE_STATE",
    "UPSERT_SERVERS",
]

# Every statement names tables without a schema: connections set `search_path` to it.
DDL = """
CREATE TABLE IF NOT EXISTS wp_state (
    id smallint PRIMARY KEY CHECK (id = 1),
    total bigint NOT NULL DEFAULT 0,
    bots bigint NOT NULL DEFAULT 0,
    distinct_users bigint NOT NULL DEFAULT 0,
    position text,
    ids_end bigint NOT NULL DEFAULT 0,
    last_batch text
);
INSERT INTO wp_state (id) VALUES (1) ON CONFLICT DO NOTHING;
-- Byte order ("C"): names are only ever compared for equality, and a byte comparison is
-- cheaper than the database's locale; it is also the order the store sorts its inserts in.
CREATE TABLE IF NOT EXISTS wp_servers (name text COLLATE "C" PRIMARY KEY, events bigint NOT NULL);
CREATE TABLE IF NOT EXISTS wp_users (name text COLLATE "C" PRIMARY KEY);
CREATE TABLE IF NOT EXISTS wp_recent (
    seq bigserial PRIMARY KEY, end_offset bigint NOT NULL, ids text[] NOT NULL
);
"""
LOCK_STATE = "SELECT ids_end, last_batch FROM wp_state WHERE id = 1 FOR UPDATE"
# The inserted rows are the new users: their count keeps distinct_users exact.
INSERT_USERS = (
    "WITH new AS (INSERT INTO wp_users (name) SELECT unnest($1::text[]) "
    "ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM new"
)
UPSERT_SERVERS = (
    "INSERT INTO wp_servers AS t (name, events) SELECT * FROM unnest($1::text[], $2::bigint[]) "
    "ON CONFLICT (name) DO UPDATE SET events = t.events + excluded.events"
)
INSERT_RECENT = "INSERT INTO wp_recent (end_offset, ids) VALUES ($1, $2)"
TRIM_RECENT = "DELETE FROM wp_recent WHERE end_offset <= $1"
UPDATE_STATE = (
    "UPDATE wp_state SET total = total + $1, bots = bots + $2, "
    "distinct_users = distinct_users + $3, position = coalesce($4, position), "
    "ids_end = $5, last_batch = $6 WHERE id = 1"
)
