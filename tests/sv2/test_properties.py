"""Property tests (hypothesis) for codec, messages and framing.

Strategies are derived from each message's field descriptors, so a message
class added later is covered without touching this file.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sv2 import codec as c
from sv2 import messages as m
from sv2.connection import State
from sv2.errors import ProtocolError
from sv2.framing import HEADER_SIZE, FrameHeader, encode_frame
from sv2.noise import HEADER_CT_SIZE, NoiseTransport
from tests.helpers.sv2_pair import connected_pair, message_strategy, strategy_for

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


ANY_MESSAGE = st.one_of(*(message_strategy(cls) for cls in m.MESSAGE_CLASSES))
ALL_CLASSES = list(m.MESSAGE_CLASSES)


def test_every_class_is_covered() -> None:
    for cls in ALL_CLASSES:
        for _, codec in cls.FIELDS:
            strategy_for(codec)  # raises for an unknown descriptor
    assert len(ALL_CLASSES) == 26 + 3


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
@FAST
@given(data=st.data())
def test_message_round_trip(cls: type[m.Message], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    payload = msg.encode()
    assert cls.decode(payload) == msg
    frame = encode_frame(msg)
    assert frame[HEADER_SIZE:] == payload
    header = FrameHeader.decode(frame[:HEADER_SIZE])
    assert (header.extension_type, header.channel_msg, header.msg_type, header.msg_length) == (
        cls.EXTENSION_TYPE,
        cls.CHANNEL_MSG,
        cls.MSG_TYPE,
        len(payload),
    )
    wire_ext = int.from_bytes(frame[:2], "little")
    assert m.decode_message(wire_ext, cls.MSG_TYPE, payload) == msg


PRIMITIVE_CODECS: list[c.Codec[Any]] = [
    *c.PRIMITIVES.values(),
    c.Seq0_255(c.U256),
    c.Seq0_64K(c.U32),
    c.Seq0_255(c.STR0_255),
    c.Option(c.U32),
    c.Option(c.B0_32),
]


@pytest.mark.parametrize("codec", PRIMITIVE_CODECS, ids=repr)
@FAST
@given(data=st.data())
def test_primitive_round_trip(codec: c.Codec[Any], data: st.DataObject) -> None:
    value = data.draw(strategy_for(codec))
    wire = codec.to_bytes(value)
    assert codec.from_bytes(wire) == value


@pytest.mark.parametrize("codec", PRIMITIVE_CODECS, ids=repr)
@FAST
@given(raw=st.binary(max_size=80))
def test_primitive_decode_random_bytes(codec: c.Codec[Any], raw: bytes) -> None:
    try:
        value = codec.from_bytes(raw)
    except ProtocolError:
        return
    if isinstance(value, float) and value != value:
        return  # NaN: not equal to itself, and its payload bits need not survive
    # Whatever decodes must re-encode to a canonical form that decodes the same.
    again = codec.to_bytes(value)
    assert codec.from_bytes(again) == value
    if not isinstance(codec, c.Bool) and not _contains_bool(codec):
        assert again == raw


def _contains_bool(codec: c.Codec[Any]) -> bool:
    inner = getattr(codec, "inner", None)
    return isinstance(codec, c.Bool) or (inner is not None and _contains_bool(inner))


# -- hostile input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=30, deadline=None)
@given(raw=st.binary(max_size=120))
def test_decode_message_random_bytes(cls: type[m.Message], raw: bytes) -> None:
    try:
        msg = m.decode_message(cls.EXTENSION_TYPE, cls.MSG_TYPE, raw)
    except ProtocolError:
        return
    assert isinstance(msg, cls)
    # Anything accepted re-encodes to the same bytes, except BOOL (bit 0 only)
    # and F32 (NaN payloads need not survive a float32 -> float -> float32 trip).
    if not any(isinstance(codec, (c.Bool, c.Float32)) for _, codec in cls.FIELDS):
        assert msg.encode() == raw


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_decode_message_mutated_valid_bytes(cls: type[m.Message], data: st.DataObject) -> None:
    """Flip, cut and extend valid payloads: structured garbage reaches deeper than noise."""
    payload = bytearray(data.draw(message_strategy(cls)).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "extend"]))
        if op == "flip" and payload:
            i = data.draw(st.integers(0, len(payload) - 1))
            payload[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del payload[data.draw(st.integers(0, len(payload))) :]
        else:
            payload += data.draw(st.binary(min_size=1, max_size=8))
    try:
        m.decode_message(cls.EXTENSION_TYPE, cls.MSG_TYPE, bytes(payload))
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE))
def test_any_six_bytes_are_a_header_that_round_trips(raw: bytes) -> None:
    header = FrameHeader.decode(raw)
    assert header.encode() == raw
    assert 0 <= header.extension_type <= m.EXTENSION_TYPE_MAX


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=400), max_payload=st.integers(0, 200), chunk=st.integers(1, 64))
def test_connection_random_bytes(raw: bytes, max_payload: int, chunk: int) -> None:
    """Arbitrary bytes after the handshake: only ProtocolError, and a bounded buffer."""
    _, server = connected_pair(max_payload=max_payload)
    bound = max(HEADER_CT_SIZE, NoiseTransport.encrypted_payload_length(max_payload))
    try:
        for i in range(0, len(raw), chunk):
            server.receive_data(raw[i : i + chunk])
            for msg in server.messages():
                assert len(msg.encode()) <= max_payload
            assert server.buffered < bound
        server.eof()
    except ProtocolError:
        assert server.state is State.CLOSED


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200), ext=st.integers(0, 0xFFFF), mt=st.integers(0, 255))
def test_decode_message_any_type(raw: bytes, ext: int, mt: int) -> None:
    try:
        msg = m.decode_message(ext, mt, raw)
    except ProtocolError:
        return
    if isinstance(msg, m.UnknownMessage):
        assert msg.payload == raw and msg.channel_msg is bool(ext & 0x8000)


# -- reassembly across arbitrary feed() boundaries ----------------------------------------------------


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=st.lists(ANY_MESSAGE, min_size=1, max_size=6), data=st.data())
def test_split_frames_reassemble(msgs: list[m.Message], data: st.DataObject) -> None:
    frames = [encode_frame(msg) for msg in msgs]
    # The frames go through the real reassembler: an encrypted Sv2Connection.
    client, server = connected_pair()
    wire = b"".join(client.send(msg) for msg in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert b"".join(pieces) == wire
    got: list[m.AnyMessage] = []
    for piece in pieces:
        server.receive_data(piece)
        got.extend(server.messages())
    server.eof()
    assert [encode_frame(msg) for msg in got] == frames
    assert got == msgs
