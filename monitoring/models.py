"""Pydantic models of every monitoring response body: the one source of the API's fields.

``monitoring.openapi`` derives the published document's ``components/schemas``
from these classes (``model_json_schema``), and the tests validate every live
response against that document with closed objects, so a field the code sends
but no model declares (or the reverse) fails the tests.

The responses themselves are built as plain dicts and pre-serialized bytes by
``monitoring.snapshot``: constructing a model per SV1 client would cost the
snapshot build (10,000+ clients, sliced on the event loop) several times what
the dicts do, for no benefit on the wire.

Field names follow the stratum-apps reference monitoring (anchors 2.1/2.2);
our additions are marked "(tproxy)" in the descriptions.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

UNIX = "unix seconds"

# Integer fields are counts, ids and timestamps: never negative.
Count = Annotated[int, Field(ge=0)]


def _count(description: str) -> Count:
    return Field(ge=0, description=description)  # type: ignore[no-any-return]


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class ErrorResponse(_Model):
    error: str = Field(description="what went wrong")
    parameter: str | SkipJsonSchema[None] = Field(
        default=None, description="(tproxy) the query or path parameter that was invalid (400 only)"
    )


class IndexResponse(_Model):
    service: str
    version: str
    endpoints: dict[str, str] = Field(description="path -> description")


class HealthResponse(_Model):
    status: Literal["ok", "unavailable"]
    timestamp: Count = _count(UNIX)
    reason: str | None = Field(description="(tproxy) why the proxy is unavailable; null when ok")
    reasons: list[str] = Field(description="(tproxy) every failed check")
    upstream_connected: bool = Field(description="(tproxy)")
    upstream_channel_open: bool = Field(description="(tproxy)")
    share_log: Literal["ok", "behind", "disabled"] = Field(
        description="(tproxy) share log keeping up, falling behind, or not configured"
    )
    snapshot_age_s: float | None = Field(
        description="(tproxy) age of the data served; null before the first snapshot"
    )


class UpstreamInfo(_Model):
    """(tproxy) the upstream connection"""

    connected: bool = Field(description="SV2 connection up (Noise + SetupConnection done)")
    channel_open: bool = Field(description="an upstream channel is open")
    address: str | None = Field(description="host:port of the current or last upstream")
    since: float | None = Field(description=f"{UNIX} when `connected` last changed")


class ServerSummary(_Model):
    total_channels: Count
    extended_channels: Count
    standard_channels: Count
    total_hashrate: float = Field(description="sum of the channels' nominal hashrate, H/s")


class Sv1ClientsSummary(_Model):
    total_clients: Count
    total_hashrate: float = Field(description="H/s")


class ShareLogInfo(_Model):
    """(tproxy) share-log pipeline counters"""

    queued: Count = _count("records in the in-memory queue")
    written: Count = _count("records written to ClickHouse")
    spooled: Count = _count("records written to the disk spool")
    replayed: Count = _count("spooled records later written to ClickHouse")
    retried: Count = _count("batch insert retries")
    failed_batches: Count = _count("failed batch inserts")
    dropped: Count = _count("records lost")
    spool_pending: Count = _count("records in the spool not yet replayed")
    oldest_unwritten_age_s: float = Field(description="age of the oldest record not yet in ClickHouse")
    db_up: bool = Field(description="the last insert succeeded")


class GlobalInfo(_Model):
    server: ServerSummary | None
    sv2_clients: None = Field(description="always null on a translator")
    sv1_clients: Sv1ClientsSummary | None
    uptime_secs: Count
    share_log: ShareLogInfo | None
    snapshot_taken_at: float = Field(description=f"(tproxy) {UNIX} the data was taken")


class ServerResponse(_Model):
    extended_channels_count: Count
    standard_channels_count: Count
    total_hashrate: float = Field(description="H/s")
    upstream: UpstreamInfo


class ServerExtendedChannelInfo(_Model):
    channel_id: Count
    user_identity: str
    nominal_hashrate: float | None = Field(description="H/s")
    target_hex: str = Field(description="big-endian hex, 64 characters")
    extranonce_prefix_hex: str
    full_extranonce_size: Count
    rollable_extranonce_size: Count
    version_rolling: bool
    shares_acknowledged: Count = _count("from SubmitShares.Success")
    shares_submitted: Count = _count("forwarded upstream")
    shares_rejected: Count
    shares_rejected_by_reason: dict[str, Count] = Field(description="SV2 error code -> count")
    acknowledged_work_sum: Count = _count("sum of SubmitShares.Success new_shares_sum")
    validated_work_sum: float
    best_diff: float
    blocks_found: Count
    verdicts_pending: Count = _count("forwarded shares awaiting the pool's verdict now")
    verdicts_timed_out: Count = _count("forwarded shares the pool never answered within proxy.verdict_timeout_s")


class ServerStandardChannelInfo(_Model):
    """never present on this proxy (it opens extended channels only)"""


class ServerChannelsResponse(_Model):
    offset: Count
    limit: Count
    total_extended: Count
    total_standard: Count
    extended_channels: list[ServerExtendedChannelInfo]
    standard_channels: list[ServerStandardChannelInfo]


class Sv1ClientInfo(_Model):
    client_id: Count
    channel_id: Count | None
    worker_name: str = Field(
        description="(tproxy) the SV1 username as sent in mining.authorize; same value as sv1_username"
    )
    sv1_username: str = Field(description="the SV1 username as sent in mining.authorize")
    sv1_worker_name: str = Field(description="the part of sv1_username after the first '.', or all of it")
    user_identity: str = Field(description="identity of its channel upstream")
    target_hex: str = Field(description="big-endian hex, 64 characters")
    hashrate: float | None = Field(description="vardiff estimate, H/s")
    stable_hashrate: bool
    extranonce1_hex: str
    extranonce2_len: Count
    version_rolling_mask: str | None = Field(description="8 hex characters")
    version_rolling_min_bit: str | None = Field(description="8 hex characters")
    connection_ip: str
    connected_at: float = Field(description=f"(tproxy) {UNIX}")
    shares_accepted: Count = _count("(tproxy)")
    shares_rejected: Count = _count("(tproxy)")
    last_share_at: float | None = Field(description=f"(tproxy) {UNIX}")
    user_agent: str = Field(description="(tproxy) the user agent sent in mining.subscribe; empty when none")


class Sv1ClientsResponse(_Model):
    offset: Count
    limit: Count
    total: Count
    items: list[Sv1ClientInfo]


class WorkerWindow(_Model):
    """(tproxy) one worker's shares over a trailing window, from the share log"""

    window_s: Count
    shares_accepted: Count
    shares_rejected: Count
    accepted_difficulty_sum: float = Field(description="sum of target_difficulty over accepted shares")
    hashrate: float = Field(description="accepted_difficulty_sum * 2^32 / window_s, H/s")
    last_share_at: float | None = Field(description=UNIX)


class WorkerWindows(_Model):
    """(tproxy) a worker's windows by label"""

    m5: WorkerWindow = Field(alias="5m")
    h1: WorkerWindow = Field(alias="1h")
    h24: WorkerWindow = Field(alias="24h")


class WorkerInfo(_Model):
    """(tproxy) one worker (SV1 username), over all its connections"""

    worker_name: str
    connections: Count = _count("SV1 connections open now")
    client_ids: list[Count]
    hashrate: float | None = Field(description="sum of the connections' vardiff estimates, H/s")
    windows: WorkerWindows | None


class WorkersResponse(_Model):
    offset: Count
    limit: Count
    total: Count
    stats_updated_at: float | None = Field(description=f"{UNIX} of the window statistics; null if never loaded")
    items: list[WorkerInfo]


class HistorySample(_Model):
    """(tproxy) the farm hashrate at one instant (or averaged over one minute)"""

    at: float = Field(description=UNIX)
    hashrate: float = Field(description="sum of the SV1 clients' vardiff estimates, H/s")


class HistoryResponse(_Model):
    """(tproxy) farm hashrate history kept in memory since the proxy started"""

    hour: list[HistorySample] = Field(description="one sample per snapshot refresh over the last hour, oldest first")
    day: list[HistorySample] = Field(
        description="one sample per minute (the mean of that minute's samples) over the last 24 hours, oldest first"
    )


class EventInfo(_Model):
    """(tproxy) one worker or upstream event (a row of the share log's ``events`` table)"""

    at: float = Field(description=f"{UNIX}, millisecond precision")
    run_id: Count = _count("the proxy run that emitted it")
    event_seq: Count = _count("per-run sequence number; (run_id, event_seq) is unique")
    type: str = Field(
        description="connect, authorize, disconnect, difficulty, offline, online, pool_reject_burst, "
        "block_found, upstream_up, upstream_down"
    )
    worker_name: str = Field(description="empty for upstream events and before authorize")
    client_id: Count
    address: str = Field(description="the miner's ip:port")
    user_agent: str
    reason: str = Field(
        description="disconnect: closed, outage, ...; difficulty: vardiff, suggest, floor, memory; "
        "upstream_up: connected, reconnected, failover, failback, reconnect; upstream_down: the cause"
    )
    old_difficulty: float = Field(description="difficulty events: before the change (else 0)")
    difficulty: float = Field(description="the worker's difficulty after the event")
    channel_id: Count
    detail: str = Field(description="free text: the upstream endpoint, a block hash, ...")


class EventsResponse(_Model):
    offset: Count
    limit: Count
    total: Count = _count("events matching the filters")
    items: list[EventInfo] = Field(description="newest first")


# Every model published under components/schemas, in document order.
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    ErrorResponse,
    IndexResponse,
    HealthResponse,
    UpstreamInfo,
    ServerSummary,
    Sv1ClientsSummary,
    ShareLogInfo,
    GlobalInfo,
    ServerResponse,
    ServerExtendedChannelInfo,
    ServerStandardChannelInfo,
    ServerChannelsResponse,
    Sv1ClientInfo,
    Sv1ClientsResponse,
    WorkerWindow,
    WorkerWindows,
    WorkerInfo,
    WorkersResponse,
    HistorySample,
    HistoryResponse,
    EventInfo,
    EventsResponse,
)
