"""One SV2 connection, sans-IO: bytes in, messages out; message in, bytes out.

``Sv2Connection`` owns the connection's state machine (handshake, then
transport, then closed), the Noise handshake object for its role, the
transport ciphers, and a bounded receive buffer. It never touches a socket:
the caller feeds whatever bytes arrived with ``receive_data``, writes out
whatever ``data_to_send`` returns, and iterates ``next_message``.

Malformed input from the peer raises ``ProtocolError`` (or a subclass) and
moves the connection to ``CLOSED``. Calling an operation the current state
does not allow (sending before the handshake is done, feeding or reading a
closed connection) is the caller's bug and raises ``StateError``, a
``LocalProtocolError``; so does sending a message over our own
``max_payload``.

Frame reassembly lives here rather than in ``sv2.framing``: the header and
the payload are separate AEAD messages and the payload's ciphertext length is
known only once the header is decrypted, so the stream is cut at the
ciphertext level.

The per-frame paths (``send``, ``next_message``) call the transport's two
``CipherState`` objects directly for the usual frame, whose payload fits one
AEAD message (up to ``MAX_CHUNK_PLAINTEXT`` bytes): the header and the
payload are then one AEAD call each, and the ``NoiseTransport`` wrappers
would only re-check lengths this module has already fixed. Longer payloads
(several chunks) go through ``NoiseTransport``. Nonces are only ever
advanced by ``CipherState``, so their order and exhaustion errors are the
same on either path. ``_tx`` / ``_rx`` are set exactly while the state is
``TRANSPORT``, so one ``is None`` test is the state check.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from sv2.errors import (
    EncodeError,
    FrameTooLarge,
    HandshakeTruncated,
    LocalProtocolError,
    ProtocolError,
    StateError,
)
from sv2.framing import MAX_MSG_LENGTH, encode_header, header_fields
from sv2.messages import AnyMessage, decode_message
from sv2.noise import (
    ACT1_SIZE,
    ACT2_SIZE,
    HEADER_CT_SIZE,
    MAC_SIZE,
    MAX_CHUNK_PLAINTEXT,
    CipherState,
    NoiseInitiator,
    NoiseResponder,
    NoiseTransport,
)

# AnyMessage is re-exported: callers import it from here next to Sv2Connection.
__all__ = ["DEFAULT_MAX_PAYLOAD", "AnyMessage", "Role", "State", "Sv2Connection"]

# Largest frame payload accepted or sent unless the caller sets max_payload.
DEFAULT_MAX_PAYLOAD = 1 << 20


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class State(enum.Enum):
    HANDSHAKE = "handshake"
    TRANSPORT = "transport"
    CLOSED = "closed"


class Sv2Connection:
    """Sans-IO SV2 connection over Noise NX, for either role."""

    def __init__(
        self,
        handshake: NoiseInitiator | NoiseResponder,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        if not 0 <= max_payload <= MAX_MSG_LENGTH:
            raise ValueError(f"max_payload must be in 0..{MAX_MSG_LENGTH}, got {max_payload}")
        self._hs = handshake
        self.role = Role.INITIATOR if isinstance(handshake, NoiseInitiator) else Role.RESPONDER
        self.max_payload = max_payload
        self._state = State.HANDSHAKE
        self._buf = bytearray()
        self._pos = 0  # read offset into _buf; compacted only when more bytes are needed
        self._out = bytearray()
        self._transport: NoiseTransport | None = None
        # The transport's ciphers, set exactly while the state is TRANSPORT (module docstring).
        self._tx: CipherState | None = None
        self._rx: CipherState | None = None
        # Decrypted header awaiting its payload: (wire extension_type, msg_type, msg_length).
        self._header: tuple[int, int, int] | None = None
        if isinstance(handshake, NoiseInitiator):
            self._out += handshake.write_act1()

    # -- state -------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def handshake_complete(self) -> bool:
        return self._transport is not None

    @property
    def transport(self) -> NoiseTransport | None:
        """The transport ciphers once the handshake is complete (kept after close)."""
        return self._transport

    @property
    def buffered(self) -> int:
        """Received bytes not yet consumed (at most one incomplete frame once drained)."""
        return len(self._buf) - self._pos

    def close(self) -> None:
        self._state = State.CLOSED
        self._tx = self._rx = None
        self._buf.clear()
        self._pos = 0

    def eof(self) -> None:
        """The peer closed its side. Raises if it left a truncated handshake or frame."""
        state = self._state
        pending = len(self._buf) - self._pos
        self.close()
        if state is State.HANDSHAKE:
            raise HandshakeTruncated(f"connection closed during the handshake ({pending} bytes buffered)")
        if pending or self._header is not None:
            raise ProtocolError(f"connection closed inside a frame ({pending} bytes buffered)")

    # -- input -------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the peer. Handshake acts are processed at once."""
        if self._state is State.CLOSED:
            raise StateError("receive_data on a closed connection")
        self._buf += data
        if self._state is State.HANDSHAKE:
            self._advance_handshake()

    def _advance_handshake(self) -> None:
        try:
            if isinstance(self._hs, NoiseResponder):
                if len(self._buf) < ACT1_SIZE:
                    return
                act1 = bytes(self._buf[:ACT1_SIZE])
                del self._buf[:ACT1_SIZE]
                self._hs.read_act1(act1)
                self._out += self._hs.write_act2()
                self._transport = self._hs.transport()
            else:
                if len(self._buf) < ACT2_SIZE:
                    return
                act2 = bytes(self._buf[:ACT2_SIZE])
                del self._buf[:ACT2_SIZE]
                self._transport = self._hs.read_act2(act2)
        except ProtocolError:
            self.close()
            raise
        self._state = State.TRANSPORT
        self._tx, self._rx = self._transport.send_cipher, self._transport.recv_cipher

    def next_message(self) -> AnyMessage | None:
        """Return the next complete message, or None if more bytes are needed.

        The buffer is bounded by construction: a frame's declared length is
        checked against ``max_payload`` before its payload is awaited, and the
        caller drains messages after every read.
        """
        rx = self._rx
        if rx is None:  # not in TRANSPORT
            if self._state is State.CLOSED:
                raise StateError("next_message on a closed connection")
            return None
        buf, pos = self._buf, self._pos
        try:
            header = self._header
            if header is None:
                if len(buf) - pos < HEADER_CT_SIZE:
                    self._compact()
                    return None
                # Exactly one header ciphertext, sliced from the buffer: a
                # bytearray slice goes to the AEAD as is (one copy, not two).
                header = header_fields(rx.decrypt_with_ad(None, buf[pos : pos + HEADER_CT_SIZE]))
                pos += HEADER_CT_SIZE
                self._pos = pos
                if header[2] > self.max_payload:
                    raise FrameTooLarge(
                        f"frame declares {header[2]} payload bytes, limit {self.max_payload}"
                    )
                self._header = header
            ext, msg_type, length = header
            if length:
                if length <= MAX_CHUNK_PLAINTEXT:  # one chunk, one AEAD message (the usual case)
                    ct_len = length + MAC_SIZE
                else:
                    ct_len = NoiseTransport.encrypted_payload_length(length)
                if len(buf) - pos < ct_len:
                    self._compact()
                    return None
                ct = buf[pos : pos + ct_len]
                if length <= MAX_CHUNK_PLAINTEXT:
                    payload = rx.decrypt_with_ad(None, ct)
                else:
                    assert self._transport is not None  # set before _rx
                    payload = self._transport.decrypt_payload(ct)
                self._pos = pos + ct_len
            else:
                payload = b""
            self._header = None
            return decode_message(ext, msg_type, payload)
        except ProtocolError:
            self.close()
            raise

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def messages(self) -> Iterator[AnyMessage]:
        """Iterate every complete message currently buffered.

        Starting on a closed connection raises ``StateError``. If the consumer
        closes the connection while handling a message (say, on a
        CloseChannel), the iteration simply ends: that close was legal, and
        resuming the loop is not a second use of a closed connection.
        """
        msg = self.next_message()
        while msg is not None:
            yield msg
            if self._state is State.CLOSED:
                return
            msg = self.next_message()

    # -- output ------------------------------------------------------------

    def send(self, message: AnyMessage) -> bytes:
        """Encode and encrypt one message; returns the bytes to write."""
        tx = self._tx
        if tx is None:  # not in TRANSPORT
            raise StateError(f"send({type(message).__name__}) in state {self._state.value}")
        payload = message.encode()
        size = len(payload)
        if size > self.max_payload:
            self._refuse_oversize(message, size)
        # Header and payload go to the AEAD separately: no plaintext frame is built.
        header = encode_header(message, size)
        if 0 < size <= MAX_CHUNK_PLAINTEXT:  # one chunk (the usual case): two AEAD messages
            return tx.encrypt_two(header, payload)
        assert self._transport is not None  # set before _tx
        return self._transport.encrypt_message(header, payload)

    def _refuse_oversize(self, message: AnyMessage, size: int) -> None:
        if size > MAX_MSG_LENGTH:
            raise EncodeError("msg_length", f"payload of {size} bytes does not fit U24")
        # Our own message over our own limit: a caller bug, not the peer's.
        raise LocalProtocolError(f"outgoing {type(message).__name__} exceeds {self.max_payload} bytes")

    def data_to_send(self) -> bytes:
        """Pending handshake bytes (act 1 for the initiator, act 2 for the responder)."""
        out = bytes(self._out)
        self._out.clear()
        return out
