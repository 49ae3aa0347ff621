"""Extension 0x0001 (extensions negotiation) messages and the TLV record codec.

RequestExtensions / .Success / .Error travel with extension_type 0x0001 in
the frame header and the channel bit clear (reference section 2.3).

TLV records (used by extension 0x0002, worker-specific hashrate tracking) are
appended after the last declared field of a message, e.g. in
``SubmitSharesExtended.tlv``. Layout per record: extension_type U16, field
type U8, length U16, value. The spec's worked example prints type and length
big-endian, but SRI encodes them little-endian; we follow SRI, because SRI is
the peer we must interoperate with.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated, ClassVar

from sv2.codec import U16, Seq0_64K
from sv2.errors import EncodeError, ProtocolError
from sv2.messages.base import Message, message

EXTENSION_NEGOTIATION = 0x0001
EXTENSION_WORKER_HASHRATE = 0x0002
# Field id of the user_identity TLV of extension 0x0002 (value at most 32 bytes).
TLV_USER_IDENTITY = 0x01
USER_IDENTITY_MAX = 32


@message
@dataclass(frozen=True, slots=True)
class RequestExtensions(Message):
    MSG_TYPE: ClassVar[int] = 0x00
    CHANNEL_MSG: ClassVar[bool] = False
    EXTENSION_TYPE: ClassVar[int] = EXTENSION_NEGOTIATION
    NAME: ClassVar[str] = "RequestExtensions"

    request_id: Annotated[int, U16]
    requested_extensions: Annotated[tuple[int, ...], Seq0_64K(U16)]


@message
@dataclass(frozen=True, slots=True)
class RequestExtensionsSuccess(Message):
    MSG_TYPE: ClassVar[int] = 0x01
    CHANNEL_MSG: ClassVar[bool] = False
    EXTENSION_TYPE: ClassVar[int] = EXTENSION_NEGOTIATION
    NAME: ClassVar[str] = "RequestExtensions.Success"

    request_id: Annotated[int, U16]
    supported_extensions: Annotated[tuple[int, ...], Seq0_64K(U16)]


@message
@dataclass(frozen=True, slots=True)
class RequestExtensionsError(Message):
    MSG_TYPE: ClassVar[int] = 0x02
    CHANNEL_MSG: ClassVar[bool] = False
    EXTENSION_TYPE: ClassVar[int] = EXTENSION_NEGOTIATION
    NAME: ClassVar[str] = "RequestExtensions.Error"

    request_id: Annotated[int, U16]
    unsupported_extensions: Annotated[tuple[int, ...], Seq0_64K(U16)]
    required_extensions: Annotated[tuple[int, ...], Seq0_64K(U16)]


_TLV_HEAD = struct.Struct("<HBH")


@dataclass(frozen=True, slots=True)
class Tlv:
    """One TLV record: ``extension_type`` and ``field_type`` form the type."""

    extension_type: int
    field_type: int
    value: bytes


def encode_tlvs(records: tuple[Tlv, ...] | list[Tlv]) -> bytes:
    """Serialize TLV records back to back (little-endian type and length, like SRI)."""
    out = bytearray()
    for i, rec in enumerate(records):
        field = f"tlv[{i}]"
        if not 0 <= rec.extension_type <= 0xFFFF:
            raise EncodeError(field, f"extension_type {rec.extension_type} outside U16")
        if not 0 <= rec.field_type <= 0xFF:
            raise EncodeError(field, f"field_type {rec.field_type} outside U8")
        if not isinstance(rec.value, (bytes, bytearray)):
            raise EncodeError(field, f"value needs bytes, got {type(rec.value).__name__}")
        if len(rec.value) > 0xFFFF:
            raise EncodeError(field, f"value of {len(rec.value)} bytes exceeds U16 length")
        out += _TLV_HEAD.pack(rec.extension_type, rec.field_type, len(rec.value))
        out += rec.value
    return bytes(out)


def decode_tlvs(data: bytes | bytearray | memoryview) -> tuple[Tlv, ...]:
    """Parse back-to-back TLV records; a truncated record raises ProtocolError."""
    buf = bytes(data)
    pos = 0
    records: list[Tlv] = []
    while pos < len(buf):
        if pos + _TLV_HEAD.size > len(buf):
            raise ProtocolError(f"TLV header truncated at offset {pos}")
        ext, ftype, n = _TLV_HEAD.unpack_from(buf, pos)
        pos += _TLV_HEAD.size
        if pos + n > len(buf):
            raise ProtocolError(f"TLV value truncated: need {n} bytes, have {len(buf) - pos}")
        records.append(Tlv(ext, ftype, buf[pos : pos + n]))
        pos += n
    return tuple(records)
