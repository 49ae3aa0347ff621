"""ClickHouse schema of the share log: table names, columns, versioned migrations, queries.

Owns every SQL string the share log sends. Nothing here does I/O: ``Schema``
turns ``ClickHouseSettings`` into DDL statements and queries; ``store.Store``
executes them.

Tables (names get ``table_prefix``; in cluster mode each one is a
Distributed table over a Replicated ``*_local`` table, and the DDL runs
``ON CLUSTER``):

* ``shares``: one row per share the proxy received, valid or not. MergeTree,
  partitioned by day of ``received_at``, ordered by ``(worker_name,
  received_at)`` for per-worker queries, TTL ``ttl_days``.
* ``pool_verdicts``: one row per pool answer (SubmitShares.Success/Error),
  appended, never an UPDATE. It is joined to ``shares`` at query time on
  ``(instance_id, run_id, share_seq)`` (view ``shares_with_verdict``).
* ``worker_minute``: per minute, instance, worker and channel: share count,
  accepted count, summed assigned difficulty of accepted shares, summed
  achieved difficulty of accepted shares, first/last share time. Filled by
  the materialized view ``worker_minute_mv`` at insert time.
* ``schema_migrations``: which migration versions ran.

``run_id`` is not in ``ShareRecord``: the share log stamps it (one value per
process start) because ``share_seq`` restarts at 1 when the proxy restarts,
so ``(instance_id, run_id, share_seq)`` is the row's identity.

Deduplication: every insert carries ``insert_deduplication_token``; the
MergeTree tables keep ``non_replicated_deduplication_window`` recent block
ids (Replicated tables: ``replicated_deduplication_window``), and the
aggregate's target table has its own window so a retried insert is dropped
there too (``deduplicate_blocks_in_dependent_materialized_views=1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from tproxy.shares.settings import ClickHouseSettings

SCHEMA_VERSION = 2

# Insert column order; the pipeline builds row tuples in exactly this order.
SHARE_COLUMNS: tuple[str, ...] = (
    "received_at",
    "instance_id",
    "run_id",
    "share_seq",
    "worker_name",
    "client_id",
    "channel_id",
    "sequence_number",
    "sv1_job_id",
    "job_id",
    "nonce",
    "ntime",
    "version",
    "extranonce",
    "share_hash",
    "target_difficulty",
    "share_difficulty",
    "verdict",
    "forwarded",
)

VERDICT_COLUMNS: tuple[str, ...] = (
    "received_at",
    "instance_id",
    "run_id",
    "channel_id",
    "sequence_number",
    "share_seq",
    "pool_verdict",
)

EVENT_COLUMNS: tuple[str, ...] = (
    "time",
    "instance_id",
    "run_id",
    "event_seq",
    "event_type",
    "worker_name",
    "client_id",
    "address",
    "user_agent",
    "reason",
    "old_difficulty",
    "difficulty",
    "channel_id",
    "detail",
    "online",
    "since",
    "last_share_at",
)


def _types(definition: str) -> dict[str, str]:
    out = {}
    for line in definition.strip()[1:-1].strip().splitlines():
        name, _, rest = line.strip().rstrip(",").partition(" ")
        out[name] = rest.split(" CODEC(")[0]
    return out


_SHARES_DEF = """(
    received_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    instance_id LowCardinality(String),
    run_id UInt64,
    share_seq UInt64,
    worker_name LowCardinality(String),
    client_id UInt64,
    channel_id UInt32,
    sequence_number UInt32,
    sv1_job_id String,
    job_id UInt32,
    nonce UInt32,
    ntime UInt32,
    version UInt32,
    extranonce String,
    share_hash String,
    target_difficulty Float64,
    share_difficulty Float64,
    verdict LowCardinality(String),
    forwarded Bool
)"""

_VERDICTS_DEF = """(
    received_at DateTime64(3, 'UTC'),
    instance_id LowCardinality(String),
    run_id UInt64,
    channel_id UInt32,
    sequence_number UInt32,
    share_seq UInt64,
    pool_verdict LowCardinality(String)
)"""

_MINUTE_DEF = """(
    minute DateTime('UTC'),
    instance_id LowCardinality(String),
    worker_name LowCardinality(String),
    channel_id UInt32,
    shares SimpleAggregateFunction(sum, UInt64),
    accepted_shares SimpleAggregateFunction(sum, UInt64),
    accepted_difficulty SimpleAggregateFunction(sum, Float64),
    share_difficulty_sum SimpleAggregateFunction(sum, Float64),
    first_at SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)"""

_EVENTS_DEF = """(
    time DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    instance_id LowCardinality(String),
    run_id UInt64,
    event_seq UInt64,
    event_type LowCardinality(String),
    worker_name String,
    client_id UInt64,
    address String,
    user_agent String,
    reason LowCardinality(String),
    old_difficulty Float64,
    difficulty Float64,
    channel_id UInt32,
    detail String,
    online Bool,
    since DateTime64(3, 'UTC'),
    last_share_at DateTime64(3, 'UTC')
)"""

_STATE_DEF = """(
    instance_id LowCardinality(String),
    worker_name String,
    online Bool,
    since DateTime64(3, 'UTC'),
    last_share_at DateTime64(3, 'UTC'),
    difficulty Float64,
    user_agent String,
    address String,
    client_id UInt64,
    last_event LowCardinality(String),
    updated_at DateTime64(3, 'UTC'),
    version UInt64
)"""

_MIGRATIONS_DEF = """(
    version UInt32,
    description String,
    applied_at DateTime64(3, 'UTC'),
    instance_id String
)"""


SHARE_TYPES: tuple[str, ...] = tuple(_types(_SHARES_DEF)[c] for c in SHARE_COLUMNS)
VERDICT_TYPES: tuple[str, ...] = tuple(_types(_VERDICTS_DEF)[c] for c in VERDICT_COLUMNS)
EVENT_TYPES: tuple[str, ...] = tuple(_types(_EVENTS_DEF)[c] for c in EVENT_COLUMNS)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: Callable[[Schema], list[str]]


class Schema:
    """SQL for one ``ClickHouseSettings``: fully qualified names, DDL, inserts, queries."""

    def __init__(self, settings: ClickHouseSettings) -> None:
        self.s = settings
        self.db = settings.effective_database
        self.cluster = settings.cluster
        p = settings.table_prefix
        self.shares = f"{p}shares"
        self.verdicts = f"{p}pool_verdicts"
        self.minute = f"{p}worker_minute"
        self.minute_mv = f"{p}worker_minute_mv"
        self.joined_view = f"{p}shares_with_verdict"
        self.migrations_table = f"{p}schema_migrations"
        self.events = f"{p}events"
        self.worker_state = f"{p}worker_state"
        self.worker_state_mv = f"{p}worker_state_mv"

    # ------------------------------------------------------------------ naming

    def q(self, table: str) -> str:
        """Qualified name ``db.table`` (the Distributed table in cluster mode)."""
        return f"`{self.db}`.`{table}`"

    def local(self, table: str) -> str:
        """Name of the table that stores the data (``*_local`` in cluster mode)."""
        return f"{table}_local" if self.cluster else table

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER `{self.cluster}`" if self.cluster else ""

    def ttl_clause(self, column: str) -> str:
        if self.s.ttl_days <= 0:
            return ""
        return f"\nTTL toDateTime({column}) + toIntervalDay({self.s.ttl_days})"

    def _engine(self, kind: str, table: str) -> str:
        if self.cluster:
            return f"Replicated{kind}('{self.s.replication_path}', '{{replica}}')"
        return f"{kind}"

    def _dedup_setting(self) -> str:
        w = self.s.dedup_window
        if self.cluster:
            return f"replicated_deduplication_window = {w}, replicated_deduplication_window_seconds = 604800"
        return f"non_replicated_deduplication_window = {w}"

    def _storage_table(self, table: str, columns: str, kind: str, partition: str, order: str, ttl_col: str) -> str:
        local = self.local(table)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.q(local)}{self.on_cluster}\n{columns}\n"
            f"ENGINE = {self._engine(kind, local)}\nPARTITION BY {partition}\nORDER BY {order}"
            f"{self.ttl_clause(ttl_col)}\nSETTINGS {self._dedup_setting()}, ttl_only_drop_parts = 1"
        )

    def _distributed(self, table: str, sharding_key: str) -> list[str]:
        if not self.cluster:
            return []
        return [
            f"CREATE TABLE IF NOT EXISTS {self.q(table)}{self.on_cluster} AS {self.q(self.local(table))}\n"
            f"ENGINE = Distributed(`{self.cluster}`, `{self.db}`, `{self.local(table)}`, {sharding_key})"
        ]

    # ------------------------------------------------------------------ DDL

    def create_database(self) -> str:
        return f"CREATE DATABASE IF NOT EXISTS `{self.db}`{self.on_cluster}"

    def create_migrations_table(self) -> str:
        local = self.migrations_table
        engine = (
            f"ReplicatedReplacingMergeTree('{self.s.replication_path}', '{{replica}}')"
            if self.cluster
            else "ReplacingMergeTree"
        )
        return (
            f"CREATE TABLE IF NOT EXISTS {self.q(local)}{self.on_cluster}\n{_MIGRATIONS_DEF}\n"
            f"ENGINE = {engine}\nORDER BY version"
        )

    def v1_statements(self) -> list[str]:
        # Shares and verdicts of one share land on the same shard (same key), so the
        # join can run shard-locally; the key is deterministic, so a retried batch
        # splits across shards exactly as before and each part deduplicates.
        shard_key = "cityHash64(instance_id, run_id, share_seq)"
        out = [
            self._storage_table(self.shares, _SHARES_DEF, "MergeTree", "toYYYYMMDD(received_at)",
                                "(worker_name, received_at)", "received_at"),
            *self._distributed(self.shares, shard_key),
            self._storage_table(self.verdicts, _VERDICTS_DEF, "MergeTree", "toYYYYMMDD(received_at)",
                                "(instance_id, run_id, share_seq)", "received_at"),
            *self._distributed(self.verdicts, shard_key),
            self._storage_table(self.minute, _MINUTE_DEF, "AggregatingMergeTree", "toYYYYMM(minute)",
                                "(worker_name, channel_id, instance_id, minute)", "minute"),
            *self._distributed(self.minute, "cityHash64(worker_name)"),
            # The MV reads each inserted block of the storage table (local in cluster mode).
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.q(self.local(self.minute_mv))}{self.on_cluster}\n"
            f"TO {self.q(self.local(self.minute))} AS\n"
            "SELECT toStartOfMinute(received_at) AS minute, instance_id, worker_name, channel_id,\n"
            "    count() AS shares,\n"
            "    countIf(verdict = 'accepted') AS accepted_shares,\n"
            "    sumIf(target_difficulty, verdict = 'accepted') AS accepted_difficulty,\n"
            "    sumIf(share_difficulty, verdict = 'accepted') AS share_difficulty_sum,\n"
            "    min(received_at) AS first_at,\n"
            "    max(received_at) AS last_at\n"
            f"FROM {self.q(self.local(self.shares))}\n"
            "GROUP BY minute, instance_id, worker_name, channel_id",
            f"CREATE VIEW IF NOT EXISTS {self.q(self.joined_view)}{self.on_cluster} AS\n"
            "SELECT s.*, v.pool_verdict AS pool_verdict, v.received_at AS pool_verdict_at\n"
            f"FROM {self.q(self.shares)} AS s\n"
            f"LEFT ANY JOIN {self.q(self.verdicts)} AS v\n"
            "ON s.instance_id = v.instance_id AND s.run_id = v.run_id AND s.share_seq = v.share_seq",
        ]
        return out

    def v2_statements(self) -> list[str]:
        """``events`` and ``worker_state`` (filled from events by ``worker_state_mv``).

        Events are sharded by worker (upstream events, worker "", on one shard), so a
        worker's state is built on the shard holding its events."""
        shard_key = "cityHash64(instance_id, worker_name)"
        state_local = self.local(self.worker_state)
        engine = (
            f"ReplicatedReplacingMergeTree('{self.s.replication_path}', '{{replica}}', version)"
            if self.cluster
            else "ReplacingMergeTree(version)"
        )
        return [
            self._storage_table(self.events, _EVENTS_DEF, "MergeTree", "toYYYYMMDD(time)",
                                "(worker_name, time)", "time"),
            *self._distributed(self.events, shard_key),
            f"CREATE TABLE IF NOT EXISTS {self.q(state_local)}{self.on_cluster}\n{_STATE_DEF}\n"
            f"ENGINE = {engine}\nORDER BY (instance_id, worker_name)\nSETTINGS {self._dedup_setting()}",
            *self._distributed(self.worker_state, "cityHash64(instance_id, worker_name)"),
            # Every worker event carries the worker's whole state after it; the state row is the
            # event's projection, and the newest version (time, then event_seq) wins.
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.q(self.local(self.worker_state_mv))}{self.on_cluster}\n"
            f"TO {self.q(state_local)} AS\n"
            "SELECT instance_id, worker_name, online, since, last_share_at, difficulty, user_agent, address,\n"
            "    client_id, event_type AS last_event, time AS updated_at,\n"
            "    bitOr(bitShiftLeft(toUInt64(toUnixTimestamp64Milli(time)), 20), bitAnd(event_seq, 1048575)) AS version\n"
            f"FROM {self.q(self.local(self.events))}\n"
            "WHERE worker_name != ''",
        ]

    def migrations(self) -> list[Migration]:
        return [
            Migration(1, "shares, pool_verdicts, worker_minute (+MV), shares_with_verdict", Schema.v1_statements),
            Migration(2, "events, worker_state (+MV)", Schema.v2_statements),
        ]

    def applied_versions(self) -> str:
        return f"SELECT max(version) FROM {self.q(self.migrations_table)}"

    def ttl_targets(self) -> list[tuple[str, str]]:
        """(storage table, TTL column) pairs whose TTL follows ``ttl_days``."""
        return [
            (self.local(self.shares), "received_at"),
            (self.local(self.verdicts), "received_at"),
            (self.local(self.minute), "minute"),
            (self.local(self.events), "time"),
        ]

    def modify_ttl(self, table: str, column: str) -> str:
        if self.s.ttl_days <= 0:
            return f"ALTER TABLE {self.q(table)}{self.on_cluster} REMOVE TTL"
        return (
            f"ALTER TABLE {self.q(table)}{self.on_cluster} MODIFY TTL "
            f"toDateTime({column}) + toIntervalDay({self.s.ttl_days})"
        )

    def table_engine_full(self) -> str:
        return "SELECT name, engine_full FROM system.tables WHERE database = {db:String}"

    # ------------------------------------------------------------------ queries

    def worker_hashrate_query(self) -> str:
        """Per worker over [window_start, now]: shares, accepted, summed difficulties, first/last time.

        Reads only the per-minute aggregate; ``sum``/``min``/``max`` re-aggregate
        rows that background merges have not combined yet.
        """
        return (
            "SELECT worker_name, sum(shares) AS shares, sum(accepted_shares) AS accepted_shares,\n"
            "    sum(accepted_difficulty) AS accepted_difficulty,\n"
            "    sum(share_difficulty_sum) AS share_difficulty_sum,\n"
            "    toUnixTimestamp64Milli(min(first_at)) AS first_ms, toUnixTimestamp64Milli(max(last_at)) AS last_ms\n"
            f"FROM {self.q(self.minute)}\n"
            "WHERE instance_id = {instance_id:String} AND minute >= toDateTime({window_start:UInt32}, 'UTC')\n"
            "GROUP BY worker_name ORDER BY worker_name"
        )

    @staticmethod
    def _events_where(worker: bool, event_type: bool, since: bool) -> list[str]:
        where = ["instance_id = {instance_id:String}"]
        if worker:
            where.append("worker_name = {worker:String}")
        if event_type:
            where.append("event_type = {event_type:String}")
        if since:
            where.append("time >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')")
        return where

    def events_count_query(self, *, worker: bool, event_type: bool, since: bool) -> str:
        where = self._events_where(worker, event_type, since)
        return f"SELECT count() FROM {self.q(self.events)} WHERE {' AND '.join(where)}"

    def events_query(self, *, worker: bool, event_type: bool, since: bool) -> str:
        """Events of one instance, newest first, with optional filters; paginated by LIMIT/OFFSET."""
        where = self._events_where(worker, event_type, since)
        return (
            "SELECT toUnixTimestamp64Milli(time), run_id, event_seq, event_type, worker_name, client_id, address,\n"
            "    user_agent, reason, old_difficulty, difficulty, channel_id, detail\n"
            f"FROM {self.q(self.events)}\nWHERE {' AND '.join(where)}\n"
            "ORDER BY time DESC, run_id DESC, event_seq DESC\n"
            "LIMIT {limit:UInt64} OFFSET {offset:UInt64}"
        )

    def worker_state_query(self) -> str:
        """The current state of every worker of one instance (FINAL: the newest version only)."""
        return (
            "SELECT worker_name, online, toUnixTimestamp64Milli(since), toUnixTimestamp64Milli(last_share_at),\n"
            "    difficulty, user_agent, address, client_id, last_event, toUnixTimestamp64Milli(updated_at)\n"
            f"FROM {self.q(self.worker_state)} FINAL\n"
            "WHERE instance_id = {instance_id:String} ORDER BY worker_name"
        )

    def raw_worker_query(self) -> str:
        """The same figures computed from the raw ``shares`` table (tests and audits)."""
        return (
            "SELECT worker_name, count() AS shares, countIf(verdict = 'accepted') AS accepted_shares,\n"
            "    sumIf(target_difficulty, verdict = 'accepted') AS accepted_difficulty,\n"
            "    sumIf(share_difficulty, verdict = 'accepted') AS share_difficulty_sum,\n"
            "    toUnixTimestamp64Milli(min(received_at)) AS first_ms, toUnixTimestamp64Milli(max(received_at)) AS last_ms\n"
            f"FROM {self.q(self.shares)}\n"
            "WHERE instance_id = {instance_id:String}\n"
            "  AND received_at >= toDateTime64({window_start:UInt32}, 3, 'UTC')\n"
            "GROUP BY worker_name ORDER BY worker_name"
        )
