"""Real SV2 pool messages and real share grinding for sans-IO tests (no sockets, no event loop).

The job content (coinbase with its BIP141 witness, previous block hash, version)
is the SRI share-validation vector's (shared/vectors/share_validation_sri.json),
so every share a test submits is hashed by ``sv2.work`` exactly as a pool would.
Also SV1 request builders, through the real codec.
"""

from __future__ import annotations

import json
from typing import Any

from sv2 import work
from sv2.messages import (
    NewExtendedMiningJob,
    OpenExtendedMiningChannelSuccess,
    SetNewPrevHash,
)
from tests.helpers.vectors import load_vector
from tproxy.events import Job
from tproxy.sv1 import protocol as p

SRI = load_vector("share_validation_sri")
SRI_JOB = SRI["job"]
SRI_PREV_HASH = bytes.fromhex(SRI["set_new_prev_hash"]["prev_hash_hex (wire bytes = header bytes)"])
SRI_MIN_NTIME: int = SRI["set_new_prev_hash"]["min_ntime"]
MAINNET_LIKE_NBITS = 0x1B00D7C0  # the vector's non-block case: no share in these tests is a block


def open_success(
    request_id: int, channel_id: int, *, target: int = work.MAX_TARGET, extranonce_size: int = 16,
    prefix: bytes = b"\x01\x00\x00\x07", group_channel_id: int = 99,
) -> OpenExtendedMiningChannelSuccess:
    return OpenExtendedMiningChannelSuccess(
        request_id=request_id, channel_id=channel_id, target=work.target_to_bytes(target),
        extranonce_size=extranonce_size, extranonce_prefix=prefix, group_channel_id=group_channel_id,
    )


def future_job(channel_id: int, job_id: int, *, version_rolling_allowed: bool = True) -> NewExtendedMiningJob:
    """The SRI vector's job, announced as a future job (min_ntime None)."""
    return NewExtendedMiningJob(
        channel_id=channel_id, job_id=job_id, min_ntime=None, version=SRI_JOB["version"],
        version_rolling_allowed=version_rolling_allowed,
        merkle_path=tuple(bytes.fromhex(x) for x in SRI_JOB["merkle_path"]),
        coinbase_tx_prefix=bytes.fromhex(SRI_JOB["coinbase_tx_prefix_hex (as sent, with BIP141 marker/flag)"]),
        coinbase_tx_suffix=bytes.fromhex(SRI_JOB["coinbase_tx_suffix_hex (as sent, with witness)"]),
    )


def active_job(channel_id: int, job_id: int, ntime: int) -> NewExtendedMiningJob:
    """The SRI vector's job, active at once on the current chain tip (not clean)."""
    msg = future_job(channel_id, job_id)
    return NewExtendedMiningJob(
        channel_id=msg.channel_id, job_id=msg.job_id, min_ntime=ntime, version=msg.version,
        version_rolling_allowed=msg.version_rolling_allowed, merkle_path=msg.merkle_path,
        coinbase_tx_prefix=msg.coinbase_tx_prefix, coinbase_tx_suffix=msg.coinbase_tx_suffix,
    )


def prev_hash(
    channel_id: int, job_id: int, *, prev: bytes = SRI_PREV_HASH, nbits: int = MAINNET_LIKE_NBITS
) -> SetNewPrevHash:
    return SetNewPrevHash(channel_id=channel_id, job_id=job_id, prev_hash=prev, min_ntime=SRI_MIN_NTIME, nbits=nbits)


def share_hash(job: Job, extranonce1: bytes, extranonce2: bytes, nonce: int, version: int | None = None) -> bytes:
    coinbase = job.coinb1 + extranonce1 + extranonce2 + job.coinb2
    root = work.merkle_root(work.sha256d(coinbase), job.merkle_path)
    v = job.version if version is None else version
    return work.sha256d(work.header(v, job.prev_hash, root, job.ntime, job.nbits, nonce))


def find_nonce(
    job: Job, extranonce1: bytes, extranonce2: bytes, target: int, *, meets: bool = True,
    version: int | None = None, start: int = 0,
) -> int:
    """The first nonce from ``start`` whose header hash meets (or misses) ``target``."""
    for nonce in range(start, start + 10_000_000):
        if work.hash_meets_target(share_hash(job, extranonce1, extranonce2, nonce, version), target) == meets:
            return nonce
    raise AssertionError("no nonce found")


def request(req_id: int | str, method: str, params: list[Any]) -> p.Request:
    """A parsed SV1 request, through the real codec."""
    msg = p.parse_line(json.dumps({"id": req_id, "method": method, "params": params}).encode())
    assert isinstance(msg, p.Request)
    return msg


def submit(req_id: int, worker: str, sv1_job_id: str, extranonce2: bytes, ntime: int, nonce: int,
           version_bits: int | None = None) -> p.Request:
    params: list[Any] = [worker, sv1_job_id, extranonce2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
    if version_bits is not None:
        params.append(f"{version_bits:08x}")
    return request(req_id, "mining.submit", params)


def lines(data: bytes) -> list[dict[str, Any]]:
    """The JSON messages in bytes written to a miner."""
    return [json.loads(line) for line in data.splitlines() if line]
