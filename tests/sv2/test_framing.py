"""SV2 framing: frames.json byte for byte, FrameDecoder reassembly, size limits, truncation."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sv2 import messages as m
from sv2.errors import EncodeError, FrameTooLarge, ProtocolError, StateError
from sv2.framing import (
    CHANNEL_MSG_BIT,
    HEADER_SIZE,
    MAX_MSG_LENGTH,
    Frame,
    FrameDecoder,
    FrameHeader,
    encode_frame,
)
from tests.conftest import load_vector

FRAMES = load_vector("frames")
MSG_FRAMES = [
    bytes.fromhex(v["frame_hex"])
    for v in load_vector("common_messages")["vectors"]
    + load_vector("mining_messages_derived")["messages"]
]


def test_constants() -> None:
    assert HEADER_SIZE == 6
    assert CHANNEL_MSG_BIT == 0x8000


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


# -- FrameDecoder -----------------------------------------------------------------------------


def test_decoder_whole_stream_in_one_feed() -> None:
    dec = FrameDecoder()
    dec.feed(b"".join(MSG_FRAMES))
    got = [f.encode() for f in dec]
    assert got == MSG_FRAMES
    assert dec.next_frame() is None
    dec.eof()


def test_decoder_byte_by_byte() -> None:
    dec = FrameDecoder()
    out: list[Frame] = []
    for b in b"".join(MSG_FRAMES):
        dec.feed(bytes([b]))
        while (f := dec.next_frame()) is not None:
            out.append(f)
    assert [f.encode() for f in out] == MSG_FRAMES
    assert all(len(f.payload) == f.header.msg_length for f in out)


def test_decoder_empty_payload_and_empty_feed() -> None:
    dec = FrameDecoder()
    dec.feed(b"")
    dec.feed(bytes.fromhex("000071000000"))  # NewTemplate header, zero-length payload
    frame = dec.next_frame()
    assert frame is not None and frame.payload == b"" and frame.header.msg_type == 0x71
    msg = frame.decode_message()
    assert isinstance(msg, m.UnknownMessage) and msg.msg_type == 0x71
    assert not dec.in_frame


def test_decoder_accepts_bytearray_and_memoryview() -> None:
    dec = FrameDecoder()
    data = b"".join(MSG_FRAMES[:3])
    dec.feed(bytearray(data[:10]))
    dec.feed(memoryview(data)[10:])
    assert [f.encode() for f in dec] == MSG_FRAMES[:3]


def test_oversize_rejected_before_payload_is_buffered() -> None:
    dec = FrameDecoder(max_payload=100)
    # header declaring 101 bytes; no payload sent at all
    with pytest.raises(FrameTooLarge, match="101"):
        dec.feed(FrameHeader(0, True, 0x1B, 101).encode())
    assert dec.buffered == 0
    # the decoder stays failed
    with pytest.raises(StateError):
        dec.feed(b"\x00")
    assert issubclass(FrameTooLarge, ProtocolError)


def test_oversize_after_good_frames_keeps_them() -> None:
    dec = FrameDecoder(max_payload=1000)
    huge = bytes.fromhex("00801fffffff")  # largest legal msg_length (16 MiB - 1)
    with pytest.raises(FrameTooLarge):
        dec.feed(MSG_FRAMES[0] + MSG_FRAMES[1] + huge + bytes(500))
    assert [f.encode() for f in dec] == MSG_FRAMES[:2]
    assert dec.buffered == 0


def test_exact_max_payload_is_accepted() -> None:
    dec = FrameDecoder(max_payload=10)
    dec.feed(FrameHeader(0, False, 0x70, 10).encode() + bytes(10))
    assert dec.pending == 1


def test_largest_legal_length_header_with_max_limit() -> None:
    dec = FrameDecoder(max_payload=MAX_MSG_LENGTH)
    dec.feed(bytes.fromhex("00801fffffff"))
    assert dec.in_frame and dec.buffered == 0
    with pytest.raises(ProtocolError, match="0 of 16777215"):
        dec.eof()


def test_buffer_is_bounded() -> None:
    limit = 300
    dec = FrameDecoder(max_payload=limit)
    frames = [f for f in MSG_FRAMES if len(f) - HEADER_SIZE <= limit]
    stream = b"".join(frames) * 3
    for i in range(0, len(stream), 7):
        dec.feed(stream[i : i + 7])
        assert dec.buffered <= max(HEADER_SIZE, limit)
    assert [f.encode() for f in dec] == frames * 3


def test_truncated_stream_in_header() -> None:
    dec = FrameDecoder()
    dec.feed(MSG_FRAMES[0] + MSG_FRAMES[1][:3])
    assert dec.next_frame() is not None
    with pytest.raises(ProtocolError, match="header"):
        dec.close()
    with pytest.raises(StateError):
        dec.feed(b"\x00")


def test_truncated_stream_in_payload() -> None:
    dec = FrameDecoder()
    dec.feed(MSG_FRAMES[0][:-1])
    with pytest.raises(ProtocolError, match="payload bytes"):
        dec.eof()


def test_clean_eof() -> None:
    dec = FrameDecoder()
    dec.feed(MSG_FRAMES[0])
    dec.eof()  # a complete frame followed by EOF is fine
    assert dec.pending == 1


def test_max_payload_argument() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_payload=-1)
    with pytest.raises(ValueError):
        FrameDecoder(max_payload=MAX_MSG_LENGTH + 1)
    FrameDecoder(max_payload=0).feed(FrameHeader(0, False, 1, 0).encode())
