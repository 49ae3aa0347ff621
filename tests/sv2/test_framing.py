"""SV2 framing: frames.json byte for byte, header limits, frame encoding.

Stream reassembly is Sv2Connection's job (the stream is encrypted); its tests
are in test_connection.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sv2 import messages as m
from sv2.codec import U8
from sv2.errors import EncodeError, ProtocolError
from sv2.framing import (
    CHANNEL_MSG_BIT,
    EXTENSION_TYPE_MAX,
    HEADER_SIZE,
    MAX_MSG_LENGTH,
    FrameHeader,
    encode_frame,
    encode_header,
    header_fields,
    header_for,
)
from sv2.messages.base import message
from tests.helpers.sv2_pair import message_strategy
from tests.helpers.vectors import load_vector

FRAMES = load_vector("frames")


def test_constants() -> None:
    assert HEADER_SIZE == 6
    assert CHANNEL_MSG_BIT == 0x8000
    assert EXTENSION_TYPE_MAX == 0x7FFF
    # One definition each: framing uses the message module's constants.
    assert CHANNEL_MSG_BIT is m.CHANNEL_MSG_BIT
    assert EXTENSION_TYPE_MAX is m.EXTENSION_TYPE_MAX


@pytest.mark.parametrize("v", FRAMES["vectors"], ids=lambda v: v["header_hex"])
def test_header_vectors_both_ways(v: dict[str, Any]) -> None:
    raw = bytes.fromhex(v["header_hex"])
    h = FrameHeader.decode(raw)
    wire_ext = v["extension_type"]  # the U16 as on the wire, channel bit included
    assert h.extension_type == wire_ext & 0x7FFF
    if "extension_type_without_channel_bit" in v:
        assert h.extension_type == v["extension_type_without_channel_bit"]
    assert h.channel_msg is v["channel_msg"]
    assert h.msg_type == v["msg_type"]
    assert h.msg_length == v["msg_length"]
    built = FrameHeader(wire_ext & 0x7FFF, v["channel_msg"], v["msg_type"], v["msg_length"])
    assert built == h
    assert built.encode() == raw


def _type_of(entry: str) -> int | None:
    mt = re.search(r"0x([0-9a-f]{2})$", entry)
    return int(mt.group(1), 16) if mt else None


def test_channel_bit_by_message() -> None:
    table = FRAMES["channel_bit_by_message"]
    checked = 0
    for key, expected in (("set (0x8000)", True), ("clear", False)):
        for entry in table[key]:
            mt = _type_of(entry)
            if mt is None:
                if entry == "extension 0x0001 messages":
                    for cls in m.MESSAGE_CLASSES:
                        if cls.EXTENSION_TYPE == 1:
                            assert cls.CHANNEL_MSG is False
                            checked += 1
                continue  # JD/TDP messages: not implemented here
            cls = m.message_class(0, mt)
            assert cls is not None, entry
            assert cls.CHANNEL_MSG is expected, entry
            frame = encode_frame(_sample(cls))
            assert frame[:2] == (b"\x00\x80" if expected else b"\x00\x00"), entry
            checked += 1
    assert checked == 26 + 3


def _sample(cls: type[m.Message]) -> m.Message:
    """A minimal valid instance of any message class (zero values)."""
    from sv2 import codec as c

    def zero(codec: c.Codec[Any]) -> Any:
        if isinstance(codec, c.Bool):
            return False
        if isinstance(codec, c.UInt):
            return 0
        if isinstance(codec, c.Float32):
            return 0.0
        if isinstance(codec, c.FixedBytes):
            return bytes(codec.size)
        if isinstance(codec, c.Str):
            return ""
        if isinstance(codec, c.Seq):
            return ()
        if isinstance(codec, c.Option):
            return None
        return b""

    return cls(*(zero(codec) for _, codec in cls.FIELDS))


def test_header_decode_needs_exactly_six_bytes() -> None:
    for n in (0, 5, 7):
        with pytest.raises(ProtocolError):
            FrameHeader.decode(bytes(n))


def test_header_encode_limits() -> None:
    with pytest.raises(EncodeError) as ei:
        FrameHeader(0x8000, False, 0, 0).encode()
    assert ei.value.field == "extension_type"
    with pytest.raises(EncodeError) as ei:
        FrameHeader(0, False, 256, 0).encode()
    assert ei.value.field == "msg_type"
    with pytest.raises(EncodeError) as ei:
        FrameHeader(0, False, 0, MAX_MSG_LENGTH + 1).encode()
    assert ei.value.field == "msg_length"
    assert FrameHeader(0x7FFF, True, 255, MAX_MSG_LENGTH).encode() == b"\xff\xff\xff\xff\xff\xff"


def test_encode_frame_rejects_oversize_payload() -> None:
    big = m.UnknownMessage(0, 0x70, False, bytes(MAX_MSG_LENGTH + 1))
    with pytest.raises(EncodeError, match="U24"):
        encode_frame(big)


# -- the hot-path header functions against FrameHeader ------------------------------------------

ANY_KNOWN = st.sampled_from(list(m.MESSAGE_CLASSES)).flatmap(message_strategy)


@settings(max_examples=100, deadline=None)
@given(msg=ANY_KNOWN, length=st.integers(0, MAX_MSG_LENGTH))
def test_encode_header_equals_frame_header(msg: m.Message, length: int) -> None:
    raw = encode_header(msg, length)
    assert raw == header_for(msg, length).encode()
    assert header_fields(raw) == (msg.WIRE_EXTENSION_TYPE, msg.MSG_TYPE, length)
    assert msg.WIRE_EXTENSION_TYPE == msg.EXTENSION_TYPE | (CHANNEL_MSG_BIT * msg.CHANNEL_MSG)


def test_encode_header_rejects_what_frame_header_rejects() -> None:
    share = m.SubmitSharesSuccess(1, 2, 3, 4)
    for length in (-1, MAX_MSG_LENGTH + 1):
        with pytest.raises(EncodeError, match="msg_length"):
            encode_header(share, length)
    with pytest.raises(EncodeError, match="extension_type"):
        encode_header(m.UnknownMessage(0x8000, 1, False, b""), 0)
    assert encode_header(m.UnknownMessage(0x7FFF, 0xAB, True, b"x"), 1) == bytes.fromhex("ffffab010000")


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE))
def test_header_fields_equals_frame_header_decode(raw: bytes) -> None:
    h = FrameHeader.decode(raw)
    ext = h.extension_type | (CHANNEL_MSG_BIT if h.channel_msg else 0)
    assert header_fields(raw) == (ext, h.msg_type, h.msg_length)
    assert header_fields(bytearray(raw)) == header_fields(raw)


def test_header_fields_needs_six_bytes() -> None:
    for n in (5, 7):
        with pytest.raises(ProtocolError):
            header_fields(bytes(n))


def test_message_decorator_checks_the_type_fields() -> None:
    for ext, msg_type in ((0, 0x100), (0x8000, 1), (-1, 1)):
        with pytest.raises(TypeError, match="EXTENSION_TYPE"):

            @message
            @dataclass(frozen=True, slots=True)
            class Bad(m.Message):
                EXTENSION_TYPE: ClassVar[int] = ext
                MSG_TYPE: ClassVar[int] = msg_type
                CHANNEL_MSG: ClassVar[bool] = False
                NAME: ClassVar[str] = "Bad"
                x: Annotated[int, U8]
    assert all(cls.NAME != "Bad" for cls in m.REGISTRY.values())
