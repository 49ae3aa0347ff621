"""Worker and upstream events, and the difficulty memory, on the SV1 side (issue 13).

Owns what the hub tells the share log about what *happened* (the share log
itself records how much work): one ``EventRecord`` per worker connect,
authorize, disconnect (with its reason), difficulty change (old, new, why),
silence (offline) and return (online), pool reject burst, block found, and
upstream change (up: first / reconnected / failover / failback / pool
Reconnect; down: with the reason). Each worker event carries the worker's
whole state after it, which is what the ``worker_state`` table is made of.

It also applies and feeds the difficulty memory (``tproxy.sv1.diffmemory``):
at authorize a known worker name gets its remembered difficulty unless the
miner sent ``mining.suggest_difficulty``.

The hub calls it at its existing points (open / handle / close / tick /
verdict / upstream event); it never writes to a socket. Event types are the
``EVENT_*`` names of ``tproxy.shares.record``; ``counts`` (per type) is what
``/metrics`` exports.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sv2 import work
from tproxy.events import VERDICT_ACCEPTED, Share, UpstreamDown, UpstreamUp, Verdict
from tproxy.shares import record as r
from tproxy.sv1.diffmemory import DifficultyMemory

if TYPE_CHECKING:
    from tproxy.config import Settings
    from tproxy.sv1.hub import Miner

log = logging.getLogger("tproxy.sv1.events")

# Disconnect reasons: "closed" (the miner closed or reset the connection) and "outage" (the hub
# disconnects everyone after an upstream outage) are the hub's; the SV1 server passes the others
# when it closes a connection itself.
REASON_CLOSED = "closed"
REASON_OUTAGE = "outage"
REASON_IDLE = "idle"  # no complete first line, no subscribe/authorize, or no line for idle_timeout_s
REASON_FLOOD = "flood"  # more lines in one read than max_pending_submits
REASON_BAD_INPUT = "bad-input"  # an over-long line, garbage before the first request, a TLS ClientHello
REASON_SLOW_READER = "slow-reader"  # stopped reading: write buffer or write time exceeded


class EventSink(Protocol):
    """Where event records go (tproxy.shares.ShareLog). Must never block."""

    def submit_event(self, record: r.EventRecord) -> None: ...


@dataclass(slots=True)
class _Worker:
    since: float  # when it went online or offline (its current state)
    online: bool = True
    rejects_in_row: int = 0


class WorkerEvents:
    """Builds and counts event records; holds the difficulty memory."""

    def __init__(
        self, settings: Settings, sink: EventSink | None, now: Callable[[], float], *, persist: bool = False
    ) -> None:
        self.settings = settings
        self.sink = sink
        self._now = now
        self.instance_id = settings.proxy.instance_id
        self._seq = itertools.count(1)
        self._workers: dict[int, _Worker] = {}  # client_id -> state
        self.counts: collections.Counter[str] = collections.Counter()
        self._upstream: str | None = None  # endpoint while up
        self._last_upstream: str | None = None
        self._net_difficulty: dict[int, float] = {}  # nbits -> network difficulty
        d = settings.difficulty
        self.memory: DifficultyMemory | None = None
        if d.memory:
            # The default file sits beside the share log's spool; only a proxy that persists
            # (``persist``, the runtime) uses it; an explicit ``memory_path`` is always used.
            path = d.memory_path or (
                str(Path(settings.clickhouse.spool_dir).parent / "difficulty_memory.json") if persist else None
            )
            self.memory = DifficultyMemory(path, max_age_s=d.memory_max_age_s, max_workers=d.memory_max_workers)
            n = self.memory.load(now())
            if n:
                log.info("difficulty memory %s: %d workers", path, n)

    # ------------------------------------------------------------------ emit

    def _emit(
        self, event_type: str, miner: Miner | None = None, *, reason: str = "", detail: str = "",
        old_difficulty: float = 0.0,
    ) -> None:
        self.counts[event_type] += 1
        if self.sink is None:
            return
        now = self._now()
        rec = r.EventRecord(int(now * 1000), self.instance_id, next(self._seq), event_type, reason=reason,
                            detail=detail, old_difficulty=old_difficulty)
        if miner is not None:
            s = miner.session
            w = self._workers.get(s.client_id)
            last = s.counters.last_share_at
            rec = dataclasses.replace(
                rec, worker_name=s.worker_name, client_id=s.client_id, address=s.peer, user_agent=s.user_agent,
                difficulty=s.difficulty, channel_id=miner.channel_id or 0, online=w.online if w is not None else False,
                since_ms=int((w.since if w is not None else now) * 1000), last_share_ms=int(last * 1000) if last else 0,
            )
        self.sink.submit_event(rec)

    # ------------------------------------------------------------------ hub points

    def on_open(self, miner: Miner) -> None:
        self._workers[miner.client_id] = _Worker(since=self._now())
        self._emit(r.EVENT_CONNECT, miner)

    def after_request(self, miner: Miner, name_before: str, difficulty_before: float, event: object) -> None:
        """After ``MinerSession.handle``: authorize (+ difficulty memory), suggest, share."""
        s = miner.session
        now = self._now()
        if not name_before and s.worker_name:
            self._emit(r.EVENT_AUTHORIZE, miner)
            self._recall(miner, now)
        elif s.difficulty != difficulty_before:
            self._emit(r.EVENT_DIFFICULTY, miner, old_difficulty=difficulty_before, reason="suggest")
            self._remember(miner, now)
        if type(event) is Share:
            self.on_share(miner, event)

    def _recall(self, miner: Miner, now: float) -> None:
        s = miner.session
        if self.memory is None or s.suggested:
            return
        d = self.memory.recall(s.worker_name, now)
        if d is None:
            return
        old = s.difficulty
        new = s.vardiff.suggest(d)  # clamped to min/max, like a miner's own hint
        if new != old:
            s.set_difficulty(new, now)
            self._emit(r.EVENT_DIFFICULTY, miner, old_difficulty=old, reason="memory")

    def _remember(self, miner: Miner, now: float) -> None:
        if self.memory is not None and miner.session.worker_name:
            self.memory.remember(miner.session.worker_name, miner.session.difficulty, now)

    def on_share(self, miner: Miner, share: Share) -> None:
        """Every share (the hub calls it for each submit): the worker's return if it was marked
        offline, and a block found. Two dict lookups when there is nothing to report."""
        w = self._workers.get(share.client_id)  # = miner.client_id, without the property call
        if w is not None and not w.online:
            w.online, w.since = True, self._now()
            self._emit(r.EVENT_ONLINE, miner)
        job = share.job
        if job is None or share.verdict != VERDICT_ACCEPTED:
            return
        d = self._net_difficulty.get(job.nbits)
        if share.share_difficulty >= (d if d is not None else self._network_difficulty(job.nbits)):
            self._emit(r.EVENT_BLOCK_FOUND, miner, detail=share.share_hash[::-1].hex(),
                       reason=f"job {job.job_id}")

    def _network_difficulty(self, nbits: int) -> float:
        d = self._net_difficulty.get(nbits)
        if d is None:
            if len(self._net_difficulty) > 64:
                self._net_difficulty.clear()
            d = self._net_difficulty[nbits] = work.difficulty_from_target(work.target_from_nbits(nbits))
        return d

    def on_close(self, miner: Miner, reason: str) -> None:
        if miner.closing and reason == REASON_CLOSED:
            reason = REASON_OUTAGE  # the hub's own outage disconnect
        w = self._workers.get(miner.client_id)
        if w is not None:  # the row carries the state after the event
            w.online, w.since = False, self._now()
        self._emit(r.EVENT_DISCONNECT, miner, reason=reason)
        self._workers.pop(miner.client_id, None)
        self._remember(miner, self._now())

    def on_difficulty(self, miner: Miner, old: float, reason: str) -> None:
        """A difficulty change the hub made (vardiff retarget, upstream floor)."""
        if miner.session.difficulty != old:
            self._emit(r.EVENT_DIFFICULTY, miner, old_difficulty=old, reason=reason)
            self._remember(miner, self._now())

    def on_verdict(self, miner: Miner | None, v: Verdict) -> None:
        if miner is None:
            return
        w = self._workers.get(miner.client_id)
        if w is None:
            return
        if v.accepted:
            w.rejects_in_row = 0
            return
        w.rejects_in_row += 1
        if w.rejects_in_row == self.settings.events.reject_burst_count:
            self._emit(r.EVENT_POOL_REJECT_BURST, miner, reason=v.verdict, detail=f"{w.rejects_in_row} in a row")
            w.rejects_in_row = 0

    def on_upstream(self, event: UpstreamUp | UpstreamDown) -> None:
        if isinstance(event, UpstreamDown):
            if self._upstream is not None:
                self._emit(r.EVENT_UPSTREAM_DOWN, reason=event.reason, detail=self._upstream)
                self._upstream = None
            return
        if self._upstream == event.endpoint:
            return  # another channel opened on the same connection
        self._emit(r.EVENT_UPSTREAM_UP, reason=self._up_reason(event.endpoint), detail=event.endpoint)
        self._upstream = self._last_upstream = event.endpoint

    def _up_reason(self, endpoint: str) -> str:
        order = [f"{u.address}:{u.port}" for u in self.settings.upstreams]
        last = self._last_upstream
        if last is None:
            return "connected"
        if endpoint == last:
            return "reconnected"
        if endpoint not in order:
            return "reconnect"  # an endpoint the pool sent (Reconnect)
        if last not in order or order.index(endpoint) < order.index(last):
            return "failback"
        return "failover"

    def tick(self, miners: Iterable[Miner]) -> None:
        """Silence (offline events) and the difficulty memory's debounced write."""
        now = self._now()
        silence = self.settings.events.worker_silence_s
        for m in miners:
            w = self._workers.get(m.client_id)
            s = m.session
            if w is None or not w.online or not s.worker_name:
                continue
            if now - max(s.counters.last_share_at, w.since) >= silence:
                w.online, w.since = False, now
                self._emit(r.EVENT_OFFLINE, m, reason="silent", detail=f"no share for {silence:g}s")
        if self.memory is not None:
            self.memory.maybe_flush(now)

    def close(self) -> None:
        """At shutdown: write the difficulty memory."""
        if self.memory is not None:
            self.memory.flush(self._now())
