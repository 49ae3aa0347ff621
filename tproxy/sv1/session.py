"""One SV1 miner's session, sans-IO: method dispatch, difficulty, job tracking, share validation.

Input: one parsed request and the clock ``now`` (``handle``), or a job to
send (``send_job``); output: the bytes to write to the miner and, when
something happened that the rest of the proxy must hear, one typed event
(``tproxy.events.Share`` for every submit, ``MinerReady`` once the miner is
subscribed and authorized). The session never writes a socket, never reads a
clock and calls nobody: the hub (``tproxy.sv1.hub``) feeds it and routes what
it returns.

It keeps the miner's state (subscription, authorized workers, version mask,
difficulty, the jobs it was sent and the ids of the jobs retired since), its
own share counters, and validates every submitted share once, against the
target the miner had when the share's job was sent.

Difficulty follows SV1: a new difficulty applies to jobs sent after it. Each
``SentJob`` keeps the target in force when it was notified, so a miner that
keeps hashing an older job (cpuminer does) is judged at that job's difficulty,
and a retarget never changes a job the miner already has: it is re-issued
under a new sv1_job_id with a later ntime (``retarget_copy``), so firmware that
restarts its work on every notify (bfgminer, NerdMiner, Braiins OS) never
hashes the same content twice.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from sv2 import work
from sv2.work import DIFF1
from tproxy.events import (
    MAX_NTIME_AHEAD_S,
    VERDICT_ACCEPTED,
    VERDICT_NTIME_OUT_OF_RANGE,
    Job,
    MinerReady,
    Share,
    rolled_ntime,
)
from tproxy.sv1 import protocol as p
from tproxy.sv1.vardiff import Vardiff

MAX_JOBS_PER_MINER = 32  # default of downstream.max_past_jobs
MAX_SEEN_SHARES = 65_536
SUBSCRIPTION_ID = "ae6812eb4cd7735a302a8a9dd95cf71f"

SessionEvent = Share | MinerReady
Reply = tuple[bytes, SessionEvent | None]
"""What ``handle`` returns: the line(s) to write, and the event for the hub (or None)."""


@dataclass(slots=True)
class SentJob:
    job: Job
    target: int  # the miner's target when this job was notified: its shares are judged against it
    target_difficulty: float  # work.difficulty_from_target(target), computed once, not per share
    sent_at: float  # when it was notified (a re-issued copy rolls ntime past what firmware rolled since)


@dataclass(slots=True)
class ShareCounters:
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    pool_accepted: int = 0
    pool_rejected: int = 0
    pool_timed_out: int = 0  # forwarded, never answered by the pool
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
        honour_suggest_difficulty: bool = True,
        max_past_jobs: int = MAX_JOBS_PER_MINER,
        now: float,
    ) -> None:
        self.client_id = client_id
        self.peer = peer
        self.extranonce1 = extranonce1
        self.extranonce2_size = extranonce2_size
        self.server_version_mask = server_version_mask
        self.vardiff = vardiff
        self.honour_suggest_difficulty = honour_suggest_difficulty
        self.suggested = False  # the miner sent mining.suggest_difficulty (it wins over the difficulty memory)
        self.connected_at = now
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
        self.target_difficulty = work.difficulty_from_target(self.target)  # of the target, which is rounded
        self._difficulty_sent: float | None = None
        # the jobs a late share may still name (SRI's max_past_jobs); older ones are stale
        self.max_past_jobs = max_past_jobs
        self._max_retired = 4 * max_past_jobs  # a few chain tips' worth: stale shares come soon after
        self.jobs: OrderedDict[str, SentJob] = OrderedDict()
        self.latest: tuple[str, Job] | None = None
        # ids of jobs this miner was sent that are no longer valid: a share for one is stale
        self._retired: OrderedDict[str, None] = OrderedDict()
        # keyed by the upstream job: keepalive and retarget copies give one upstream job several SV1 ids
        self._seen: OrderedDict[tuple[int, int, bytes, int, int, int], None] = OrderedDict()
        self.counters = ShareCounters()

    @property
    def ready(self) -> bool:
        """Subscribed and authorized: the miner gets jobs."""
        return self.subscribed and bool(self.authorized)

    @property
    def greeted(self) -> bool:
        """The miner has sent at least one subscribe or successful authorize (it speaks SV1)."""
        return self.subscribed or bool(self.authorized)

    # -- dispatch ------------------------------------------------------------

    def handle(self, req: p.Request, now: float) -> Reply:
        """Answer one request. Bad input is answered with an error, never raised."""
        method = req.method
        try:
            if method == "mining.submit":
                return self.submit(req, now)
            if method == "mining.subscribe":
                return self._subscribe(req)
            if method == "mining.authorize":
                return self._authorize(req)
            if method == "mining.configure":
                return self._configure(req), None
            if method == "mining.extranonce.subscribe":
                self.wants_set_extranonce = True
                return p.result(req.id, True), None
            if method == "mining.suggest_difficulty":
                return self._suggest_difficulty(req, now), None
            if method == "mining.ping":
                return p.result(req.id, "pong"), None
            if method == "mining.get_transactions":
                return self._get_transactions(req), None
            # mining.multi_version, mining.capabilities...: answer "method not found" and keep the miner.
            return p.error(req.id, p.METHOD_NOT_FOUND, f"unknown method {method[:64]}"), None
        except p.Sv1ProtocolError as e:  # Sv1BadRequest: REPLY_ERROR (tproxy.errors)
            return p.error(req.id, e.code, str(e)), None

    # -- methods -------------------------------------------------------------

    def _configure(self, req: p.Request) -> bytes:
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
        return p.result(req.id, result)

    def _subscribe(self, req: p.Request) -> Reply:
        sub = p.parse_subscribe(req.params)
        self.user_agent = (sub.user_agent or "")[:128]
        self.subscribed = True
        line = p.result(req.id, p.subscribe_result(SUBSCRIPTION_ID, self.extranonce1, self.extranonce2_size))
        return line, (MinerReady(self.client_id, self.worker_name) if self.authorized else None)

    def _authorize(self, req: p.Request) -> Reply:
        auth = p.parse_authorize(req.params)
        name = auth.worker_name
        if not name:
            return p.error(req.id, p.UNAUTHORIZED, "empty worker name"), None
        first = not self.authorized
        self.authorized.add(name)
        if first:
            self.worker_name = name
        line = p.result(req.id, True)
        return line, (MinerReady(self.client_id, name) if first and self.subscribed else None)

    @staticmethod
    def _get_transactions(req: p.Request) -> bytes:
        # The SV2 pool sends the coinbase and the merkle path, never the block's
        # transactions, so there is no list to give. bfgminer (the one firmware that
        # asks, after each notify with a merkle branch) reads any non-list result as
        # "this pool does not share transactions" and mines on; an empty list would
        # instead be checked against the merkle branch and warned about on every job.
        return p.error(req.id, p.OTHER, "transactions not available: the pool sends only the merkle path")

    def _suggest_difficulty(self, req: p.Request, now: float) -> bytes:
        d = p.parse_suggest_difficulty(req.params)
        self.suggested = True
        if self.honour_suggest_difficulty and not self.counters.accepted:
            new = self.vardiff.suggest(d)
            if new != self.difficulty:
                self.set_difficulty(new, now)
        return p.result(req.id, True)

    # -- difficulty and jobs -------------------------------------------------------

    def set_difficulty(self, difficulty: float, now: float) -> None:
        """Change the miner's difficulty; it is sent right before the next notify and applies
        to the jobs notified from then on (jobs the miner already has keep their target)."""
        self.difficulty = difficulty
        self.target = work.target_from_difficulty(difficulty)
        self.target_difficulty = work.difficulty_from_target(self.target)
        self.vardiff.difficulty = difficulty

    def apply_floor(self, floor: float, now: float) -> None:
        """Raise the miner to ``floor`` if it is below (takes effect with the next notify)."""
        if self.difficulty < floor:
            self.set_difficulty(floor, now)

    def send_job(self, sv1_job_id: str, job: Job, notify_line: bytes, *, clean: bool, now: float) -> bytes:
        """Record a job as sent; returns the bytes to write: the notify, preceded by
        set_version_mask / set_difficulty when those changed (the common case is
        ``notify_line`` itself, shared by every miner).

        Returns b"" (nothing sent, nothing recorded) for a non-clean copy of the
        upstream job the miner is on whose ntime is not past the miner's copy: after
        a retarget re-issue the miner may already hold that content, and firmware
        that restarts on every notify would hash it again.
        """
        latest = self.latest
        if not clean and latest is not None:
            held = latest[1]
            if held.job_id == job.job_id and held.channel_id == job.channel_id and job.ntime <= held.ntime:
                return b""
        prefix = b""
        if self.version_mask is not None:
            # A pool may forbid version rolling for a job; tell the miner before the
            # notify instead of rejecting every rolled share it would send.
            effective = self.version_mask if job.version_rolling_allowed else 0
            current = self.version_mask if self._mask_sent is None else self._mask_sent
            if effective != current:
                prefix += p.set_version_mask(effective)
                self._mask_sent = effective
        if self._difficulty_sent != self.difficulty:
            prefix += p.set_difficulty(self.difficulty)
            self._difficulty_sent = self.difficulty
        jobs = self.jobs
        if clean:
            self._retire_all()
        if self.latest is None and not self.counters.accepted:
            # Time without work is not the miner's silence: start vardiff's clock now.
            self.vardiff.reset(now)
        jobs[sv1_job_id] = SentJob(job, self.target, self.target_difficulty, now)
        jobs.move_to_end(sv1_job_id)
        while len(jobs) > self.max_past_jobs:
            self._retire(jobs.popitem(last=False)[0])
        self.latest = (sv1_job_id, job)
        return prefix + notify_line if prefix else notify_line

    def retarget_copy(self, now: float) -> Job | None:
        """After a retarget: the miner's current work with ntime rolled forward, to notify
        under a new sv1_job_id (clean_jobs false) right behind the new set_difficulty.

        None when there is nothing to re-issue or the roll would pass now + 2 h; the new
        difficulty then goes out with the pool's next job. The copy is new content (a
        later ntime than any copy of that upstream job this miner was sent, and past
        what its firmware may have rolled to since); the job it replaces keeps its own
        sv1_job_id and target, so shares still in flight for it are judged as before.
        """
        latest = self.latest
        if latest is None:
            return None
        sent = self.jobs.get(latest[0])
        if sent is None:
            return None
        ntime = rolled_ntime(sent.job.ntime, sent.sent_at, now)
        if ntime is None:
            return None
        return replace(sent.job, ntime=ntime, clean=False)

    def forget_jobs(self) -> None:
        """Every job this miner holds is stale now (upstream lost, channel closed or reset)."""
        self._retire_all()
        self.latest = None

    def _retire_all(self) -> None:
        for sv1_job_id in self.jobs:
            self._retire(sv1_job_id)
        self.jobs.clear()
        self._seen.clear()

    def _retire(self, sv1_job_id: str) -> None:
        retired = self._retired
        retired[sv1_job_id] = None
        if len(retired) > self._max_retired:
            retired.popitem(last=False)

    def is_retired(self, sv1_job_id: str) -> bool:
        return sv1_job_id in self._retired

    def maybe_retarget(self, now: float, floor: float) -> bool:
        """Run vardiff (never below ``floor``); True if the difficulty changed (the caller re-issues
        the miner's work with ``retarget_copy``, or lets the next job carry the new difficulty)."""
        new = self.vardiff.maybe_retarget(now)
        if new is None:
            return False
        new = max(new, floor)
        if new == self.difficulty:
            self.vardiff.difficulty = new  # keep vardiff's view equal to what the miner has
            return False
        self.set_difficulty(new, now)
        return True

    def hashrate(self, now: float) -> float:
        """Estimated hashrate as of ``now`` (never before the last share vardiff saw)."""
        return self.vardiff.estimated_hashrate(max(now, self.vardiff.last_now))

    def on_verdict(self, accepted: bool, *, timed_out: bool = False) -> None:
        """The pool's answer for one of this miner's forwarded shares (or its absence: ``timed_out``)."""
        if accepted:
            self.counters.pool_accepted += 1
        elif timed_out:
            self.counters.pool_timed_out += 1
        else:
            self.counters.pool_rejected += 1

    # -- shares ----------------------------------------------------------------

    def _refuse(
        self, req: p.Request, received_ms: int, sub: p.SubmitRequest | None, code: int, verdict: str, message: str,
        job: Job | None = None, version: int = 0, h: bytes = b"", share_diff: float = 0.0,
    ) -> tuple[bytes, Share]:
        c = self.counters
        c.rejected += 1
        c.rejected_by_reason[verdict] = c.rejected_by_reason.get(verdict, 0) + 1
        if sub is None:
            share = Share(received_ms, self.client_id, self.worker_name, "", job, self.extranonce1, b"", 0, 0,
                          version, h, share_diff, self.difficulty, verdict)
        else:
            share = Share(received_ms, self.client_id, sub.worker_name, sub.sv1_job_id, job, self.extranonce1,
                          sub.extranonce2, sub.ntime, sub.nonce, version, h, share_diff, self.difficulty, verdict)
        return p.error(req.id, code, message), share

    def submit(self, req: p.Request, now: float) -> tuple[bytes, Share]:
        """Judge one ``mining.submit``: the reply line and its ``Share`` (every submit makes one).

        This is the share hot path (the hub calls it directly for every submit), so
        the hashing is written out with the ``sv2.work`` helpers for known-valid
        fields: ``job.prev_hash`` is a 32-byte SV2 U256, ntime/nonce/version bits
        are U32 (``parse_submit`` checked them) and the job version is a U32. The
        hash is read as an integer once, for the target check and the difficulty.
        tests/tproxy/test_session.py compares every verdict with the generic
        ``sv2.work`` functions on random shares.
        """
        received_ms = int(now * 1000)
        try:
            sub = p.parse_submit(req.params)
        except p.Sv1ProtocolError as e:
            return self._refuse(req, received_ms, None, p.OTHER, "malformed", str(e))
        worker_name, sv1_job_id, en2, ntime, nonce, bits = sub
        if not self.subscribed:
            return self._refuse(req, received_ms, sub, p.NOT_SUBSCRIBED, "not-subscribed", "Not subscribed")
        if worker_name not in self.authorized:
            return self._refuse(req, received_ms, sub, p.UNAUTHORIZED, "unauthorized", "Unauthorized worker")
        sent = self.jobs.get(sv1_job_id)
        if sent is None:
            if sv1_job_id in self._retired:
                return self._refuse(req, received_ms, sub, p.JOB_NOT_FOUND, "stale-share", "Job not found (stale)")
            return self._refuse(req, received_ms, sub, p.JOB_NOT_FOUND, "invalid-job-id", "Job not found")
        job = sent.job
        if len(en2) != self.extranonce2_size:
            return self._refuse(req, received_ms, sub, p.OTHER, "bad-extranonce-size",
                                f"extranonce2 must be {self.extranonce2_size} bytes", job)
        # Version: BIP310 masked form first; Bitaxe's XOR-with-job form is tried too.
        candidates: tuple[int, ...]
        if bits is None:
            candidates = (job.version,)
        else:
            mask = self.version_mask
            if mask is None or bits & ~mask & 0xFFFFFFFF or (not job.version_rolling_allowed and bits & mask):
                return self._refuse(req, received_ms, sub, p.OTHER, "invalid-version-bits",
                                    "version bits outside the negotiated mask", job)
            masked = (job.version & ~mask) | (bits & mask)
            xored = job.version ^ bits
            candidates = (masked,) if masked == xored else (masked, xored)
        if ntime < job.ntime or ntime > now + MAX_NTIME_AHEAD_S:
            # The pool would reject it (Bitcoin's time rules): say why here, never forward it.
            return self._refuse(req, received_ms, sub, p.OTHER, VERDICT_NTIME_OUT_OF_RANGE,
                                f"ntime {ntime:08x} out of range: before the job's {job.ntime:08x} "
                                "or more than 2 hours ahead", job)
        target = sent.target
        root = work.coinbase_merkle_root(job.coinb1 + self.extranonce1 + en2 + job.coinb2, job.merkle_path)
        prev_hash, nbits = job.prev_hash, job.nbits
        version = h_int = 0
        h = b""
        for version in candidates:
            h = work.header_hash_unchecked(version, prev_hash, root, ntime, nbits, nonce)
            h_int = int.from_bytes(h, "little")
            if h_int <= target:  # work.hash_meets_target
                break
        share_diff = DIFF1 / h_int if h_int else math.inf  # work.share_difficulty
        if h_int > target:
            return self._refuse(req, received_ms, sub, p.LOW_DIFFICULTY, "difficulty-too-low",
                                "Low difficulty share", job, version, h, share_diff)
        key = (job.channel_id, job.job_id, en2, ntime, nonce, version)
        seen = self._seen
        n = len(seen)
        seen[key] = None  # a key already there keeps its place and the length: a duplicate
        if len(seen) == n:
            return self._refuse(req, received_ms, sub, p.DUPLICATE, "duplicate-share", "Duplicate share",
                                job, version, h, share_diff)
        if n >= MAX_SEEN_SHARES:
            seen.popitem(last=False)
        target_diff = sent.target_difficulty
        c = self.counters
        c.accepted += 1
        c.last_share_at = now
        self.vardiff.record_share(now, target_diff)
        share = Share(received_ms, self.client_id, worker_name, sv1_job_id, job, self.extranonce1, en2,
                      ntime, nonce, version, h, share_diff, target_diff, VERDICT_ACCEPTED)
        return p.result(req.id, True), share
