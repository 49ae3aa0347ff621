"""SV2 frame layer, sans-IO: the 6-byte header, frame encoding and a bounded stream decoder.

Header layout (reference section 2.1), little-endian::

    extension_type U16 | msg_type U8 | msg_length U24

Bit 15 of the wire ``extension_type`` is the channel_msg flag (mask 0x8000,
so a core channel message starts ``00 80``). ``FrameHeader`` keeps the two
apart: ``extension_type`` is the 15-bit extension id and ``channel_msg`` the
flag. ``msg_length`` counts payload bytes only.

``FrameDecoder`` takes bytes in arbitrary chunks and hands out complete
``Frame`` objects. It checks each declared length against ``max_payload``
as soon as the header is complete, before it buffers any payload byte, so a
peer can never make it hold more than one header plus ``max_payload`` bytes
of an incomplete frame. This module works on plaintext frames; the Noise
transport (which encrypts header and payload separately) reuses
``FrameHeader`` but does its own buffering.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from sv2.codec import U24_MAX
from sv2.errors import EncodeError, FrameTooLarge, ProtocolError, StateError
from sv2.messages import Message, UnknownMessage, decode_message

HEADER_SIZE = 6
CHANNEL_MSG_BIT = 0x8000
EXTENSION_TYPE_MAX = 0x7FFF
MAX_MSG_LENGTH = U24_MAX
DEFAULT_MAX_PAYLOAD = 1 << 20

# U16 extension_type | U8 msg_type | U16 low part + U8 high part of the U24 length.
_HEADER = struct.Struct("<HBHB")


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """A decoded header. ``extension_type`` never contains the channel bit."""

    extension_type: int
    channel_msg: bool
    msg_type: int
    msg_length: int

    def encode(self) -> bytes:
        if not 0 <= self.extension_type <= EXTENSION_TYPE_MAX:
            # A value with bit 15 set would silently flip channel_msg on the wire.
            raise EncodeError("extension_type", f"{self.extension_type} outside 0..0x7fff")
        if not 0 <= self.msg_type <= 0xFF:
            raise EncodeError("msg_type", f"{self.msg_type} outside U8")
        if not 0 <= self.msg_length <= MAX_MSG_LENGTH:
            raise EncodeError("msg_length", f"{self.msg_length} outside U24")
        ext = self.extension_type | (CHANNEL_MSG_BIT if self.channel_msg else 0)
        n = self.msg_length
        return _HEADER.pack(ext, self.msg_type, n & 0xFFFF, n >> 16)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> FrameHeader:
        """Decode exactly ``HEADER_SIZE`` bytes."""
        if len(data) != HEADER_SIZE:
            raise ProtocolError(f"frame header needs {HEADER_SIZE} bytes, got {len(data)}")
        ext, msg_type, lo, hi = _HEADER.unpack(data)
        return cls(ext & EXTENSION_TYPE_MAX, bool(ext & CHANNEL_MSG_BIT), msg_type, lo | (hi << 16))


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete plaintext frame: header and payload (``len(payload) == msg_length``)."""

    header: FrameHeader
    payload: bytes

    def encode(self) -> bytes:
        return self.header.encode() + self.payload

    def decode_message(self) -> Message | UnknownMessage:
        """Decode the payload by the header's type (UnknownMessage if unknown)."""
        h = self.header
        return decode_message(h.extension_type, h.msg_type, self.payload, h.channel_msg)


def header_for(message: Message | UnknownMessage, payload_length: int) -> FrameHeader:
    """The header that carries ``message`` with a payload of ``payload_length`` bytes."""
    if isinstance(message, UnknownMessage):
        return FrameHeader(
            message.extension_type, message.channel_msg, message.msg_type, payload_length
        )
    return FrameHeader(
        message.EXTENSION_TYPE, message.CHANNEL_MSG, message.MSG_TYPE, payload_length
    )


def encode_frame(message: Message | UnknownMessage) -> bytes:
    """Header + payload of one message (plaintext, as it goes into Noise)."""
    payload = message.encode()
    if len(payload) > MAX_MSG_LENGTH:
        raise EncodeError("msg_length", f"payload of {len(payload)} bytes does not fit U24")
    return header_for(message, len(payload)).encode() + payload


class FrameDecoder:
    """Incremental frame parser with a bounded partial-frame buffer.

    ``feed()`` parses eagerly: complete frames are queued and returned by
    ``next_frame()`` or by iterating the decoder. A ProtocolError from
    ``feed()`` (oversize frame) poisons the decoder: frames completed before
    the bad header can still be read, but further ``feed()`` calls raise
    ``StateError``. ``eof()`` (alias ``close()``) raises ProtocolError if the
    stream ended inside a frame.
    """

    __slots__ = ("_buf", "_closed", "_failed", "_frames", "_header", "max_payload")

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= MAX_MSG_LENGTH:
            raise ValueError(f"max_payload must be in 0..{MAX_MSG_LENGTH}, got {max_payload}")
        self.max_payload = max_payload
        # Holds either the partial header or the partial payload, never both.
        self._buf = bytearray()
        self._header: FrameHeader | None = None
        self._frames: deque[Frame] = deque()
        self._failed: ProtocolError | None = None
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes of the incomplete frame held (at most max(HEADER_SIZE, max_payload))."""
        return len(self._buf)

    @property
    def pending(self) -> int:
        """Complete frames queued and not yet taken."""
        return len(self._frames)

    @property
    def in_frame(self) -> bool:
        """True if part of a frame (header or payload) has been received."""
        return self._header is not None or bool(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._failed is not None:
            raise StateError(f"frame decoder failed earlier: {self._failed}")
        if self._closed:
            raise StateError("feed() after eof()")
        mv = memoryview(data).cast("B")
        n = len(mv)
        pos = 0
        buf = self._buf
        while True:
            header = self._header
            if header is None:
                if pos >= n:
                    return
                take = min(HEADER_SIZE - len(buf), n - pos)
                buf += mv[pos : pos + take]
                pos += take
                if len(buf) < HEADER_SIZE:
                    return
                header = FrameHeader.decode(buf)
                buf.clear()
                if header.msg_length > self.max_payload:
                    err = FrameTooLarge(
                        f"frame declares {header.msg_length} payload bytes, limit {self.max_payload}"
                    )
                    self._failed = err
                    raise err
                self._header = header
            need = header.msg_length - len(buf)
            if not buf and n - pos >= need:
                # Whole payload present in this chunk: one copy, no staging buffer.
                payload = bytes(mv[pos : pos + need])
                pos += need
            else:
                take = min(need, n - pos)
                buf += mv[pos : pos + take]
                pos += take
                if len(buf) < header.msg_length:
                    return
                payload = bytes(buf)
                buf.clear()
            self._frames.append(Frame(header, payload))
            self._header = None

    def next_frame(self) -> Frame | None:
        """The oldest complete frame, or None if none is ready."""
        return self._frames.popleft() if self._frames else None

    def __iter__(self) -> Iterator[Frame]:
        while self._frames:
            yield self._frames.popleft()

    def eof(self) -> None:
        """The stream ended. Raises ProtocolError if it stopped inside a frame."""
        self._closed = True
        if self.in_frame:
            have = len(self._buf)
            h = self._header
            self._buf.clear()
            self._header = None
            if h is None:
                raise ProtocolError(
                    f"stream ended inside a frame header ({have} of {HEADER_SIZE} bytes)"
                )
            raise ProtocolError(
                f"stream ended inside a frame: {have} of {h.msg_length} payload bytes"
            )

    close = eof
