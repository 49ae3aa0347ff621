"""The SV1 hub: every miner session, and the SV1 side of the seam.

Owns the sessions (one ``Miner`` per connection: its ``MinerSession``, the
server's write/close callables, the channel serving it), extranonce1
allocation, job fan-out (a ``Job`` from upstream is rendered into a notify
line once and the same bytes go to every miner of its channel), vardiff
ticks, the outage watchdog (miners are disconnected once an upstream outage
outlasts ``proxy.outage_reconnect_after_s``), and the hand-off of every
``Share`` to the upstream side (``UpstreamSide.forward``) and to the share
log, and of every ``Verdict`` to the miner's counters and the share log.

It implements ``tproxy.events.DownstreamSide`` for the channel manager and
is driven by ``tproxy.sv1.server`` (``open`` / ``handle`` / ``close``) and by
``tick``. It never imports ``tproxy.upstream``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from sv2 import work
from tproxy.config import Settings
from tproxy.events import (
    VERDICT_ACCEPTED,
    VERDICT_TIMEOUT,
    ChannelAssigned,
    DifficultyFloor,
    Job,
    JobsRetired,
    MinerEvent,
    MinerGone,
    MinerReady,
    Share,
    UpstreamDown,
    UpstreamEvent,
    UpstreamSide,
    UpstreamUp,
    Verdict,
)
from tproxy.shares.record import PoolVerdictRecord, ShareRecord
from tproxy.sv1 import protocol as p
from tproxy.sv1.session import MinerSession
from tproxy.sv1.vardiff import Vardiff
from tproxy.sv1.worker_events import REASON_CLOSED, EventSink, WorkerEvents

log = logging.getLogger("tproxy.sv1.hub")


class ShareSink(Protocol):
    """Where share records go (tproxy.shares.ShareLog). Must never block."""

    def submit(self, record: ShareRecord) -> None: ...

    def submit_pool_verdict(self, record: PoolVerdictRecord) -> None: ...

    def answer(self, miner: object, write: Callable[[bytes], None], line: bytes, record: ShareRecord | None) -> None:
        """Write ``line`` (the reply to one request of ``miner``) and take ``record`` (its share,
        if any). The sink may hold the reply until the share is on disk (durability "sync");
        it then keeps the order of that miner's replies."""


class _NoUpstream:
    """The upstream side before the runtime connects one: forwards nothing."""

    def forward(self, share: Share, share_seq: int) -> tuple[int, int] | None:
        return None

    def on_miner(self, event: MinerEvent) -> None:
        pass


@dataclass(slots=True, eq=False)
class Miner:
    """One SV1 connection as the hub sees it."""

    session: MinerSession
    write: Callable[[bytes], None]
    close: Callable[[], None]
    channel_id: int | None = None  # upstream channel serving this miner
    closing: bool = False  # the hub asked the server to close it

    @property
    def client_id(self) -> int:
        return self.session.client_id


class Hub:
    """Owns the SV1 sessions. Single event loop, no locks."""

    def __init__(
        self,
        settings: Settings,
        share_sink: ShareSink | None = None,
        *,
        now: Callable[[], float] = time.time,
        event_sink: EventSink | None = None,
        persist_memory: bool = False,
    ) -> None:
        self.settings = settings
        self.share_sink = share_sink
        # Worker/upstream events and the difficulty memory (issue 13).
        self.events = WorkerEvents(settings, event_sink, now, persist=persist_memory)
        self.upstream: UpstreamSide = _NoUpstream()
        self._now = now
        self.instance_id = settings.proxy.instance_id
        self.extranonce1_size = settings.downstream.extranonce1_size
        self.aggregated = settings.proxy.aggregate_channels
        self.miners: dict[int, Miner] = {}  # client_id -> miner
        self._client_ids = itertools.count(1)
        # Fresh values first, then the longest-freed: a miner that reconnects must not get
        # back an extranonce1 whose shares (same extranonce2 and nonces) the pool has seen.
        self._free_en1: collections.deque[int] = collections.deque()
        self._next_en1 = 0
        self._share_seq = itertools.count(1)
        self._sv1_job_ids = itertools.count(1)
        # channel_id -> (sv1 job id, job, plain notify line, clean notify line) of its latest job
        self._latest: dict[int, tuple[str, Job, bytes, bytes]] = {}
        self._floors: dict[int, float] = {}  # channel_id -> lowest difficulty its miners may have
        self._owner: dict[int, int] = {}  # channel_id -> client_id (non-aggregated mode)
        self._shared_channel: int | None = None  # the aggregated channel
        self.outage_since: float | None = now()
        self.outage_disconnects = 0

    def connect_upstream(self, upstream: UpstreamSide) -> None:
        self.upstream = upstream

    def now(self) -> float:
        """The hub's clock (vardiff and the hashrate estimates run on it)."""
        return self._now()

    # ------------------------------------------------------------------ server side

    def _alloc_extranonce1(self) -> bytes | None:
        if self._next_en1 < 256**self.extranonce1_size:
            idx = self._next_en1
            self._next_en1 += 1
        elif self._free_en1:
            idx = self._free_en1.popleft()
        else:
            return None
        return idx.to_bytes(self.extranonce1_size, "big")

    def open(self, peer: str, write: Callable[[bytes], None], close: Callable[[], None]) -> Miner | None:
        """A new miner, or None to refuse it (extranonce1 space exhausted)."""
        en1 = self._alloc_extranonce1()
        if en1 is None:
            log.warning("refusing %s: extranonce1 space exhausted", peer)
            return None
        d = self.settings.difficulty
        now = self._now()
        session = MinerSession(
            client_id=next(self._client_ids),
            peer=peer,
            extranonce1=en1,
            extranonce2_size=self.settings.downstream.extranonce2_size,
            server_version_mask=self.settings.downstream.version_rolling_mask_int,
            vardiff=Vardiff(
                shares_per_minute=d.shares_per_minute,
                start_difficulty=d.start_difficulty,
                min_difficulty=d.min_difficulty,
                max_difficulty=d.max_difficulty,
                retarget_interval_s=d.retarget_interval_s,
                now=now,
            ),
            honour_suggest_difficulty=d.honour_suggest_difficulty,
            max_past_jobs=self.settings.downstream.max_past_jobs,
            now=now,
        )
        miner = Miner(session, write, close)
        self.miners[session.client_id] = miner
        self.events.on_open(miner)
        return miner

    def close(self, miner: Miner, reason: str = REASON_CLOSED) -> None:
        """The connection is gone (``reason``: why, for the disconnect event): release its
        extranonce1 and tell the upstream side."""
        session = miner.session
        if self.miners.pop(session.client_id, None) is None:
            return
        self.events.on_close(miner, reason)
        self._free_en1.append(int.from_bytes(session.extranonce1, "big"))
        if miner.channel_id is not None and self._owner.get(miner.channel_id) == session.client_id:
            del self._owner[miner.channel_id]
        self.upstream.on_miner(MinerGone(session.client_id))

    def handle(self, miner: Miner, req: p.Request) -> None:
        """One request from a miner: the session answers; its event goes where it belongs."""
        s = miner.session
        if req.method == "mining.submit":
            # The share path. A submit changes neither the worker name nor the difficulty
            # and always makes a Share, so only the share part of the events is asked.
            line, share = s.submit(req, self._now())
            self.events.on_share(miner, share)
            sink = self.share_sink
            if sink is None:
                miner.write(line)
            seq = next(self._share_seq)
            forwarded_to = self.upstream.forward(share, seq) if share.verdict == VERDICT_ACCEPTED else None
            if sink is not None:
                # The share log writes the reply: at once, or once the share is on disk.
                sink.answer(miner, miner.write, line, ShareRecord.from_share(
                    share, instance_id=self.instance_id, share_seq=seq, forwarded_to=forwarded_to))
            return
        name_before, difficulty_before = s.worker_name, s.difficulty
        line, event = s.handle(req, self._now())
        if s.worker_name != name_before or s.difficulty != difficulty_before or event is not None:
            self.events.after_request(miner, name_before, difficulty_before, event)
        self._reply(miner, line)
        if event is not None:
            assert isinstance(event, MinerReady)
            self._on_ready(miner, event)

    def _reply(self, miner: Miner, line: bytes) -> None:
        """A reply that carries no share. With a share log, the log writes it: behind any reply
        it holds for this miner until a share is on disk (durability "sync"), so order is kept."""
        sink = self.share_sink
        if sink is None:
            miner.write(line)
        else:
            sink.answer(miner, miner.write, line, None)

    def _on_ready(self, miner: Miner, event: MinerReady) -> None:
        self.upstream.on_miner(event)
        cid = self._shared_channel
        if self.aggregated and cid is not None:
            miner.channel_id = cid
            self._send_latest(miner, cid)

    # ------------------------------------------------------------------ upstream side (DownstreamSide)

    def on_upstream_event(self, event: UpstreamEvent) -> None:
        if isinstance(event, Job):
            self._publish(event)
        elif isinstance(event, Verdict):
            self._on_verdict(event)
        elif isinstance(event, ChannelAssigned):
            self._on_assigned(event)
        elif isinstance(event, DifficultyFloor):
            self._floors[event.channel_id] = event.floor
            now = self._now()
            for m in self._members(event.channel_id):
                old = m.session.difficulty
                m.session.apply_floor(event.floor, now)
                self.events.on_difficulty(m, old, "floor")
        elif isinstance(event, JobsRetired):
            self._on_retired(event)
        elif isinstance(event, UpstreamUp):
            self.outage_since = None
            self.events.on_upstream(event)
        elif isinstance(event, UpstreamDown):
            self.events.on_upstream(event)
            if self.outage_since is None:
                self.outage_since = self._now()

    def demand(self, client_id: int | None) -> tuple[float, int]:
        if client_id is None:
            sessions = [m.session for m in self.miners.values() if m.session.ready]
        else:
            m = self.miners.get(client_id)
            sessions = [m.session] if m is not None else []
        now = self._now()
        per_miner = self.settings.proxy.nominal_hashrate_per_miner
        nominal = 0.0
        for s in sessions:
            est = s.vardiff.estimated_hashrate(now)
            nominal += est if est > 0 else per_miner
        easiest = work.target_from_difficulty(self.settings.difficulty.min_difficulty)
        return nominal, min((s.target for s in sessions), default=easiest)

    def _members(self, channel_id: int) -> Iterable[Miner]:
        if self.aggregated:
            return [m for m in self.miners.values() if m.session.ready]
        owner = self._owner.get(channel_id)
        m = self.miners.get(owner) if owner is not None else None
        return (m,) if m is not None else ()

    def _on_assigned(self, event: ChannelAssigned) -> None:
        cid = event.channel_id
        self._floors[cid] = event.floor
        if event.client_id is None:
            self._shared_channel = cid
            for m in self._members(cid):
                m.channel_id = cid
            return
        owner = self.miners.get(event.client_id)
        if owner is None:
            return
        self._owner[cid] = event.client_id
        owner.channel_id = cid
        old = owner.session.difficulty
        owner.session.apply_floor(event.floor, self._now())
        self.events.on_difficulty(owner, old, "floor")
        self._send_latest(owner, cid)

    def _on_retired(self, event: JobsRetired) -> None:
        cid = event.channel_id
        self._latest.pop(cid, None)
        members = list(self._members(cid))
        for m in members:
            m.session.forget_jobs()
        if not event.channel_closed:
            return
        for m in members:
            if m.channel_id == cid:
                m.channel_id = None
        self._floors.pop(cid, None)
        self._owner.pop(cid, None)
        if self._shared_channel == cid:
            self._shared_channel = None

    def _on_verdict(self, v: Verdict) -> None:
        m = self.miners.get(v.client_id)
        if m is not None:
            m.session.on_verdict(v.accepted, timed_out=v.verdict == VERDICT_TIMEOUT)
            self.events.on_verdict(m, v)
        if self.share_sink is not None:
            self.share_sink.submit_pool_verdict(
                PoolVerdictRecord(
                    received_at_ms=v.received_at_ms,
                    instance_id=self.instance_id,
                    channel_id=v.channel_id,
                    sequence_number=v.sequence_number,
                    share_seq=v.share_seq,
                    pool_verdict=v.verdict,
                )
            )

    # ------------------------------------------------------------------ jobs

    def _render(self, sv1_job_id: str, job: Job, *, plain_only: bool = False) -> tuple[bytes, bytes]:
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
        plain = p.notify(*args, clean_jobs=False)
        return plain, (b"" if plain_only else p.notify(*args, clean_jobs=True))

    def _publish(self, job: Job) -> None:
        sv1_job_id = format(next(self._sv1_job_ids), "x")
        plain, clean = self._render(sv1_job_id, job)
        self._latest[job.channel_id] = (sv1_job_id, job, plain, clean)
        line = clean if job.clean else plain
        now = self._now()
        for m in self._members(job.channel_id):
            data = m.session.send_job(sv1_job_id, job, line, clean=job.clean, now=now)
            if data:  # b"": the miner already holds this content (see MinerSession.send_job)
                m.write(data)

    def _send_latest(self, miner: Miner, channel_id: int) -> None:
        latest = self._latest.get(channel_id)
        if latest is not None:
            sv1_job_id, job, _plain, clean = latest
            miner.write(miner.session.send_job(sv1_job_id, job, clean, clean=True, now=self._now()))

    # ------------------------------------------------------------------ periodic work

    def tick(self) -> None:
        """Vardiff retargets (set_difficulty goes out before a re-sent notify); the outage watchdog."""
        now = self._now()
        if self.settings.difficulty.vardiff:
            min_difficulty = self.settings.difficulty.min_difficulty
            for m in list(self.miners.values()):
                s = m.session
                if s.latest is None:
                    continue
                floor = self._floors.get(m.channel_id, min_difficulty) if m.channel_id is not None else min_difficulty
                old = s.difficulty
                if s.maybe_retarget(now, floor):
                    self.events.on_difficulty(m, old, "vardiff")
                    self._reissue(m, now)
        outage = self.outage_since
        if outage is not None and self.miners and now - outage >= self.settings.proxy.outage_reconnect_after_s:
            self._disconnect_all("upstream outage outlasted outage_reconnect_after_s")
            self.outage_since = now
        self.events.tick(self.miners.values())

    def _reissue(self, miner: Miner, now: float) -> None:
        """After a retarget: set_difficulty, then the miner's current work under a NEW sv1_job_id
        with a later ntime (never the same id with another target: the old id keeps the
        difficulty it was sent with, for the shares the miner still finds on it). Only when
        the miner is on its channel's current upstream job; otherwise, or when ntime cannot
        roll, the new difficulty waits for the pool's next job. One miner's copy, rendered for it."""
        s = miner.session
        held = s.latest
        current = self._latest.get(held[1].channel_id) if held is not None else None
        if held is None or current is None or current[1].job_id != held[1].job_id:
            return
        copy = s.retarget_copy(now)
        if copy is None:
            return
        sv1_job_id = format(next(self._sv1_job_ids), "x")
        plain, _ = self._render(sv1_job_id, copy, plain_only=True)
        data = s.send_job(sv1_job_id, copy, plain, clean=False, now=now)
        if data:
            miner.write(data)

    def _disconnect_all(self, reason: str) -> None:
        log.warning("disconnecting %d miners: %s", len(self.miners), reason)
        for m in list(self.miners.values()):
            if m.closing:
                continue
            m.closing = True
            self.outage_disconnects += 1
            with contextlib.suppress(Exception):
                m.close()
