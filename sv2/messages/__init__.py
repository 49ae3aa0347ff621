"""SV2 message classes: common (section 4), mining (section 5) and extension 0x0001.

Importing this package registers every known message, so ``decode_message``
can turn any (extension_type, msg_type, payload) into a typed message or an
``UnknownMessage``, and installs the struct fast paths of the hot mining
messages (``sv2.messages.fast``). See ``sv2.messages.base`` for the class conventions.
"""

from __future__ import annotations

# Importing fast installs the struct fast paths of the hot mining messages as
# their encode/decode (it imports the classes it patches itself).
from sv2.messages import fast as fast
from sv2.messages.base import (
    CHANNEL_MSG_BIT,
    EXTENSION_TYPE_MAX,
    REGISTRY,
    AnyMessage,
    Message,
    UnknownMessage,
    decode_message,
    generic_decode,
    generic_encode,
    message_class,
    message_name,
)
from sv2.messages.common import (
    PROTOCOL_JOB_DECLARATION,
    PROTOCOL_MINING,
    PROTOCOL_TEMPLATE_DISTRIBUTION,
    REQUIRES_EXTENDED_CHANNELS,
    REQUIRES_FIXED_VERSION,
    REQUIRES_STANDARD_JOBS,
    REQUIRES_VERSION_ROLLING,
    REQUIRES_WORK_SELECTION,
    ChannelEndpointChanged,
    Reconnect,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from sv2.messages.extensions import (
    EXTENSION_NEGOTIATION,
    EXTENSION_WORKER_HASHRATE,
    TLV_USER_IDENTITY,
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
    Tlv,
    decode_tlvs,
    encode_tlvs,
)
from sv2.messages.mining import (
    CloseChannel,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetCustomMiningJobSuccess,
    SetExtranoncePrefix,
    SetGroupChannel,
    SetNewPrevHash,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    UpdateChannel,
    UpdateChannelError,
)

# Every known message class, ordered by (extension_type, msg_type).
MESSAGE_CLASSES: tuple[type[Message], ...] = tuple(REGISTRY[k] for k in sorted(REGISTRY))

__all__ = [
    "CHANNEL_MSG_BIT",
    "EXTENSION_NEGOTIATION",
    "EXTENSION_TYPE_MAX",
    "EXTENSION_WORKER_HASHRATE",
    "MESSAGE_CLASSES",
    "PROTOCOL_JOB_DECLARATION",
    "PROTOCOL_MINING",
    "PROTOCOL_TEMPLATE_DISTRIBUTION",
    "REGISTRY",
    "REQUIRES_EXTENDED_CHANNELS",
    "REQUIRES_FIXED_VERSION",
    "REQUIRES_STANDARD_JOBS",
    "REQUIRES_VERSION_ROLLING",
    "REQUIRES_WORK_SELECTION",
    "TLV_USER_IDENTITY",
    "AnyMessage",
    "ChannelEndpointChanged",
    "CloseChannel",
    "Message",
    "NewExtendedMiningJob",
    "NewMiningJob",
    "OpenExtendedMiningChannel",
    "OpenExtendedMiningChannelSuccess",
    "OpenMiningChannelError",
    "OpenStandardMiningChannel",
    "OpenStandardMiningChannelSuccess",
    "Reconnect",
    "RequestExtensions",
    "RequestExtensionsError",
    "RequestExtensionsSuccess",
    "SetCustomMiningJob",
    "SetCustomMiningJobError",
    "SetCustomMiningJobSuccess",
    "SetExtranoncePrefix",
    "SetGroupChannel",
    "SetNewPrevHash",
    "SetTarget",
    "SetupConnection",
    "SetupConnectionError",
    "SetupConnectionSuccess",
    "SubmitSharesError",
    "SubmitSharesExtended",
    "SubmitSharesStandard",
    "SubmitSharesSuccess",
    "Tlv",
    "UnknownMessage",
    "UpdateChannel",
    "UpdateChannelError",
    "decode_message",
    "decode_tlvs",
    "encode_tlvs",
    "generic_decode",
    "generic_encode",
    "message_class",
    "message_name",
]
