"""Blocking ClickHouse access for the share log: client, migrations, inserts, queries.

Owns the clickhouse-connect client. Every method blocks and must run on the
share log's single database thread (chdb's embedded engine is in-process and
its calls block; one writer thread keeps its use sequential). The same code
serves ``chdb://PATH`` and ``http(s)://`` URLs: only ``_connect`` differs.

After any error other than bad data the client is dropped and rebuilt on
the next call, so a restarted server or a broken HTTP connection does not
stick.

``insert_isolating`` is the defence behind ``clean_text``: a batch the
database rejects as bad data is split in halves, recursively, so every row
it accepts is written and only the rows it rejects one by one are returned
to the caller (for quarantine).
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DataError

from tproxy.shares.schema import (
    EVENT_COLUMNS,
    EVENT_TYPES,
    SHARE_COLUMNS,
    SHARE_TYPES,
    VERDICT_COLUMNS,
    VERDICT_TYPES,
    Schema,
)
from tproxy.shares.settings import ClickHouseSettings
from tproxy.shares.spool import KIND_EVENTS, KIND_SHARES

log = logging.getLogger("tproxy.shares.store")

_in_store_call = threading.local()


class _QuietDriverLogs(logging.Filter):
    """clickhouse-connect logs a full traceback for every row block it cannot serialize and
    a warning for every failed HTTP attempt. During the share log's own calls the share log
    reports those errors itself, rate-limited, so a bisected batch or a database that is
    down for a day does not write a traceback per attempt (issue 11: 110 MB of log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_in_store_call, "on", False) or record.levelno >= logging.CRITICAL


for _name in ("clickhouse_connect.driver.transform", "clickhouse_connect.driver._backend.http_sync",
              "urllib3.connectionpool"):
    logging.getLogger(_name).addFilter(_QuietDriverLogs())

# Errors raised while building a batch on the client, or codes ClickHouse uses for
# rows it cannot take: retrying the same batch cannot help.
_BAD_DATA_CODES = frozenset({6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 321})


def is_bad_data(exc: BaseException) -> bool:
    if isinstance(exc, (DataError, TypeError, OverflowError, struct.error, UnicodeError)):
        return True
    code = getattr(exc, "code", None)
    return isinstance(code, int) and code in _BAD_DATA_CODES


class Store:
    """One connection to the share log's database (embedded or server)."""

    def __init__(self, settings: ClickHouseSettings, instance_id: str) -> None:
        self.settings = settings
        self.schema = Schema(settings)
        self.instance_id = instance_id
        self._client: Any = None

    # ------------------------------------------------------------------ connection

    def _connect(self) -> Any:
        s = self.settings
        if s.is_embedded:
            path = s.chdb_path
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            return clickhouse_connect.get_client(dsn=f"chdb://{path}")
        return clickhouse_connect.get_client(
            **s.http_params(),
            # The sync HTTP client takes whole seconds.
            connect_timeout=max(1, math.ceil(s.connect_timeout_s)),
            send_receive_timeout=max(1, math.ceil(s.insert_timeout_s)),
            compress="lz4" if s.compress else False,
            autogenerate_session_id=False,
            query_retries=0,
        )

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def reset(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            try:
                c.close()
            except Exception:
                log.debug("closing the ClickHouse client failed", exc_info=True)

    def close(self) -> None:
        self.reset()

    def _guard(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        _in_store_call.on = True
        try:
            return fn(*args, **kwargs)
        except BaseException as e:
            if not is_bad_data(e):  # a rejected row does not break the connection
                self.reset()
            raise
        finally:
            _in_store_call.on = False

    def ping(self) -> bool:
        try:
            return bool(self._guard(lambda: self.client.ping()))
        except Exception:
            return False

    # ------------------------------------------------------------------ schema

    def migrate(self) -> int:
        """Create what is missing (idempotent) and record versions; returns the schema version."""
        return int(self._guard(self._migrate))

    def _migrate(self) -> int:
        sc = self.schema
        c = self.client
        c.command(sc.create_database())
        c.command(sc.create_migrations_table())
        current = int(c.query(sc.applied_versions()).result_rows[0][0] or 0)
        for m in sc.migrations():
            if m.version <= current:
                continue
            for stmt in m.statements(sc):
                c.command(stmt)
            c.insert(
                sc.q(sc.migrations_table),
                [(m.version, m.description, int(time.time() * 1000), self.instance_id)],
                column_names=("version", "description", "applied_at", "instance_id"),
            )
            log.info("share log schema: applied migration %d (%s)", m.version, m.description)
            current = m.version
        self._apply_ttl()
        return current

    def _apply_ttl(self) -> None:
        sc = self.schema
        rows = self.client.query(sc.table_engine_full(), parameters={"db": sc.db}).result_rows
        engines = {name: engine for name, engine in rows}
        want = f"toIntervalDay({self.settings.ttl_days})"
        for table, column in sc.ttl_targets():
            full = engines.get(table, "")
            has_ttl = " TTL " in f" {full} "
            if (self.settings.ttl_days > 0 and want not in full) or (self.settings.ttl_days <= 0 and has_ttl):
                self.client.command(sc.modify_ttl(table, column), settings={"materialize_ttl_after_modify": 0})
                log.info("share log schema: TTL of %s set to %d days", table, self.settings.ttl_days)

    # ------------------------------------------------------------------ writes

    def insert(self, kind: int, rows: Sequence[Sequence[object]], token: str) -> None:
        sc = self.schema
        if kind == KIND_SHARES:
            table, cols, types = sc.q(sc.shares), SHARE_COLUMNS, SHARE_TYPES
        elif kind == KIND_EVENTS:
            table, cols, types = sc.q(sc.events), EVENT_COLUMNS, EVENT_TYPES
        else:
            table, cols, types = sc.q(sc.verdicts), VERDICT_COLUMNS, VERDICT_TYPES
        settings: dict[str, Any] = {
            "insert_deduplicate": 1,
            "insert_deduplication_token": token,
            "deduplicate_blocks_in_dependent_materialized_views": 1,
        }
        if sc.cluster:
            # Foreground: the insert returns only when every shard has its part, so a
            # failure is seen and the retry (same token) deduplicates shard by shard.
            settings["distributed_foreground_insert"] = 1
        # Column types given, so the client does not DESCRIBE the table before every insert.
        self._guard(lambda: self.client.insert(
            table, rows, column_names=cols, column_type_names=types, settings=settings
        ))

    def insert_isolating(self, kind: int, rows: Sequence[Sequence[object]], token: str) -> list[tuple[int, str]]:
        """Insert a batch that was rejected as bad data, in halves, recursively.

        Returns ``(index, error text)`` of each row rejected on its own; every
        other row is written. Each part carries the token ``{token}/{lo}-{hi}``:
        the split of a given batch is always the same, so a retry after a
        connection error (raised, not caught here) lands each part once."""
        rejected: list[tuple[int, str]] = []

        def part(lo: int, hi: int) -> None:
            try:
                self.insert(kind, rows[lo:hi], f"{token}/{lo}-{hi}")
            except Exception as e:
                if not is_bad_data(e):
                    raise
                if hi - lo == 1:
                    rejected.append((lo, f"{type(e).__name__}: {e}"[:300]))
                    return
                mid = (lo + hi) // 2
                part(lo, mid)
                part(mid, hi)

        if len(rows) == 1:
            part(0, 1)
        else:
            part(0, len(rows) // 2)
            part(len(rows) // 2, len(rows))
        return rejected

    # ------------------------------------------------------------------ reads

    def query_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return list(self._guard(lambda: self.client.query(sql, parameters=parameters or {}).result_rows))



