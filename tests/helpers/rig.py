"""The SV1 hub and the channel manager wired as the runtime wires them, with no sockets and no event loop.

Only the three things that are I/O are replaced, each by a test double named
as such: ``PoolWriterDouble`` (the pool socket writer the manager sends SV2
messages through), ``MinerSocketDouble`` (one SV1 connection's write/close)
and ``ShareLogDouble`` (the share log sink). Time is a settable ``Clock``.
Everything else -- session, hub, manager, ChannelState, sv2.work hashing, the
SV1 codec -- is the real code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sv2.messages import AnyMessage, OpenExtendedMiningChannel
from tests.helpers.jobs import (
    find_nonce,
    future_job,
    lines,
    open_success,
    prev_hash,
    request,
    submit,
)
from tests.helpers.stack import proxy_settings
from tproxy.config import Settings
from tproxy.errors import UpstreamClosed
from tproxy.events import Job
from tproxy.shares.record import EventRecord, PoolVerdictRecord, ShareRecord
from tproxy.sv1.hub import Hub, Miner
from tproxy.upstream.manager import ChannelManager

T0 = 1_745_600_000.0  # just after the SRI vector job's ntime: its shares pass the 2 h ntime rule


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class PoolWriterDouble:
    """Test double for the pool socket writer (``tproxy.upstream.manager.PoolSender``):
    keeps every SV2 message the manager sends, in order, instead of encrypting it onto a socket."""

    def __init__(self, user_identity: str = "farm", name: str = "pool-double:3333") -> None:
        self.sent: list[AnyMessage] = []
        self.closed = False
        self.user_identity = user_identity
        self.name = name
        self.opens_answered = 0  # used by Rig.answer_opens

    def __str__(self) -> str:
        return self.name

    def send(self, msg: AnyMessage) -> None:
        if self.closed:
            raise UpstreamClosed(f"{self.name}: send on a closed connection")
        self.sent.append(msg)

    def close(self) -> None:
        self.closed = True

    def of_type(self, cls: type[Any]) -> list[Any]:
        return [m for m in self.sent if isinstance(m, cls)]


@dataclass
class MinerSocketDouble:
    """Test double for one SV1 connection: what the hub wrote to it, and whether it was closed."""

    written: list[bytes] = field(default_factory=list)
    closed: bool = False
    miner: Miner | None = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def messages(self, start: int = 0) -> list[dict[str, Any]]:
        return [m for data in self.written[start:] for m in lines(data)]

    def methods(self, start: int = 0) -> list[str]:
        return [m["method"] for m in self.messages(start) if m.get("method")]

    def notifies(self) -> list[list[Any]]:
        return [m["params"] for m in self.messages() if m.get("method") == "mining.notify"]

    def last_reply(self) -> dict[str, Any]:
        return [m for m in self.messages() if "result" in m][-1]


class ShareLogDouble:
    """Test double for the share log sink: keeps the records instead of writing ClickHouse."""

    def __init__(self) -> None:
        self.shares: list[ShareRecord] = []
        self.verdicts: list[PoolVerdictRecord] = []
        self.events: list[EventRecord] = []

    def submit(self, record: ShareRecord) -> None:
        self.shares.append(record)

    def submit_pool_verdict(self, record: PoolVerdictRecord) -> None:
        self.verdicts.append(record)

    def answer(self, miner: object, write: Callable[[bytes], None], line: bytes, record: ShareRecord | None) -> None:
        write(line)  # as the share log in durability "fast": reply first, then the record
        if record is not None:
            self.submit(record)

    def submit_event(self, record: EventRecord) -> None:
        self.events.append(record)

    def event_types(self, worker: str | None = None) -> list[str]:
        return [e.event_type for e in self.events if worker is None or e.worker_name == worker]


class Rig:
    """Hub + ChannelManager + doubles; helpers that speak for the miners and for the pool."""

    def __init__(self, *, aggregated: bool = True, settings: Settings | None = None, **proxy_kw: Any) -> None:
        self.settings = settings or proxy_settings([3333], aggregated=aggregated, **proxy_kw)
        self.clock = Clock()
        self.log = ShareLogDouble()
        self.hub = Hub(self.settings, self.log, now=self.clock, event_sink=self.log)
        self.manager = ChannelManager(self.settings, self.hub, now=self.clock)
        self.hub.connect_upstream(self.manager)
        self.pool = PoolWriterDouble()
        self._req_ids = iter(range(1000, 10**9))

    # -- miners ------------------------------------------------------------------

    def connect(self, peer: str = "10.0.0.1:4000") -> MinerSocketDouble:
        sock = MinerSocketDouble()
        miner = self.hub.open(peer, sock.write, sock.close)
        assert miner is not None
        sock.miner = miner
        return sock

    def send(self, sock: MinerSocketDouble, method: str, params: list[Any]) -> dict[str, Any]:
        assert sock.miner is not None
        self.hub.handle(sock.miner, request(next(self._req_ids), method, params))
        return sock.last_reply()

    def ready_miner(self, worker: str = "farm.w1") -> MinerSocketDouble:
        sock = self.connect()
        self.send(sock, "mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}])
        self.send(sock, "mining.subscribe", ["test/1.0"])
        assert self.send(sock, "mining.authorize", [worker, "x"])["result"] is True
        return sock

    def share(self, sock: MinerSocketDouble, job: Job, en2: bytes, *, nonce: int | None = None,
              target: int | None = None, meets: bool = True, sv1_job_id: str | None = None) -> dict[str, Any]:
        """Submit a real share for ``job`` under ``sv1_job_id`` (default: the miner's latest); returns the reply.

        Without ``nonce``, grinds the first one meeting (or missing) ``target`` (default: the miner's).
        """
        assert sock.miner is not None
        s = sock.miner.session
        if nonce is None:
            nonce = find_nonce(job, s.extranonce1, en2, s.target if target is None else target, meets=meets)
        if sv1_job_id is None:
            assert s.latest is not None
            sv1_job_id = s.latest[0]
        self.hub.handle(sock.miner, submit(next(self._req_ids), s.worker_name, sv1_job_id, en2, job.ntime, nonce))
        return sock.last_reply()

    # -- pool ---------------------------------------------------------------------

    def pool_up(self, pool: PoolWriterDouble | None = None) -> PoolWriterDouble:
        """The supervisor's upstream_up, minus the wait: the manager sends its channel opens."""
        if pool is not None:
            self.pool = pool
        self.manager.attach(self.pool)
        return self.pool

    def answer_opens(self, *, first_channel_id: int = 7, **kw: Any) -> list[int]:
        """Grant every OpenExtendedMiningChannel not answered yet; returns the channel ids."""
        ids = []
        opens = self.pool.of_type(OpenExtendedMiningChannel)
        for i, msg in enumerate(opens[self.pool.opens_answered:]):
            cid = first_channel_id + i
            self.manager.on_upstream_message(self.pool, open_success(msg.request_id, cid, **kw))
            ids.append(cid)
        self.pool.opens_answered = len(opens)
        return ids

    def new_block(self, channel_id: int, job_id: int, *, prev: bytes | None = None) -> Job:
        """A future job then its SetNewPrevHash, as SRI pools send a new block; returns the channel's active job."""
        self.manager.on_upstream_message(self.pool, future_job(channel_id, job_id))
        msg = prev_hash(channel_id, job_id) if prev is None else prev_hash(channel_id, job_id, prev=prev)
        self.manager.on_upstream_message(self.pool, msg)
        job = self.manager.channels[channel_id].latest
        assert job is not None
        return job
