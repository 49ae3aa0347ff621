"""The SV2 client side: one connection to one pool, and the failover supervisor.

``UpstreamConnection`` owns a TCP stream, its ``Sv2Connection`` (Noise NX
initiator, certificate checked against the configured authority key), the
SetupConnection exchange, and request/response matching for channel opens.
Everything else the pool sends is handed to a callback in arrival order.

``UpstreamSupervisor`` owns the ordered upstream list: it connects with
backoff, falls back to the next upstream on failure, fails back to a
preferred one when it is reachable again, and obeys the pool's
``Reconnect``. It tells its listener (the bridge) when an upstream is up or
lost; the listener keeps the SV1 miners connected across all of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sv2.connection import AnyMessage, Sv2Connection
from sv2.errors import ProtocolError
from sv2.messages import (
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    Reconnect,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from sv2.noise import NoiseInitiator
from tproxy.config import ProxySettings, UpstreamSettings
from tproxy.errors import UpstreamError

log = logging.getLogger("tproxy.upstream")

PROTOCOL_MINING = 0
FLAG_REQUIRES_VERSION_ROLLING = 0x4
READ_CHUNK = 65536
MAX_WRITE_BUFFER = 8 << 20  # a pool this far behind on reading is treated as lost
STABLE_CONNECTION_S = 2.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: a configured upstream, possibly redirected by Reconnect."""

    settings: UpstreamSettings
    host: str
    port: int

    @classmethod
    def of(cls, s: UpstreamSettings) -> Endpoint:
        return cls(s, s.address, s.port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class UpstreamConnection:
    """One live, set-up SV2 connection to a pool."""

    def __init__(
        self,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: Sv2Connection,
    ) -> None:
        self.endpoint = endpoint
        self._reader = reader
        self._writer = writer
        self._conn = conn
        # request_id -> (waiter, hook run synchronously on the reply before any later message)
        self._pending: dict[int, tuple[asyncio.Future[AnyMessage], Callable[[AnyMessage], None] | None]] = {}
        self._next_request_id = 1
        self.connected_at = time.time()
        self.closed = False

    @classmethod
    async def connect(
        cls, endpoint: Endpoint, proxy: ProxySettings, *, now: Callable[[], float] = time.time
    ) -> UpstreamConnection:
        """TCP connect, Noise handshake, SetupConnection. Raises UpstreamError."""
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
            # cancellation that races with completion, which hangs shutdown.
            async with asyncio.timeout(proxy.connect_timeout_s):
                reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        except (OSError, TimeoutError) as e:
            raise UpstreamError(f"{endpoint}: connect failed: {e or type(e).__name__}") from e
        conn = Sv2Connection(
            NoiseInitiator(endpoint.settings.authority_xonly, now=now),
            max_payload=proxy.max_frame_bytes,
        )
        self = cls(endpoint, reader, writer, conn)
        try:
            async with asyncio.timeout(proxy.handshake_timeout_s):
                await self._handshake()
            async with asyncio.timeout(proxy.handshake_timeout_s):
                await self._setup()
        except TimeoutError as e:
            self.close()
            raise UpstreamError(f"{endpoint}: handshake/setup timed out") from e
        except ProtocolError as e:
            self.close()
            raise UpstreamError(f"{endpoint}: {type(e).__name__}: {e}") from e
        except (OSError, asyncio.IncompleteReadError) as e:
            self.close()
            raise UpstreamError(f"{endpoint}: connection lost during handshake: {e}") from e
        return self

    async def _handshake(self) -> None:
        self._write(self._conn.data_to_send())
        while not self._conn.handshake_complete:
            data = await self._reader.read(READ_CHUNK)
            if not data:
                self._conn.eof()
            self._conn.receive_data(data)

    async def _setup(self) -> None:
        host, port = self.endpoint.host, self.endpoint.port
        self.send(
            SetupConnection(
                protocol=PROTOCOL_MINING,
                min_version=2,
                max_version=2,
                flags=FLAG_REQUIRES_VERSION_ROLLING,
                endpoint_host=host[:255],
                endpoint_port=port,
                vendor="tproxy",
                hardware_version="Translator Proxy",
                firmware="tproxy 0.1",
                device_id="",
            )
        )
        msg = await self._read_one()
        if isinstance(msg, SetupConnectionError):
            raise UpstreamError(f"{self.endpoint}: SetupConnection refused: {msg.error_code} (flags {msg.flags:#x})")
        if not isinstance(msg, SetupConnectionSuccess):
            raise UpstreamError(f"{self.endpoint}: expected SetupConnection.Success, got {type(msg).__name__}")

    async def _read_one(self) -> AnyMessage:
        while True:
            msg = self._conn.next_message()
            if msg is not None:
                return msg
            data = await self._reader.read(READ_CHUNK)
            if not data:
                self._conn.eof()
                raise UpstreamError(f"{self.endpoint}: closed by the pool")
            self._conn.receive_data(data)

    # -- running -----------------------------------------------------------

    def send(self, msg: AnyMessage) -> None:
        if self.closed:
            raise UpstreamError(f"{self.endpoint}: send on a closed connection")
        self._write(self._conn.send(msg))

    def _write(self, data: bytes) -> None:
        if self._writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.close()
            raise UpstreamError(f"{self.endpoint}: pool stopped reading ({MAX_WRITE_BUFFER} bytes unsent)")
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    async def open_extended_channel(
        self,
        *,
        user_identity: str,
        nominal_hash_rate: float,
        max_target: bytes,
        min_extranonce_size: int,
        on_reply: Callable[[AnyMessage], None] | None = None,
        timeout: float = 10.0,
    ) -> OpenExtendedMiningChannelSuccess:
        """Send OpenExtendedMiningChannel and wait for its answer (needs run() going).

        ``on_reply`` runs synchronously when the reply is read, before the next
        message is dispatched: the pool sends the channel's first job right
        behind the Success, so the channel must be known by then.
        """
        rid = self._next_request_id
        self._next_request_id += 1
        fut: asyncio.Future[AnyMessage] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (fut, on_reply)
        self.send(
            OpenExtendedMiningChannel(
                request_id=rid,
                user_identity=user_identity[:255],
                nominal_hash_rate=nominal_hash_rate,
                max_target=max_target,
                min_extranonce_size=min_extranonce_size,
            )
        )
        try:
            async with asyncio.timeout(timeout):
                reply = await fut
        except TimeoutError as e:
            raise UpstreamError(f"{self.endpoint}: no answer to OpenExtendedMiningChannel") from e
        finally:
            self._pending.pop(rid, None)
        if isinstance(reply, OpenMiningChannelError):
            raise UpstreamError(f"{self.endpoint}: channel refused: {reply.error_code}")
        assert isinstance(reply, OpenExtendedMiningChannelSuccess)
        return reply

    async def run(self, on_message: Callable[[AnyMessage], None]) -> None:
        """Read until the connection ends; raises UpstreamError saying why."""
        try:
            while True:
                for msg in self._conn.messages():
                    rid = getattr(msg, "request_id", None)
                    if isinstance(msg, (OpenExtendedMiningChannelSuccess, OpenMiningChannelError)) and rid in self._pending:
                        fut, hook = self._pending[rid]
                        if not fut.done():
                            if hook is not None:
                                try:
                                    hook(msg)
                                except Exception as e:  # surfaced to the waiter, not the reader
                                    fut.set_exception(e)
                                    continue
                            fut.set_result(msg)
                        continue
                    on_message(msg)
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    if self.closed:
                        raise UpstreamError(f"{self.endpoint}: closed by us")
                    self._conn.eof()
                    raise UpstreamError(f"{self.endpoint}: closed by the pool")
                self._conn.receive_data(data)
        except ProtocolError as e:
            raise UpstreamError(f"{self.endpoint}: protocol error: {type(e).__name__}: {e}") from e
        except OSError as e:
            raise UpstreamError(f"{self.endpoint}: connection lost: {e}") from e
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(UpstreamError(f"{self.endpoint}: connection closed"))
        self._pending.clear()
        with contextlib.suppress(Exception):
            self._conn.close()
        with contextlib.suppress(Exception):
            self._writer.close()


class UpstreamListener(Protocol):
    """What the supervisor tells the bridge."""

    async def on_upstream_up(self, up: UpstreamConnection) -> None:
        """Open channels on ``up``. Raising UpstreamError makes the supervisor move on."""

    def on_upstream_message(self, up: UpstreamConnection, msg: AnyMessage) -> None: ...

    def on_upstream_lost(self, up: UpstreamConnection, reason: str) -> None: ...


class UpstreamSupervisor:
    """Keeps one upstream connected, in order of preference, for as long as it runs."""

    def __init__(
        self,
        upstreams: list[UpstreamSettings],
        proxy: ProxySettings,
        listener: UpstreamListener,
        *,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.upstreams = upstreams
        self.proxy = proxy
        self.listener = listener
        self._now = now
        self._sleep = sleep
        self.current: UpstreamConnection | None = None
        self.current_index: int | None = None
        self.down_since: float | None = now()
        self.connects = 0
        self.failures = 0
        self.last_error = ""
        self._redirect: Endpoint | None = None
        self._switch = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failback_task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="upstream-supervisor")
        self._failback_task = asyncio.create_task(self._failback_loop(), name="upstream-failback")

    async def stop(self) -> None:
        self._stopping = True
        for t in (self._task, self._failback_task):
            # Cancel until done: a library await may swallow one cancellation.
            while t is not None and not t.done():
                t.cancel()
                await asyncio.wait({t}, timeout=0.5)
            if t is not None and not t.cancelled():
                t.exception()
        if self.current is not None:
            self.current.close()

    def on_reconnect_request(self, up: UpstreamConnection, msg: Reconnect) -> None:
        """The pool asked us to move (empty host / port 0 mean 'same')."""
        host = msg.new_host or up.endpoint.host
        port = msg.new_port or up.endpoint.port
        self._redirect = Endpoint(up.endpoint.settings, host, port)
        log.info("pool %s asked us to reconnect to %s:%s", up.endpoint, host, port)
        up.close()

    async def _run(self) -> None:
        backoff = self.proxy.reconnect_backoff_initial_s
        while not self._stopping:
            served = 0.0
            redirect, self._redirect = self._redirect, None
            if redirect is not None:
                served = await self._serve(self.upstreams.index(redirect.settings), redirect)
            else:
                for index, settings in enumerate(self.upstreams):
                    served = await self._serve(index, Endpoint.of(settings))
                    if served or self._redirect is not None:
                        break
            if self._redirect is not None:
                continue
            if served >= STABLE_CONNECTION_S:
                backoff = self.proxy.reconnect_backoff_initial_s
                continue  # lost after a good run: retry at once, most preferred first
            await self._sleep(backoff)
            backoff = min(backoff * 2, self.proxy.reconnect_backoff_max_s)

    async def _serve(self, index: int, endpoint: Endpoint) -> float:
        """Connect to one endpoint and serve it until it is lost.

        Returns how many seconds it was up (0.0 if it never came up).
        """
        try:
            up = await UpstreamConnection.connect(endpoint, self.proxy, now=self._now)
        except UpstreamError as e:
            self.failures += 1
            self.last_error = str(e)
            log.warning("upstream %s unavailable: %s", endpoint, e)
            return 0.0
        run_task = asyncio.create_task(
            up.run(lambda m: self._dispatch(up, m)), name=f"upstream-read-{endpoint}"
        )
        try:
            await self.listener.on_upstream_up(up)
        except UpstreamError as e:
            await _cancel(run_task)
            up.close()
            self.failures += 1
            self.last_error = str(e)
            log.warning("upstream %s refused our channel: %s", endpoint, e)
            return 0.0
        except BaseException:  # cancelled while opening channels: reap the reader too
            await _cancel(run_task)
            up.close()
            raise
        started = self._now()
        self.current, self.current_index = up, index
        self.connects += 1
        self.down_since = None
        log.info("upstream %s is up (preference %d)", endpoint, index)
        switch_wait = asyncio.create_task(self._switch.wait(), name="upstream-switch-wait")
        reason = "failing back to a preferred upstream"
        try:
            done, _ = await asyncio.wait({run_task, switch_wait}, return_when=asyncio.FIRST_COMPLETED)
            if run_task in done:
                exc = run_task.exception()
                reason = str(exc) if exc else "closed"
        finally:
            await _cancel(run_task)
            await _cancel(switch_wait)
            self._switch.clear()
            self.current = None
            self.current_index = None
            self.down_since = self._now()
            if self._stopping:
                reason = "proxy shutting down"
            self.last_error = reason
            up.close()
            (log.info if self._stopping else log.warning)("upstream %s closed: %s", endpoint, reason)
            self.listener.on_upstream_lost(up, reason)
        return max(self._now() - started, 1e-9)

    def _dispatch(self, up: UpstreamConnection, msg: AnyMessage) -> None:
        if isinstance(msg, Reconnect):
            self.on_reconnect_request(up, msg)
            return
        self.listener.on_upstream_message(up, msg)

    async def _failback_loop(self) -> None:
        """While on a fallback upstream, probe the preferred ones and switch back."""
        while not self._stopping:
            await self._sleep(self.proxy.failback_interval_s)
            idx = self.current_index
            if self.current is None or idx is None or idx == 0:
                continue
            for settings in self.upstreams[:idx]:
                try:
                    probe = await UpstreamConnection.connect(Endpoint.of(settings), self.proxy, now=self._now)
                except UpstreamError:
                    continue
                probe.close()
                log.info("preferred upstream %s:%s is back; failing back", settings.address, settings.port)
                self._switch.set()
                break


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it, without swallowing a cancellation of our own."""
    if not task.done():
        task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: its failure was already reported where it happened
