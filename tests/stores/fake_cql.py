"""A behavioural fake of one Cassandra node, for the CQL subset the Cassandra store speaks.

It parses the statements (it does not look them up by their text), keeps tables as partitions of
static cells and clustering rows, and behaves like the server where the store's correctness
depends on it: `IF NOT EXISTS` and `IF col = ?` return `[applied]` and, when not applied, the
existing values; conditional batches must stay in one partition of one table and apply all or
nothing; non-frozen collections merge with `c = c + ?` and are replaced (leaving a tombstone) by
`c = ?`; `None` binds and deletes leave tombstones, which it counts; `UNSET_VALUE` leaves a
column alone. Faults make a request time out before or after it is applied, or be held and
land later.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cassandra import InvalidRequest, OperationTimedOut
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionBusy
from cassandra.protocol import SyntaxException
from cassandra.query import UNSET_VALUE, BatchStatement, BoundStatement

Rows = list[dict[str, Any]]
#: Some of CQL's reserved words, which a real node refuses as bare column names.
_RESERVED = {"token", "select", "from", "where", "and", "in", "to", "using", "batch", "limit"}
_PARAM = object()  # marks a bound value's place in a parsed statement


@dataclass
class Table:
    """A table's definition and its data: partition key -> (static cells, clustering rows)."""

    columns: dict[str, str]
    partition_key: list[str]
    clustering: list[str]
    static: set[str]
    data: dict[tuple[Any, ...], tuple[dict[str, Any], dict[tuple[Any, ...], dict[str, Any]]]] = (
        field(default_factory=dict)
    )

    def is_collection(self, column: str) -> bool:
        """Whether a column is a non-frozen collection (updated cell by cell)."""
        return self.columns[column].split("<")[0] in ("map", "set", "list")


@dataclass
class Statement:
    """One parsed statement; values are literals or `_PARAM` placeholders, in text order."""

    verb: str
    table: str
    columns: list[str] = field(default_factory=list)  # SELECT columns, INSERT columns
    values: list[Any] = field(default_factory=list)  # INSERT values
    sets: list[tuple[str, str, Any]] = field(default_factory=list)  # (column, "=" or "+", value)
    where: list[tuple[str, str, Any]] = field(default_factory=list)
    conditions: list[tuple[str, Any]] = field(default_factory=list)
    if_not_exists: bool = False
    distinct: bool = False
    parts: list[Statement] = field(default_factory=list)  # a batch's statements
    #: (TIMESTAMP or TTL, value): a row written with an older timestamp than its current one
    #: is left alone (last write wins, as on a node); TTLs are not enforced.
    using: list[tuple[str, Any]] = field(default_factory=list)


def _value(text: str) -> Any:
    text = text.strip()
    if text == "?":
        return _PARAM
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return int(text)


def _pairs(text: str) -> list[tuple[str, str, Any]]:
    out = []
    for part in re.split(r"\s+AND\s+", text.strip(), flags=re.I):
        m = re.fullmatch(r"(\w+)\s*(=|<=|>=|<|>|IN)\s*(.+)", part.strip())
        if m is None:
            raise InvalidRequest(f"fake CQL cannot parse {part!r}")
        out.append((m[1], m[2], _value(m[3])))
    return out


def parse(cql: str) -> Statement:
    """Parse one statement of the subset the store uses, or raise InvalidRequest."""
    cql = " ".join(cql.split()).rstrip(";")
    m = re.fullmatch(r"BEGIN (?:UNLOGGED )?BATCH (.*) APPLY BATCH", cql, flags=re.I)
    if m:
        parts = [parse(s) for s in m[1].split(";") if s.strip()]
        return Statement("BATCH", "", parts=parts)
    m = re.fullmatch(
        r"INSERT INTO (\w+) \(([^)]*)\) VALUES \((.*)\)( IF NOT EXISTS)?"
        r"(?: USING (TIMESTAMP|TTL) (\?|\d+)(?: AND (TIMESTAMP|TTL) (\?|\d+))?)?",
        cql,
        flags=re.I,
    )
    if m:
        columns = [c.strip() for c in m[2].split(",")]
        values = [_value(v) for v in m[3].split(",")]
        using = [(m[k].upper(), _value(m[k + 1])) for k in (5, 7) if m[k]]
        return Statement("INSERT", m[1], columns, values, if_not_exists=bool(m[4]), using=using)
    m = re.fullmatch(r"UPDATE (\w+) SET (.*) WHERE (.*?)(?: IF (.*))?", cql, flags=re.I)
    if m:
        sets = []
        for assignment in m[2].split(","):
            a = re.fullmatch(r"(\w+)\s*=\s*(?:(\w+)\s*\+\s*)?(.+)", assignment.strip())
            if a is None or (a[2] and a[2] != a[1]):
                raise InvalidRequest(f"fake CQL cannot parse {assignment!r}")
            sets.append((a[1], "+" if a[2] else "=", _value(a[3])))
        conditions = [(c, v) for c, _, v in _pairs(m[4])] if m[4] else []
        return Statement("UPDATE", m[1], sets=sets, where=_pairs(m[3]), conditions=conditions)
    m = re.fullmatch(r"DELETE FROM (\w+) WHERE (.*)", cql, flags=re.I)
    if m:
        return Statement("DELETE", m[1], where=_pairs(m[2]))
    m = re.fullmatch(r"SELECT (DISTINCT )?(.*?) FROM (\w+)(?: WHERE (.*))?", cql, flags=re.I)
    if m:
        columns = [c.strip() for c in m[2].split(",")]
        where = _pairs(m[4]) if m[4] else []
        return Statement("SELECT", m[3], columns, where=where, distinct=bool(m[1]))
    raise InvalidRequest(f"fake CQL cannot parse {cql!r}")


def _bind(statement: Statement, params: Sequence[Any]) -> Statement:
    """A copy of the statement with its placeholders replaced by `params`, in text order."""
    it = iter(params)

    def v(x: Any) -> Any:
        return next(it) if x is _PARAM else x

    if statement.verb == "BATCH":
        parts = []
        for part in statement.parts:
            count = _placeholders(part)
            parts.append(_bind(part, [next(it) for _ in range(count)]))
        return Statement("BATCH", "", parts=parts)
    return Statement(
        statement.verb,
        statement.table,
        statement.columns,
        [v(x) for x in statement.values],
        [(c, op, v(x)) for c, op, x in statement.sets],
        [(c, op, v(x)) for c, op, x in statement.where],
        [(c, v(x)) for c, x in statement.conditions],
        statement.if_not_exists,
        statement.distinct,
        using=[(k, v(x)) for k, x in statement.using],
    )


def _placeholders(s: Statement) -> int:
    values = [*s.values, *(x for *_, x in s.sets), *(x for *_, x in s.where)]
    values += [x for _, x in s.conditions] + [x for _, x in s.using]
    return sum(1 for x in values if x is _PARAM) + sum(_placeholders(p) for p in s.parts)


class FakePrepared:
    """What `Session.prepare` returns: the CQL, its parse, and a settable consistency level."""

    def __init__(self, cql: str, statement: Statement, query_id: bytes) -> None:
        self.query_string = cql
        self.statement = statement
        self.consistency_level: int | None = None
        self.query_id = query_id

    def bind(self, values: Sequence[Any]) -> FakeBound:
        """The statement with its values, to add to a driver `BatchStatement`."""
        return FakeBound(self, values)


class FakeBound(BoundStatement):  # type: ignore[misc]
    """A bound fake statement: what a driver `BatchStatement` reads of a `BoundStatement` (the
    statement's id and its values, here not serialized; no routing, no payload)."""

    keyspace = None
    routing_key = None
    custom_payload = None

    def __init__(self, prepared: FakePrepared, values: Sequence[Any]) -> None:
        self.prepared_statement = prepared
        self.values = list(values)


class FakeFuture:
    """A `ResponseFuture` that already holds its single page (or its error)."""

    has_more_pages = False

    def __init__(self, rows: Rows | None, error: BaseException | None) -> None:
        self._rows, self._error = rows, error

    def add_callbacks(self, callback: Callable[[Rows], None], errback: Callable[..., None]) -> None:
        """Call back at once, as the driver would from its thread once the answer is in."""
        if self._error is not None:
            errback(self._error)
        else:
            callback(self._rows or [])


@dataclass
class Fault:
    """Make matching requests fail: `before` (never applied), `after` (applied, ack lost),
    `hold` (applied only when `FakeCluster.land_held` runs), `call` (run `hook` first), or
    `busy` (refused by the driver before sending: every connection `ConnectionBusy`)."""

    matches: Callable[[str, Sequence[Any]], bool]
    mode: str
    times: int = 1
    hook: Callable[[], None] | None = None


class FakeControlConnection:
    """The driver's control connection, as far as schema agreement goes."""

    def __init__(self) -> None:
        self.agreed = True

    def wait_for_schema_agreement(self) -> bool:
        """Whether every node runs the same schema version."""
        return self.agreed


class FakeCluster:
    """One fake node: keyspaces of tables shared by every session made from it."""

    def __init__(self) -> None:
        self.keyspaces: set[str] = set()
        self.tables: dict[str, Table] = {}
        self.tombstones = 0
        self.faults: list[Fault] = []
        self.held: list[tuple[str, Statement]] = []
        self.log: list[tuple[str, list[Any], int | None]] = []  # (cql, params, consistency)
        self.ddl_timeouts: list[tuple[str, float | None]] = []  # (schema change, client timeout)
        self.control_connection = FakeControlConnection()
        #: (table, partition, row) -> the timestamp of its last write made USING TIMESTAMP.
        self.stamps: dict[tuple[int, Any, Any], int] = {}

    def session(self) -> FakeSession:
        """A new session on this node."""
        return FakeSession(self)

    def fail(self, matches: Callable[[str, Sequence[Any]], bool], mode: str, **kw: Any) -> None:
        """Add a fault for requests that `matches(cql, params)` selects."""
        self.faults.append(Fault(matches, mode, **kw))

    def run(self, keyspace: str, cql: str, params: Sequence[Any] = ()) -> Rows:
        """Execute a statement at once, as another client of the node would."""
        return self.apply(keyspace, _bind(parse(cql), params))

    def land_held(self) -> list[Rows]:
        """Apply the held requests now, as a write delayed in the network would land."""
        held, self.held = self.held, []
        return [self.apply(keyspace, statement) for keyspace, statement in held]

    def table(self, keyspace: str, name: str) -> Table:
        """A table of a keyspace, or the server's error for an unconfigured one."""
        try:
            return self.tables[f"{keyspace}.{name}"]
        except KeyError:
            raise InvalidRequest(f"unconfigured table {name}") from None

    def ddl(self, cql: str) -> None:
        """Run a CREATE KEYSPACE or CREATE TABLE statement."""
        cql = " ".join(cql.split())
        m = re.match(r"CREATE KEYSPACE IF NOT EXISTS (\w+)", cql)
        if m:
            self.keyspaces.add(m[1])
            return
        m = re.fullmatch(r"CREATE TABLE IF NOT EXISTS (\w+)\.(\w+) \((.*)\)", cql)
        if m is None:
            raise InvalidRequest(f"fake CQL cannot run {cql!r}")
        if f"{m[1]}.{m[2]}" in self.tables:
            return
        columns: dict[str, str] = {}
        static: set[str] = set()
        pk: list[str] = []
        ck: list[str] = []
        body = m[3]
        key = re.search(r"PRIMARY KEY \(\((.*?)\)(?:, (.*?))?\)$", body)
        if key:
            body = body[: key.start()].rstrip(", ")
            pk = [c.strip() for c in key[1].split(",")]
            ck = [c.strip() for c in (key[2] or "").split(",") if c.strip()]
        for col in re.split(r",\s*(?![^<]*>)", body):
            words = col.split()
            if words[0].lower() in _RESERVED:
                raise SyntaxException(f"mismatched input '{words[0]}' expecting ')'")
            columns[words[0]] = words[1]
            if "STATIC" in words:
                static.add(words[0])
            if "PRIMARY" in words:
                pk = [words[0]]
        self.tables[f"{m[1]}.{m[2]}"] = Table(columns, pk, ck, static)

    def apply(self, keyspace: str, s: Statement) -> Rows:
        """Execute one bound statement against the data."""
        if s.verb == "BATCH":
            return self._batch(keyspace, s.parts)
        table = self.table(keyspace, s.table)
        if s.verb == "SELECT":
            return self._select(table, s)
        if s.verb == "DELETE":
            return self._delete(table, s)
        if s.conditions or s.if_not_exists:
            return self._batch(keyspace, [s])
        self._write(table, s)
        return []

    def _key(self, table: Table, s: Statement) -> tuple[tuple[Any, ...], tuple[Any, ...] | None]:
        given = dict(zip(s.columns, s.values, strict=True))
        given |= {c: x for c, op, x in s.where if op == "="}
        pk = tuple(given[c] for c in table.partition_key)
        if not table.clustering or any(c not in given for c in table.clustering):
            return pk, None
        return pk, tuple(given[c] for c in table.clustering)

    def _current(self, table: Table, s: Statement) -> dict[str, Any] | None:
        pk, ck = self._key(table, s)
        if pk not in table.data:
            return None
        static, rows = table.data[pk]
        if ck is None and table.clustering:
            return dict(static) if static else None
        row = rows.get(ck if ck is not None else ())
        if row is None:
            return None
        return dict(static) | dict(zip(table.partition_key, pk, strict=True)) | row

    def _write(self, table: Table, s: Statement) -> None:
        pk, ck = self._key(table, s)
        static, rows = table.data.setdefault(pk, ({}, {}))
        keys = set(table.partition_key) | set(table.clustering)
        if s.verb == "INSERT":
            changes = [(c, "=", x) for c, x in zip(s.columns, s.values, strict=True)]
        else:
            changes = list(s.sets)
        row: dict[str, Any] | None = None
        if ck is not None or not table.clustering:
            row = rows.setdefault(
                ck if ck is not None else (), dict(zip(table.clustering, ck or (), strict=False))
            )
            stamp = dict(s.using).get("TIMESTAMP")
            if stamp is not None:
                if stamp < self.stamps.get((id(table), pk, ck), stamp):
                    return  # an older write than the row's: it loses
                self.stamps[(id(table), pk, ck)] = stamp
        for column, op, value in changes:
            if column in keys or value is UNSET_VALUE:
                continue
            target = static if column in table.static else row
            if target is None:
                raise InvalidRequest(f"missing clustering key to set {column}")
            if value is None:
                self.tombstones += 1
                target.pop(column, None)
            elif op == "+":
                old = target.get(column)
                target[column] = _merge(old, value)
            else:
                if table.is_collection(column) and column in target:
                    self.tombstones += 1  # replacing a whole collection deletes the old one
                target[column] = value.copy() if hasattr(value, "copy") else value

    def _delete(self, table: Table, s: Statement) -> Rows:
        pk = tuple(x for c, op, x in s.where if c in table.partition_key)
        self.tombstones += 1
        if pk not in table.data:
            return []
        _, rows = table.data[pk]
        for ck in list(rows):
            row = rows[ck]
            if all(_holds(row.get(c), op, x) for c, op, x in s.where if c in table.clustering):
                del rows[ck]
        return []

    def _select(self, table: Table, s: Statement) -> Rows:
        pks = list(table.partition_key)
        wanted_pk = tuple(x for c, op, x in s.where if c in pks)
        parts = (
            [(wanted_pk, table.data[wanted_pk])] if wanted_pk and wanted_pk in table.data else []
        )
        if not s.where:
            parts = list(table.data.items())
        out: Rows = []
        for pk, (static, rows) in sorted(parts, key=lambda kv: repr(kv[0])):
            keys = dict(zip(pks, pk, strict=True))
            if s.distinct:
                out.append({c: (keys | static).get(c) for c in s.columns})
                continue
            found = [
                keys | static | row
                for _, row in sorted(rows.items())
                if all(_holds(row.get(c), op, x) for c, op, x in s.where if c not in pks)
            ]
            if not rows and static and len(s.where) == len(pks):
                found = [keys | static]  # a partition with only static cells: one row
            out += [{c: r.get(c) for c in s.columns} for r in found]
        return out

    def _batch(self, keyspace: str, parts: list[Statement]) -> Rows:
        tables = [self.table(keyspace, p.table) for p in parts]
        conditional = [p for p in parts if p.conditions or p.if_not_exists]
        if conditional:
            keys = {(p.table, self._key(t, p)[0]) for p, t in zip(parts, tables, strict=True)}
            if len(keys) > 1:
                raise InvalidRequest("Batch with conditions cannot span multiple partitions")
        for p, t in zip(parts, tables, strict=True):
            current = self._current(t, p)
            if p.if_not_exists and current is not None:
                return [{"[applied]": False} | current]
            if p.conditions:
                if current is None:
                    return [{"[applied]": False}]
                if any(current.get(c) != x for c, x in p.conditions):
                    keys = dict(zip(t.partition_key, self._key(t, p)[0], strict=True))
                    now = {c: current.get(c) for c, _ in p.conditions}
                    return [{"[applied]": False} | keys | now]
        for p, t in zip(parts, tables, strict=True):
            if p.verb == "DELETE":
                self._delete(t, p)
            else:
                self._write(t, p)
        return [{"[applied]": True}] if conditional else []


def _merge(old: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return {**(old or {}), **value}
    if isinstance(value, set):
        return set(old or ()) | value
    return [*(old or []), *value]


def _holds(have: Any, op: str, want: Any) -> bool:
    if have is None:
        return False
    if op == "IN":
        return bool(have in want)
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return compare[op](have, want)


class FakeSession:
    """A `cassandra.cluster.Session` on a `FakeCluster`: prepare, bind a keyspace, execute."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.keyspace: str | None = None
        self._prepared: dict[bytes, FakePrepared] = {}

    def set_keyspace(self, keyspace: str) -> None:
        """Make `keyspace` the default of later statements."""
        if keyspace not in self.cluster.keyspaces:
            raise InvalidRequest(f"Keyspace '{keyspace}' does not exist")
        self.keyspace = keyspace

    def prepare(self, query: str) -> FakePrepared:
        """Parse a statement and check its tables exist, like the server's PREPARE."""
        statement = parse(query)
        for part in statement.parts or [statement]:
            self.cluster.table(self.keyspace or "", part.table)
        prepared = FakePrepared(query, statement, len(self._prepared).to_bytes(4, "big"))
        self._prepared[prepared.query_id] = prepared
        return prepared

    def execute_async(
        self, query: Any, parameters: Sequence[Any] | None = None, timeout: float | None = None
    ) -> FakeFuture:
        """Run a statement now; its answer (or fault) is waiting in the future returned."""
        cluster = self.cluster
        params = list(parameters or [])
        if isinstance(query, str):
            cluster.ddl_timeouts.append((" ".join(query.split()), timeout))
            cluster.ddl(query)
            return FakeFuture([], None)
        if isinstance(query, BatchStatement):
            query, params = self._as_text_batch(query)
        cluster.log.append((query.query_string, params, query.consistency_level))
        bound = _bind(query.statement, params)
        keyspace = self.keyspace or ""
        for fault in cluster.faults:
            if fault.times and fault.matches(query.query_string, params):
                fault.times -= 1
                if fault.mode == "call" and fault.hook is not None:
                    fault.hook()
                    break
                if fault.mode == "busy":  # the driver's socket buffer full: never sent
                    busy = {"127.0.0.1:9042": ConnectionBusy("Connection is overloaded")}
                    return FakeFuture(None, NoHostAvailable("fake busy", busy))
                if fault.mode == "after":
                    cluster.apply(keyspace, bound)
                elif fault.mode == "hold":
                    cluster.held.append((keyspace, bound))
                return FakeFuture(None, OperationTimedOut(f"fake timeout ({fault.mode})"))
        try:
            return FakeFuture(cluster.apply(keyspace, bound), None)
        except InvalidRequest as exc:
            return FakeFuture(None, exc)

    def _as_text_batch(self, batch: BatchStatement) -> tuple[FakePrepared, list[Any]]:
        """A BATCH message of prepared statements as the `BEGIN BATCH` text it stands for (so
        the log and the faults see the same CQL and values either way), and its values."""
        children: list[str] = []
        params: list[Any] = []
        for is_prepared, query_id, values in batch._statements_and_parameters:
            assert is_prepared, "the store batches prepared statements only"
            children.append(f"{self._prepared[query_id].query_string}; ")
            params += values
        cql = f"BEGIN BATCH {''.join(children)}APPLY BATCH"
        return FakePrepared(cql, parse(cql), b""), params
