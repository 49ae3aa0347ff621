"""Authority key text encoding (base58check) and key generation.

This module owns the text form of SV2 keys as they appear in configs and
URLs, and nothing else:

- public authority key: ``base58check(01 00 || xonly32)``, where ``01 00`` is
  the format version 1 as a little-endian U16 (34 bytes before the checksum);
- secret key: ``base58check(secret32)`` with no prefix.

base58check here is the Bitcoin alphabet with a 4-byte double-SHA256
checksum and no version byte of its own; the codec is the ``base58``
package's, wrapped so that every failure is a ``KeyFormatError``.

Every malformed string raises ``KeyFormatError`` with a message that names
the problem (character, checksum, length, version, x coordinate, scalar).
"""

from __future__ import annotations

import base58
from coincurve import PublicKeyXOnly
from coincurve.utils import get_valid_secret

from sv2.errors import KeyFormatError

__all__ = [
    "GROUP_ORDER",
    "PUBLIC_KEY_VERSION",
    "SECRET_SIZE",
    "XONLY_SIZE",
    "b58check_decode",
    "b58check_encode",
    "b58decode",
    "b58encode",
    "decode_public_key",
    "decode_secret_key",
    "encode_public_key",
    "encode_secret_key",
    "generate_keypair",
    "generate_secret",
    "xonly_from_secret",
]

PUBLIC_KEY_VERSION = 1
_VERSION_PREFIX = PUBLIC_KEY_VERSION.to_bytes(2, "little")
XONLY_SIZE = 32  # BIP340 x-only public key
SECRET_SIZE = 32  # secp256k1 secret scalar, big-endian
_CHECKSUM_SIZE = 4
# Order of the secp256k1 group: a secret key is a scalar in [1, GROUP_ORDER - 1].
GROUP_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

_ALPHABET = base58.BITCOIN_ALPHABET.decode("ascii")


def b58encode(data: bytes) -> str:
    """Plain base58 (Bitcoin alphabet); each leading zero byte becomes ``1``."""
    return base58.b58encode(data).decode("ascii")


def b58decode(text: str) -> bytes:
    """Inverse of ``b58encode``; rejects characters outside the alphabet, naming the position."""
    try:
        return base58.b58decode(text)
    except ValueError:
        pos, c = next((i, c) for i, c in enumerate(text) if c not in _ALPHABET)
        raise KeyFormatError(f"invalid base58 character {c!r} at position {pos}") from None


def b58check_encode(payload: bytes) -> str:
    return base58.b58encode_check(payload).decode("ascii")


def b58check_decode(text: str) -> bytes:
    """Decode base58check and return the payload without its checksum."""
    raw = b58decode(text)
    if len(raw) < _CHECKSUM_SIZE:
        raise KeyFormatError(f"base58check string too short: {len(raw)} bytes decoded")
    try:
        return base58.b58decode_check(text)
    except ValueError:
        raise KeyFormatError("bad base58check checksum") from None


def _check_xonly(xonly: bytes) -> None:
    if len(xonly) != XONLY_SIZE:
        raise KeyFormatError(
            f"x-only public key has wrong length: {len(xonly)} bytes, expected {XONLY_SIZE}"
        )
    try:
        PublicKeyXOnly(xonly)
    except ValueError:
        raise KeyFormatError("public key is not a valid secp256k1 x coordinate") from None


def _check_secret(secret: bytes) -> None:
    if len(secret) != SECRET_SIZE:
        raise KeyFormatError(
            f"secret key has wrong length: {len(secret)} bytes, expected {SECRET_SIZE}"
        )
    if not 0 < int.from_bytes(secret, "big") < GROUP_ORDER:
        raise KeyFormatError("secret key is not a valid secp256k1 scalar")


def encode_public_key(xonly: bytes) -> str:
    """Text form of a 32-byte x-only authority public key (starts with ``9``)."""
    _check_xonly(xonly)
    return b58check_encode(_VERSION_PREFIX + xonly)


def decode_public_key(text: str) -> bytes:
    """Parse an authority public key string and return the 32-byte x-only key."""
    # Surrounding whitespace is a copy/paste artefact in configs, never data.
    payload = b58check_decode(text.strip())
    if len(payload) != len(_VERSION_PREFIX) + XONLY_SIZE:
        raise KeyFormatError(
            f"authority public key has wrong length: {len(payload)} bytes, expected 34"
        )
    version = int.from_bytes(payload[:2], "little")
    if version != PUBLIC_KEY_VERSION:
        raise KeyFormatError(
            f"unsupported authority public key version {version}, expected {PUBLIC_KEY_VERSION}"
        )
    xonly = payload[2:]
    _check_xonly(xonly)
    return xonly


def encode_secret_key(secret: bytes) -> str:
    _check_secret(secret)
    return b58check_encode(secret)


def decode_secret_key(text: str) -> bytes:
    """Parse a base58check secret key string and return the 32 raw bytes."""
    secret = b58check_decode(text.strip())
    _check_secret(secret)
    return secret


def xonly_from_secret(secret: bytes) -> bytes:
    """The BIP340 x-only public key (32 bytes) of a secret key."""
    _check_secret(secret)
    return PublicKeyXOnly.from_secret(secret).format()


def generate_secret() -> bytes:
    """A fresh random 32-byte secret key (uniform in [1, n-1])."""
    # coincurve's helper draws os.urandom until the value is a valid scalar,
    # without the cost of deriving public keys we may not need.
    return get_valid_secret()


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh random ``(secret32, xonly32)`` pair.

    Unlike SRI's generator we do not negate secrets whose point has an odd Y:
    both x-only ECDH and BIP340 are indifferent to it.
    """
    secret = generate_secret()
    return secret, xonly_from_secret(secret)
