"""The dev SV2 pool: an asyncio TCP server speaking Noise NX and the mining protocol like SRI.

Owns the listener, one ``_PoolConnection`` per client (its Noise responder
with a fresh static key signed by the authority key, its SetupConnection
state, its channels and group channels), the simulated chain (tip, block
template, job ids), the block/job timers, and the test hooks
(``announce_new_block``, ``announce_new_job``, ``set_channel_target``,
``send_to_all``, ``drop_all_connections``). Channel state and share
validation live in ``devnet.pool.channel``; coinbase and job construction in
``devnet.pool.template``.

What the pool sends mirrors the SRI pool (reference section 6): Success to
SetupConnection with used_version 2 and flags 0; on OpenExtendedMiningChannel
a Success (4-byte unique prefix, 16 rollable bytes by default) then a future
NewExtendedMiningJob and SetNewPrevHash addressed to the new channel id;
later blocks and jobs are addressed to the group channel id; accepted
shares are acknowledged every ``share_batch_size`` (and at once on a found
block) and, like real pools, at most ``ack_interval_s`` after the first
unacknowledged one arrived (a per-channel timer), so a slow miner's last
shares are verdicted too; each rejected share gets its own SubmitShares.Error.
``new_shares_sum`` carries fractions between Successes (``devnet.pool.channel``).

A malformed frame or a protocol violation closes that one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import signal
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from devnet.pool.channel import (
    INVALID_CHANNEL_ID,
    ChainTip,
    ChannelCounters,
    PoolChannel,
    ShareResult,
)
from devnet.pool.settings import MAX_ROLLABLE_EXTRANONCE, PoolSettings
from devnet.pool.template import (
    BlockTemplate,
    Job,
    hashrate_to_target,
    target_from_difficulty,
    target_from_nbits,
)
from sv2.connection import Sv2Connection
from sv2.errors import ProtocolError
from sv2.messages import (
    REQUIRES_STANDARD_JOBS,
    REQUIRES_WORK_SELECTION,
    AnyMessage,
    CloseChannel,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    UnknownMessage,
    UpdateChannel,
    UpdateChannelError,
)
from sv2.noise import NoiseResponder

log = logging.getLogger("devnet.pool")

PROTOCOL_MINING = 0
SV2_VERSION = 2
READ_CHUNK = 65536
MAX_KEPT_COUNTERS = 100_000
MAX_SHARE_EVENTS = 10_000


@dataclass(frozen=True, slots=True)
class ShareEvent:
    """One validated share, as kept in ``DevPool.share_events`` (newest last)."""

    connection_id: int
    channel_id: int
    sequence_number: int
    job_id: int
    error: str | None
    block_found: bool
    hash: bytes | None


def _target_bytes(target: int) -> bytes:
    return target.to_bytes(32, "little")


class _PoolConnection:
    """One client connection: transport, SV2 state, channels."""

    def __init__(
        self,
        pool: DevPool,
        conn_id: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sv2: Sv2Connection,
    ) -> None:
        self.pool = pool
        self.id = conn_id
        self.reader = reader
        self.writer = writer
        self.sv2 = sv2
        self.peer = str(writer.get_extra_info("peername"))
        self.setup_done = False
        self.requires_standard_jobs = False
        self.closed = False
        self.close_after_flush = False
        self.channels: dict[int, PoolChannel] = {}
        self.groups: dict[int, int] = {}  # full extranonce size -> group id (extended channels)
        self.standard_group_id: int | None = None
        self.ack_timers: dict[int, asyncio.TimerHandle] = {}  # channel id -> pending acknowledgement

    def cancel_ack_timer(self, channel_id: int) -> None:
        handle = self.ack_timers.pop(channel_id, None)
        if handle is not None:
            handle.cancel()

    def send(self, msg: AnyMessage) -> None:
        if self.closed:
            return
        self.writer.write(self.sv2.send(msg))
        transport = self.writer.transport
        if transport.get_write_buffer_size() > self.pool.settings.max_write_buffer_bytes:
            log.warning("connection %d (%s): peer is not reading, dropping it", self.id, self.peer)
            self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.sv2.close()
            self.writer.transport.abort()


class DevPool:
    """An SRI-like SV2 pool for tests, benchmarks and the demo."""

    def __init__(self, settings: PoolSettings | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings if settings is not None else PoolSettings()
        self._clock = clock
        self._authority_secret = self.settings.authority_secret
        self.authority_pubkey = self.settings.authority_pubkey
        self.network_target = target_from_nbits(self.settings.nbits)
        self._ids = itertools.count(1)  # channel ids and group ids: never equal on a connection
        self._job_ids = itertools.count(1)
        self._template_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._prefixes = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._conns: dict[int, _PoolConnection] = {}
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.Task[None]] = []
        self.channels: dict[int, PoolChannel] = {}
        self.counters: OrderedDict[int, ChannelCounters] = OrderedDict()
        self.share_events: deque[ShareEvent] = deque(maxlen=MAX_SHARE_EVENTS)
        self.blocks_announced = 0
        self.invalid_channel_rejects = 0  # shares for channels that do not exist (no counters to hold them)
        self.jobs_announced = 0
        self.height = self.settings.block_height
        self.tip = self._new_tip()
        self.template = BlockTemplate.random(next(self._template_ids), self.height, self.settings)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("DevPool already started")
        self._server = await asyncio.start_server(
            self._accept, self.settings.address, self.settings.port, limit=READ_CHUNK
        )
        s = self.settings
        if s.new_block_interval_s > 0:
            self._timers.append(
                asyncio.create_task(self._every(s.new_block_interval_s, self._new_block), name="pool-blocks")
            )
        if s.new_job_interval_s > 0:
            self._timers.append(
                asyncio.create_task(self._every(s.new_job_interval_s, self._new_job), name="pool-jobs")
            )
        log.info(
            "dev pool listening on %s:%d, authority public key %s",
            s.address, self.port, self.authority_pubkey,
        )

    async def close(self) -> None:
        for t in self._timers:
            t.cancel()
        for t in self._timers:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._timers.clear()
        if self._server is not None:
            self._server.close()
        self.drop_all_connections()
        tasks = list(self._conn_tasks)
        if tasks:
            # Aborted transports end the handlers by themselves; cancel only stragglers.
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(BaseException):
                    await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> DevPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("DevPool is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        return self.settings.address

    # -- statistics ------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    @property
    def total_accepted(self) -> int:
        return sum(c.accepted for c in self.counters.values())

    @property
    def total_rejected(self) -> int:
        return self.invalid_channel_rejects + sum(c.rejected_total for c in self.counters.values())

    @property
    def blocks_found(self) -> int:
        return sum(c.blocks_found for c in self.counters.values())

    def rejected_by_code(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.invalid_channel_rejects:
            out[INVALID_CHANNEL_ID] = self.invalid_channel_rejects
        for c in self.counters.values():
            for code, n in c.rejected.items():
                out[code] = out.get(code, 0) + n
        return out

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
        """Poll ``predicate`` until it is true; raise ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(interval)

    # -- test hooks ------------------------------------------------------------

    async def announce_new_block(self) -> None:
        """A new chain tip: a future job then SetNewPrevHash to every group (and standard channel)."""
        self._new_block()

    async def announce_new_job(self) -> None:
        """A new non-clean job on the current tip (min_ntime set: active at once)."""
        self._new_job()

    def set_channel_target(self, channel_id: int, target: int | bytes) -> None:
        """Retarget a channel (vardiff-style) and send SetTarget. Applies to jobs activated later."""
        ch = self.channels[channel_id]
        t = int.from_bytes(target, "little") if isinstance(target, bytes | bytearray) else int(target)
        ch.target = t
        conn = self._owner(channel_id)
        if conn is not None:
            conn.send(SetTarget(channel_id=channel_id, maximum_target=_target_bytes(t)))

    def send_to_all(self, msg: AnyMessage) -> None:
        """Send one message (e.g. Reconnect) to every connection that finished SetupConnection."""
        for conn in list(self._conns.values()):
            if conn.setup_done:
                conn.send(msg)

    def drop_all_connections(self) -> None:
        """Abort every client connection at once (simulates a pool crash)."""
        for conn in list(self._conns.values()):
            conn.abort()

    # -- chain simulation ------------------------------------------------------

    def _new_tip(self) -> ChainTip:
        # Random bytes with four trailing zeros: looks like a real hash when displayed.
        prev_hash = os.urandom(28) + bytes(4)
        return ChainTip(prev_hash, self.settings.nbits, int(self._clock()), self.height)

    async def _every(self, interval: float, fn: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                fn()
            except Exception:
                log.exception("pool timer failed")

    def _new_block(self) -> None:
        self.height += 1
        self.tip = self._new_tip()
        self.template = BlockTemplate.random(next(self._template_ids), self.height, self.settings)
        self.blocks_announced += 1
        log.info("new block: height %d, prev_hash %s", self.height, self.tip.prev_hash[::-1].hex())
        for conn, gid, members, job in self._group_jobs():
            conn.send(self._extended_job_msg(gid, job, None))
            conn.send(self._prev_hash_msg(gid, job))
            for ch in members:
                ch.add_future_job(job)
                ch.set_new_prev_hash(job.job_id, self.tip)
        for conn, ch in self._standard_channels():
            self._send_standard_block(conn, ch)

    def _new_job(self) -> None:
        self.template = BlockTemplate.random(next(self._template_ids), self.height, self.settings)
        self.jobs_announced += 1
        ntime = max(self.tip.min_ntime, int(self._clock()))
        for conn, gid, members, job in self._group_jobs():
            conn.send(self._extended_job_msg(gid, job, ntime))
            for ch in members:
                ch.add_active_job(job)
        for conn, ch in self._standard_channels():
            job = self._job(ch.full_extranonce_size)
            conn.send(self._standard_job_msg(ch, job, ntime))
            ch.add_active_job(job)

    def _group_jobs(self) -> Iterator[tuple[_PoolConnection, int, list[PoolChannel], Job]]:
        """A fresh job for every non-empty group of every open connection."""
        for conn in list(self._conns.values()):
            if conn.closed:
                continue
            for size, gid in conn.groups.items():
                members = [ch for ch in conn.channels.values() if ch.group_id == gid]
                if members:
                    yield conn, gid, members, self._job(size)

    def _standard_channels(self) -> Iterator[tuple[_PoolConnection, PoolChannel]]:
        for conn in list(self._conns.values()):
            if not conn.closed:
                for ch in [c for c in conn.channels.values() if c.standard]:
                    yield conn, ch

    def _job(self, full_extranonce_size: int) -> Job:
        return self.template.job_for(full_extranonce_size, lambda: next(self._job_ids))

    def _extended_job_msg(self, channel_id: int, job: Job, min_ntime: int | None) -> NewExtendedMiningJob:
        return NewExtendedMiningJob(
            channel_id=channel_id,
            job_id=job.job_id,
            min_ntime=min_ntime,
            version=job.version,
            version_rolling_allowed=job.version_rolling_allowed,
            merkle_path=job.merkle_path,
            coinbase_tx_prefix=job.wire_prefix,
            coinbase_tx_suffix=job.wire_suffix,
        )

    def _standard_job_msg(self, ch: PoolChannel, job: Job, min_ntime: int | None) -> NewMiningJob:
        return NewMiningJob(
            channel_id=ch.channel_id,
            job_id=job.job_id,
            min_ntime=min_ntime,
            version=job.version,
            merkle_root=job.merkle_root(ch.extranonce_prefix),
        )

    def _prev_hash_msg(self, channel_id: int, job: Job) -> SetNewPrevHash:
        return SetNewPrevHash(
            channel_id=channel_id,
            job_id=job.job_id,
            prev_hash=self.tip.prev_hash,
            min_ntime=self.tip.min_ntime,
            nbits=self.tip.nbits,
        )

    def _send_standard_block(self, conn: _PoolConnection, ch: PoolChannel) -> None:
        job = self._job(ch.full_extranonce_size)
        conn.send(self._standard_job_msg(ch, job, None))
        conn.send(self._prev_hash_msg(ch.channel_id, job))
        ch.add_future_job(job)
        ch.set_new_prev_hash(job.job_id, self.tip)

    # -- connections -----------------------------------------------------------

    def _owner(self, channel_id: int) -> _PoolConnection | None:
        for conn in self._conns.values():
            if channel_id in conn.channels:
                return conn
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        try:
            if len(self._conns) >= self.settings.max_connections:
                log.warning("refusing connection from %s: max_connections reached", writer.get_extra_info("peername"))
                writer.transport.abort()
                return
            responder = NoiseResponder(
                self._authority_secret, cert_validity=self.settings.cert_validity_s, now=self._clock
            )
            sv2 = Sv2Connection(responder, max_payload=self.settings.max_frame_bytes)
            conn = _PoolConnection(self, next(self._conn_ids), reader, writer, sv2)
            self._conns[conn.id] = conn
            try:
                await self._serve(conn)
            except asyncio.CancelledError:
                # A cancelled client_connected_cb task makes asyncio log a traceback
                # (Python 3.11); close() only cancels handlers that are already dead.
                pass
            finally:
                self._forget(conn)
        finally:
            if task is not None:
                self._conn_tasks.discard(task)

    async def _serve(self, conn: _PoolConnection) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.handshake_timeout_s
        try:
            while not conn.closed:
                timeout = None if conn.setup_done else max(0.0, deadline - loop.time())
                try:
                    async with asyncio.timeout(timeout):
                        data = await conn.reader.read(READ_CHUNK)
                except TimeoutError:
                    stage = "handshake" if not conn.sv2.handshake_complete else "SetupConnection"
                    log.info("connection %d (%s): %s timed out", conn.id, conn.peer, stage)
                    return
                if not data:
                    try:
                        conn.sv2.eof()
                    except ProtocolError as e:
                        log.info("connection %d (%s): %s", conn.id, conn.peer, e)
                    return
                was_complete = conn.sv2.handshake_complete
                conn.sv2.receive_data(data)
                out = conn.sv2.data_to_send()
                if out:
                    conn.writer.write(out)
                if conn.sv2.handshake_complete and not was_complete:
                    deadline = loop.time() + s.setup_timeout_s
                for msg in conn.sv2.messages():
                    self._dispatch(conn, msg)
                    if conn.closed or conn.close_after_flush:
                        break
                await conn.writer.drain()
                if conn.close_after_flush:
                    return
        except ProtocolError as e:
            log.info("connection %d (%s) closed: %s: %s", conn.id, conn.peer, type(e).__name__, e)
        except (ConnectionError, OSError) as e:
            log.debug("connection %d (%s) lost: %s", conn.id, conn.peer, e)

    def _forget(self, conn: _PoolConnection) -> None:
        self._conns.pop(conn.id, None)
        for cid in list(conn.ack_timers):
            conn.cancel_ack_timer(cid)
        for cid in conn.channels:
            self.channels.pop(cid, None)
        conn.channels.clear()
        if not conn.closed:
            conn.closed = True
            conn.sv2.close()
            conn.writer.close()

    # -- message handling ------------------------------------------------------

    def _dispatch(self, conn: _PoolConnection, msg: AnyMessage) -> None:
        if not conn.setup_done:
            if isinstance(msg, SetupConnection):
                self._on_setup(conn, msg)
                return
            raise ProtocolError(f"first message must be SetupConnection, got {msg.NAME}")
        if isinstance(msg, SubmitSharesExtended):
            self._on_submit(conn, msg.channel_id, msg.sequence_number, msg.job_id, msg.extranonce,
                            msg.ntime, msg.nonce, msg.version, standard=False)
        elif isinstance(msg, SubmitSharesStandard):
            self._on_submit(conn, msg.channel_id, msg.sequence_number, msg.job_id, None,
                            msg.ntime, msg.nonce, msg.version, standard=True)
        elif isinstance(msg, OpenExtendedMiningChannel):
            self._on_open_extended(conn, msg)
        elif isinstance(msg, OpenStandardMiningChannel):
            self._on_open_standard(conn, msg)
        elif isinstance(msg, UpdateChannel):
            self._on_update_channel(conn, msg)
        elif isinstance(msg, CloseChannel):
            ch = conn.channels.pop(msg.channel_id, None)
            conn.cancel_ack_timer(msg.channel_id)
            if ch is not None:
                self.channels.pop(ch.channel_id, None)
                log.info("connection %d: channel %d closed by client (%r)", conn.id, ch.channel_id, msg.reason_code)
        elif isinstance(msg, UnknownMessage):
            log.info("connection %d: ignoring unknown message %s (%d bytes)", conn.id, msg.NAME, len(msg.payload))
        else:
            log.info("connection %d: ignoring unexpected %s", conn.id, msg.NAME)

    def _on_setup(self, conn: _PoolConnection, msg: SetupConnection) -> None:
        error: str | None = None
        flags = 0
        if msg.protocol != PROTOCOL_MINING:
            error = "unsupported-protocol"
        elif not msg.min_version <= SV2_VERSION <= msg.max_version:
            error = "protocol-version-mismatch"
        elif msg.flags & REQUIRES_WORK_SELECTION:
            error, flags = "unsupported-feature-flags", REQUIRES_WORK_SELECTION
        if error is not None:
            log.info("connection %d: SetupConnection refused: %s", conn.id, error)
            conn.send(SetupConnectionError(flags=flags, error_code=error))
            conn.close_after_flush = True
            return
        conn.requires_standard_jobs = bool(msg.flags & REQUIRES_STANDARD_JOBS)
        conn.setup_done = True
        conn.send(SetupConnectionSuccess(used_version=SV2_VERSION, flags=0))
        log.info(
            "connection %d (%s): setup done (vendor %r, hardware %r, flags 0x%x)",
            conn.id, conn.peer, msg.vendor, msg.hardware_version, msg.flags,
        )

    def _initial_target(self, nominal_hash_rate: float, max_target: int) -> int:
        s = self.settings
        if s.fixed_difficulty is not None:
            t = target_from_difficulty(s.fixed_difficulty)
        else:
            t = hashrate_to_target(nominal_hash_rate, s.shares_per_minute)
        return max(1, min(t, max_target))

    def _open_checks(self, conn: _PoolConnection, request_id: int, hashrate: float) -> bool:
        error = None
        if not math.isfinite(hashrate) or hashrate < 0:
            error = "invalid-nominal-hashrate"
        elif len(conn.channels) >= self.settings.max_channels_per_connection:
            error = "too-many-channels"
        if error is not None:
            conn.send(OpenMiningChannelError(request_id=request_id, error_code=error))
            return False
        return True

    def _new_prefix(self) -> bytes | None:
        n = next(self._prefixes)
        size = self.settings.extranonce_prefix_size
        if n >= 256**size:
            return None
        return n.to_bytes(size, "big")

    def _register(self, conn: _PoolConnection, ch: PoolChannel) -> None:
        conn.channels[ch.channel_id] = ch
        self.channels[ch.channel_id] = ch
        self.counters[ch.channel_id] = ch.counters
        while len(self.counters) > MAX_KEPT_COUNTERS:
            self.counters.popitem(last=False)

    def _on_open_extended(self, conn: _PoolConnection, msg: OpenExtendedMiningChannel) -> None:
        if conn.requires_standard_jobs:
            conn.send(OpenMiningChannelError(
                request_id=msg.request_id, error_code="extended-channels-not-supported-for-standard-jobs"))
            return
        if msg.min_extranonce_size > MAX_ROLLABLE_EXTRANONCE:
            conn.send(OpenMiningChannelError(request_id=msg.request_id, error_code="min-extranonce-size-too-large"))
            return
        if not self._open_checks(conn, msg.request_id, msg.nominal_hash_rate):
            return
        prefix = self._new_prefix()
        if prefix is None:
            conn.send(OpenMiningChannelError(request_id=msg.request_id, error_code="extranonce-prefixes-exhausted"))
            return
        s = self.settings
        size = max(s.extranonce_size, msg.min_extranonce_size)
        full = len(prefix) + size
        gid = conn.groups.get(full)
        if gid is None:
            gid = conn.groups[full] = next(self._ids)
        max_target = int.from_bytes(msg.max_target, "little")
        ch = PoolChannel(
            next(self._ids), gid, standard=False, user_identity=msg.user_identity,
            extranonce_prefix=prefix, extranonce_size=size,
            target=self._initial_target(msg.nominal_hash_rate, max_target), max_target=max_target,
            share_batch_size=s.share_batch_size, max_seen_shares=s.max_seen_shares_per_channel,
        )
        self._register(conn, ch)
        conn.send(OpenExtendedMiningChannelSuccess(
            request_id=msg.request_id, channel_id=ch.channel_id, target=_target_bytes(ch.target),
            extranonce_size=size, extranonce_prefix=prefix, group_channel_id=gid,
        ))
        job = self._job(full)
        conn.send(self._extended_job_msg(ch.channel_id, job, None))
        conn.send(self._prev_hash_msg(ch.channel_id, job))
        ch.add_future_job(job)
        ch.set_new_prev_hash(job.job_id, self.tip)
        log.info(
            "connection %d: extended channel %d (group %d) for %r, prefix %s, rollable %d, difficulty %.3g",
            conn.id, ch.channel_id, gid, msg.user_identity, prefix.hex(), size, (0xFFFF << 208) / ch.target,
        )

    def _on_open_standard(self, conn: _PoolConnection, msg: OpenStandardMiningChannel) -> None:
        if not self._open_checks(conn, msg.request_id, msg.nominal_hash_rate):
            return
        prefix = self._new_prefix()
        if prefix is None:
            conn.send(OpenMiningChannelError(request_id=msg.request_id, error_code="extranonce-prefixes-exhausted"))
            return
        s = self.settings
        # A standard channel's whole extranonce is fixed by the pool.
        full_prefix = prefix + bytes(s.extranonce_size)
        if conn.standard_group_id is None:
            conn.standard_group_id = next(self._ids)
        max_target = int.from_bytes(msg.max_target, "little")
        ch = PoolChannel(
            next(self._ids), conn.standard_group_id, standard=True, user_identity=msg.user_identity,
            extranonce_prefix=full_prefix, extranonce_size=0,
            target=self._initial_target(msg.nominal_hash_rate, max_target), max_target=max_target,
            share_batch_size=s.share_batch_size, max_seen_shares=s.max_seen_shares_per_channel,
        )
        self._register(conn, ch)
        conn.send(OpenStandardMiningChannelSuccess(
            request_id=msg.request_id, channel_id=ch.channel_id, target=_target_bytes(ch.target),
            extranonce_prefix=full_prefix, group_channel_id=conn.standard_group_id,
        ))
        self._send_standard_block(conn, ch)
        log.info("connection %d: standard channel %d for %r", conn.id, ch.channel_id, msg.user_identity)

    def _on_update_channel(self, conn: _PoolConnection, msg: UpdateChannel) -> None:
        ch = conn.channels.get(msg.channel_id)
        if ch is None:
            conn.send(UpdateChannelError(channel_id=msg.channel_id, error_code="invalid-channel-id"))
            return
        hr = msg.nominal_hash_rate
        if not math.isfinite(hr) or hr < 0:
            conn.send(UpdateChannelError(channel_id=msg.channel_id, error_code="invalid-nominal-hashrate"))
            return
        max_target = int.from_bytes(msg.maximum_target, "little")
        ch.max_target = max_target
        ch.target = self._initial_target(hr, max_target)
        conn.send(SetTarget(channel_id=ch.channel_id, maximum_target=_target_bytes(ch.target)))

    def _on_submit(
        self,
        conn: _PoolConnection,
        channel_id: int,
        seq: int,
        job_id: int,
        extranonce: bytes | None,
        ntime: int,
        nonce: int,
        version: int,
        *,
        standard: bool,
    ) -> None:
        ch = conn.channels.get(channel_id)
        if ch is None or ch.standard != standard:
            self.invalid_channel_rejects += 1
            conn.send(SubmitSharesError(channel_id=channel_id, sequence_number=seq, error_code=INVALID_CHANNEL_ID))
            self.share_events.append(ShareEvent(conn.id, channel_id, seq, job_id, INVALID_CHANNEL_ID, False, None))
            return
        result: ShareResult = ch.submit(seq, job_id, extranonce, ntime, nonce, version, self.network_target)
        self.share_events.append(
            ShareEvent(conn.id, channel_id, seq, job_id, result.error, result.block_found, result.hash)
        )
        if result.error is not None:
            log.debug("channel %d: share %d rejected: %s", channel_id, seq, result.error)
            conn.send(SubmitSharesError(channel_id=channel_id, sequence_number=seq, error_code=result.error))
        if result.ack is not None:
            conn.cancel_ack_timer(channel_id)
            self._send_ack(conn, channel_id, result.ack)
        elif ch.pending_count and channel_id not in conn.ack_timers and self.settings.ack_interval_s > 0:
            conn.ack_timers[channel_id] = asyncio.get_running_loop().call_later(
                self.settings.ack_interval_s, self._ack_due, conn, ch
            )
        if result.block_found:
            assert result.hash is not None
            log.warning("channel %d found a block: %s", channel_id, result.hash[::-1].hex())
            if self.settings.new_block_on_found:
                asyncio.get_running_loop().call_soon(self._new_block)

    def _ack_due(self, conn: _PoolConnection, ch: PoolChannel) -> None:
        """The ack timer fired: acknowledge whatever the channel still has pending."""
        conn.ack_timers.pop(ch.channel_id, None)
        if conn.closed or conn.channels.get(ch.channel_id) is not ch:
            return
        ack = ch.take_ack()
        if ack is not None:
            self._send_ack(conn, ch.channel_id, ack)

    @staticmethod
    def _send_ack(conn: _PoolConnection, channel_id: int, ack: tuple[int, int, int]) -> None:
        last, count, total = ack
        conn.send(SubmitSharesSuccess(
            channel_id=channel_id, last_sequence_number=last,
            new_submits_accepted_count=count, new_shares_sum=total,
        ))


async def run_pool(settings: PoolSettings) -> None:
    """Run a dev pool until cancelled or SIGINT/SIGTERM (the ``tproxy pool`` command)."""
    pool = DevPool(settings)
    await pool.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    print(
        f"dev pool on {settings.address}:{pool.port}; authority_pubkey = \"{pool.authority_pubkey}\"",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await pool.close()


__all__ = ["DevPool", "ShareEvent", "run_pool"]
