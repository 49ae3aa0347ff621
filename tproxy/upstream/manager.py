"""The channel manager: the upstream side's policy over one pool connection.

Owns the upstream channels (one aggregated channel shared by every miner, or
one per miner), routing of pool messages by channel or group id, forwarding
accepted shares as SubmitSharesExtended with per-channel sequence numbers,
attributing the pool's SubmitShares.Success/Error to the share they answer
(``Verdict`` events) and ageing out the ones the pool never answers
(``proxy.verdict_timeout_s``, verdict "timeout"), UpdateChannel as the miners'
hashrate moves, keepalive jobs (ntime rolled) while the pool is quiet, the
difficulty floor a channel's target sets (``DifficultyFloor``), and the pool's
CloseChannel.

Counters live per channel (``ChannelStats``: since that channel opened, i.e.
per connection) and survive it: a closed channel's counters are folded into
its user_identity's totals, which the next channel opened for that identity
carries (``LiveChannel.lifetime``), and into ``closed_totals`` for the
proxy-wide sum (``totals``). So a reconnect to the pool resets nothing that
monitoring exports as a counter.

It is driven by the supervisor (``on_upstream_up`` / ``on_upstream_message`` /
``on_upstream_lost``), by the SV1 hub (``forward``, ``on_miner``, through
``tproxy.events.UpstreamSide``) and by ``tick``. It sends SV2 messages
through a ``PoolSender`` and tells the SV1 side what happened through
``tproxy.events.DownstreamSide``; apart from waiting for the aggregated
channel in ``on_upstream_up`` it does no I/O itself, so tests drive it with
messages alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from sv2 import work
from sv2.messages import (
    AnyMessage,
    CloseChannel,
    NewExtendedMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
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
from tproxy.config import Settings
from tproxy.errors import UpstreamError
from tproxy.events import (
    VERDICT_ACCEPTED,
    VERDICT_TIMEOUT,
    ChannelAssigned,
    DifficultyFloor,
    DownstreamSide,
    Job,
    JobsRetired,
    MinerEvent,
    MinerGone,
    MinerReady,
    Share,
    UpstreamDown,
    UpstreamUp,
    Verdict,
    rolled_ntime,
)
from tproxy.text import clean_text
from tproxy.upstream.channel import ChannelState

log = logging.getLogger("tproxy.upstream.manager")

MAX_PENDING_VERDICTS = 100_000
UPDATE_CHANNEL_MIN_INTERVAL_S = 10.0
UPDATE_CHANNEL_THRESHOLD = 0.1
CHANNEL_OPEN_TIMEOUT_S = 10.0
MAX_IDENTITY_TOTALS = 10_000  # totals of identities with no open channel kept for a successor


def str0_255(text: str) -> str:
    """``text`` cut to the 255 UTF-8 bytes of an SV2 STR0_255 at a character boundary
    (a worker name is bounded only by the SV1 line limit; lone surrogates become U+FFFD)."""
    return clean_text(text).encode()[:255].decode("utf-8", "ignore")


class PoolSender(Protocol):
    """Where the manager sends SV2 messages (``UpstreamConnection``; a test double in tests)."""

    @property
    def closed(self) -> bool: ...

    @property
    def user_identity(self) -> str:
        """The configured user_identity of this upstream ("" if none)."""

    def send(self, msg: AnyMessage) -> None:
        """Queue one message; raises UpstreamError if the connection is gone."""

    def close(self) -> None: ...


@dataclass(slots=True)
class PendingShare:
    """A forwarded share waiting for the pool's verdict."""

    client_id: int
    worker_name: str
    share_seq: int
    sent_ms: int  # when the share was received from the miner (unix ms): the verdict timeout counts from it


@dataclass(slots=True)
class ChannelStats:
    """Counters of one upstream channel (or a lifetime sum of several), for monitoring."""

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
    verdicts_timed_out: int = 0  # forwarded shares the pool never answered

    def add(self, other: ChannelStats) -> None:
        """Add ``other``'s counters into these (the hashrate is a level, not a count: kept)."""
        self.shares_submitted += other.shares_submitted
        self.shares_acknowledged += other.shares_acknowledged
        self.shares_rejected += other.shares_rejected
        by_reason = self.shares_rejected_by_reason
        for code, n in other.shares_rejected_by_reason.items():
            by_reason[code] = by_reason.get(code, 0) + n
        self.acknowledged_work_sum += other.acknowledged_work_sum
        self.validated_work_sum += other.validated_work_sum
        self.best_diff = max(self.best_diff, other.best_diff)
        self.blocks_found += other.blocks_found
        self.verdicts_timed_out += other.verdicts_timed_out


@dataclass(slots=True)
class LiveChannel:
    """One open upstream channel: its sans-IO state, its connection, counters and pending verdicts."""

    state: ChannelState
    up: PoolSender
    stats: ChannelStats
    owner: int | None = None  # client_id in non-aggregated mode
    carried: ChannelStats | None = None  # totals of this identity's earlier channels (closed)
    pending: OrderedDict[int, PendingShare] = field(default_factory=OrderedDict)
    latest: Job | None = None  # the last job issued (keepalive copies are made from it)
    last_job_at: float = 0.0
    last_update_sent: float = 0.0
    last_nominal_sent: float = 0.0

    @property
    def verdicts_pending(self) -> int:
        """Forwarded shares still awaiting the pool's verdict."""
        return len(self.pending)

    def lifetime(self) -> ChannelStats:
        """This channel's counters plus those of the earlier channels of its user_identity."""
        if self.carried is None:
            return self.stats
        total = ChannelStats(self.stats.user_identity, self.stats.nominal_hashrate)
        total.add(self.carried)
        total.add(self.stats)
        return total


@dataclass(slots=True)
class _OpenRequest:
    owner: int | None  # client_id, or None for the aggregated channel
    identity: str
    nominal: float


class ChannelManager:
    """Upstream channels for the SV1 miners. Single event loop, no locks."""

    def __init__(
        self,
        settings: Settings,
        downstream: DownstreamSide,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.downstream = downstream
        self._now = now
        ds = settings.downstream
        self.extranonce1_size = ds.extranonce1_size
        self.extranonce2_size = ds.extranonce2_size
        self.aggregated = settings.proxy.aggregate_channels
        self.up: PoolSender | None = None
        self.channels: dict[int, LiveChannel] = {}  # channel_id -> channel
        self._route: dict[int, list[LiveChannel]] = {}  # channel or group id -> channels
        self._ready: dict[int, str] = {}  # client_id -> worker_name of miners that want work
        self._requests: dict[int, _OpenRequest] = {}  # request_id -> open in flight
        # non-aggregated mode: client_id -> its channel_id, and client_ids whose open is in flight
        self._owned: dict[int, int] = {}
        self._opening: set[int] = set()
        self._next_request_id = 1
        self._shared_open: asyncio.Future[None] | None = None
        self.shares_forwarded = 0
        # counters of closed channels: per user_identity until a new channel of that identity
        # carries them on, and all together for the proxy-wide totals
        self._identity_totals: OrderedDict[str, ChannelStats] = OrderedDict()
        self.closed_totals = ChannelStats("")

    # ------------------------------------------------------------------ supervisor side

    async def on_upstream_up(self, up: PoolSender) -> None:
        """Open channels on ``up``; in aggregated mode wait for the shared one (UpstreamError if refused)."""
        if not self.aggregated:
            self.attach(up)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._shared_open = fut
        try:
            self.attach(up)
            async with asyncio.timeout(CHANNEL_OPEN_TIMEOUT_S):
                await fut
        except TimeoutError as e:
            self.on_upstream_lost(up, "no answer to OpenExtendedMiningChannel")
            raise UpstreamError("no answer to OpenExtendedMiningChannel") from e
        except BaseException as e:
            self.on_upstream_lost(up, str(e))
            raise
        finally:
            self._shared_open = None

    def attach(self, up: PoolSender) -> None:
        """Use ``up`` from now on: ask for the channels the miners need (the sans-IO half of ``on_upstream_up``)."""
        self.up = up
        if self.aggregated:
            self._request_channel(up, owner=None)
            return
        for client_id in list(self._ready):
            self._request_channel(up, owner=client_id)
        self.downstream.on_upstream_event(UpstreamUp(str(up)))

    def on_upstream_lost(self, up: PoolSender, reason: str) -> None:
        if self.up is up:
            self.up = None
        for ch in [c for c in self.channels.values() if c.up is up]:
            self._drop_channel(ch)
        self._requests.clear()
        self._opening.clear()
        self.downstream.on_upstream_event(UpstreamDown(reason))

    def on_upstream_message(self, up: PoolSender, msg: AnyMessage) -> None:
        cid = getattr(msg, "channel_id", None)
        targets = self._route.get(cid, []) if cid is not None else []
        if isinstance(msg, SubmitSharesSuccess):
            for ch in targets:
                self._on_success(ch, msg)
        elif isinstance(msg, SubmitSharesError):
            for ch in targets:
                self._on_error(ch, msg)
        elif isinstance(msg, (NewExtendedMiningJob, SetNewPrevHash)):
            self._on_job_message(msg, targets)
        elif isinstance(msg, SetTarget):
            for ch in targets:
                ch.state.on_set_target(msg)
                if self._floors_follow_channel:
                    self.downstream.on_upstream_event(DifficultyFloor(ch.state.channel_id, self._floor(ch)))
        elif isinstance(msg, (OpenExtendedMiningChannelSuccess, OpenMiningChannelError)):
            self._on_open_reply(up, msg)
        else:
            self._on_channel_message(up, msg, targets)

    def _on_channel_message(self, up: PoolSender, msg: AnyMessage, targets: list[LiveChannel]) -> None:
        if isinstance(msg, SetExtranoncePrefix):
            # The prefix lives in coinb1, so miners keep their extranonce1: the
            # next job simply carries the new coinb1.
            for ch in targets:
                ch.state.on_set_extranonce_prefix(msg)
        elif isinstance(msg, CloseChannel):
            for ch in list(targets):
                log.warning("pool closed channel %d: %s", ch.state.channel_id, msg.reason_code)
                self._drop_channel(ch)
                if self.aggregated:
                    up.close()  # our only channel is gone: make the supervisor reconnect
                elif ch.owner is not None and ch.owner in self._ready and self.up is not None:
                    self._request_channel(self.up, owner=ch.owner)
        elif isinstance(msg, UpdateChannelError):
            log.warning("pool refused UpdateChannel on %s: %s", msg.channel_id, msg.error_code)
        elif isinstance(msg, SetGroupChannel):
            for member in msg.channel_ids:
                for ch in self._route.get(member, []):
                    group = self._route.setdefault(msg.group_channel_id, [])
                    if ch not in group:
                        group.append(ch)
        else:
            log.info("ignoring %s from %s", type(msg).__name__, up)

    # ------------------------------------------------------------------ SV1 side (UpstreamSide)

    def on_miner(self, event: MinerEvent) -> None:
        if isinstance(event, MinerReady):
            self._ready[event.client_id] = event.worker_name
            cid = event.client_id
            if not self.aggregated and self.up is not None and cid not in self._owned and cid not in self._opening:
                self._request_channel(self.up, owner=cid)
        elif isinstance(event, MinerGone):
            self._ready.pop(event.client_id, None)
            self._opening.discard(event.client_id)
            if self.aggregated and not self._ready:
                self._no_miners_left()
            channel_id = self._owned.get(event.client_id)
            ch = self.channels.get(channel_id) if channel_id is not None else None
            if ch is not None:
                with contextlib.suppress(UpstreamError):
                    ch.up.send(CloseChannel(channel_id=ch.state.channel_id, reason_code="miner-disconnected"))
                self._drop_channel(ch)

    def _no_miners_left(self) -> None:
        """The last miner left the aggregated channel: its hashrate is 0 now, not at the next UpdateChannel.
        The pool hears it as soon as the UpdateChannel rate limit allows (at once, or on a later tick)."""
        now = self._now()
        for ch in list(self.channels.values()):
            if ch.owner is None:
                ch.stats.nominal_hashrate = 0.0
                self._maybe_update_channel(ch, now)

    def forward(self, share: Share, share_seq: int) -> tuple[int, int] | None:
        """Send an accepted share upstream if it meets its job's upstream target."""
        job = share.job
        assert job is not None  # the hub forwards only accepted shares, and they name a job
        if int.from_bytes(share.share_hash, "little") > job.upstream_target:  # work.hash_meets_target, per share
            return None  # good enough for the miner's target, not for the pool's
        ch = self.channels.get(job.channel_id)
        if ch is None or ch.up.closed:
            return None
        state = ch.state
        seq = state.take_sequence_number()
        try:
            ch.up.send(
                SubmitSharesExtended(
                    channel_id=state.channel_id,
                    sequence_number=seq,
                    job_id=job.job_id,
                    nonce=share.nonce,
                    ntime=share.ntime,
                    version=share.version,
                    extranonce=job.pad + share.extranonce1 + share.extranonce2,
                )
            )
        except UpstreamError:
            return None
        pending = ch.pending
        pending[seq] = PendingShare(share.client_id, share.worker_name, share_seq, share.received_at_ms)
        if len(pending) > MAX_PENDING_VERDICTS:
            pending.popitem(last=False)
        stats = ch.stats
        stats.shares_submitted += 1
        stats.validated_work_sum += share.target_difficulty
        if share.share_difficulty > stats.best_diff:
            stats.best_diff = share.share_difficulty
        if work.hash_meets_target(share.share_hash, work.target_from_nbits(job.nbits)):
            stats.blocks_found += 1
            log.warning("block candidate from worker %r: %s", share.worker_name, share.share_hash[::-1].hex())
        self.shares_forwarded += 1
        return state.channel_id, seq

    # ------------------------------------------------------------------ channels

    @property
    def _floors_follow_channel(self) -> bool:
        """Non-aggregated miners are kept at or above their channel's difficulty (unless allowed below)."""
        return not self.aggregated and not self.settings.difficulty.allow_below_upstream

    def _floor(self, ch: LiveChannel) -> float:
        floor = self.settings.difficulty.min_difficulty
        if not self._floors_follow_channel:
            return floor
        return max(floor, work.difficulty_from_target(ch.state.target))

    def _user_identity(self, up: PoolSender, owner: int | None) -> str:
        base = up.user_identity
        if owner is None:
            return base or self.settings.proxy.instance_id
        worker = self._ready.get(owner, "")
        return f"{base}.{worker}" if base else worker

    def _request_channel(self, up: PoolSender, owner: int | None) -> None:
        identity = self._user_identity(up, owner)
        nominal, _ = self.downstream.demand(owner)
        rid = self._next_request_id
        self._next_request_id += 1
        max_target = work.target_to_bytes(work.target_from_difficulty(self.settings.difficulty.min_difficulty))
        try:
            up.send(
                OpenExtendedMiningChannel(
                    request_id=rid,
                    user_identity=str0_255(identity),
                    nominal_hash_rate=nominal,
                    max_target=max_target,
                    min_extranonce_size=self.extranonce1_size + self.extranonce2_size,
                )
            )
        except UpstreamError as e:
            self._open_failed(owner, e)
            return
        self._requests[rid] = _OpenRequest(owner, identity, nominal)
        if owner is not None:
            self._opening.add(owner)

    def _on_open_reply(self, up: PoolSender, msg: OpenExtendedMiningChannelSuccess | OpenMiningChannelError) -> None:
        req = self._requests.pop(msg.request_id, None)
        if req is not None and req.owner is not None:
            self._opening.discard(req.owner)
        if isinstance(msg, OpenMiningChannelError):
            if req is not None:
                self._open_failed(req.owner, UpstreamError(f"{up}: channel refused: {msg.error_code}"))
            return
        if req is None or (req.owner is not None and req.owner not in self._ready):
            # Nobody wants this channel any more (its miner left while it was opening).
            with contextlib.suppress(UpstreamError):
                up.send(CloseChannel(channel_id=msg.channel_id, reason_code="miner-disconnected"))
            return
        try:
            state = ChannelState.from_open_success(
                msg, extranonce1_size=self.extranonce1_size, extranonce2_size=self.extranonce2_size
            )
        except UpstreamError as e:
            self._open_failed(req.owner, e)
            return
        ch = LiveChannel(state, up, ChannelStats(req.identity, req.nominal), owner=req.owner,
                         carried=self._identity_totals.pop(req.identity, None))
        ch.last_nominal_sent = req.nominal
        ch.last_update_sent = self._now()
        self.channels[state.channel_id] = ch
        if req.owner is not None:
            self._owned[req.owner] = state.channel_id
        self._route.setdefault(state.channel_id, []).append(ch)
        if state.group_channel_id != state.channel_id:
            self._route.setdefault(state.group_channel_id, []).append(ch)
        log.info(
            "opened channel %d (%s) extranonce_size=%d prefix=%s",
            state.channel_id, req.identity, state.extranonce_size, state.extranonce_prefix.hex(),
        )
        # Before the channel's first job (the pool sends it right behind the Success).
        self.downstream.on_upstream_event(ChannelAssigned(state.channel_id, req.owner, req.identity, self._floor(ch)))
        if req.owner is None:
            self.downstream.on_upstream_event(UpstreamUp(str(up)))
            if self._shared_open is not None and not self._shared_open.done():
                self._shared_open.set_result(None)

    def _open_failed(self, owner: int | None, err: UpstreamError) -> None:
        if owner is None:
            if self._shared_open is not None and not self._shared_open.done():
                self._shared_open.set_exception(err)
            else:
                log.warning("could not open the aggregated channel: %s", err)
        else:
            log.warning("client %d: could not open its channel: %s", owner, err)

    def _drop_channel(self, ch: LiveChannel) -> None:
        """Forget a channel; its miners lose their jobs and their channel."""
        cid = ch.state.channel_id
        self.channels.pop(cid, None)
        if ch.owner is not None and self._owned.get(ch.owner) == cid:
            del self._owned[ch.owner]
        for key in (cid, ch.state.group_channel_id):
            lst = self._route.get(key)
            if lst is not None:
                with contextlib.suppress(ValueError):
                    lst.remove(ch)
                if not lst:
                    self._route.pop(key, None)
        ch.latest = None
        if ch.pending:  # no answer can come for them any more
            self._time_out(ch, len(ch.pending), "its channel closed first")
        self._keep_totals(ch)
        self.downstream.on_upstream_event(JobsRetired(cid, channel_closed=True))

    def _keep_totals(self, ch: LiveChannel) -> None:
        """Fold a closing channel's counters into its identity's totals (for its successor) and the proxy's."""
        self.closed_totals.add(ch.stats)
        totals = self._identity_totals
        identity = ch.stats.user_identity
        kept = ChannelStats(identity)
        kept.add(ch.stats)
        if ch.carried is not None:
            kept.add(ch.carried)
        earlier = totals.pop(identity, None)
        if earlier is not None:  # two channels of one identity (non-aggregated, same worker name)
            kept.add(earlier)
        totals[identity] = kept
        while len(totals) > MAX_IDENTITY_TOTALS:
            totals.popitem(last=False)

    def totals(self) -> ChannelStats:
        """Proxy-wide counters since start: every channel ever opened, open or closed."""
        total = ChannelStats("")
        total.add(self.closed_totals)
        for ch in self.channels.values():
            total.add(ch.stats)
            total.nominal_hashrate += ch.stats.nominal_hashrate
        return total

    # ------------------------------------------------------------------ jobs

    def _on_job_message(self, msg: NewExtendedMiningJob | SetNewPrevHash, targets: list[LiveChannel]) -> None:
        for ch in list(targets):
            if isinstance(msg, NewExtendedMiningJob):
                job = ch.state.on_new_extended_job(msg)
                if job is not None:
                    self._issue(ch, job)
                continue
            job = ch.state.on_set_new_prev_hash(msg)
            if job is None:
                log.warning("SetNewPrevHash for unknown future job %d on channel %d", msg.job_id, ch.state.channel_id)
                ch.latest = None
                self.downstream.on_upstream_event(JobsRetired(ch.state.channel_id, channel_closed=False))
            else:
                self._issue(ch, job)

    def _issue(self, ch: LiveChannel, job: Job) -> None:
        ch.latest = job
        ch.last_job_at = self._now()
        self.downstream.on_upstream_event(job)

    # ------------------------------------------------------------------ verdicts

    def _on_success(self, ch: LiveChannel, msg: SubmitSharesSuccess) -> None:
        ch.stats.shares_acknowledged += msg.new_submits_accepted_count
        ch.stats.acknowledged_work_sum += msg.new_shares_sum
        last = msg.last_sequence_number
        pending = ch.pending
        if last not in pending:
            return
        now_ms = int(self._now() * 1000)
        # Success acknowledges every share up to and including ``last``.
        while pending:
            seq, pend = pending.popitem(last=False)
            self._verdict(ch, seq, pend, VERDICT_ACCEPTED, now_ms)
            if seq == last:
                break

    def _on_error(self, ch: LiveChannel, msg: SubmitSharesError) -> None:
        code = msg.error_code
        stats = ch.stats
        stats.shares_rejected += 1
        stats.shares_rejected_by_reason[code] = stats.shares_rejected_by_reason.get(code, 0) + 1
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
        self.downstream.on_upstream_event(
            Verdict(now_ms, pend.client_id, pend.worker_name, ch.state.channel_id, seq, pend.share_seq, verdict)
        )

    def _age_out(self, ch: LiveChannel, now: float) -> None:
        """Stop awaiting verdicts older than ``proxy.verdict_timeout_s`` (pending is in send order)."""
        pending = ch.pending
        if not pending:
            return
        cutoff_ms = int((now - self.settings.proxy.verdict_timeout_s) * 1000)
        n = 0
        for pend in pending.values():
            if pend.sent_ms > cutoff_ms:
                break
            n += 1
        if n:
            self._time_out(ch, n, f"no verdict within {self.settings.proxy.verdict_timeout_s:g} s")

    def _time_out(self, ch: LiveChannel, n: int, why: str) -> None:
        """The ``n`` oldest pending shares of ``ch`` get verdict "timeout": counted, one log line for all."""
        pending = ch.pending
        now_ms = int(self._now() * 1000)
        for _ in range(n):
            seq, pend = pending.popitem(last=False)
            self._verdict(ch, seq, pend, VERDICT_TIMEOUT, now_ms)
        ch.stats.verdicts_timed_out += n
        log.warning("channel %d: %d forwarded share(s) timed out awaiting the pool's verdict: %s",
                    ch.state.channel_id, n, why)

    # ------------------------------------------------------------------ periodic work

    def tick(self) -> None:
        """UpdateChannel when the miners' hashrate moved; keepalive jobs when the pool is quiet;
        verdicts the pool never gave are aged out."""
        now = self._now()
        for ch in list(self.channels.values()):
            self._maybe_update_channel(ch, now)
            self._maybe_keepalive(ch, now)
            self._age_out(ch, now)

    def _maybe_update_channel(self, ch: LiveChannel, now: float) -> None:
        if now - ch.last_update_sent < UPDATE_CHANNEL_MIN_INTERVAL_S:
            return
        nominal, hardest = self.downstream.demand(ch.owner)
        last = ch.last_nominal_sent
        if last > 0 and abs(nominal - last) / last < UPDATE_CHANNEL_THRESHOLD:
            return
        if last == 0 and nominal == 0:
            return
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
        job = ch.latest
        if job is None:
            return
        # Past any ntime firmware rolled to on the previous copy; None near now + 2 h.
        ntime = rolled_ntime(job.ntime, ch.last_job_at, now)
        if ntime is None:
            return
        self._issue(ch, replace(job, ntime=ntime, clean=False))
