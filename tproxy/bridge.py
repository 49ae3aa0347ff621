"""The channel manager between SV1 miners and the SV2 upstream.

Owns: the upstream channels (one aggregated channel, or one per miner), the
extranonce1 allocation, turning upstream jobs into ``mining.notify`` lines
(rendered once per job, not once per miner), forwarding validated shares as
SubmitSharesExtended with per-channel sequence numbers, attributing the
pool's SubmitShares.Success/Error to the miner that sent each share, the
periodic work (vardiff, UpdateChannel, keepalive jobs, the outage watchdog),
and the hand-off of every share to the share log.

Upstream loss does not disconnect miners: their jobs become stale, and fresh
jobs arrive once the supervisor has reconnected (to the same or the next
upstream). Because extranonce1 is local (see ``tproxy.channel``), a miner's
extranonce1 survives the switch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from sv2 import work
from sv2.connection import AnyMessage
from sv2.messages import (
    CloseChannel,
    NewExtendedMiningJob,
    OpenExtendedMiningChannelSuccess,
    SetExtranoncePrefix,
    SetGroupChannel,
    SetNewPrevHash,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesSuccess,
    UpdateChannel,
    UpdateChannelError,
)
from tproxy.channel import ChannelLayoutError, ChannelState, Job
from tproxy.config import Settings
from tproxy.errors import UpstreamError
from tproxy.shares.record import VERDICT_ACCEPTED, PoolVerdictRecord, ShareRecord
from tproxy.sv1 import protocol as p
from tproxy.sv1.session import MAX_JOBS_PER_MINER, MinerSession
from tproxy.sv1.vardiff import Vardiff
from tproxy.upstream import UpstreamConnection

log = logging.getLogger("tproxy.bridge")

MAX_STALE_JOB_IDS = 4096
MAX_ISSUED_PER_CHANNEL = 2 * MAX_JOBS_PER_MINER
MAX_PENDING_VERDICTS = 100_000
TICK_S = 1.0
UPDATE_CHANNEL_MIN_INTERVAL_S = 10.0
UPDATE_CHANNEL_THRESHOLD = 0.1
KEEPALIVE_MAX_NTIME_ROLL = 7200


class ShareSink(Protocol):
    """Where share records go (tproxy.shares.ShareLog). Must never block."""

    def submit(self, record: ShareRecord) -> None: ...

    def submit_pool_verdict(self, record: PoolVerdictRecord) -> None: ...


@dataclass(slots=True)
class PendingShare:
    client_id: int
    worker_name: str
    share_seq: int
    target_difficulty: float


@dataclass(slots=True)
class ChannelStats:
    """Counters of one upstream channel, for monitoring."""

    user_identity: str
    nominal_hashrate: float = 0.0
    shares_submitted: int = 0
    shares_acknowledged: int = 0
    shares_rejected: int = 0
    shares_rejected_by_reason: dict[str, int] = field(default_factory=dict)
    acknowledged_work_sum: int = 0
    validated_work_sum: float = 0.0
    best_diff: float = 0.0
    blocks_found: int = 0


@dataclass(slots=True)
class LiveChannel:
    state: ChannelState
    up: UpstreamConnection
    stats: ChannelStats
    pending: OrderedDict[int, PendingShare] = field(default_factory=OrderedDict)
    last_job_at: float = 0.0
    last_update_sent: float = 0.0
    last_nominal_sent: float = 0.0
    owner: int | None = None  # client_id in non-aggregated mode


class Bridge:
    """Wires SV1 sessions to upstream channels. Single event loop, no locks."""

    def __init__(
        self,
        settings: Settings,
        share_sink: ShareSink | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.share_sink = share_sink
        self._now = now
        ds = settings.downstream
        self.extranonce1_size = ds.extranonce1_size
        self.extranonce2_size = ds.extranonce2_size
        self.aggregated = settings.proxy.aggregate_channels
        self.sessions: dict[int, MinerSession] = {}
        self._closers: dict[int, Callable[[], None]] = {}
        self._client_ids = itertools.count(1)
        # Fresh values first, then the longest-freed: a miner that reconnects must not get
        # back an extranonce1 whose shares (same extranonce2 and nonces) the pool has seen.
        self._free_en1: collections.deque[int] = collections.deque()
        self._next_en1 = 0
        self._share_seq = itertools.count(1)
        self._sv1_job_ids = itertools.count(1)
        self.up: UpstreamConnection | None = None
        self.channels: dict[int, LiveChannel] = {}  # channel_id -> channel
        self._route: dict[int, list[LiveChannel]] = {}  # channel or group id -> channels
        self._latest_job: dict[int, tuple[str, Job, bytes, bytes]] = {}  # channel_id -> latest
        # channel_id -> every SV1 job id issued since that channel's last clean job
        self._issued: dict[int, list[str]] = {}
        self._stale_ids: OrderedDict[str, None] = OrderedDict()
        self._opening: dict[int, asyncio.Task[None]] = {}  # client_id -> channel open task
        self.started_at = now()
        self.outage_since: float | None = now()
        self.outage_disconnects = 0
        self.shares_forwarded = 0
        self._tick_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._tick_task = asyncio.create_task(self._tick_loop(), name="bridge-tick")

    async def stop(self) -> None:
        tasks = [t for t in (self._tick_task, *self._opening.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    # ------------------------------------------------------------------ SV1 side

    def _alloc_extranonce1(self) -> bytes | None:
        if self._next_en1 < 256**self.extranonce1_size:
            idx = self._next_en1
            self._next_en1 += 1
        elif self._free_en1:
            idx = self._free_en1.popleft()
        else:
            return None
        return idx.to_bytes(self.extranonce1_size, "big")

    def open_session(
        self, peer: str, write: Callable[[bytes], None], close: Callable[[], None]
    ) -> MinerSession | None:
        en1 = self._alloc_extranonce1()
        if en1 is None:
            log.warning("refusing %s: extranonce1 space exhausted", peer)
            return None
        d = self.settings.difficulty
        client_id = next(self._client_ids)
        session = MinerSession(
            client_id=client_id,
            peer=peer,
            extranonce1=en1,
            extranonce2_size=self.extranonce2_size,
            server_version_mask=self.settings.downstream.version_rolling_mask_int,
            vardiff=Vardiff(
                shares_per_minute=d.shares_per_minute,
                start_difficulty=d.start_difficulty,
                min_difficulty=d.min_difficulty,
                max_difficulty=d.max_difficulty,
                retarget_interval_s=d.retarget_interval_s,
                now=self._now(),
            ),
            host=self,
            write=write,
            instance_id=self.settings.proxy.instance_id,
            honour_suggest_difficulty=d.honour_suggest_difficulty,
            now=self._now,
        )
        self.sessions[client_id] = session
        self._closers[client_id] = close
        return session

    def close_session(self, session: MinerSession) -> None:
        self.sessions.pop(session.client_id, None)
        self._closers.pop(session.client_id, None)
        self._free_en1.append(int.from_bytes(session.extranonce1, "big"))
        task = self._opening.pop(session.client_id, None)
        if task is not None:
            task.cancel()
        if not self.aggregated and session.channel_id is not None:
            ch = self.channels.get(session.channel_id)
            if ch is not None:
                with contextlib.suppress(UpstreamError):
                    ch.up.send(CloseChannel(channel_id=ch.state.channel_id, reason_code="miner-disconnected"))
                self._drop_channel(ch)

    def on_authorized(self, session: MinerSession) -> None:
        """The miner is subscribed and authorized: give it work (or open its channel)."""
        if self.aggregated:
            ch = self._aggregated_channel()
            if ch is not None:
                session.channel_id = ch.state.channel_id
                self._send_latest(session, ch)
            return
        if self.up is not None and session.client_id not in self._opening and session.channel_id is None:
            self._start_open_for(session, self.up)

    def is_stale_job(self, sv1_job_id: str) -> bool:
        return sv1_job_id in self._stale_ids

    def next_share_seq(self) -> int:
        return next(self._share_seq)

    def record_share(self, record: ShareRecord) -> None:
        if self.share_sink is not None:
            self.share_sink.submit(record)

    def difficulty_floor(self, session: MinerSession) -> float:
        floor = self.settings.difficulty.min_difficulty
        if self.aggregated or self.settings.difficulty.allow_below_upstream:
            return floor
        ch = self.channels.get(session.channel_id) if session.channel_id is not None else None
        if ch is None:
            return floor
        return max(floor, work.difficulty_from_target(ch.state.target))

    def _apply_floor(self, session: MinerSession) -> None:
        """Raise a miner below its floor (takes effect with the next notify)."""
        floor = self.difficulty_floor(session)
        if session.difficulty < floor:
            session.set_difficulty(floor)

    def forward_share(
        self, session: MinerSession, job: Job, extranonce2: bytes, ntime: int, nonce: int, version: int,
        share_seq: int, target_difficulty: float, share_hash: bytes,
    ) -> tuple[int, int] | None:
        ch = self.channels.get(job.channel_id)
        if ch is None or ch.up.closed:
            return None
        seq = ch.state.take_sequence_number()
        msg = SubmitSharesExtended(
            channel_id=ch.state.channel_id,
            sequence_number=seq,
            job_id=job.job_id,
            nonce=nonce,
            ntime=ntime,
            version=version,
            extranonce=job.pad + session.extranonce1 + extranonce2,
        )
        try:
            ch.up.send(msg)
        except UpstreamError:
            return None
        ch.pending[seq] = PendingShare(session.client_id, session.worker_name, share_seq, target_difficulty)
        if len(ch.pending) > MAX_PENDING_VERDICTS:
            ch.pending.popitem(last=False)
        stats = ch.stats
        stats.shares_submitted += 1
        stats.validated_work_sum += target_difficulty
        stats.best_diff = max(stats.best_diff, work.share_difficulty(share_hash))
        if work.hash_meets_target(share_hash, work.target_from_nbits(job.nbits)):
            stats.blocks_found += 1
            log.warning("block candidate from worker %r: %s", session.worker_name, share_hash[::-1].hex())
        self.shares_forwarded += 1
        return ch.state.channel_id, seq

    # ------------------------------------------------------------------ jobs

    def _aggregated_channel(self) -> LiveChannel | None:
        for ch in self.channels.values():
            return ch
        return None

    def _members(self, ch: LiveChannel) -> list[MinerSession]:
        if self.aggregated:
            return [s for s in self.sessions.values() if s.subscribed and s.authorized]
        s = self.sessions.get(ch.owner) if ch.owner is not None else None
        return [s] if s is not None else []

    def _render(self, sv1_job_id: str, job: Job) -> tuple[bytes, bytes]:
        args = (
            sv1_job_id,
            work.sv1_prevhash_from_sv2(job.prev_hash),
            job.coinb1.hex(),
            job.coinb2.hex(),
            [n.hex() for n in job.merkle_path],
            job.version,
            job.nbits,
            job.ntime,
        )
        return p.notify(*args, clean_jobs=False), p.notify(*args, clean_jobs=True)

    def _publish(self, ch: LiveChannel, job: Job) -> None:
        sv1_job_id = format(next(self._sv1_job_ids), "x")
        plain, clean = self._render(sv1_job_id, job)
        cid = ch.state.channel_id
        if job.clean:
            self._retire_jobs(cid)
        issued = self._issued.setdefault(cid, [])
        issued.append(sv1_job_id)
        if len(issued) > MAX_ISSUED_PER_CHANNEL:
            # older than any miner keeps (MAX_JOBS_PER_MINER): a share for it is stale
            self._mark_stale(issued.pop(0))
        self._latest_job[cid] = (sv1_job_id, job, plain, clean)
        ch.last_job_at = self._now()
        line = clean if job.clean else plain
        for s in self._members(ch):
            s.send_job(sv1_job_id, job, line, clean=job.clean)

    def _send_latest(self, session: MinerSession, ch: LiveChannel) -> None:
        latest = self._latest_job.get(ch.state.channel_id)
        if latest is not None:
            sv1_job_id, job, _plain, clean = latest
            session.send_job(sv1_job_id, job, clean, clean=True)

    def _retire_jobs(self, channel_id: int) -> None:
        """Every job this channel issued is stale from now on."""
        for sv1_job_id in self._issued.pop(channel_id, ()):
            self._mark_stale(sv1_job_id)

    def _mark_stale(self, sv1_job_id: str) -> None:
        self._stale_ids[sv1_job_id] = None
        while len(self._stale_ids) > MAX_STALE_JOB_IDS:
            self._stale_ids.popitem(last=False)

    # ------------------------------------------------------------------ upstream events

    async def on_upstream_up(self, up: UpstreamConnection) -> None:
        self.up = up
        if self.aggregated:
            await self._open_channel(up, owner=None)
        else:
            for s in list(self.sessions.values()):
                if s.subscribed and s.authorized:
                    self._start_open_for(s, up)
        self.outage_since = None

    def _user_identity(self, up: UpstreamConnection, session: MinerSession | None) -> str:
        base = up.endpoint.settings.user_identity
        if session is None:
            return base or self.settings.proxy.instance_id
        return f"{base}.{session.worker_name}" if base else session.worker_name

    def _nominal_hashrate(self, sessions: list[MinerSession]) -> float:
        now = self._now()
        total = 0.0
        for s in sessions:
            est = s.vardiff.estimated_hashrate(now)
            total += est if est > 0 else self.settings.proxy.nominal_hashrate_per_miner
        return total

    async def _open_channel(self, up: UpstreamConnection, owner: MinerSession | None) -> LiveChannel:
        identity = self._user_identity(up, owner)
        sessions = [owner] if owner is not None else [s for s in self.sessions.values() if s.authorized]
        nominal = self._nominal_hashrate(sessions)
        max_target = work.target_to_bytes(work.target_from_difficulty(self.settings.difficulty.min_difficulty))
        holder: list[LiveChannel] = []

        def register(msg: AnyMessage) -> None:
            if not isinstance(msg, OpenExtendedMiningChannelSuccess):
                return
            try:
                state = ChannelState.from_open_success(
                    msg, extranonce1_size=self.extranonce1_size, extranonce2_size=self.extranonce2_size
                )
            except ChannelLayoutError as e:
                raise UpstreamError(str(e)) from e
            ch = LiveChannel(state, up, ChannelStats(identity, nominal), owner=owner.client_id if owner else None)
            ch.last_nominal_sent = nominal
            ch.last_update_sent = self._now()
            self.channels[state.channel_id] = ch
            self._route.setdefault(state.channel_id, []).append(ch)
            if state.group_channel_id != state.channel_id:
                self._route.setdefault(state.group_channel_id, []).append(ch)
            holder.append(ch)

        await up.open_extended_channel(
            user_identity=identity,
            nominal_hash_rate=nominal,
            max_target=max_target,
            min_extranonce_size=self.extranonce1_size + self.extranonce2_size,
            on_reply=register,
        )
        ch = holder[0]
        log.info(
            "opened channel %d (%s) extranonce_size=%d prefix=%s",
            ch.state.channel_id, identity, ch.state.extranonce_size, ch.state.extranonce_prefix.hex(),
        )
        if owner is not None:
            owner.channel_id = ch.state.channel_id
            self._apply_floor(owner)
            self._send_latest(owner, ch)
        else:
            for s in self._members(ch):
                s.channel_id = ch.state.channel_id
        return ch

    def _start_open_for(self, session: MinerSession, up: UpstreamConnection) -> None:
        async def run() -> None:
            try:
                await self._open_channel(up, session)
            except UpstreamError as e:
                log.warning("client %d: could not open its channel: %s", session.client_id, e)
            finally:
                self._opening.pop(session.client_id, None)

        self._opening[session.client_id] = asyncio.create_task(run(), name=f"open-channel-{session.client_id}")

    def _drop_channel(self, ch: LiveChannel) -> list[MinerSession]:
        """Forget a channel; its miners lose their jobs and channel. Returns those miners."""
        cid = ch.state.channel_id
        self.channels.pop(cid, None)
        for key in (cid, ch.state.group_channel_id):
            lst = self._route.get(key)
            if lst is not None:
                with contextlib.suppress(ValueError):
                    lst.remove(ch)
                if not lst:
                    self._route.pop(key, None)
        members = self._invalidate_channel_jobs(ch)
        for s in members:
            s.channel_id = None
        return members

    def on_upstream_lost(self, up: UpstreamConnection, reason: str) -> None:
        if self.up is up:
            self.up = None
        for ch in [c for c in self.channels.values() if c.up is up]:
            self._drop_channel(ch)
        for t in list(self._opening.values()):
            t.cancel()
        self._opening.clear()
        if self.outage_since is None:
            self.outage_since = self._now()

    def on_upstream_message(self, up: UpstreamConnection, msg: AnyMessage) -> None:
        cid = getattr(msg, "channel_id", None)
        targets = self._route.get(cid, []) if cid is not None else []
        if isinstance(msg, NewExtendedMiningJob):
            for ch in list(targets):
                job = ch.state.on_new_extended_job(msg)
                if job is not None:
                    self._publish(ch, job)
        elif isinstance(msg, SetNewPrevHash):
            for ch in list(targets):
                job = ch.state.on_set_new_prev_hash(msg)
                if job is None:
                    log.warning("SetNewPrevHash for unknown future job %d on channel %d", msg.job_id, ch.state.channel_id)
                    self._invalidate_channel_jobs(ch)
                else:
                    self._publish(ch, job)
        elif isinstance(msg, SetTarget):
            for ch in targets:
                ch.state.on_set_target(msg)
                for s in self._members(ch):
                    self._apply_floor(s)
        elif isinstance(msg, SubmitSharesSuccess):
            for ch in targets:
                self._on_success(ch, msg)
        elif isinstance(msg, SubmitSharesError):
            for ch in targets:
                self._on_error(ch, msg)
        elif isinstance(msg, SetExtranoncePrefix):
            # The prefix lives in coinb1, so miners keep their extranonce1: the
            # next job simply carries the new coinb1.
            for ch in targets:
                ch.state.on_set_extranonce_prefix(msg)
        elif isinstance(msg, CloseChannel):
            for ch in list(targets):
                log.warning("pool closed channel %d: %s", ch.state.channel_id, msg.reason_code)
                members = self._drop_channel(ch)
                if self.aggregated:
                    # Our only channel is gone: make the supervisor reconnect.
                    up.close()
                else:
                    for s in members:
                        if self.up is not None:
                            self._start_open_for(s, self.up)
        elif isinstance(msg, UpdateChannelError):
            log.warning("pool refused UpdateChannel on %s: %s", cid, msg.error_code)
        elif isinstance(msg, SetGroupChannel):
            for member in msg.channel_ids:
                for ch in self._route.get(member, []):
                    if ch not in self._route.setdefault(msg.group_channel_id, []):
                        self._route[msg.group_channel_id].append(ch)
        else:
            log.info("ignoring %s from %s", type(msg).__name__, up.endpoint)

    def _invalidate_channel_jobs(self, ch: LiveChannel) -> list[MinerSession]:
        """The channel's jobs are all stale; its miners drop theirs. Returns the miners."""
        self._latest_job.pop(ch.state.channel_id, None)
        self._retire_jobs(ch.state.channel_id)
        members = self._members(ch)
        for s in members:
            s.forget_jobs()
        return members

    def _on_success(self, ch: LiveChannel, msg: SubmitSharesSuccess) -> None:
        ch.stats.shares_acknowledged += msg.new_submits_accepted_count
        ch.stats.acknowledged_work_sum += msg.new_shares_sum
        last = msg.last_sequence_number
        if last not in ch.pending:
            return
        now_ms = int(self._now() * 1000)
        while ch.pending:
            seq, pend = ch.pending.popitem(last=False)
            self._verdict(ch, seq, pend, VERDICT_ACCEPTED, now_ms)
            if seq == last:
                break

    def _on_error(self, ch: LiveChannel, msg: SubmitSharesError) -> None:
        code = msg.error_code
        ch.stats.shares_rejected += 1
        ch.stats.shares_rejected_by_reason[code] = ch.stats.shares_rejected_by_reason.get(code, 0) + 1
        pend = ch.pending.pop(msg.sequence_number, None)
        if pend is None:
            log.warning("pool rejected unknown sequence %d on channel %d: %s", msg.sequence_number, ch.state.channel_id, code)
            return
        log.warning(
            "pool rejected share seq=%d of worker %r (client %d) on channel %d: %s",
            msg.sequence_number, pend.worker_name, pend.client_id, ch.state.channel_id, code,
        )
        self._verdict(ch, msg.sequence_number, pend, code, int(self._now() * 1000))

    def _verdict(self, ch: LiveChannel, seq: int, pend: PendingShare, verdict: str, now_ms: int) -> None:
        s = self.sessions.get(pend.client_id)
        if s is not None:
            if verdict == VERDICT_ACCEPTED:
                s.counters.pool_accepted += 1
            else:
                s.counters.pool_rejected += 1
        if self.share_sink is not None:
            self.share_sink.submit_pool_verdict(
                PoolVerdictRecord(
                    received_at_ms=now_ms,
                    instance_id=self.settings.proxy.instance_id,
                    channel_id=ch.state.channel_id,
                    sequence_number=seq,
                    share_seq=pend.share_seq,
                    pool_verdict=verdict,
                )
            )

    # ------------------------------------------------------------------ periodic work

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
            except Exception:  # a bug in periodic work must not stop it for good
                log.exception("bridge tick failed")

    def tick(self) -> None:
        now = self._now()
        if self.settings.difficulty.vardiff:
            for s in list(self.sessions.values()):
                if s.latest is not None and s.maybe_retarget():
                    sv1_job_id, job = s.latest
                    latest = self._latest_job.get(job.channel_id)
                    if latest is not None and latest[0] == sv1_job_id:
                        s.send_job(sv1_job_id, job, latest[2], clean=False)
        for ch in list(self.channels.values()):
            self._maybe_update_channel(ch, now)
            self._maybe_keepalive(ch, now)
        outage = self.outage_since
        if outage is not None and self.sessions and now - outage >= self.settings.proxy.outage_reconnect_after_s:
            self._disconnect_all("upstream outage outlasted outage_reconnect_after_s")
            self.outage_since = now

    def _maybe_update_channel(self, ch: LiveChannel, now: float) -> None:
        if now - ch.last_update_sent < UPDATE_CHANNEL_MIN_INTERVAL_S:
            return
        members = self._members(ch)
        nominal = self._nominal_hashrate(members)
        last = ch.last_nominal_sent
        if last > 0 and abs(nominal - last) / last < UPDATE_CHANNEL_THRESHOLD:
            return
        if last == 0 and nominal == 0:
            return
        hardest = min((s.target for s in members), default=work.target_from_difficulty(self.settings.difficulty.min_difficulty))
        try:
            ch.up.send(
                UpdateChannel(
                    channel_id=ch.state.channel_id,
                    nominal_hash_rate=nominal,
                    maximum_target=work.target_to_bytes(hardest),
                )
            )
        except UpstreamError:
            return
        ch.last_update_sent = now
        ch.last_nominal_sent = nominal
        ch.stats.nominal_hashrate = nominal

    def _maybe_keepalive(self, ch: LiveChannel, now: float) -> None:
        interval = self.settings.proxy.job_keepalive_interval_s
        if interval <= 0 or now - ch.last_job_at < interval:
            return
        latest = self._latest_job.get(ch.state.channel_id)
        if latest is None:
            return
        _, job, _, _ = latest
        roll = min(int(now - ch.last_job_at), KEEPALIVE_MAX_NTIME_ROLL)
        self._publish(ch, replace(job, ntime=job.ntime + roll, clean=False))

    def _disconnect_all(self, reason: str) -> None:
        log.warning("disconnecting %d miners: %s", len(self.sessions), reason)
        for client_id, close in list(self._closers.items()):
            self.outage_disconnects += 1
            with contextlib.suppress(Exception):
                close()
            self._closers.pop(client_id, None)
