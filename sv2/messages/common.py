"""Common-protocol messages (reference section 4): connection setup and endpoint changes.

Fields are in wire order, named as in the reference tables. SetupConnection's
``protocol`` is kept as a plain U8: SRI rejects unknown protocol numbers at
decode, but that is a policy decision for the connection layer, not a framing
error, so the codec accepts any value and lets the caller answer with
SetupConnection.Error (``unsupported-protocol``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from sv2.codec import STR0_255, U8, U16, U32
from sv2.messages.base import Message, message

# SetupConnection.protocol values.
PROTOCOL_MINING = 0
PROTOCOL_JOB_DECLARATION = 1
PROTOCOL_TEMPLATE_DISTRIBUTION = 2

# Mining-protocol flags in SetupConnection (client -> server).
REQUIRES_STANDARD_JOBS = 0x1
REQUIRES_WORK_SELECTION = 0x2
REQUIRES_VERSION_ROLLING = 0x4

# Mining-protocol flags in SetupConnection.Success (server -> client).
REQUIRES_FIXED_VERSION = 0x1
REQUIRES_EXTENDED_CHANNELS = 0x2


@message
@dataclass(frozen=True, slots=True)
class SetupConnection(Message):
    MSG_TYPE: ClassVar[int] = 0x00
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str] = "SetupConnection"

    protocol: Annotated[int, U8]
    min_version: Annotated[int, U16]
    max_version: Annotated[int, U16]
    flags: Annotated[int, U32]
    endpoint_host: Annotated[str, STR0_255]
    endpoint_port: Annotated[int, U16]
    vendor: Annotated[str, STR0_255]
    hardware_version: Annotated[str, STR0_255]
    firmware: Annotated[str, STR0_255]
    device_id: Annotated[str, STR0_255]


@message
@dataclass(frozen=True, slots=True)
class SetupConnectionSuccess(Message):
    MSG_TYPE: ClassVar[int] = 0x01
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str] = "SetupConnection.Success"

    used_version: Annotated[int, U16]
    flags: Annotated[int, U32]


@message
@dataclass(frozen=True, slots=True)
class SetupConnectionError(Message):
    MSG_TYPE: ClassVar[int] = 0x02
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str] = "SetupConnection.Error"

    flags: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message
@dataclass(frozen=True, slots=True)
class ChannelEndpointChanged(Message):
    MSG_TYPE: ClassVar[int] = 0x03
    # The only common message with the channel bit set.
    CHANNEL_MSG: ClassVar[bool] = True
    NAME: ClassVar[str] = "ChannelEndpointChanged"

    channel_id: Annotated[int, U32]


@message
@dataclass(frozen=True, slots=True)
class Reconnect(Message):
    """An empty ``new_host`` means the current host, port 0 the current port."""

    MSG_TYPE: ClassVar[int] = 0x04
    CHANNEL_MSG: ClassVar[bool] = False
    NAME: ClassVar[str] = "Reconnect"

    new_host: Annotated[str, STR0_255]
    new_port: Annotated[int, U16]
