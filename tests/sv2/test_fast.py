"""The struct fast paths (sv2.messages.fast) against the generic codec they replace.

For every covered message: random valid messages encode to the same bytes and
decode to equal messages; random, mutated and truncated payloads either
decode to the same message or raise the same error (class and text); and a
message holding an invalid value (wrong type, out of range, wrong length) is
rejected exactly as the generic encoder rejects it, while the legal
non-canonical values the fast path does not handle itself (``bytearray``,
``IntEnum``, ``list``) still encode to the generic bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sv2 import codec as c
from sv2 import messages as m
from sv2.errors import EncodeError, ProtocolError
from sv2.messages import generic_decode, generic_encode
from sv2.messages.fast import FAST_PATHS
from tests.helpers.sv2_pair import message_strategy, strategy_for

FAST_CLASSES = list(FAST_PATHS)
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
by_name = pytest.mark.parametrize("cls", FAST_CLASSES, ids=lambda cls: cls.__name__)


class Small(enum.IntEnum):
    SEVEN = 7


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call did: ("ok", result) or ("raised", exception class, message)."""
    try:
        return ("ok", fn())
    except Exception as e:
        return ("raised", type(e), str(e))


def assert_bytes_fields(msg: m.Message) -> None:
    """Byte fields are ``bytes`` (a memoryview would compare equal but is not the API)."""
    for name, codec in msg.FIELDS:
        value = getattr(msg, name)
        if isinstance(codec, c.Seq) and isinstance(codec.inner, c.FixedBytes):
            assert all(type(node) is bytes for node in value)
        elif isinstance(codec, (c.FixedBytes, c.VarBytes, c.RestBytes)):
            assert type(value) is bytes, name


def test_the_hot_messages_are_covered_and_installed() -> None:
    assert set(FAST_CLASSES) == {
        m.SubmitSharesExtended, m.SubmitSharesSuccess, m.SubmitSharesError,
        m.NewExtendedMiningJob, m.SetNewPrevHash, m.SetTarget,
    }  # fmt: skip
    for cls, (encode, decode) in FAST_PATHS.items():
        assert cls.encode is encode
        assert cls.decode is decode  # a staticmethod, so the plain function


# -- valid messages ------------------------------------------------------------------------------


@by_name
@EXAMPLES
@given(data=st.data())
def test_fast_equals_generic_on_valid_messages(cls: type[m.Message], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    payload = msg.encode()
    assert payload == generic_encode(msg)
    decoded = cls.decode(payload)
    assert decoded == generic_decode(cls, payload) == msg
    assert type(decoded) is cls
    assert_bytes_fields(decoded)
    for view in (bytearray(payload), memoryview(payload)):
        again = cls.decode(view)
        assert again == msg
        assert_bytes_fields(again)


# -- hostile payloads ----------------------------------------------------------------------------


def mutated(data: st.DataObject, payload: bytes) -> bytes:
    buf = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "cut", "extend"]))
        if op == "flip" and buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del buf[data.draw(st.integers(0, len(buf))) :]
        else:
            buf += data.draw(st.binary(min_size=1, max_size=8))
    return bytes(buf)


@by_name
@EXAMPLES
@given(data=st.data())
def test_fast_decode_agrees_with_generic_on_any_payload(
    cls: type[m.Message], data: st.DataObject
) -> None:
    if data.draw(st.booleans()):
        raw = data.draw(st.binary(max_size=120))
    else:
        raw = mutated(data, data.draw(message_strategy(cls)).encode())
    fast, generic = outcome(lambda: cls.decode(raw)), outcome(lambda: generic_decode(cls, raw))
    assert fast == generic
    if fast[0] == "raised":
        assert issubclass(fast[1], ProtocolError)
    else:
        assert_bytes_fields(fast[1])


@pytest.mark.parametrize(
    ("cls", "raw"),
    [
        (m.SubmitSharesExtended, bytes(24) + b"\x21" + bytes(33)),  # extranonce over 32 bytes
        (m.SubmitSharesExtended, bytes(24) + b"\x08" + bytes(7)),  # extranonce cut short
        (m.SubmitSharesSuccess, bytes(21)),
        (m.SubmitSharesError, bytes(8) + b"\x05abc"),
        (m.NewExtendedMiningJob, bytes(8) + b"\x02" + bytes(20)),  # OPTION tag 2
        (m.NewExtendedMiningJob, bytes(14) + b"\x01" + bytes(4)),  # merkle node missing
        (m.NewExtendedMiningJob, bytes(15) + b"\x01\x00\x01\x00" + bytes(2)),  # suffix trailing
        (m.SetNewPrevHash, bytes(47)),
        (m.SetTarget, bytes(37)),
    ],
    ids=lambda v: getattr(v, "__name__", None) or v.hex()[:12],
)
def test_fast_decode_rejects_malformed_payloads(cls: type[m.Message], raw: bytes) -> None:
    with pytest.raises(ProtocolError) as fast:
        cls.decode(raw)
    with pytest.raises(ProtocolError) as generic:
        generic_decode(cls, raw)
    assert str(fast.value) == str(generic.value)


# -- invalid and non-canonical values ------------------------------------------------------------


def odd_value(codec: c.Codec[Any]) -> st.SearchStrategy[Any]:
    """Values the fast path does not take itself: invalid ones, and legal non-canonical ones."""
    wrong_type = st.sampled_from([None, 1.5, "x", b"x", object()])
    if isinstance(codec, c.Bool):
        return st.one_of(wrong_type, st.integers(0, 2))
    if isinstance(codec, c.UInt):
        return st.one_of(
            wrong_type,
            st.booleans(),
            st.integers(max_value=-1),
            st.integers(min_value=codec.max + 1, max_value=codec.max * 4 + 4),
            st.just(Small.SEVEN),  # an int subclass: legal
        )
    if isinstance(codec, c.FixedBytes):
        return st.one_of(
            wrong_type,
            st.binary(max_size=codec.size - 1),
            st.binary(min_size=codec.size + 1, max_size=codec.size + 3),
            st.binary(min_size=codec.size, max_size=codec.size).map(bytearray),  # legal
        )
    if isinstance(codec, c.VarBytes):
        return st.one_of(
            st.sampled_from([None, 1, "x"]),
            st.binary(min_size=codec.max_len + 1, max_size=codec.max_len + 3),
            st.binary(max_size=8).map(bytearray),  # legal
        )
    if isinstance(codec, c.Str):
        # "\ud800" is a surrogate outside the surrogateescape range: not encodable.
        return st.one_of(
            st.sampled_from([None, 3, b"abc", "\ud800", "x" * 256, "é" * 128])
        )
    if isinstance(codec, c.RestBytes):
        return st.one_of(st.sampled_from([None, 3, "x"]), st.binary(max_size=4).map(bytearray))
    if isinstance(codec, c.Seq):
        node = strategy_for(codec.inner)
        return st.one_of(
            st.sampled_from([None, b"", "x"]),
            st.lists(node, max_size=3),  # a list: legal
            st.lists(odd_value(codec.inner), min_size=1, max_size=2).map(tuple),
            st.just((bytes(32),) * (codec.max_count + 1)),
        )
    if isinstance(codec, c.Option):
        return odd_value(codec.inner)
    raise AssertionError(f"no odd values for {codec!r}")


@by_name
@EXAMPLES
@given(data=st.data())
def test_fast_encode_rejects_and_accepts_exactly_as_generic(
    cls: type[m.Message], data: st.DataObject
) -> None:
    values = {name: data.draw(strategy_for(codec)) for name, codec in cls.FIELDS}
    name, codec = data.draw(st.sampled_from(cls.FIELDS))
    values[name] = data.draw(odd_value(codec))
    msg = cls(**values)
    fast, generic = outcome(msg.encode), outcome(lambda: generic_encode(msg))
    assert fast == generic
    if fast[0] == "raised":
        assert fast[1] is EncodeError


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (m.SubmitSharesExtended(True, 0, 0, 0, 0, 0, b""), "channel_id"),
        (m.SubmitSharesExtended(0, 0, 0, 1 << 32, 0, 0, b""), "nonce"),
        (m.SubmitSharesExtended(0, 0, 0, 0, 0, 0, bytes(33)), "extranonce"),
        (m.SubmitSharesSuccess(0, 0, 0, -1), "new_shares_sum"),
        (m.SubmitSharesError(0, 0, "x" * 256), "error_code"),
        (m.NewExtendedMiningJob(0, 0, 1.0, 0, True, (), b"", b""), "min_ntime"),  # type: ignore[arg-type]
        (m.NewExtendedMiningJob(0, 0, None, 0, 1, (), b"", b""), "version_rolling_allowed"),  # type: ignore[arg-type]
        (m.NewExtendedMiningJob(0, 0, None, 0, True, (bytes(31),), b"", b""), "merkle_path[0]"),
        (m.SetNewPrevHash(0, 0, bytes(31), 0, 0), "prev_hash"),
        (m.SetTarget(0, "00" * 32), "maximum_target"),  # type: ignore[arg-type]
    ],
    ids=lambda v: getattr(v, "NAME", v),
)
def test_fast_encode_names_the_bad_field(msg: m.Message, field: str) -> None:
    with pytest.raises(EncodeError) as e:
        msg.encode()
    assert e.value.field == field
