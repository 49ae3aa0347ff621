"""Mining-protocol messages 0x10..0x25 (reference section 5), in wire order.

Naming follows the reference tables: U256 fields (targets, hashes, merkle
nodes) are 32-byte ``bytes`` in wire order (targets little-endian, hashes in
internal byte order); SEQ fields are tuples; OPTION[U32] is ``int | None``.
``coinbase_tx_input_nSequence`` keeps the reference's spelling on purpose so
the field can be matched to the spec and SRI by grep.

Channel bit: every message that starts with a channel_id is a channel message,
except the Open*.Success replies (matched by request_id) and SetGroupChannel.

SubmitSharesExtended carries an extra last field ``tlv`` (raw BYTES, default
empty). A peer that negotiated extension 0x0002 (worker-specific hashrate
tracking) appends TLV records after ``extranonce``; we keep them verbatim
instead of rejecting the share as having trailing bytes, and we send whatever
is in ``tlv`` back out unchanged. Parse them with
``sv2.messages.extensions.decode_tlvs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from sv2.codec import (
    B0_32,
    B0_64K,
    B0_255,
    BOOL,
    BYTES,
    F32,
    STR0_255,
    U16,
    U32,
    U64,
    U256,
    Option,
    Seq0_64K,
    Seq0_255,
)
from sv2.messages.base import Message, message

# -- 5.1 Channel opening ------------------------------------------------------


@message
@dataclass(frozen=True, slots=True)
class OpenStandardMiningChannel(Message):
    MSG_TYPE: ClassVar[int] = 0x10
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str] = "OpenStandardMiningChannel"

    request_id: Annotated[int, U32]
    user_identity: Annotated[str, STR0_255]
    nominal_hash_rate: Annotated[float, F32]
    max_target: Annotated[bytes, U256]


@message
@dataclass(frozen=True, slots=True)
class OpenStandardMiningChannelSuccess(Message):
    MSG_TYPE: ClassVar[int] = 0x11
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str] = "OpenStandardMiningChannel.Success"

    request_id: Annotated[int, U32]
    channel_id: Annotated[int, U32]
    target: Annotated[bytes, U256]
    extranonce_prefix: Annotated[bytes, B0_32]
    group_channel_id: Annotated[int, U32]


@message
@dataclass(frozen=True, slots=True)
class OpenMiningChannelError(Message):
    """Answers both OpenStandardMiningChannel and OpenExtendedMiningChannel."""

    MSG_TYPE: ClassVar[int] = 0x12
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str] = "OpenMiningChannel.Error"

    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message
@dataclass(frozen=True, slots=True)
class OpenExtendedMiningChannel(Message):
    MSG_TYPE: ClassVar[int] = 0x13
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str] = "OpenExtendedMiningChannel"

    request_id: Annotated[int, U32]
    user_identity: Annotated[str, STR0_255]
    nominal_hash_rate: Annotated[float, F32]
    max_target: Annotated[bytes, U256]
    min_extranonce_size: Annotated[int, U16]


@message
@dataclass(frozen=True, slots=True)
class OpenExtendedMiningChannelSuccess(Message):
    """Note the wire order: extranonce_size comes before extranonce_prefix."""

    MSG_TYPE: ClassVar[int] = 0x14
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str] = "OpenExtendedMiningChannel.Success"

    request_id: Annotated[int, U32]
    channel_id: Annotated[int, U32]
    target: Annotated[bytes, U256]
    extranonce_size: Annotated[int, U16]
    extranonce_prefix: Annotated[bytes, B0_32]
    group_channel_id: Annotated[int, U32]


# -- 5.3 Jobs (0x15 sits here in type order) ------------------------------------


@message
@dataclass(frozen=True, slots=True)
class NewMiningJob(Message):
    """Standard-channel job; ``min_ntime`` None marks a future job."""

    MSG_TYPE: ClassVar[int] = 0x15
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "NewMiningJob"

    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    min_ntime: Annotated[int | None, Option(U32)]
    version: Annotated[int, U32]
    merkle_root: Annotated[bytes, U256]


# -- 5.2 Channel maintenance ----------------------------------------------------


@message
@dataclass(frozen=True, slots=True)
class UpdateChannel(Message):
    MSG_TYPE: ClassVar[int] = 0x16
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "UpdateChannel"

    channel_id: Annotated[int, U32]
    nominal_hash_rate: Annotated[float, F32]
    maximum_target: Annotated[bytes, U256]


@message
@dataclass(frozen=True, slots=True)
class UpdateChannelError(Message):
    MSG_TYPE: ClassVar[int] = 0x17
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "UpdateChannel.Error"

    channel_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message
@dataclass(frozen=True, slots=True)
class CloseChannel(Message):
    MSG_TYPE: ClassVar[int] = 0x18
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "CloseChannel"

    channel_id: Annotated[int, U32]
    reason_code: Annotated[str, STR0_255]


@message
@dataclass(frozen=True, slots=True)
class SetExtranoncePrefix(Message):
    """Applies to jobs sent after it."""

    MSG_TYPE: ClassVar[int] = 0x19
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "SetExtranoncePrefix"

    channel_id: Annotated[int, U32]
    extranonce_prefix: Annotated[bytes, B0_32]


# -- 5.4 Shares -------------------------------------------------------------------


@message
@dataclass(frozen=True, slots=True)
class SubmitSharesStandard(Message):
    MSG_TYPE: ClassVar[int] = 0x1A
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "SubmitSharesStandard"

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    job_id: Annotated[int, U32]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    version: Annotated[int, U32]


@message
@dataclass(frozen=True, slots=True)
class SubmitSharesExtended(Message):
    """``version`` is the full rolled nVersion; ``extranonce`` the rollable part only.

    ``tlv`` holds any bytes after ``extranonce`` (extension 0x0002 TLVs, see
    the module docstring); it is empty unless that extension was negotiated.
    """

    MSG_TYPE: ClassVar[int] = 0x1B
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "SubmitSharesExtended"

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    job_id: Annotated[int, U32]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    version: Annotated[int, U32]
    extranonce: Annotated[bytes, B0_32]
    tlv: Annotated[bytes, BYTES] = b""


@message
@dataclass(frozen=True, slots=True)
class SubmitSharesSuccess(Message):
    """``new_shares_sum`` is SRI's truncated difficulty sum: not for accounting."""

    MSG_TYPE: ClassVar[int] = 0x1C
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "SubmitShares.Success"

    channel_id: Annotated[int, U32]
    last_sequence_number: Annotated[int, U32]
    new_submits_accepted_count: Annotated[int, U32]
    new_shares_sum: Annotated[int, U64]


@message
@dataclass(frozen=True, slots=True)
class SubmitSharesError(Message):
    MSG_TYPE: ClassVar[int] = 0x1D
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "SubmitShares.Error"

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


# -- 5.3 Jobs ---------------------------------------------------------------------


@message
@dataclass(frozen=True, slots=True)
class NewExtendedMiningJob(Message):
    """``channel_id`` may be a group channel id; ``min_ntime`` None marks a future job.

    ``merkle_path`` holds 32-byte nodes in internal byte order, leaf level first.
    """

    MSG_TYPE: ClassVar[int] = 0x1F
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "NewExtendedMiningJob"

    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    min_ntime: Annotated[int | None, Option(U32)]
    version: Annotated[int, U32]
    version_rolling_allowed: Annotated[bool, BOOL]
    merkle_path: Annotated[tuple[bytes, ...], Seq0_255(U256)]
    coinbase_tx_prefix: Annotated[bytes, B0_64K]
    coinbase_tx_suffix: Annotated[bytes, B0_64K]


@message
@dataclass(frozen=True, slots=True)
class SetNewPrevHash(Message):
    """Activates the future job ``job_id``; ``prev_hash`` is in header byte order."""

    MSG_TYPE: ClassVar[int] = 0x20
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "SetNewPrevHash"

    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    prev_hash: Annotated[bytes, U256]
    min_ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]


@message
@dataclass(frozen=True, slots=True)
class SetTarget(Message):
    MSG_TYPE: ClassVar[int] = 0x21
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "SetTarget"

    channel_id: Annotated[int, U32]
    maximum_target: Annotated[bytes, U256]


# -- 5.5 Custom jobs --------------------------------------------------------------


@message
@dataclass(frozen=True, slots=True)
class SetCustomMiningJob(Message):
    MSG_TYPE: ClassVar[int] = 0x22
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "SetCustomMiningJob"

    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    mining_job_token: Annotated[bytes, B0_255]
    version: Annotated[int, U32]
    prev_hash: Annotated[bytes, U256]
    min_ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]
    coinbase_tx_version: Annotated[int, U32]
    coinbase_prefix: Annotated[bytes, B0_255]
    coinbase_tx_input_nSequence: Annotated[int, U32]
    coinbase_tx_outputs: Annotated[bytes, B0_64K]
    coinbase_tx_locktime: Annotated[int, U32]
    merkle_path: Annotated[tuple[bytes, ...], Seq0_255(U256)]


@message
@dataclass(frozen=True, slots=True)
class SetCustomMiningJobSuccess(Message):
    MSG_TYPE: ClassVar[int] = 0x23
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "SetCustomMiningJob.Success"

    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    job_id: Annotated[int, U32]


@message
@dataclass(frozen=True, slots=True)
class SetCustomMiningJobError(Message):
    MSG_TYPE: ClassVar[int] = 0x24
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "SetCustomMiningJob.Error"

    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message
@dataclass(frozen=True, slots=True)
class SetGroupChannel(Message):
    """Not a channel message, although it names channels."""

    MSG_TYPE: ClassVar[int] = 0x25
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str] = "SetGroupChannel"

    group_channel_id: Annotated[int, U32]
    channel_ids: Annotated[tuple[int, ...], Seq0_64K(U32)]
