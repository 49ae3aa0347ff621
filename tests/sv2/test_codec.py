"""SV2 primitive codecs: every vector of binary_primitives_derived.json both ways, limits, errors."""

from __future__ import annotations

import re
import struct
from typing import Any

import pytest

from sv2 import codec as c
from sv2.errors import EncodeError, ProtocolError
from tests.helpers.vectors import load_vector

PRIMS = load_vector("binary_primitives_derived")


def codec_for(type_name: str) -> c.Codec[Any]:
    """Parse a vector type string like ``SEQ0_255[U256]`` or ``U24 (encode)``."""
    name = type_name.split(" (")[0].strip()
    m = re.fullmatch(r"(SEQ0_255|SEQ0_64K|OPTION)\[(\w+)\]", name)
    if m:
        inner = c.PRIMITIVES[m.group(2)]
        wrapper = {"SEQ0_255": c.Seq0_255, "SEQ0_64K": c.Seq0_64K, "OPTION": c.Option}[m.group(1)]
        return wrapper(inner)  # type: ignore[no-any-return]
    return c.PRIMITIVES[name]


def vector_value(v: dict[str, Any]) -> tuple[Any, bytes]:
    """The Python value a vector stands for, and its complete wire bytes.

    Some vectors describe their value in words and show only a prefix of the
    bytes; this maps each of those descriptions to the real value. An
    unrecognised description fails the test, so no vector is skipped silently.
    """
    t, val, raw = v["type"], v["value"], bytes.fromhex(v["hex"])
    if t == "BOOL (decode)":
        return True, raw
    if t in ("B0_32", "B0_255") and isinstance(val, str):
        return raw[1:], raw
    if t == "B0_64K":
        assert val.startswith("300 bytes of 0xab")
        body = b"\xab" * 300
        return body, raw + body
    if t == "B0_16M":
        assert val.startswith("70000 zero bytes")
        body = bytes(70000)
        return body, raw + body
    if t in ("U256", "PUBKEY"):
        assert len(raw) == 32
        return raw, raw
    if t == "SIGNATURE":
        assert val == "64 bytes as-is" and raw == bytes(4)
        return bytes(64), bytes(64)
    if t == "SEQ0_255[U256]":
        if val == "empty":
            return (), raw
        assert val == "one element 0x03*32"
        return (b"\x03" * 32,), raw
    if t == "SEQ0_64K[U32]":
        return tuple(val), raw
    if isinstance(val, (bool, int, float, str)) or val is None:
        return val, raw
    raise AssertionError(f"unhandled vector {v}")


@pytest.mark.parametrize("v", PRIMS["vectors"], ids=lambda v: f"{v['type']}={v['hex'][:16]}")
def test_primitive_vector_both_ways(v: dict[str, Any]) -> None:
    codec = codec_for(v["type"])
    value, wire = vector_value(v)
    decoded = codec.from_bytes(wire)
    if v["type"] == "F32" and v.get("note", "").startswith("10 TH/s"):
        # binary32 cannot hold 1e13 exactly; the vector documents the rounding.
        assert decoded == 9999999827968.0
        assert codec.to_bytes(value) == wire
        assert codec.to_bytes(decoded) == wire
        return
    assert decoded == value
    assert type(decoded) is type(value)
    if v["type"] == "BOOL (decode)":
        assert codec.to_bytes(decoded) == b"\x01"  # write only 0/1
    else:
        assert codec.to_bytes(value) == wire


def test_every_vector_type_is_covered() -> None:
    names = {v["type"].split(" (")[0] for v in PRIMS["vectors"]}
    for name in names:
        codec_for(name)  # raises KeyError on an unknown type


@pytest.mark.parametrize("v", [v for v in PRIMS["invalid"] if "hex" in v], ids=lambda v: v["type"])
def test_invalid_decode_vectors(v: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        codec_for(v["type"]).from_bytes(bytes.fromhex(v["hex"]))


@pytest.mark.parametrize(
    "v", [v for v in PRIMS["invalid"] if "value" in v], ids=lambda v: v["type"]
)
def test_invalid_encode_vectors(v: dict[str, Any]) -> None:
    assert v["type"].endswith("(encode)")
    with pytest.raises(EncodeError) as ei:
        codec_for(v["type"]).encode(v["value"], bytearray(), "the_field")
    assert ei.value.field == "the_field"


def test_invalid_vectors_all_checked() -> None:
    # Each invalid vector is either a decode (hex) or an encode (value) case.
    assert all(("hex" in v) != ("value" in v) for v in PRIMS["invalid"])


# -- integer limits ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "size"), [(c.U8, 1), (c.U16, 2), (c.U24, 3), (c.U32, 4), (c.U64, 8)]
)
def test_uint_limits(codec: c.UInt, size: int) -> None:
    top = (1 << (8 * size)) - 1
    assert codec.max == top
    assert codec.to_bytes(0) == bytes(size)
    assert codec.to_bytes(top) == b"\xff" * size
    assert codec.from_bytes(b"\xff" * size) == top
    for bad in (-1, top + 1):
        with pytest.raises(EncodeError, match="outside") as ei:
            codec.encode(bad, bytearray(), "n")
        assert ei.value.field == "n"
    for wrong in (1.0, "1", None, True, b"\x01"):
        with pytest.raises(EncodeError, match="needs an int"):
            codec.encode(wrong, bytearray(), "n")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="truncated"):
        codec.from_bytes(b"\x00" * (size - 1))


def test_uint_accepts_int_subclasses_other_than_bool() -> None:
    import enum

    class Flags(enum.IntFlag):
        A = 4

    assert c.U32.to_bytes(Flags.A) == b"\x04\x00\x00\x00"


def test_failed_encode_appends_nothing() -> None:
    out = bytearray(b"xy")
    with pytest.raises(EncodeError):
        c.U16.encode(70000, out, "f")
    assert out == b"xy"


# -- BOOL ---------------------------------------------------------------------------


def test_bool_reads_bit0_only() -> None:
    assert c.BOOL.from_bytes(b"\x02") is False
    assert c.BOOL.from_bytes(b"\xff") is True
    with pytest.raises(EncodeError, match="needs a bool"):
        c.BOOL.encode(1, bytearray(), "flag")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        c.BOOL.from_bytes(b"")


# -- F32 ----------------------------------------------------------------------------


def test_f32() -> None:
    assert c.F32.to_bytes(3) == struct.pack("<f", 3.0)  # ints are fine for a float field
    assert c.F32.from_bytes(c.F32.to_bytes(float("inf"))) == float("inf")
    with pytest.raises(EncodeError, match="binary32") as ei:
        c.F32.encode(1e39, bytearray(), "nominal_hash_rate")
    assert ei.value.field == "nominal_hash_rate"
    for wrong in ("1.0", None, True):
        with pytest.raises(EncodeError, match="needs a float"):
            c.F32.encode(wrong, bytearray(), "x")  # type: ignore[arg-type]


# -- fixed and variable byte strings ------------------------------------------------


@pytest.mark.parametrize(("codec", "size"), [(c.U256, 32), (c.PUBKEY, 32), (c.SIGNATURE, 64)])
def test_fixed_bytes(codec: c.FixedBytes, size: int) -> None:
    val = bytes(range(size))
    assert codec.to_bytes(val) == val
    assert codec.to_bytes(bytearray(val)) == val
    assert codec.from_bytes(val) == val
    for bad in (val[:-1], val + b"\x00"):
        with pytest.raises(EncodeError, match=f"exactly {size}"):
            codec.encode(bad, bytearray(), "h")
    with pytest.raises(EncodeError, match="needs bytes"):
        codec.encode(val.hex(), bytearray(), "h")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        codec.from_bytes(val[:-1])
    with pytest.raises(ProtocolError, match="trailing"):
        codec.from_bytes(val + b"\x00")


@pytest.mark.parametrize(
    ("codec", "prefix", "limit"),
    [(c.B0_32, 1, 32), (c.B0_255, 1, 255), (c.B0_64K, 2, 65535), (c.B0_16M, 3, (1 << 24) - 1)],
)
def test_var_bytes_limits(codec: c.VarBytes, prefix: int, limit: int) -> None:
    assert codec.max_len == limit
    assert codec.to_bytes(b"") == bytes(prefix)
    top = bytes(limit) if limit < 1 << 20 else b""
    if top:
        wire = codec.to_bytes(top)
        assert wire[:prefix] == limit.to_bytes(prefix, "little")
        assert codec.from_bytes(wire) == top
    if limit < 1 << 20:
        with pytest.raises(EncodeError, match=f"at most {limit}") as ei:
            codec.encode(bytes(limit + 1), bytearray(), "blob")
        assert ei.value.field == "blob"
    # declared longer than what is there
    with pytest.raises(ProtocolError, match="truncated"):
        codec.from_bytes((5).to_bytes(prefix, "little") + b"abc")
    with pytest.raises(ProtocolError):
        codec.from_bytes(b"\x01"[: prefix - 1])
    with pytest.raises(EncodeError, match="needs bytes"):
        codec.encode("abc", bytearray(), "blob")  # type: ignore[arg-type]


def test_b0_32_declared_over_limit() -> None:
    with pytest.raises(ProtocolError, match="limit 32"):
        c.B0_32.from_bytes(b"\x21" + bytes(33))
    assert c.B0_255.from_bytes(b"\x21" + bytes(33)) == bytes(33)


def test_bytes_rest() -> None:
    r = c.Reader(b"\x01\x02\x03")
    assert c.U8.decode(r) == 1
    assert c.BYTES.decode(r) == b"\x02\x03"
    assert r.at_end()
    assert c.BYTES.to_bytes(b"xyz") == b"xyz"
    assert c.BYTES.from_bytes(b"") == b""


# -- STR0_255 --------------------------------------------------------------------------


def test_str_utf8_and_limits() -> None:
    assert c.STR0_255.to_bytes("é") == b"\x02\xc3\xa9"
    assert c.STR0_255.from_bytes(b"\x02\xc3\xa9") == "é"
    assert c.STR0_255.to_bytes("a" * 255)[0] == 255
    with pytest.raises(EncodeError, match="at most 255 bytes") as ei:
        c.STR0_255.encode("a" * 256, bytearray(), "user_identity")
    assert ei.value.field == "user_identity"
    # 128 two-byte characters: 128 chars but 256 bytes
    with pytest.raises(EncodeError, match="256"):
        c.STR0_255.encode("é" * 128, bytearray(), "user_identity")
    with pytest.raises(EncodeError, match="needs a str"):
        c.STR0_255.encode(b"abc", bytearray(), "s")  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="UTF-8"):
        c.STR0_255.encode("\ud800", bytearray(), "s")  # a lone surrogate outside the escape range


def test_str_invalid_utf8_round_trips() -> None:
    # Decision: surrogateescape, so arbitrary bytes survive decode -> encode unchanged.
    wire = b"\x04ab\xff\xc3"
    s = c.STR0_255.from_bytes(wire)
    assert s == "ab\udcff\udcc3"
    assert c.STR0_255.to_bytes(s) == wire


def test_str_truncated() -> None:
    with pytest.raises(ProtocolError):
        c.STR0_255.from_bytes(b"")
    with pytest.raises(ProtocolError):
        c.STR0_255.from_bytes(b"\x05abc")


# -- sequences and options -------------------------------------------------------------


def test_seq_counts_elements_not_bytes() -> None:
    seq = c.Seq0_255(c.U32)
    assert seq.to_bytes((1, 2)) == b"\x02" + b"\x01\x00\x00\x00" + b"\x02\x00\x00\x00"
    assert seq.to_bytes([1, 2]) == seq.to_bytes((1, 2))  # lists are accepted on encode
    assert seq.from_bytes(seq.to_bytes([1, 2])) == (1, 2)
    s64 = c.Seq0_64K(c.U16)
    assert s64.to_bytes((7,)) == b"\x01\x00\x07\x00"
    assert s64.name == "SEQ0_64K[U16]"


def test_seq_limits_and_element_errors() -> None:
    seq = c.Seq0_255(c.U256)
    with pytest.raises(EncodeError, match="at most 255 elements") as ei:
        seq.encode((bytes(32),) * 256, bytearray(), "merkle_path")
    assert ei.value.field == "merkle_path"
    seq.to_bytes((bytes(32),) * 255)
    with pytest.raises(EncodeError) as ei:
        seq.encode((bytes(32), bytes(31)), bytearray(), "merkle_path")
    assert ei.value.field == "merkle_path[1]"
    with pytest.raises(EncodeError, match="needs a tuple"):
        seq.encode(bytes(32), bytearray(), "merkle_path")  # type: ignore[arg-type]
    s64 = c.Seq0_64K(c.U32)
    with pytest.raises(EncodeError, match="65535"):
        s64.encode((0,) * 65536, bytearray(), "channel_ids")
    with pytest.raises(EncodeError) as ei:
        s64.encode((0, -1), bytearray(), "channel_ids")
    assert ei.value.field == "channel_ids[1]"


def test_seq_truncated() -> None:
    with pytest.raises(ProtocolError, match="2 elements"):
        c.Seq0_255(c.U256).from_bytes(b"\x02" + bytes(32))
    with pytest.raises(ProtocolError):
        c.Seq0_64K(c.U32).from_bytes(b"\xff\xff" + bytes(12))
    with pytest.raises(ProtocolError):
        c.Seq0_64K(c.STR0_255).from_bytes(b"\x02\x00\x01a\x05")
    with pytest.raises(ProtocolError):
        c.Seq0_64K(c.U32).from_bytes(b"\x01")


def test_option() -> None:
    opt = c.Option(c.U32)
    assert opt.to_bytes(None) == b"\x00"
    assert opt.to_bytes(0) == b"\x01\x00\x00\x00\x00"
    assert opt.from_bytes(b"\x00") is None
    assert opt.from_bytes(b"\x01\x00\x00\x00\x00") == 0
    for tag in (2, 3, 0xFF):
        with pytest.raises(ProtocolError, match="must be 0 or 1"):
            opt.from_bytes(bytes([tag]) + bytes(4))
    with pytest.raises(ProtocolError):
        opt.from_bytes(b"\x01\x00")
    with pytest.raises(ProtocolError, match="trailing"):
        opt.from_bytes(b"\x00\x00")
    with pytest.raises(EncodeError) as ei:
        opt.encode(1 << 32, bytearray(), "min_ntime")
    assert ei.value.field == "min_ntime"
    with pytest.raises(EncodeError):
        opt.encode("5", bytearray(), "min_ntime")  # type: ignore[arg-type]


# -- Reader ---------------------------------------------------------------------------------


def test_reader_never_leaks_index_errors() -> None:
    r = c.Reader(memoryview(b"\x01\x02"))
    assert r.remaining == 2
    with pytest.raises(ProtocolError):
        r.read(3)
    assert r.read(2) == b"\x01\x02"
    with pytest.raises(ProtocolError):
        r.unpack(struct.Struct("<B"))
    assert r.rest() == b""
    r.expect_end()


def test_reader_copies_mutable_input() -> None:
    buf = bytearray(b"\x01\x02")
    r = c.Reader(buf)
    buf[0] = 9
    assert r.read(1) == b"\x01"
