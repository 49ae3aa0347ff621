"""ElligatorSwift keys and BIP324 ECDH for the SV2 Noise handshake.

This module owns the only direct use of libsecp256k1's ellswift API in the
project. coincurve 21 ships the C functions but no Python wrapper, so we call
them through its cffi layer and check every return code ourselves.

Three operations are needed by the handshake:

- ``create``: a 64-byte ElligatorSwift encoding of ``secret * G``.
- ``decode_xonly``: the 32-byte x-only key behind a 64-byte encoding (the
  certificate signs the server's static key in x-only form).
- ``xdh``: BIP324 ``v2_ecdh``. The hash covers both 64-byte encodings with the
  initiator's first, so the caller must say which side the secret belongs to.

Local mistakes (a bad secret, a wrong-sized aux) raise ``ValueError``. A
64-byte key that came from a peer and cannot be used raises ``NoiseError``, so
connection code that closes on ``ProtocolError`` covers it.
"""

from __future__ import annotations

import os

from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

from sv2.errors import NoiseError
from sv2.keys import GROUP_ORDER, SECRET_SIZE

__all__ = ["ELLSWIFT_SIZE", "SECRET_SIZE", "create", "decode_xonly", "xdh"]

ELLSWIFT_SIZE = 64
_SHARED_SIZE = 32
_COMPRESSED_SIZE = 33


def _check_secret(secret: bytes) -> None:
    # libsecp would reject these too, but only with a bare 0 return code;
    # checking here lets us say what was wrong.
    if len(secret) != SECRET_SIZE:
        raise ValueError(f"secret key must be {SECRET_SIZE} bytes, got {len(secret)}")
    if not 0 < int.from_bytes(secret, "big") < GROUP_ORDER:
        raise ValueError("secret key is not a valid secp256k1 scalar (zero or >= group order)")


def _check_ellswift(ell: bytes, what: str) -> None:
    if len(ell) != ELLSWIFT_SIZE:
        raise NoiseError(
            f"{what} must be a {ELLSWIFT_SIZE}-byte ellswift key, got {len(ell)} bytes"
        )


def create(secret32: bytes, aux32: bytes | None = None) -> bytes:
    """Return a 64-byte ElligatorSwift encoding of the public key of ``secret32``.

    ``aux32`` selects one of the many valid encodings. When it is None, fresh
    randomness is used so the encoding is indistinguishable from random bytes,
    which is the point of ElligatorSwift; tests pass a fixed value to
    reproduce a transcript.
    """
    _check_secret(secret32)
    if aux32 is None:
        aux32 = os.urandom(32)
    elif len(aux32) != 32:
        raise ValueError(f"ellswift aux randomness must be 32 bytes, got {len(aux32)}")
    out = ffi.new("unsigned char[64]")
    if lib.secp256k1_ellswift_create(GLOBAL_CONTEXT.ctx, out, secret32, aux32) != 1:
        raise ValueError("secp256k1_ellswift_create failed")
    return bytes(ffi.buffer(out, ELLSWIFT_SIZE))


def decode_xonly(ell64: bytes) -> bytes:
    """Return the 32-byte x-only public key encoded by a 64-byte ellswift key."""
    _check_ellswift(ell64, "ellswift public key")
    pubkey = ffi.new("secp256k1_pubkey *")
    # Every 64-byte string decodes to a valid point (the library documents a
    # return value of 1 always); the check guards against a future change.
    if lib.secp256k1_ellswift_decode(GLOBAL_CONTEXT.ctx, pubkey, ell64) != 1:
        raise NoiseError("ellswift public key could not be decoded")
    out = ffi.new("unsigned char[33]")
    outlen = ffi.new("size_t *", _COMPRESSED_SIZE)
    rc = lib.secp256k1_ec_pubkey_serialize(
        GLOBAL_CONTEXT.ctx, out, outlen, pubkey, lib.SECP256K1_EC_COMPRESSED
    )
    if rc != 1 or outlen[0] != _COMPRESSED_SIZE:
        raise NoiseError("decoded ellswift public key could not be serialized")
    # Dropping the 02/03 parity byte of the compressed form leaves the x-only key.
    return bytes(ffi.buffer(out, _COMPRESSED_SIZE))[1:]


def xdh(ell_initiator: bytes, ell_responder: bytes, secret: bytes, *, initiator: bool) -> bytes:
    """BIP324 ``v2_ecdh``: 32-byte shared secret between two ellswift keys.

    The result is ``SHA256(T || T || ell_initiator || ell_responder || x)``
    with ``T = SHA256("bip324_ellswift_xonly_ecdh")`` and ``x`` the shared
    point's x coordinate. Both sides always pass the keys in the same order
    (initiator first). ``initiator`` tells which of the two keys ``secret``
    belongs to: True for the initiator's key (libsecp "party 0"), False for
    the responder's (party 1).
    """
    _check_ellswift(ell_initiator, "initiator ellswift key")
    _check_ellswift(ell_responder, "responder ellswift key")
    _check_secret(secret)
    out = ffi.new("unsigned char[32]")
    rc = lib.secp256k1_ellswift_xdh(
        GLOBAL_CONTEXT.ctx,
        out,
        ell_initiator,
        ell_responder,
        secret,
        0 if initiator else 1,
        lib.secp256k1_ellswift_xdh_hash_function_bip324,
        ffi.NULL,
    )
    if rc != 1:
        # With a checked secret this cannot happen for any 64-byte input; if it
        # does, blame the peer's bytes so the connection is dropped cleanly.
        raise NoiseError("ellswift ECDH failed")
    return bytes(ffi.buffer(out, _SHARED_SIZE))
