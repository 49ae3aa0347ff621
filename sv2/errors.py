"""Typed errors of the sv2 library, split by whose fault the failure is (as h11 does).

- ``ProtocolError`` (and its subclasses): the PEER sent bytes we cannot accept
  (malformed, truncated, oversize, failing a MAC or a certificate check). A
  caller closes that one connection on ``except ProtocolError`` and nothing
  else. Functions that parse bytes (``decode``, ``read_act*``, ``decrypt_*``,
  ``receive_data``/``next_message``) treat their input as peer bytes, so any
  defect in it is a ``ProtocolError``.
- ``LocalProtocolError`` (and its subclasses): WE misused the API -- called an
  operation that is not legal in the object's current state (``StateError``),
  or asked to encode a value that does not fit its wire type (``EncodeError``,
  which names the field) or a message over our own size limit. These are bugs
  in the calling code; they are deliberately not ``ProtocolError``, so an
  ``except ProtocolError`` that drops a misbehaving peer does not also hide them.

``KeyFormatError`` (a malformed key string or key bytes, usually from
configuration) is neither: it is raised before any connection exists.
"""

from __future__ import annotations


class Sv2Error(Exception):
    """Base class of every error raised by the sv2 package."""


class ProtocolError(Sv2Error):
    """Malformed, truncated, oversize or otherwise invalid input from a peer."""


class LocalProtocolError(Sv2Error):
    """The caller used the sv2 API in a way the protocol or the object's state forbids."""


class StateError(LocalProtocolError):
    """An operation is not legal in the object's current state (a caller bug, not the peer's)."""


class EncodeError(LocalProtocolError, ValueError):
    """A value cannot be encoded as its declared SV2 type.

    ``field`` names the message field (or primitive) that was out of range.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NoiseError(ProtocolError):
    """Base class of Noise handshake and transport failures caused by the peer's bytes."""


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
    """A received frame declares a payload larger than the local limit."""


class KeyFormatError(Sv2Error, ValueError):
    """An authority key string is not valid base58check in the expected layout."""
