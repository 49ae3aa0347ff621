"""SV2 frame layer, sans-IO: the 6-byte header and plaintext frame encoding.

Header layout (reference section 2.1), little-endian::

    extension_type U16 | msg_type U8 | msg_length U24

Bit 15 of the wire ``extension_type`` is the channel_msg flag (mask 0x8000,
so a core channel message starts ``00 80``). ``FrameHeader`` keeps the two
apart: ``extension_type`` is the 15-bit extension id and ``channel_msg`` the
flag. ``msg_length`` counts payload bytes only.

This module owns the header layout (``HEADER_SIZE``, ``FrameHeader``) and
turns a message into the plaintext frame that goes into Noise. The per-frame
paths of ``Sv2Connection`` use ``encode_header`` and ``header_fields``, which
give the same bytes and values as ``FrameHeader`` without building one. Reassembling
frames from a byte stream is not done here: every SV2 stream in this project
is Noise-encrypted, the header and the payload are separate AEAD messages, and
the payload's ciphertext length is known only after the header is decrypted,
so ``sv2.connection.Sv2Connection`` reassembles at the ciphertext level (and
applies its ``max_payload`` limit there, before buffering any payload byte).
The channel-bit constants belong to the message type space and are defined in
``sv2.messages.base``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sv2.codec import U24_MAX
from sv2.errors import EncodeError, ProtocolError
from sv2.messages import AnyMessage, UnknownMessage
from sv2.messages.base import CHANNEL_MSG_BIT, EXTENSION_TYPE_MAX

__all__ = [
    "CHANNEL_MSG_BIT",
    "EXTENSION_TYPE_MAX",
    "HEADER_SIZE",
    "MAX_MSG_LENGTH",
    "FrameHeader",
    "encode_frame",
    "encode_header",
    "header_fields",
    "header_for",
]

HEADER_SIZE = 6
MAX_MSG_LENGTH = U24_MAX

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


def header_for(message: AnyMessage, payload_length: int) -> FrameHeader:
    """The header that carries ``message`` with a payload of ``payload_length`` bytes."""
    if isinstance(message, UnknownMessage):
        return FrameHeader(
            message.extension_type, message.channel_msg, message.msg_type, payload_length
        )
    return FrameHeader(
        message.EXTENSION_TYPE, message.CHANNEL_MSG, message.MSG_TYPE, payload_length
    )


def encode_header(message: AnyMessage, payload_length: int) -> bytes:
    """The 6 header bytes that carry ``message`` with a payload of ``payload_length`` bytes.

    Same bytes as ``header_for(...).encode()``, without building a
    ``FrameHeader``: a known class's type fields are checked once by
    ``@message`` (which also sets ``WIRE_EXTENSION_TYPE``), so only the length
    (and an ``UnknownMessage``) need checks.
    """
    if isinstance(message, UnknownMessage) or not 0 <= payload_length <= MAX_MSG_LENGTH:
        return header_for(message, payload_length).encode()  # validates, raises EncodeError
    return _HEADER.pack(
        message.WIRE_EXTENSION_TYPE, message.MSG_TYPE, payload_length & 0xFFFF, payload_length >> 16
    )


def header_fields(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(wire extension_type with the channel bit, msg_type, msg_length) of 6 header bytes.

    The receive hot path's ``FrameHeader.decode``: a tuple instead of an object.
    """
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"frame header needs {HEADER_SIZE} bytes, got {len(data)}")
    ext, msg_type, lo, hi = _HEADER.unpack(data)
    return ext, msg_type, lo | hi << 16


def encode_frame(message: AnyMessage) -> bytes:
    """Header + payload of one message (plaintext, as it goes into Noise)."""
    payload = message.encode()
    if len(payload) > MAX_MSG_LENGTH:
        raise EncodeError("msg_length", f"payload of {len(payload)} bytes does not fit U24")
    return encode_header(message, len(payload)) + payload
