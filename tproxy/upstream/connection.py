"""One live SV2 connection to one pool (the upstream side's socket owner).

``UpstreamConnection`` owns a TCP stream, its ``Sv2Connection`` (Noise NX
initiator, certificate checked against the configured authority key), the
SetupConnection exchange, and the bounded write buffer. Every message the
pool sends after SetupConnection is handed to one callback in arrival order
(the channel manager matches its own requests and replies).
Failures are ``tproxy.errors.UpstreamError`` subclasses: ``UpstreamClosed``
when the connection ended, ``UpstreamProtocolError`` when the pool broke SV2.

It also notices a pool that hangs with its TCP connection open (a stopped
process, a wedged event loop): shares it sends (``SubmitShares*``) wait for
an answer (``SubmitShares.Success`` / ``.Error``), and when shares wait while
no frame at all has arrived for ``proxy.upstream_silence_timeout_s``, or what
we write has not moved for that long (the pool stopped reading), the reader
ends with ``UpstreamSilent`` and the supervisor fails over as for any loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sv2.connection import Sv2Connection
from sv2.errors import ProtocolError
from sv2.messages import (
    AnyMessage,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
)
from sv2.noise import NoiseInitiator
from tproxy.config import ProxySettings, UpstreamSettings
from tproxy.errors import UpstreamClosed, UpstreamError, UpstreamProtocolError, UpstreamSilent

log = logging.getLogger("tproxy.upstream")

PROTOCOL_MINING = 0
FLAG_REQUIRES_VERSION_ROLLING = 0x4
POOL_READ_CHUNK = 65536
MAX_POOL_WRITE_BUFFER = 8 << 20  # a pool this far behind on reading is treated as lost


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
        self.connected_at = time.time()
        self.closed = False
        self.silence_timeout_s = 0.0  # 0: not checked (set from ProxySettings by connect)
        self._clock: Callable[[], float] = time.monotonic
        self.last_frame_at = self._clock()
        self.unanswered_shares = 0
        self._oldest_unanswered_at: float | None = None  # when the pool last owed nothing, or last answered
        self._write_stalled_since: float | None = None
        self._last_write_buffer = 0

    def __str__(self) -> str:
        return str(self.endpoint)

    @property
    def user_identity(self) -> str:
        """The configured user_identity of this upstream ("" if none)."""
        return self.endpoint.settings.user_identity

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
        self.silence_timeout_s = proxy.upstream_silence_timeout_s
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
            raise UpstreamProtocolError(f"{endpoint}: {type(e).__name__}: {e}") from e
        except (OSError, asyncio.IncompleteReadError) as e:
            self.close()
            raise UpstreamClosed(f"{endpoint}: connection lost during handshake: {e}") from e
        return self

    async def _handshake(self) -> None:
        self._write(self._conn.data_to_send())
        while not self._conn.handshake_complete:
            data = await self._reader.read(POOL_READ_CHUNK)
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
            raise UpstreamProtocolError(f"{self.endpoint}: expected SetupConnection.Success, got {type(msg).__name__}")

    async def _read_one(self) -> AnyMessage:
        while True:
            msg = self._conn.next_message()
            if msg is not None:
                return msg
            data = await self._reader.read(POOL_READ_CHUNK)
            if not data:
                self._conn.eof()
                raise UpstreamClosed(f"{self.endpoint}: closed by the pool")
            self._conn.receive_data(data)

    # -- running -----------------------------------------------------------

    def send(self, msg: AnyMessage) -> None:
        if self.closed:
            raise UpstreamClosed(f"{self.endpoint}: send on a closed connection")
        self._write(self._conn.send(msg))
        if isinstance(msg, SubmitSharesExtended | SubmitSharesStandard):
            if self.unanswered_shares == 0:
                self._oldest_unanswered_at = self._clock()
            self.unanswered_shares += 1

    def _observe(self, msg: AnyMessage) -> None:
        """Count the pool's share answers (the manager matches them; we only watch for silence)."""
        if isinstance(msg, SubmitSharesSuccess):
            answered = msg.new_submits_accepted_count
        elif isinstance(msg, SubmitSharesError):
            answered = 1
        else:
            return
        self.unanswered_shares = max(0, self.unanswered_shares - max(answered, 1))
        # The pool is answering: the wait for the rest starts again now.
        self._oldest_unanswered_at = None if self.unanswered_shares == 0 else self._clock()

    def silent_for(self) -> str | None:
        """Why the pool counts as silent now (None while it is not), per ``silence_timeout_s``."""
        limit = self.silence_timeout_s
        if limit <= 0:
            return None
        now = self._clock()
        if self.unanswered_shares and self._oldest_unanswered_at is not None:
            waiting = now - max(self._oldest_unanswered_at, self.last_frame_at)
            if waiting > limit:
                return f"pool silent for {waiting:.0f} s ({self.unanswered_shares} shares unanswered)"
        return self._not_reading(now)

    def _not_reading(self, now: float) -> str | None:
        """Why the pool counts as not reading what we send (our unsent bytes have not moved)."""
        size = self._writer.transport.get_write_buffer_size()
        if size == 0 or size < self._last_write_buffer:
            self._write_stalled_since = None  # the pool is reading what we send
        elif self._write_stalled_since is None:
            self._write_stalled_since = now
        elif now - self._write_stalled_since > self.silence_timeout_s:
            return f"pool not reading for {now - self._write_stalled_since:.0f} s ({size} bytes unsent)"
        self._last_write_buffer = size
        return None

    async def _read_some(self) -> bytes:
        """The next bytes from the pool; raises UpstreamSilent when it has gone quiet."""
        limit = self.silence_timeout_s
        if limit <= 0:
            return await self._reader.read(POOL_READ_CHUNK)
        check_every = min(max(limit / 4, 0.05), 1.0)
        while True:
            try:
                # Cancelling a StreamReader.read loses no data: what arrived stays buffered.
                async with asyncio.timeout(check_every):
                    data = await self._reader.read(POOL_READ_CHUNK)
            except TimeoutError:
                why = self.silent_for()
                if why is not None:
                    raise UpstreamSilent(f"{self.endpoint}: {why}") from None
                continue
            self.last_frame_at = self._clock()
            # A pool may keep sending while it no longer reads: check our writes here too.
            why = self._not_reading(self.last_frame_at)
            if why is not None:
                raise UpstreamSilent(f"{self.endpoint}: {why}")
            return data

    def _write(self, data: bytes) -> None:
        if self._writer.transport.get_write_buffer_size() > MAX_POOL_WRITE_BUFFER:
            self.close()
            raise UpstreamClosed(f"{self.endpoint}: pool stopped reading ({MAX_POOL_WRITE_BUFFER} bytes unsent)")
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    async def run(self, on_message: Callable[[AnyMessage], None]) -> None:
        """Read until the connection ends; raises UpstreamError saying why."""
        try:
            while True:
                # Stop as soon as a handler closed us: the sv2 connection is closed too,
                # and reading from it now would be our misuse (StateError), not the pool's.
                while not self.closed and (msg := self._conn.next_message()) is not None:
                    self._observe(msg)
                    on_message(msg)
                if self.closed:
                    raise UpstreamClosed(f"{self.endpoint}: closed by us")
                data = await self._read_some()
                if self.closed:
                    raise UpstreamClosed(f"{self.endpoint}: closed by us")
                if not data:
                    self._conn.eof()
                    raise UpstreamClosed(f"{self.endpoint}: closed by the pool")
                self._conn.receive_data(data)
        except ProtocolError as e:
            raise UpstreamProtocolError(f"{self.endpoint}: protocol error: {type(e).__name__}: {e}") from e
        except OSError as e:
            raise UpstreamClosed(f"{self.endpoint}: connection lost: {e}") from e
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._conn.close()
        with contextlib.suppress(Exception):
            self._writer.close()


