"""The Cassandra/ScyllaDB store: exactly-once counting without multi-table transactions.

Modules: `schema` (the CQL), `driver` (cluster set-up, reactor, awaiting futures, errors),
`claims` (exact distinct users), `reshard` (moving claims of the earlier 256-shard layout),
`store` (`CassandraStore`), and the time windows: `windows` (the writer, and why they are
exactly once), `window_seal` (5-minute and hour rows derived off the commit path, and why a
stale one is never read), `window_read`, `window_blob`, `window_head` (exact top lists from
heads), `window_cql`.

Cassandra cannot commit counts and a stream position atomically across tables, and its counters
are not idempotent (a retried increment counts twice), so this store never increments anything
on the server. Each ingester owns one partition of `ingesters`, keyed by `ingester_id`:

- static columns hold its *cumulative* totals (total, bots, distinct_users, by_server map),
  its position, `seq` (the number of batches it has committed) and `batch_token` (the token
  of the last commit);
- `kind = 'epoch'` rows record, for each run of the process (and each batch given up), the last
  `seq` committed in that run;
- `kind = 'recent'` rows are a ring of `SLOTS` slots holding the dedup window's event ids as a
  frozen list. A commit appends its ids to the current slot (rewriting that one cell) until the
  slot holds window / (SLOTS - 1) ids, then overwrites the oldest slot. Overwriting cells leaves
  no tombstone; deleting old rows would leave a range tombstone per commit.

A commit is one *conditional* batch into that partition (`... IF seq = ?`; one partition of one
table, as Cassandra requires): it sets the new absolute totals, the position, `seq + 1`, the
token, the epoch row and the window slot. Paxos orders commits: a single-partition batch is
applied atomically and in isolation, so a reader sees all of a commit or none of it, and a batch
whose acknowledgement was lost cannot land later over a newer commit (the next Paxos round on
the partition -- a commit, or the SERIAL read on open -- settles it first). When the condition
fails the store reads the partition: if `seq` and `token` are its own batch's, that batch landed
and the retry is a success; otherwise another writer with the same ingester id committed, and
the store raises a `StoreError` instead of overwriting its totals.

Distinct users must be exact across ingesters, so `users` holds one row per user name with a
*claim*: the (ingester, epoch, seq) of the commit that counted it. The rows are spread over
`USER_SHARDS` partitions by a hash of the name, so that claims go by *conditional batches*, one
per shard and round (up to `CLAIMS_PER_BATCH` claims each), not by one lightweight transaction
(four round trips) per user; a batch is a protocol BATCH message of one prepared row statement
(`driver.row_batch`), so the node parses nothing per batch whatever its size. Before its
commit, the ingester inserts a claim for each of the batch's users it has not yet seen counted
(`IF NOT EXISTS` on every row, no read first). A batch that applies counts all its users. One
that does not (some name is held) writes nothing; a SERIAL read of those names says whose each
claim is, and the next round inserts the absent names and re-claims this ingester's orphans
(`IF` the old claim is unchanged). A user counts as new in this batch if the claim is this very
attempt's, or is an orphan of this ingester (its epoch never committed that seq). Claims by
committed batches, or by other ingesters, are already counted. A retried batch (same token)
keeps its epoch and seq, so its earlier claims stay its own. Snapshot cost stays constant: it
sums the static rows of the (few) ingesters and never counts `users`.

Crash between writes: claims written but the batch not -> nothing was counted and the position
did not move; the replay after restart meets the same events, finds its orphaned claims and
counts them once. Crash after the batch -> counts, position and window are all there; the replay
starts after the position and the window drops any overlap.

Several ingesters: the snapshot sums every ingester's partition, which is right when they consume
*disjoint* streams (each with its own `ingester_id`). Two processes of one stream share an id as
active and standby; the `IF seq` fence stops the second writer at its first commit. Claims it
made before being fenced may still race the active one's (a user can then be counted twice), so
a deployment runs one active process per id.

Sizes: every batch here writes one partition, and Cassandra exempts single-partition batches from
`batch_size_fail_threshold` (50 KiB by default in 5.0); what bounds them is `max_mutation_size`
(half a commit-log segment: 16 MiB by default). A window slot holds at most `dedup_window` ids
(~40 bytes each: 4 MB for the default 100,000), so the commit stays far below it whatever
WIKIPULSE_BATCH_MAX_EVENTS is; the largest default batch (50,000 events) is tested on a real node.
A `dedup_window` above ~350,000 ids could exceed it, so the settings refuse more than 300,000
with this store (`config.CASSANDRA_MAX_DEDUP_WINDOW`, exit 2 naming WIKIPULSE_DEDUP_WINDOW).

Cost per batch: one Paxos round for the commit, and per shard holding users this process has not
yet seen counted (a bounded memory of confirmed users skips the rest) one Paxos round when all
of them are new, else two or three rounds and a SERIAL read.
"""

from __future__ import annotations

from wikipulse.stores.cassandra.store import CassandraStore

__all__ = ["CassandraStore"]
