"""One SV1 miner's session: method dispatch, difficulty, job tracking, share validation.

The session is the proxy's policy for one connection, independent of sockets:
the server hands it parsed requests and a ``write`` callable; the session
answers, keeps the miner's state (subscription, authorized workers, version
mask, difficulty, the jobs it was sent) and validates every submitted share
once. It talks to the rest of the proxy only through ``MinerHost`` (the
bridge), so SV1 code never reaches into upstream internals.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sv2 import work
from tproxy.channel import Job
from tproxy.shares.record import VERDICT_ACCEPTED, ShareRecord
from tproxy.sv1 import protocol as p
from tproxy.sv1.vardiff import Vardiff

log = logging.getLogger("tproxy.sv1")

MAX_JOBS_PER_MINER = 32
MAX_SEEN_SHARES = 65_536
TARGET_GRACE_S = 10.0
SUBSCRIPTION_ID = "ae6812eb4cd7735a302a8a9dd95cf71f"


class MinerHost(Protocol):
    """What a session needs from the bridge."""

    def on_authorized(self, session: MinerSession) -> None: ...

    def is_stale_job(self, sv1_job_id: str) -> bool: ...

    def forward_share(
        self, session: MinerSession, job: Job, extranonce2: bytes, ntime: int, nonce: int, version: int,
        share_seq: int, target_difficulty: float, share_hash: bytes,
    ) -> tuple[int, int] | None:
        """Send a share upstream; returns (channel_id, sequence_number), or None if no live channel."""

    def record_share(self, record: ShareRecord) -> None: ...

    def next_share_seq(self) -> int: ...

    def difficulty_floor(self, session: MinerSession) -> float: ...


@dataclass(slots=True)
class SentJob:
    job: Job
    target: int  # the miner's target when this job was notified


@dataclass(slots=True)
class ShareCounters:
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    pool_accepted: int = 0
    pool_rejected: int = 0
    last_share_at: float = 0.0


class MinerSession:
    """State and policy of one SV1 connection."""

    def __init__(
        self,
        *,
        client_id: int,
        peer: str,
        extranonce1: bytes,
        extranonce2_size: int,
        server_version_mask: int,
        vardiff: Vardiff,
        host: MinerHost,
        write: Callable[[bytes], None],
        instance_id: str,
        honour_suggest_difficulty: bool = True,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.client_id = client_id
        self.peer = peer
        self.extranonce1 = extranonce1
        self.extranonce2_size = extranonce2_size
        self.server_version_mask = server_version_mask
        self.vardiff = vardiff
        self.host = host
        self.write = write
        self.instance_id = instance_id
        self.honour_suggest_difficulty = honour_suggest_difficulty
        self._now = now
        self.connected_at = now()
        self.user_agent = ""
        self.subscribed = False
        self.worker_name = ""  # first authorized worker
        self.authorized: set[str] = set()
        self.version_mask: int | None = None
        self._mask_sent: int | None = None  # the mask in force at the miner (None: as configured)
        self.version_rolling_min_bit: int | None = None
        self.wants_set_extranonce = False
        self.difficulty = vardiff.difficulty
        self.target = work.target_from_difficulty(self.difficulty)
        self._prev_target = self.target
        self._target_changed_at = 0.0
        self._difficulty_sent: float | None = None
        self.jobs: OrderedDict[str, SentJob] = OrderedDict()
        self.latest: tuple[str, Job] | None = None
        # keyed by the upstream job: keepalive copies give one upstream job several SV1 ids
        self._seen: OrderedDict[tuple[int, int, bytes, int, int, int], None] = OrderedDict()
        self.counters = ShareCounters()
        self.channel_id: int | None = None  # upstream channel serving this miner
        self.closed = False

    # -- dispatch ------------------------------------------------------------

    def handle(self, req: p.Request) -> None:
        """Answer one request. Never raises for bad input; closes only on a flood."""
        method = req.method
        try:
            if method == "mining.submit":
                self._submit(req)
            elif method == "mining.subscribe":
                self._subscribe(req)
            elif method == "mining.authorize":
                self._authorize(req)
            elif method == "mining.configure":
                self._configure(req)
            elif method == "mining.extranonce.subscribe":
                self.wants_set_extranonce = True
                self.write(p.result(req.id, True))
            elif method == "mining.suggest_difficulty":
                self._suggest_difficulty(req)
            elif method == "mining.ping":
                self.write(p.result(req.id, "pong"))
            else:
                # mining.get_transactions, mining.multi_version, mining.capabilities...:
                # answer "method not found" and keep the miner.
                self.write(p.error(req.id, p.METHOD_NOT_FOUND, f"unknown method {method[:64]}"))
        except p.Sv1ProtocolError as e:
            self.write(p.error(req.id, e.code, str(e)))

    # -- methods -------------------------------------------------------------

    def _configure(self, req: p.Request) -> None:
        cfg = p.parse_configure(req.params)
        if "version-rolling" in cfg.extensions:
            self.version_mask = cfg.version_rolling_mask & self.server_version_mask
            self.version_rolling_min_bit = cfg.version_rolling_min_bit_count
        if cfg.subscribe_extranonce:
            self.wants_set_extranonce = True
        if cfg.minimum_difficulty is not None:
            self.vardiff.set_floor_hint(cfg.minimum_difficulty)
        result = p.configure_result(
            cfg,
            server_mask=self.server_version_mask,
            allow_min_difficulty=True,
            allow_subscribe_extranonce=True,
        )
        self.write(p.result(req.id, result))

    def _subscribe(self, req: p.Request) -> None:
        sub = p.parse_subscribe(req.params)
        self.user_agent = (sub.user_agent or "")[:128]
        self.subscribed = True
        self.write(p.result(req.id, p.subscribe_result(SUBSCRIPTION_ID, self.extranonce1, self.extranonce2_size)))
        if self.authorized:
            self.host.on_authorized(self)

    def _authorize(self, req: p.Request) -> None:
        auth = p.parse_authorize(req.params)
        name = auth.worker_name
        if not name:
            self.write(p.error(req.id, p.UNAUTHORIZED, "empty worker name"))
            return
        first = not self.authorized
        self.authorized.add(name)
        if first:
            self.worker_name = name
        self.write(p.result(req.id, True))
        if first and self.subscribed:
            self.host.on_authorized(self)

    def _suggest_difficulty(self, req: p.Request) -> None:
        d = p.parse_suggest_difficulty(req.params)
        if self.honour_suggest_difficulty and not self.counters.accepted:
            new = self.vardiff.suggest(d)
            if new != self.difficulty:
                self.set_difficulty(new)
        self.write(p.result(req.id, True))

    # -- difficulty and jobs -------------------------------------------------------

    def set_difficulty(self, difficulty: float) -> None:
        """Change the miner's difficulty; it is sent right before the next notify."""
        now = self._now()
        self._prev_target = self.target
        self._target_changed_at = now
        self.difficulty = difficulty
        self.target = work.target_from_difficulty(difficulty)
        self.vardiff.difficulty = difficulty

    def send_job(self, sv1_job_id: str, job: Job, notify_line: bytes, *, clean: bool) -> None:
        """Notify a job, preceded by set_difficulty when the difficulty changed."""
        if self.version_mask is not None:
            # A pool may forbid version rolling for a job; tell the miner before the
            # notify instead of rejecting every rolled share it would send.
            effective = self.version_mask if job.version_rolling_allowed else 0
            current = self.version_mask if self._mask_sent is None else self._mask_sent
            if effective != current:
                self.write(p.set_version_mask(effective))
                self._mask_sent = effective
        if self._difficulty_sent != self.difficulty:
            self.write(p.set_difficulty(self.difficulty))
            self._difficulty_sent = self.difficulty
        if clean:
            self.jobs.clear()
            self._seen.clear()
        if self.latest is None and not self.counters.accepted:
            # Time without work is not the miner's silence: start vardiff's clock now.
            self.vardiff.reset(self._now())
        self.jobs[sv1_job_id] = SentJob(job, self.target)
        self.jobs.move_to_end(sv1_job_id)
        while len(self.jobs) > MAX_JOBS_PER_MINER:
            self.jobs.popitem(last=False)
        self.latest = (sv1_job_id, job)
        self.write(notify_line)

    def forget_jobs(self) -> None:
        """Upstream lost: every job this miner holds is stale now."""
        self.jobs.clear()
        self._seen.clear()
        self.latest = None

    def maybe_retarget(self) -> bool:
        """Run vardiff; True if the difficulty changed (the caller re-sends the job)."""
        new = self.vardiff.maybe_retarget(self._now())
        if new is None:
            return False
        new = max(new, self.host.difficulty_floor(self))
        if new == self.difficulty:
            self.vardiff.difficulty = new  # keep vardiff's view equal to what the miner has
            return False
        self.set_difficulty(new)
        return True

    # -- shares ----------------------------------------------------------------

    def _reject(self, req: p.Request, code: int, verdict: str, message: str) -> None:
        c = self.counters
        c.rejected += 1
        c.rejected_by_reason[verdict] = c.rejected_by_reason.get(verdict, 0) + 1
        self.write(p.error(req.id, code, message))

    def _submit(self, req: p.Request) -> None:
        now = self._now()
        received_ms = int(now * 1000)
        share_seq = self.host.next_share_seq()
        sub: p.SubmitRequest | None = None

        def refuse(code: int, verdict: str, message: str, job: Job | None = None,
                   version: int = 0, h: bytes = b"", share_diff: float = 0.0) -> None:
            self._record(received_ms, share_seq, sub, job, verdict, version, h, share_diff, self.difficulty, None)
            self._reject(req, code, verdict, message)

        try:
            sub = p.parse_submit(req.params)
        except p.Sv1ProtocolError as e:
            refuse(p.OTHER, "malformed", str(e))
            return
        en2, ntime, nonce = sub.extranonce2, sub.ntime, sub.nonce
        if not self.subscribed:
            refuse(p.NOT_SUBSCRIBED, "not-subscribed", "Not subscribed")
            return
        if sub.worker_name not in self.authorized:
            refuse(p.UNAUTHORIZED, "unauthorized", "Unauthorized worker")
            return
        sent = self.jobs.get(sub.sv1_job_id)
        if sent is None:
            if self.host.is_stale_job(sub.sv1_job_id):
                refuse(p.JOB_NOT_FOUND, "stale-share", "Job not found (stale)")
            else:
                refuse(p.JOB_NOT_FOUND, "invalid-job-id", "Job not found")
            return
        job = sent.job
        if len(en2) != self.extranonce2_size:
            refuse(p.OTHER, "bad-extranonce-size", f"extranonce2 must be {self.extranonce2_size} bytes", job)
            return
        # Version: BIP310 masked form first; Bitaxe's XOR-with-job form is tried too.
        candidates: tuple[int, ...]
        if sub.version_bits is None:
            candidates = (job.version,)
        else:
            mask = self.version_mask
            bits = sub.version_bits
            if mask is None or bits & ~mask & 0xFFFFFFFF or (not job.version_rolling_allowed and bits & mask):
                refuse(p.OTHER, "invalid-version-bits", "version bits outside the negotiated mask", job)
                return
            masked = (job.version & ~mask) | (bits & mask)
            xored = job.version ^ bits
            candidates = (masked,) if masked == xored else (masked, xored)
        target = sent.target
        if now - self._target_changed_at < TARGET_GRACE_S and self._prev_target > target:
            target = self._prev_target
        coinbase = job.coinb1 + self.extranonce1 + en2 + job.coinb2
        root = work.merkle_root(work.sha256d(coinbase), job.merkle_path)
        version = candidates[0]
        h = b""
        for version in candidates:
            h = work.sha256d(work.header(version, job.prev_hash, root, ntime, job.nbits, nonce))
            if work.hash_meets_target(h, target):
                break
        share_diff = work.share_difficulty(h)
        if not work.hash_meets_target(h, target):
            refuse(p.LOW_DIFFICULTY, "difficulty-too-low", "Low difficulty share", job, version, h, share_diff)
            return
        key = (job.channel_id, job.job_id, en2, ntime, nonce, version)
        if key in self._seen:
            refuse(p.DUPLICATE, "duplicate-share", "Duplicate share", job, version, h, share_diff)
            return
        self._seen[key] = None
        if len(self._seen) > MAX_SEEN_SHARES:
            self._seen.popitem(last=False)
        target_diff = work.difficulty_from_target(target)
        forwarded_to: tuple[int, int] | None = None
        if work.hash_meets_target(h, job.upstream_target):
            forwarded_to = self.host.forward_share(self, job, en2, ntime, nonce, version, share_seq, target_diff, h)
        c = self.counters
        c.accepted += 1
        c.last_share_at = now
        self.vardiff.record_share(now, target_diff)
        self.write(p.result(req.id, True))
        self._record(received_ms, share_seq, sub, job, VERDICT_ACCEPTED, version, h, share_diff, target_diff, forwarded_to)

    def _record(
        self,
        received_ms: int,
        share_seq: int,
        sub: p.SubmitRequest | None,
        job: Job | None,
        verdict: str,
        version: int,
        h: bytes,
        share_diff: float,
        target_diff: float,
        forwarded_to: tuple[int, int] | None,
    ) -> None:
        """Hand one ShareRecord to the share log; ``forwarded_to`` is (channel_id, sequence_number)."""
        if forwarded_to is not None:
            channel_id, sequence_number = forwarded_to
        else:
            channel_id, sequence_number = (job.channel_id if job else 0), 0
        self.host.record_share(
            ShareRecord(
                received_at_ms=received_ms,
                instance_id=self.instance_id,
                share_seq=share_seq,
                worker_name=(sub.worker_name if sub is not None else self.worker_name)[:255],
                client_id=self.client_id,
                channel_id=channel_id,
                sequence_number=sequence_number,
                sv1_job_id=(sub.sv1_job_id if sub is not None else "")[:64],
                job_id=job.job_id if job else 0,
                nonce=sub.nonce if sub is not None else 0,
                ntime=sub.ntime if sub is not None else 0,
                version=version,
                extranonce=(self.extranonce1 + (sub.extranonce2 if sub is not None else b"")).hex(),
                share_hash=h[::-1].hex(),
                target_difficulty=target_diff,
                share_difficulty=share_diff,
                verdict=verdict,
                forwarded=forwarded_to is not None,
            )
        )
