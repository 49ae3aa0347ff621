"""SV2 messages: every common and mining vector byte for byte both ways, plus errors and registry."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sv2 import messages as m
from sv2.errors import EncodeError, ProtocolError
from sv2.framing import HEADER_SIZE, FrameHeader, encode_frame
from tests.helpers.vectors import load_vector

COMMON = load_vector("common_messages")["vectors"]
MINING = load_vector("mining_messages_derived")["messages"]
ALL_VECTORS = COMMON + MINING


def vector_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Vector field dict -> constructor kwargs (``*_hex`` -> bytes, lists -> tuples)."""
    out: dict[str, Any] = {}
    for key, val in fields.items():
        if key.endswith("_display"):
            continue  # informational only (a byte-reversed rendering)
        if key.endswith("_hex"):
            out[key[: -len("_hex")]] = bytes.fromhex(val)
        elif key == "merkle_path":
            out[key] = tuple(bytes.fromhex(x) for x in val)
        elif isinstance(val, list):
            out[key] = tuple(val)
        else:
            out[key] = val
    return out


def build(v: dict[str, Any]) -> m.Message:
    cls = m.message_class(0, v["msg_type"])
    assert cls is not None, v["name"]
    return cls(**vector_fields(v["fields"]))


@pytest.mark.parametrize("v", ALL_VECTORS, ids=lambda v: v["name"])
def test_vector_encode(v: dict[str, Any]) -> None:
    msg = build(v)
    cls = type(msg)
    assert v["msg_type"] == cls.MSG_TYPE
    assert cls.CHANNEL_MSG is v["channel_msg"]
    assert cls.EXTENSION_TYPE == 0
    payload = msg.encode()
    assert payload.hex() == v["payload_hex"]
    if "payload_len" in v:
        assert len(payload) == v["payload_len"]
    assert encode_frame(msg).hex() == v["frame_hex"]
    if "frame_header_hex" in v:
        assert encode_frame(msg)[:6].hex() == v["frame_header_hex"]


@pytest.mark.parametrize("v", ALL_VECTORS, ids=lambda v: v["name"])
def test_vector_decode(v: dict[str, Any]) -> None:
    expected = build(v)
    payload = bytes.fromhex(v["payload_hex"])
    cls = type(expected)
    assert cls.decode(payload) == expected
    # connection.py passes the wire extension_type, channel bit included
    ext = 0x8000 if v["channel_msg"] else 0
    assert m.decode_message(ext, v["msg_type"], payload) == expected
    assert m.decode_message(0, v["msg_type"], payload) == expected
    # and from the complete frame
    frame = bytes.fromhex(v["frame_hex"])
    header = FrameHeader.decode(frame[:HEADER_SIZE])
    assert header.msg_length == len(frame) - HEADER_SIZE
    assert header.channel_msg is v["channel_msg"]
    body = frame[HEADER_SIZE:]
    assert m.decode_message(header.extension_type, header.msg_type, body, header.channel_msg) == expected


@pytest.mark.parametrize("v", ALL_VECTORS, ids=lambda v: v["name"])
def test_vector_field_names_in_wire_order(v: dict[str, Any]) -> None:
    cls = type(build(v))
    names = [name for name, _ in cls.FIELDS]
    expected = list(vector_fields(v["fields"]))
    if cls is m.SubmitSharesExtended:
        assert names[-1] == "tlv"
        names = names[:-1]
    assert names == expected
    assert [f.name for f in dataclasses.fields(cls)][: len(names)] == names


@pytest.mark.parametrize("v", ALL_VECTORS, ids=lambda v: v["name"])
def test_vector_truncations_and_trailing_bytes(v: dict[str, Any]) -> None:
    cls = type(build(v))
    payload = bytes.fromhex(v["payload_hex"])
    for cut in range(len(payload)):
        prefix = payload[:cut]
        try:
            got = cls.decode(prefix)
        except ProtocolError:
            continue
        # A shorter prefix can only decode if the message ends in BYTES (the TLV field).
        assert cls is m.SubmitSharesExtended, (cls, cut)
        raise AssertionError(f"{cls.NAME} decoded a {cut}-byte prefix: {got}")
    if cls is m.SubmitSharesExtended:
        assert cls.decode(payload + b"\x00").tlv == b"\x00"
    else:
        with pytest.raises(ProtocolError, match="trailing"):
            cls.decode(payload + b"\x00")


def test_every_mining_and_common_type_has_a_vector() -> None:
    covered = {v["msg_type"] for v in ALL_VECTORS}
    core = {key[1] for key in m.REGISTRY if key[0] == 0}
    assert core == covered
    assert len(core) == 26


# -- channel bit and class table --------------------------------------------------------------

CHANNEL_CLASSES = {
    m.ChannelEndpointChanged,
    m.NewMiningJob,
    m.UpdateChannel,
    m.UpdateChannelError,
    m.CloseChannel,
    m.SetExtranoncePrefix,
    m.SubmitSharesStandard,
    m.SubmitSharesExtended,
    m.SubmitSharesSuccess,
    m.SubmitSharesError,
    m.NewExtendedMiningJob,
    m.SetNewPrevHash,
    m.SetTarget,
    m.SetCustomMiningJob,
    m.SetCustomMiningJobSuccess,
    m.SetCustomMiningJobError,
}


def test_channel_bit_table() -> None:
    for cls in m.MESSAGE_CLASSES:
        assert cls.CHANNEL_MSG is (cls in CHANNEL_CLASSES), cls.NAME
        if cls.CHANNEL_MSG:
            assert cls.FIELDS[0][0] == "channel_id"


def test_classes_are_frozen_slotted_dataclasses() -> None:
    msg = m.CloseChannel(channel_id=1, reason_code="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.channel_id = 2  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")
    assert m.message_name(msg) == "CloseChannel" == msg.NAME
    assert m.message_name(m.SubmitSharesSuccess) == "SubmitShares.Success"


def test_registry_lookup() -> None:
    assert m.message_class(0, 0x1B) is m.SubmitSharesExtended
    assert m.message_class(0x8000, 0x1B) is m.SubmitSharesExtended
    assert m.message_class(1, 0x00) is m.RequestExtensions
    assert m.message_class(0, 0x1E) is None


# -- unknown messages ----------------------------------------------------------------------------


def test_unknown_message_is_kept_raw() -> None:
    for ext, mt, chan in (
        (0, 0x1E, False),
        (0x8000, 0x1E, True),
        (0x8005, 0x07, True),
        (0x0003, 0, False),
    ):
        msg = m.decode_message(ext, mt, b"\x01\x02")
        assert msg == m.UnknownMessage(ext & 0x7FFF, mt, chan, b"\x01\x02")
        assert isinstance(msg, m.UnknownMessage)
        assert msg.encode() == b"\x01\x02"
        assert "Unknown" in m.message_name(msg)
        frame = encode_frame(msg)
        assert frame[:2] == (ext | (0x8000 if chan else 0)).to_bytes(2, "little")
        assert frame[2] == mt and frame[3:6] == b"\x02\x00\x00" and frame[6:] == b"\x01\x02"
    # explicit channel_msg wins over bit 15 (for callers that already split it)
    unknown = m.decode_message(0, 0x70, b"", channel_msg=True)
    assert isinstance(unknown, m.UnknownMessage) and unknown.channel_msg


def test_decode_message_accepts_memoryview() -> None:
    payload = bytes.fromhex("01000000")
    assert m.decode_message(0x8000, 3, memoryview(payload)) == m.ChannelEndpointChanged(1)


# -- specific decoding rules ---------------------------------------------------------------------


def test_bool_field_masks_bit0() -> None:
    job = m.NewExtendedMiningJob(1, 2, None, 0x20000000, True, (), b"", b"")
    wire = bytearray(job.encode())
    bool_at = 4 + 4 + 1 + 4
    assert wire[bool_at] == 1
    wire[bool_at] = 0x03
    assert m.NewExtendedMiningJob.decode(bytes(wire)).version_rolling_allowed is True
    wire[bool_at] = 0x02
    assert m.NewExtendedMiningJob.decode(bytes(wire)).version_rolling_allowed is False


def test_option_bad_tag_in_message() -> None:
    payload = bytearray(m.NewMiningJob(1, 2, 5, 3, bytes(32)).encode())
    payload[8] = 2
    with pytest.raises(ProtocolError, match=r"NewMiningJob\.min_ntime"):
        m.NewMiningJob.decode(bytes(payload))


def test_decode_error_names_the_message_and_field() -> None:
    with pytest.raises(ProtocolError, match=r"SubmitSharesExtended\.extranonce"):
        m.SubmitSharesExtended.decode(bytes(24) + b"\x21" + bytes(33))
    with pytest.raises(ProtocolError, match=r"SetupConnection\.vendor"):
        good = bytes.fromhex(COMMON[0]["payload_hex"])
        # cut inside the vendor string
        m.SetupConnection.decode(good[: 1 + 2 + 2 + 4 + 8 + 2 + 3])


def test_submit_shares_extended_tlv_field() -> None:
    value = b"worker0001"
    tlvs = m.encode_tlvs([m.Tlv(m.EXTENSION_WORKER_HASHRATE, m.TLV_USER_IDENTITY, value)])
    assert tlvs.hex() == "0200010a00" + value.hex()  # little-endian type and length, like SRI
    share = m.SubmitSharesExtended(1, 0, 1, 741057, 1745596971, 0x20000000, bytes(8), tlvs)
    wire = share.encode()
    base = m.SubmitSharesExtended(1, 0, 1, 741057, 1745596971, 0x20000000, bytes(8)).encode()
    assert wire == base + tlvs
    back = m.SubmitSharesExtended.decode(wire)
    assert back == share
    assert m.decode_tlvs(back.tlv) == (m.Tlv(2, 1, value),)
    with pytest.raises(ProtocolError):
        m.decode_tlvs(tlvs[:-1])
    with pytest.raises(ProtocolError):
        m.decode_tlvs(b"\x02\x00\x01\x0a")
    assert m.decode_tlvs(b"") == ()
    with pytest.raises(EncodeError):
        m.encode_tlvs([m.Tlv(0x10000, 1, b"")])


def test_extension_negotiation_messages() -> None:
    req = m.RequestExtensions(request_id=1, requested_extensions=(2,))
    frame = encode_frame(req)
    assert frame[:6].hex() == "010000060000"  # extension 0x0001, channel bit clear
    assert frame[6:].hex() == "0100" + "0100" + "0200"
    assert m.decode_message(1, 0, frame[6:]) == req
    err = m.RequestExtensionsError(7, (3, 4), (2,))
    assert m.decode_message(1, 2, err.encode()) == err
    ok = m.RequestExtensionsSuccess(7, ())
    assert m.RequestExtensionsSuccess.decode(ok.encode()) == ok
    # ext 0x0001 type 0x03 is not defined: kept raw, not mistaken for a core message
    assert isinstance(m.decode_message(1, 3, b""), m.UnknownMessage)


# -- encode errors name the field ---------------------------------------------------------------


def _share(**kw: Any) -> m.SubmitSharesExtended:
    base: dict[str, Any] = dict(
        channel_id=1, sequence_number=0, job_id=1, nonce=0, ntime=0, version=0, extranonce=bytes(8)
    )
    base.update(kw)
    return m.SubmitSharesExtended(**base)


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (_share(extranonce=bytes(33)), "extranonce"),
        (_share(extranonce="00" * 8), "extranonce"),
        (_share(nonce=1 << 32), "nonce"),
        (_share(channel_id=-1), "channel_id"),
        (_share(version=None), "version"),
        (_share(tlv="x"), "tlv"),
        (m.OpenExtendedMiningChannel(1, "u", 1.0, bytes(31), 8), "max_target"),
        (m.OpenExtendedMiningChannel(1, "u", 1.0, bytes(32), 65536), "min_extranonce_size"),
        (m.OpenExtendedMiningChannel(1, "u" * 256, 1.0, bytes(32), 8), "user_identity"),
        (m.OpenExtendedMiningChannel(1, "u", 1e39, bytes(32), 8), "nominal_hash_rate"),
        (m.UpdateChannel(1, "fast", bytes(32)), "nominal_hash_rate"),
        (m.SetupConnection(256, 2, 2, 0, "h", 1, "v", "hw", "", ""), "protocol"),
        (m.SetupConnection(0, 2, 2, 0, "h", 65536, "v", "hw", "", ""), "endpoint_port"),
        (m.NewMiningJob(1, 1, 1 << 32, 0, bytes(32)), "min_ntime"),
        (m.NewExtendedMiningJob(1, 1, None, 0, 1, (), b"", b""), "version_rolling_allowed"),
        (m.NewExtendedMiningJob(1, 1, None, 0, True, (bytes(31),), b"", b""), "merkle_path[0]"),
        (m.NewExtendedMiningJob(1, 1, None, 0, True, (bytes(32),) * 256, b"", b""), "merkle_path"),
        (m.NewExtendedMiningJob(1, 1, None, 0, True, (), bytes(65536), b""), "coinbase_tx_prefix"),
        (m.SetGroupChannel(1, (0,) * 65536), "channel_ids"),
        (m.SetGroupChannel(1, (1, 1 << 32)), "channel_ids[1]"),
        (
            m.SetCustomMiningJob(1, 1, bytes(256), 0, bytes(32), 0, 0, 0, b"", 0, b"", 0, ()),
            "mining_job_token",
        ),
        (m.SubmitSharesSuccess(1, 1, 1, 1 << 64), "new_shares_sum"),
    ],
    ids=lambda x: x if isinstance(x, str) else type(x).__name__,
)
def test_encode_error_names_field(msg: m.Message, field: str) -> None:
    with pytest.raises(EncodeError) as ei:
        msg.encode()
    assert ei.value.field == field
    assert type(msg).NAME in str(ei.value)
    with pytest.raises(EncodeError):
        encode_frame(msg)
