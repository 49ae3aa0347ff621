"""ClickHouseSettings: the ``[clickhouse]`` section of the proxy configuration.

Owns the share log's knobs (where the database is, table names, batching,
queue and spool bounds, retry backoff) and the rules that keep the password
out of logs and the API: the password is a ``SecretStr``; a password written
into ``url`` is moved into ``password`` at validation time, so ``url`` itself
never carries it; ``public_dict()`` and ``redacted_url()`` are what may be
shown to anyone.

URL forms:

* ``chdb://PATH``: the embedded engine (chdb) storing its data in PATH. A
  relative PATH (the default ``chdb://./data/shares.chdb``) is resolved
  against the proxy's working directory. No server needed.
* ``http(s)://user:pass@host:port/db``: a ClickHouse server over HTTP. The
  ``/db`` part, when present, overrides ``database``.

The central config embeds this model as ``clickhouse``, so every field can be
set as ``TPROXY__CLICKHOUSE__<FIELD>`` (for example
``TPROXY__CLICKHOUSE__BATCH_SIZE=5000``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SCHEMES = ("chdb", "http", "https")


class ClickHouseSettings(BaseModel):
    """Where and how the share log writes (see docs/SHARE_LOG.md)."""

    model_config = {"extra": "forbid"}

    url: str = "chdb://./data/shares.chdb"
    """``chdb://PATH`` (embedded engine, the default) or ``http(s)://[user[:pass]@]host[:port][/db]``."""
    username: str | None = None
    """HTTP user; overrides a user given in ``url``. ``default`` when neither is set."""
    password: SecretStr | None = None
    """HTTP password. Never logged; ``public_dict()`` shows ``"***"``."""
    database: str = "tproxy"
    table_prefix: str = ""
    """Prepended to every table name (``{prefix}shares``, ``{prefix}pool_verdicts``...)."""
    cluster: str | None = None
    """ClickHouse cluster name: DDL runs ON CLUSTER, tables are Replicated*, and
    ``shares``/``pool_verdicts``/``worker_minute`` become Distributed tables over
    ``*_local`` tables."""
    replication_path: str = "/clickhouse/tables/{shard}/{database}/{table}"
    """Keeper path of Replicated* tables (cluster mode only); macros expand server-side."""
    ttl_days: int = Field(default=180, ge=0)
    """Rows older than this are dropped by ClickHouse (0 = keep forever). Applied at start."""
    dedup_window: int = Field(default=10_000, ge=100)
    """Recent insert blocks remembered for deduplication (``non_replicated_deduplication_window``
    and ``replicated_deduplication_window``)."""

    batch_size: int = Field(default=2_000, ge=1, le=1_000_000)
    """A batch is written when it holds this many records..."""
    batch_max_age_s: float = Field(default=1.0, gt=0)
    """...or when its oldest record is this old."""
    queue_size: int = Field(default=100_000, ge=1)
    """Records held in memory for the database; beyond it batches go to the spool."""
    spool_dir: str = "./data/spool"
    """Directory of the on-disk spool (relative paths resolve against the working directory)."""
    spool_segment_bytes: int = Field(default=64 << 20, ge=1 << 16)
    spool_fsync: bool = True
    """fsync every spooled batch (survives power loss, not only a killed process)."""
    journal_open_batches: bool = True
    """Also append every record to a per-batch file in ``spool_dir/journal`` (plain write, no
    fsync in ``durability = "fast"``) until its batch is in ClickHouse or the spool."""
    durability: Literal["sync", "fast"] = "sync"
    """``"sync"``: a share's reply goes to its miner only once the share is on disk (journal
    written and fdatasync'ed, one group commit for all shares that arrived meanwhile), so a
    SIGKILL loses no answered share. ``"fast"``: one plain ``write()`` per event-loop tick and
    no wait; a SIGKILL can lose the shares of the loop iteration it interrupts although their
    miners were answered (docs/SHARE_LOG.md). ``"sync"`` needs ``journal_open_batches``."""
    durability_max_waiting: int = Field(default=50_000, ge=1)
    """Sync mode: replies that may wait for the disk at once; above it the event loop waits for
    the commit in flight (no miner is read meanwhile), at most ``durability_stall_s``."""
    durability_stall_s: float = Field(default=5.0, gt=0)
    """Sync mode: a commit the disk has not confirmed after this long (with the wait bound
    reached) gets its held replies written unconfirmed, counted in ``durability_degraded``."""

    spool_retry_s: float = Field(default=1.0, gt=0)
    """After a spool or journal write failed (disk full, out of descriptors...), how often it is
    retried; the first write that succeeds turns it back on (no restart)."""
    fd_reserve: int = Field(default=8, ge=0, le=64)
    """Descriptors held open (on /dev/null) from start(), handed back one at a time when the
    process runs out, so the share log can still open its spool and journal files."""

    retry_backoff_base_s: float = Field(default=0.2, gt=0)
    retry_backoff_max_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    insert_timeout_s: float = Field(default=15.0, gt=0)
    """HTTP read timeout of one insert or query (whole seconds, at least 1); a stalled server
    counts as a failure after it. ``connect_timeout_s`` is rounded up the same way."""
    compress: bool = True
    """HTTP only: lz4-compress inserts."""
    close_timeout_s: float = Field(default=10.0, gt=0)
    """How long close() tries to write to the database before spooling what is left."""

    @field_validator("database")
    @classmethod
    def _check_db(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError("must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
        return v

    @field_validator("table_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if v and not re.match(r"^[A-Za-z0-9_]*$", v):
            raise ValueError("may only contain letters, digits and _")
        return v

    @field_validator("cluster")
    @classmethod
    def _check_cluster(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9_.-]+$", v):
            raise ValueError("must be a cluster name from remote_servers")
        return v or None

    @model_validator(mode="after")
    def _check_durability(self) -> ClickHouseSettings:
        if self.durability == "sync" and not self.journal_open_batches:
            raise ValueError('durability = "sync" needs journal_open_batches = true (or durability = "fast")')
        return self

    @model_validator(mode="after")
    def _split_url(self) -> ClickHouseSettings:
        parts = urlsplit(self.url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(f"url: scheme must be one of {', '.join(SCHEMES)} (got {redact_url(self.url)!r})")
        if scheme == "chdb":
            if not self.url[len("chdb://") :]:
                raise ValueError("url: chdb:// needs a data directory path")
            return self
        if not parts.hostname:
            raise ValueError(f"url: no host in {redact_url(self.url)!r}")
        if parts.password is not None:
            # Keep the secret out of the plain-string field for good.
            if self.password is None:
                self.password = SecretStr(unquote(parts.password))
            user = quote(unquote(parts.username or ""), safe="")
            host = parts.hostname + (f":{parts.port}" if parts.port else "")
            netloc = f"{user}@{host}" if user else host
            self.url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        return self

    # ------------------------------------------------------------------ derived

    @property
    def is_embedded(self) -> bool:
        return self.url.lower().startswith("chdb://")

    @property
    def chdb_path(self) -> str:
        """Absolute data directory of the embedded engine."""
        return os.path.abspath(self.url[len("chdb://") :])

    @property
    def effective_database(self) -> str:
        if not self.is_embedded:
            path = urlsplit(self.url).path.strip("/")
            if path:
                if not _IDENT.match(path):
                    raise ValueError(f"url: database {path!r} is not a plain identifier")
                return path
        return self.database

    def http_params(self) -> dict[str, Any]:
        """Keyword arguments for ``clickhouse_connect.get_client`` (HTTP only; holds the secret)."""
        parts = urlsplit(self.url)
        secure = parts.scheme.lower() == "https"
        return {
            "host": parts.hostname,
            "port": parts.port or (8443 if secure else 8123),
            "username": self.username or unquote(parts.username or "") or "default",
            "password": self.password.get_secret_value() if self.password else "",
            "secure": secure,
        }

    def redacted_url(self) -> str:
        return redact_url(self.url)

    def public_dict(self) -> dict[str, Any]:
        """Everything, safe to log or serve: the password is ``"***"`` (or None when unset)."""
        d = self.model_dump(mode="json", exclude={"password"})
        d["url"] = self.redacted_url()
        d["password"] = "***" if self.password is not None else None
        return d


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for log lines and errors)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        netloc = f"{parts.username or ''}:***@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparseable url>"
