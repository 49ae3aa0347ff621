"""Typed errors of the sv2 library.

Every failure caused by bytes from the network is a ``ProtocolError`` (or a
subclass), so a caller can close one connection on ``except ProtocolError``
and nothing else. Encoding a value that does not fit its wire type is a
programming error on our side and raises ``EncodeError`` naming the field.
"""

from __future__ import annotations


class Sv2Error(Exception):
    """Base class of every error raised by the sv2 package."""


class ProtocolError(Sv2Error):
    """Malformed, truncated, oversize or otherwise invalid input from a peer."""


class EncodeError(Sv2Error, ValueError):
    """A value cannot be encoded as its declared SV2 type.

    ``field`` names the message field (or primitive) that was out of range.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NoiseError(ProtocolError):
    """Base class of Noise handshake and transport failures."""


class HandshakeTruncated(NoiseError):
    """A handshake act arrived with fewer bytes than the pattern requires."""


class DecryptError(NoiseError):
    """An AEAD tag did not verify (tampered ciphertext, wrong key or nonce)."""


class CertificateError(NoiseError):
    """The responder's SignatureNoiseMessage was rejected."""


class AuthorityKeyMismatch(CertificateError):
    """The certificate signature does not verify under the configured authority key."""


class CertificateExpired(CertificateError):
    """The certificate is outside its validity window (expired or not yet valid)."""


class FrameTooLarge(ProtocolError):
    """A frame declares a payload larger than the local limit."""


class StateError(ProtocolError):
    """An operation is not legal in the connection's current state."""


class KeyFormatError(Sv2Error, ValueError):
    """An authority key string is not valid base58check in the expected layout."""
