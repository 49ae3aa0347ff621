"""Several processes serving one SV1 port: ``[proxy] workers = N`` (N > 1).

Owns the parent supervisor (``Cluster``), the worker process (``python -m
tproxy.workers FD``, ``worker_main``) and the one pipe between them.

* The parent (the process ``tproxy run`` started) owns the share log (one
  ClickHouse pipeline: batching, journal, spool) and the monitoring server. It
  reserves the SV1 address:port with a bound, never-listening SO_REUSEPORT
  socket (a port in use fails there, as one configuration line; port 0 is
  resolved once for every worker), spawns the workers, and restarts one that
  exits (one log line, backoff while it keeps dying).
* Each worker is a ``tproxy.runtime.Proxy`` without share log or monitoring:
  hub, channel manager, upstream supervisor, and an SV1 listener bound with
  SO_REUSEPORT on the same address:port, so the kernel spreads new miners
  over the workers. Each has its own pool connection and channel(s), so
  extranonce prefixes never collide.
* The pipe is a socketpair carrying length-prefixed pickle frames
  (``tproxy.pipe_sink``). Parent to worker: ``("spec", WorkerSpec)``,
  ``("go",)`` (connect upstream: sent once every listener, monitoring
  included, is bound), ``("ack", seq, durable)`` (durability "sync": rows
  frame ``seq`` is in the journal), ``("stop",)``. Worker to parent:
  ``("ready", port)`` or ``("error", message)`` once the SV1 listener is bound
  (or not); ``("rows", seq, shares, verdicts, events)``, records as plain
  tuples (``ShareRecord`` / ``PoolVerdictRecord`` / ``EventRecord`` fields in
  column order; ``seq`` 0: no ack wanted); ``("view", WorkerView)`` every half
  refresh interval. The parent counts the events per type for /metrics.

Identities stay unique across workers and their restarts (the share log
dedups on (instance_id, run_id, share_seq) and there is one run_id, the
parent's): every worker process gets a new ``generation`` (1, 2, ... over the
parent's life). Its ``share_seq`` and ``event_seq`` become ``generation << 40 | seq``
and its ``client_id`` ``generation << 32 | client_id``, in the share log and in
monitoring alike; a channel id becomes ``index << 24 | channel_id`` (worker 0
keeps the pool's ids; the pool's own must stay below 2**24).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tproxy.config import Settings
from tproxy.errors import ConfigError
from tproxy.monitor_source import ClusterMonitoringSource, ProxyMonitoringSource, WorkerView
from tproxy.pipe_sink import (
    CHANNEL_ID_SHIFT,
    CLIENT_ID_SHIFT,
    SHARE_SEQ_SHIFT,
    ParentPipe,
    PipeSink,
    encode,
    read_message,
)
from tproxy.shares.pipeline import ShareLog
from tproxy.shares.record import EventRecord, PoolVerdictRecord, ShareRecord
from tproxy.shares.settings import ClickHouseSettings
from tproxy.startup import listener_errors

if TYPE_CHECKING:
    from monitoring.service import Monitoring
    from tproxy.runtime import Proxy

log = logging.getLogger("tproxy.workers")

__all__ = ["CHANNEL_ID_SHIFT", "CLIENT_ID_SHIFT", "SHARE_SEQ_SHIFT", "Cluster", "encode", "read_message"]

START_TIMEOUT_S = 60.0  # spawn to SV1 listener bound (a cold interpreter on a loaded host)
STOP_TIMEOUT_S = 30.0  # "stop" to exit: miners told to reconnect, last records sent
RESTART_BACKOFF_S = (0.5, 30.0)  # first wait, cap; doubled while a worker dies within a minute
EVENT_TYPE = EventRecord.COLUMNS.index("event_type")


@dataclass(frozen=True)
class WorkerSpec:
    settings: Settings  # downstream.port already resolved by the parent
    index: int  # the slot, 0..N-1, kept across restarts
    generation: int  # unique per worker process over the parent's life
    log_level: str
    view_interval_s: float
    share_rows: bool = True  # the parent has a share log: ship share and verdict rows (events always go)


# ------------------------------------------------------------------ worker side


def worker_view(proxy: Proxy, spec: WorkerSpec) -> WorkerView:
    """The worker's monitoring records, with the ids ``PipeSink`` gives its share rows."""
    src = ProxyMonitoringSource(proxy, None)
    ch_base, cl_base = spec.index << CHANNEL_ID_SHIFT, spec.generation << CLIENT_ID_SHIFT

    def ch(cid: int | None) -> int | None:
        return ch_base | cid if cid else cid

    return WorkerView(
        upstream=src.upstream(),
        channels=tuple(dataclasses.replace(c, channel_id=ch_base | c.channel_id) for c in src.channels()),
        clients=tuple(
            dataclasses.replace(c, client_id=cl_base | c.client_id, channel_id=ch(c.channel_id))
            for c in src.sv1_clients()
        ),
    )


async def _report_views(proxy: Proxy, spec: WorkerSpec, transport: asyncio.Transport) -> None:
    while True:
        try:
            transport.write(encode(("view", worker_view(proxy, spec))))
        except Exception:  # a reading that fails must not end the reports for good
            log.exception("worker view failed")
        await asyncio.sleep(spec.view_interval_s)


def _worker_logging(spec: WorkerSpec) -> None:
    from tproxy.startup import LOG_FORMAT

    fmt = LOG_FORMAT.replace("%(name)s", f"%(name)s[worker {spec.index}]")
    logging.basicConfig(level=getattr(logging, spec.log_level.upper()), format=fmt, stream=sys.stderr, force=True)


async def _until_stopped(pipe: ParentPipe) -> None:
    """Until the parent says stop or goes away (or SIGTERM reaches this process)."""
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def read() -> None:
        while (msg := await pipe.next()) is not None and msg[0] != "stop":
            pass
        stop.set()

    task = asyncio.create_task(read(), name="worker-pipe")
    try:
        await stop.wait()
    finally:
        task.cancel()


async def worker_main(fd: int) -> int:
    """One worker: serve miners until stopped; exit code 2 when the listener cannot bind."""
    from tproxy.runtime import Proxy, tune_gc

    # Ctrl-C reaches the whole process group: the parent alone decides the order of shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _, pipe = await asyncio.get_running_loop().create_connection(ParentPipe, sock=socket.socket(fileno=fd))
    assert pipe.transport is not None
    transport = pipe.transport
    first = await pipe.next()
    if first is None or first[0] != "spec":
        return 1
    spec: WorkerSpec = first[1]
    _worker_logging(spec)
    ch = spec.settings.clickhouse
    proxy = Proxy(spec.settings, share_log=False)
    sink = PipeSink(pipe, fd, generation=spec.generation, index=spec.index, sync=ch.durability == "sync",
                    max_waiting=ch.durability_max_waiting, stall_s=ch.durability_stall_s,
                    share_rows=spec.share_rows)
    proxy.hub.share_sink = sink
    proxy.hub.events.sink = sink  # events go to the parent's share log (and its /metrics counts)
    views: asyncio.Task[None] | None = None
    try:
        try:
            await proxy.start_serving(reuse_port=True)
        except ConfigError as e:
            transport.write(encode(("error", str(e))))
            return 2
        transport.write(encode(("ready", proxy.sv1_port)))
        go = await pipe.next()
        if go is not None and go[0] == "go":
            proxy.start_upstream()
            views = asyncio.create_task(_report_views(proxy, spec, transport), name="worker-views")
            tune_gc()
            await _until_stopped(pipe)
    finally:
        if views is not None:
            views.cancel()
        await sink.settle()  # sync: the replies held for the parent's journal go out first
        await proxy.close()  # miners get client.reconnect, the pool connection closes
        await sink.settle()  # the records of the close (disconnect events)
        await pipe.closed(STOP_TIMEOUT_S / 2)
    return 0


# ------------------------------------------------------------------ parent side


@dataclass(eq=False)
class _Slot:
    index: int
    generation: int = 0
    pid: int | None = None
    writer: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    serving: bool = False  # listening and told to connect upstream


def reserve_port(address: str, port: int) -> socket.socket:
    """A bound SO_REUSEPORT socket that never listens: holds address:port for the workers' group."""
    family, type_, proto, _, addr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


class Cluster:
    """``tproxy run`` with ``proxy.workers`` > 1: share log, monitoring, and N supervised workers.

    Offers what ``tproxy.startup.RunningProxy`` reads (settings, ports, monitoring_source).
    """

    def __init__(self, settings: Settings, *, share_log: bool = True) -> None:
        self.settings = settings
        self.share_log: ShareLog | None = (
            ShareLog(settings.clickhouse, settings.proxy.instance_id) if share_log else None
        )
        # Events emitted by the workers, per type (WorkerEvents.counts of one process).
        self.event_counts: collections.Counter[str] = collections.Counter()
        self.monitoring_source = ClusterMonitoringSource(self.share_log)
        self.monitoring_source.event_counts = lambda: self.event_counts
        self.slots = [_Slot(i) for i in range(settings.proxy.workers)]
        self._generations = itertools.count(1)
        self._reserved: socket.socket | None = None
        self._port = settings.downstream.port
        self._monitoring: Monitoring | None = None
        self._go = asyncio.Event()
        self._stopping = False

    @property
    def sv1_port(self) -> int:
        return self._port

    @property
    def monitoring_port(self) -> int | None:
        return self._monitoring.server.port if self._monitoring is not None else None

    def worker_pids(self) -> list[int | None]:
        return [s.pid for s in self.slots]

    async def start(self) -> None:
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ConfigError(f"proxy.workers = {len(self.slots)}: needs SO_REUSEPORT, which this system lacks")
        if self.share_log is not None:
            await self.share_log.start()
        ds, ms = self.settings.downstream, self.settings.monitoring
        with listener_errors("downstream", ds.address, ds.port):  # bind failures: one line, exit 2
            self._reserved = reserve_port(ds.address, ds.port)
        self._port = int(self._reserved.getsockname()[1])
        ready = [asyncio.get_running_loop().create_future() for _ in self.slots]
        for slot, fut in zip(self.slots, ready, strict=True):
            slot.task = asyncio.create_task(self._supervise(slot, fut), name=f"worker-{slot.index}")
        # Every worker's SV1 listener is bound, or the first failure (a ConfigError) is raised.
        for result in await asyncio.gather(*ready, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
        from monitoring.service import start_monitoring

        with listener_errors("monitoring", ms.address, ms.port):
            self._monitoring = await start_monitoring(self.monitoring_source, ms)
        self._go.set()  # only once every listener is bound: the workers connect upstream
        log.info("%d workers listening for SV1 miners on %s:%d", len(self.slots), ds.address, self._port)

    def _spec(self, slot: _Slot) -> WorkerSpec:
        s = self.settings
        # The workers neither write the share log nor serve monitoring: they get neither's secrets,
        # only the parent's durability (a worker holds its replies as the parent's journal would).
        ch = s.clickhouse
        update = {
            "downstream": s.downstream.model_copy(update={"port": self._port}),
            "monitoring": s.monitoring.model_copy(update={"token": None}),
            "clickhouse": ClickHouseSettings(
                spool_dir=ch.spool_dir, durability=ch.durability if self.share_log is not None else "fast",
                durability_max_waiting=ch.durability_max_waiting, durability_stall_s=ch.durability_stall_s,
            ),
        }
        return WorkerSpec(
            settings=s.model_copy(update=update),
            index=slot.index,
            generation=slot.generation,
            log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
            view_interval_s=self.settings.monitoring.refresh_interval_s / 2,
            share_rows=self.share_log is not None,
        )

    async def _launch(self, slot: _Slot) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader]:
        """Spawn the slot's next worker and wait until its SV1 listener is bound."""
        slot.generation = next(self._generations)
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tproxy.workers", str(theirs.fileno()), pass_fds=(theirs.fileno(),)
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        slot.pid = proc.pid
        reader, writer = await asyncio.open_connection(sock=ours)
        slot.writer = writer
        first: tuple[Any, ...] | None = None
        try:
            writer.write(encode(("spec", self._spec(slot))))
            async with asyncio.timeout(START_TIMEOUT_S):
                first = await read_message(reader)
        finally:
            if first is None or first[0] != "ready":  # failed, timed out or cancelled: no half-started worker
                writer.close()
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if first is not None and first[0] == "ready":
            return proc, reader
        if first is not None and first[0] == "error":
            raise ConfigError(first[1])
        raise RuntimeError(f"worker {slot.index} exited with code {proc.returncode} before listening")

    async def _supervise(self, slot: _Slot, ready: asyncio.Future[None]) -> None:
        """Run the slot's worker; restart it whenever it exits, until the cluster stops."""
        loop = asyncio.get_running_loop()
        backoff = RESTART_BACKOFF_S[0]
        while not self._stopping:
            started = loop.time()
            try:
                proc, reader = await self._launch(slot)
            except Exception as e:
                if not ready.done():
                    ready.set_exception(e)
                    return
                log.error("worker %d could not start: %s", slot.index, e)
            else:
                if not ready.done():
                    ready.set_result(None)
                await self._go.wait()
                if not self._stopping and slot.writer is not None and not slot.writer.is_closing():
                    slot.writer.write(encode(("go",)))
                    slot.serving = True
                await self._pump(slot, reader)
                slot.serving = False
                code = await proc.wait()
                self.monitoring_source.drop(slot.index)
                if self._stopping:
                    return
                log.warning("worker %d (pid %s) exited with code %s; restarting it", slot.index, proc.pid, code)
            slot.restarts += 1
            backoff = RESTART_BACKOFF_S[0] if loop.time() - started > 60 else min(backoff * 2, RESTART_BACKOFF_S[1])
            await asyncio.sleep(backoff)

    async def _pump(self, slot: _Slot, reader: asyncio.StreamReader) -> None:
        """Everything a worker sends, until it closes the pipe."""
        while (msg := await read_message(reader)) is not None:
            try:
                self._dispatch(slot, msg)
            except Exception:  # a bug in one message must not end the worker's supervision
                log.exception("worker %d: message %r failed", slot.index, msg[0])
        if slot.writer is not None:
            slot.writer.close()

    def _dispatch(self, slot: _Slot, msg: tuple[Any, ...]) -> None:
        kind, sink = msg[0], self.share_log
        if kind == "rows":
            _, seq, shares, verdicts, events = msg
            self.event_counts.update(row[EVENT_TYPE] for row in events)
            if sink is not None:
                for row in shares:
                    sink.submit(ShareRecord(*row))
                for row in verdicts:
                    sink.submit_pool_verdict(PoolVerdictRecord(*row))
                for row in events:
                    sink.submit_event(EventRecord(*row))
            if seq:
                writer = slot.writer  # this worker's pipe: a restarted slot has a new one
                if sink is None or writer is None:
                    return
                sink.when_durable(lambda durable: self._ack(writer, seq, durable))
        elif kind == "view":
            self.monitoring_source.update(slot.index, msg[1])

    @staticmethod
    def _ack(writer: asyncio.StreamWriter, seq: int, durable: bool) -> None:
        if not writer.is_closing():
            writer.write(encode(("ack", seq, durable)))

    async def close(self) -> None:
        """Stop the workers (miners told to reconnect, their last records received), then the share log."""
        self._stopping = True
        self._go.set()  # a worker still waiting for "go" reads "stop" instead
        if self._monitoring is not None:
            await self._monitoring.close()
        for slot in self.slots:
            if slot.writer is not None and not slot.writer.is_closing():
                with contextlib.suppress(Exception):
                    slot.writer.write(encode(("stop",)))
        tasks = [s.task for s in self.slots if s.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for t in late:
                t.cancel()
            for slot in self.slots:
                if any(t is slot.task for t in late) and slot.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.pid, signal.SIGKILL)
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._reserved is not None:
            self._reserved.close()
        if self.share_log is not None:
            await self.share_log.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m tproxy.workers FD (started by tproxy run, not by hand)", file=sys.stderr)
        return 2
    return asyncio.run(worker_main(int(args[0])))


if __name__ == "__main__":
    sys.exit(main())
