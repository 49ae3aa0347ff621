"""The ShareRecord: one row per share the proxy received, valid or not.

This is the contract between the share path (tproxy.bridge) and the share log
(tproxy.shares). The hot path builds one of these and hands it to the sink
without awaiting anything. Names follow docs/NAMES.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

VERDICT_ACCEPTED = "accepted"


@dataclass(frozen=True, slots=True)
class ShareRecord:
    received_at_ms: int  # unix time in milliseconds, when the submit line was parsed
    instance_id: str
    share_seq: int  # per-instance monotonic counter; (instance_id, share_seq) is unique
    worker_name: str
    client_id: int
    channel_id: int  # upstream channel (0 if none)
    sequence_number: int  # upstream sequence number (0 if not forwarded)
    sv1_job_id: str
    job_id: int  # upstream job id (0 if the SV1 job was unknown)
    nonce: int
    ntime: int
    version: int  # full block version the share hashed with (0 if unknown)
    extranonce: str  # hex of extranonce1 || extranonce2 as the miner rolled it
    share_hash: str  # display hex ("" if it could not be computed)
    target_difficulty: float
    share_difficulty: float  # 0.0 if it could not be computed
    verdict: str  # "accepted" or a rejection reason (docs/NAMES.md)
    forwarded: bool

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "received_at_ms",
        "instance_id",
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

    def as_row(self) -> tuple[object, ...]:
        return tuple(getattr(self, c) for c in self.COLUMNS)


@dataclass(frozen=True, slots=True)
class PoolVerdictRecord:
    """The pool's later answer for one forwarded share, appended (never an UPDATE).

    SubmitShares.Success acknowledges a range of sequence numbers; the bridge
    expands it into one record per share it forwarded in that range.
    """

    received_at_ms: int
    instance_id: str
    channel_id: int
    sequence_number: int
    share_seq: int
    pool_verdict: str  # "accepted" or the SV2 error code

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "received_at_ms",
        "instance_id",
        "channel_id",
        "sequence_number",
        "share_seq",
        "pool_verdict",
    )

    def as_row(self) -> tuple[object, ...]:
        return tuple(getattr(self, c) for c in self.COLUMNS)
