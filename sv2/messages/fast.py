"""Struct fast paths for the hot mining messages, byte-identical to the generic codec.

The generic codec (``sv2.messages.base.generic_encode`` / ``generic_decode``)
walks the field descriptors one by one, type- and range-checking every value
and naming the field in its errors. That costs more than the AEAD call that
follows it, on the messages a proxy handles for every share and every job.
This module hand-writes ``encode``/``decode`` for those messages with one
precompiled ``struct.Struct`` per fixed run of fields, and installs them as
the classes' ``encode`` / ``decode`` (see ``_install`` at the bottom).

The rule every function here follows: it handles only the common, exactly
typed case (``int`` for integers, ``bytes`` for byte strings, ``tuple`` for
sequences, ``bool`` for BOOL) and hands *anything else* to the generic codec
-- an ``IntEnum`` or a ``bytearray`` (legal, encoded there), a ``bool`` where
an int belongs, an out-of-range value, a short or malformed payload (all
rejected there, with the generic error and message). So a fast path can never
accept what the generic codec rejects, and errors are the generic ones.
``tests/sv2/test_fast.py`` checks both directions against the generic codec.

Decoded messages are built with ``object.__new__`` plus the slot descriptors
(``_new_*``): the frozen dataclass ``__init__`` stores every field through
``object.__setattr__``, which costs about as much as an AEAD call for an
8-field message. The result is the same frozen object.

Wire layouts (little-endian; offsets are into the payload)::

    SubmitSharesExtended 0x1B   channel_id U32 | sequence_number U32 | job_id U32 |
                                nonce U32 | ntime U32 | version U32 |    (0..23)
                                extranonce B0_32 (len U8 at 24) | tlv: the rest
    SubmitShares.Success 0x1C   channel_id U32 | last_sequence_number U32 |
                                new_submits_accepted_count U32 | new_shares_sum U64
                                (20 bytes)
    SubmitShares.Error 0x1D     channel_id U32 | sequence_number U32 |
                                error_code STR0_255 (len U8 at 8, then UTF-8)
    NewExtendedMiningJob 0x1F   channel_id U32 | job_id U32 |
                                min_ntime OPTION[U32] (tag 0, or tag 1 + U32) |
                                version U32 | version_rolling_allowed BOOL |
                                merkle_path SEQ0_255[U256] (count U8, 32 bytes each) |
                                coinbase_tx_prefix B0_64K (len U16) |
                                coinbase_tx_suffix B0_64K (len U16)
    SetNewPrevHash 0x20         channel_id U32 | job_id U32 | prev_hash U256 |
                                min_ntime U32 | nbits U32 (48 bytes)
    SetTarget 0x21              channel_id U32 | maximum_target U256 (36 bytes)
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any

from sv2.messages.base import Message, generic_decode, generic_encode
from sv2.messages.mining import (
    NewExtendedMiningJob,
    SetNewPrevHash,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesSuccess,
)

__all__ = ["FAST_PATHS"]

Payload = bytes | bytearray | memoryview

_SHARE_EXT = struct.Struct("<6IB")  # the six U32 of SubmitSharesExtended + extranonce length
_SHARES_OK = struct.Struct("<3IQ")
_SHARES_ERR = struct.Struct("<2IB")  # + error_code length
_JOB_NOW = struct.Struct("<IIBIIBB")  # min_ntime present: tag 1 + U32
_JOB_FUTURE = struct.Struct("<IIBIBB")  # min_ntime None: tag 0 only
assert (_JOB_NOW.size, _JOB_FUTURE.size) == (19, 15)  # the decoder's offsets
_U16 = struct.Struct("<H")
_PREV_HASH = struct.Struct("<II32sII")
_TARGET = struct.Struct("<I32s")

_new = object.__new__


def _setters(cls: type[Message]) -> tuple[Callable[[object, Any], None], ...]:
    """The slot descriptors' ``__set__`` of ``cls``, in field order."""
    return tuple(getattr(cls, f.name).__set__ for f in dataclasses.fields(cls))  # type: ignore[arg-type]


# -- SubmitSharesExtended ----------------------------------------------------------------

_SHARE_EXT_SET = _setters(SubmitSharesExtended)


def encode_submit_shares_extended(msg: SubmitSharesExtended) -> bytes:
    ch, seq, job, nonce = msg.channel_id, msg.sequence_number, msg.job_id, msg.nonce
    ntime, version, extranonce, tlv = msg.ntime, msg.version, msg.extranonce, msg.tlv
    if (
        int is type(ch) is type(seq) is type(job) is type(nonce) is type(ntime) is type(version)
        and bytes is type(extranonce) is type(tlv)
        and len(extranonce) <= 32
    ):
        try:
            head = _SHARE_EXT.pack(ch, seq, job, nonce, ntime, version, len(extranonce))
        except struct.error:
            pass  # an integer outside U32: the generic encoder names the field
        else:
            return head + extranonce + tlv
    return generic_encode(msg)


def decode_submit_shares_extended(payload: Payload) -> SubmitSharesExtended:
    data = payload if type(payload) is bytes else bytes(payload)  # slices must be bytes
    size = len(data)
    if size >= 25:
        ch, seq, job, nonce, ntime, version, n = _SHARE_EXT.unpack_from(data)
        end = 25 + n
        if n <= 32 and end <= size:
            s0, s1, s2, s3, s4, s5, s6, s7 = _SHARE_EXT_SET
            msg = _new(SubmitSharesExtended)
            s0(msg, ch)
            s1(msg, seq)
            s2(msg, job)
            s3(msg, nonce)
            s4(msg, ntime)
            s5(msg, version)
            s6(msg, data[25:end])
            s7(msg, data[end:])
            return msg
    return generic_decode(SubmitSharesExtended, data)


# -- SubmitShares.Success / .Error ------------------------------------------------------

_SHARES_OK_SET = _setters(SubmitSharesSuccess)
_SHARES_ERR_SET = _setters(SubmitSharesError)


def encode_submit_shares_success(msg: SubmitSharesSuccess) -> bytes:
    ch, last, count, total = (
        msg.channel_id, msg.last_sequence_number, msg.new_submits_accepted_count, msg.new_shares_sum
    )  # fmt: skip
    if int is type(ch) is type(last) is type(count) is type(total):
        try:
            return _SHARES_OK.pack(ch, last, count, total)
        except struct.error:
            pass
    return generic_encode(msg)


def decode_submit_shares_success(payload: Payload) -> SubmitSharesSuccess:
    if len(payload) == 20:
        s0, s1, s2, s3 = _SHARES_OK_SET
        ch, last, count, total = _SHARES_OK.unpack(payload)
        msg = _new(SubmitSharesSuccess)
        s0(msg, ch)
        s1(msg, last)
        s2(msg, count)
        s3(msg, total)
        return msg
    return generic_decode(SubmitSharesSuccess, payload)


def encode_submit_shares_error(msg: SubmitSharesError) -> bytes:
    ch, seq, code = msg.channel_id, msg.sequence_number, msg.error_code
    if int is type(ch) is type(seq) and type(code) is str:
        try:
            raw = code.encode("utf-8", "surrogateescape")
            if len(raw) <= 255:
                return _SHARES_ERR.pack(ch, seq, len(raw)) + raw
        except (struct.error, UnicodeEncodeError):
            pass
    return generic_encode(msg)


def decode_submit_shares_error(payload: Payload) -> SubmitSharesError:
    data = payload if type(payload) is bytes else bytes(payload)  # slices must be bytes
    if len(data) >= 9 and len(data) == 9 + data[8]:
        s0, s1, s2 = _SHARES_ERR_SET
        ch, seq, _ = _SHARES_ERR.unpack_from(data)
        msg = _new(SubmitSharesError)
        s0(msg, ch)
        s1(msg, seq)
        s2(msg, data[9:].decode("utf-8", "surrogateescape"))
        return msg
    return generic_decode(SubmitSharesError, data)


# -- NewExtendedMiningJob ---------------------------------------------------------------

_JOB_SET = _setters(NewExtendedMiningJob)


def encode_new_extended_mining_job(msg: NewExtendedMiningJob) -> bytes:
    ch, job, min_ntime, version = msg.channel_id, msg.job_id, msg.min_ntime, msg.version
    rolling, path = msg.version_rolling_allowed, msg.merkle_path
    prefix, suffix = msg.coinbase_tx_prefix, msg.coinbase_tx_suffix
    if (
        int is type(ch) is type(job) is type(version)
        and type(rolling) is bool
        and type(path) is tuple
        and bytes is type(prefix) is type(suffix)
        and len(prefix) <= 0xFFFF
        and len(suffix) <= 0xFFFF
        and len(path) <= 255
        and (not path or all(type(node) is bytes and len(node) == 32 for node in path))
    ):
        try:
            if min_ntime is None:
                head = _JOB_FUTURE.pack(ch, job, 0, version, rolling, len(path))
            elif type(min_ntime) is int:
                head = _JOB_NOW.pack(ch, job, 1, min_ntime, version, rolling, len(path))
            else:
                return generic_encode(msg)
        except struct.error:
            pass
        else:
            return b"".join(
                (head, *path, _U16.pack(len(prefix)), prefix, _U16.pack(len(suffix)), suffix)
            )
    return generic_encode(msg)


def decode_new_extended_mining_job(payload: Payload) -> NewExtendedMiningJob:
    data = payload if type(payload) is bytes else bytes(payload)  # slices must be bytes
    size = len(data)
    tag = data[8] if size > 8 else None
    if tag == 1 and size >= 19:  # _JOB_NOW.size
        ch, job, _, min_ntime, version, rolling, count = _JOB_NOW.unpack_from(data)
        pos = 19
    elif tag == 0 and size >= 15:  # _JOB_FUTURE.size
        ch, job, _, version, rolling, count = _JOB_FUTURE.unpack_from(data)
        min_ntime, pos = None, 15
    else:
        return generic_decode(NewExtendedMiningJob, data)
    end = pos + 32 * count
    if end + 2 <= size:
        # An empty path (a block with the coinbase only) skips the comprehension.
        path = tuple([data[i : i + 32] for i in range(pos, end, 32)]) if count else ()
        # Each B0_64K: a U16 LE length at ``end``, then the bytes.
        pos, end = end + 2, end + 2 + (data[end] | data[end + 1] << 8)
        if end + 2 <= size:
            prefix = data[pos:end]
            pos, end = end + 2, end + 2 + (data[end] | data[end + 1] << 8)
            if end == size:
                s0, s1, s2, s3, s4, s5, s6, s7 = _JOB_SET
                msg = _new(NewExtendedMiningJob)
                s0(msg, ch)
                s1(msg, job)
                s2(msg, min_ntime)
                s3(msg, version)
                s4(msg, bool(rolling & 1))
                s5(msg, path)
                s6(msg, prefix)
                s7(msg, data[pos:end])
                return msg
    return generic_decode(NewExtendedMiningJob, data)


# -- SetNewPrevHash / SetTarget -----------------------------------------------------------

_PREV_HASH_SET = _setters(SetNewPrevHash)
_TARGET_SET = _setters(SetTarget)


def encode_set_new_prev_hash(msg: SetNewPrevHash) -> bytes:
    ch, job, prev_hash, min_ntime, nbits = (
        msg.channel_id, msg.job_id, msg.prev_hash, msg.min_ntime, msg.nbits
    )  # fmt: skip
    if (
        int is type(ch) is type(job) is type(min_ntime) is type(nbits)
        and type(prev_hash) is bytes
        and len(prev_hash) == 32
    ):
        try:
            return _PREV_HASH.pack(ch, job, prev_hash, min_ntime, nbits)
        except struct.error:
            pass
    return generic_encode(msg)


def decode_set_new_prev_hash(payload: Payload) -> SetNewPrevHash:
    if len(payload) == 48:
        s0, s1, s2, s3, s4 = _PREV_HASH_SET
        ch, job, prev_hash, min_ntime, nbits = _PREV_HASH.unpack(payload)
        msg = _new(SetNewPrevHash)
        s0(msg, ch)
        s1(msg, job)
        s2(msg, prev_hash)
        s3(msg, min_ntime)
        s4(msg, nbits)
        return msg
    return generic_decode(SetNewPrevHash, payload)


def encode_set_target(msg: SetTarget) -> bytes:
    ch, target = msg.channel_id, msg.maximum_target
    if type(ch) is int and type(target) is bytes and len(target) == 32:
        try:
            return _TARGET.pack(ch, target)
        except struct.error:
            pass
    return generic_encode(msg)


def decode_set_target(payload: Payload) -> SetTarget:
    if len(payload) == 36:
        s0, s1 = _TARGET_SET
        ch, target = _TARGET.unpack(payload)
        msg = _new(SetTarget)
        s0(msg, ch)
        s1(msg, target)
        return msg
    return generic_decode(SetTarget, payload)


# -- installation ---------------------------------------------------------------------------

FAST_PATHS: dict[type[Message], tuple[Callable[[Any], bytes], Callable[[Payload], Message]]] = {
    SubmitSharesExtended: (encode_submit_shares_extended, decode_submit_shares_extended),
    SubmitSharesSuccess: (encode_submit_shares_success, decode_submit_shares_success),
    SubmitSharesError: (encode_submit_shares_error, decode_submit_shares_error),
    NewExtendedMiningJob: (encode_new_extended_mining_job, decode_new_extended_mining_job),
    SetNewPrevHash: (encode_set_new_prev_hash, decode_set_new_prev_hash),
    SetTarget: (encode_set_target, decode_set_target),
}
"""Message class -> (encode, decode) installed as its ``encode`` / ``decode``."""


def _install() -> None:
    # Patched in rather than written as class-body methods: the fast paths need
    # the finished classes (slot descriptors), and mining.py stays a plain list
    # of layouts.
    for cls, (encode, decode) in FAST_PATHS.items():
        cls.encode = encode  # type: ignore[method-assign,assignment]
        cls.decode = staticmethod(decode)  # type: ignore[method-assign,assignment]


_install()
