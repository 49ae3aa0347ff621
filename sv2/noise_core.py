"""The Noise core, independent of the DH function: CipherState, SymmetricState, NX pattern.

This module owns the parts of the Noise Protocol Framework (revision 34) that
SV2 uses and that do not depend on the Diffie-Hellman function:

- ``CipherState``: ChaCha20-Poly1305 (``ChaChaPoly``) with the Noise nonce
  layout (4 zero bytes, then the counter as little-endian U64);
- ``SymmetricState``: SHA-256 (``SHA256``) chaining key and handshake hash,
  HKDF, MixHash / MixKey / EncryptAndHash / DecryptAndHash / Split;
- ``NXHandshake``: the two messages of the NX pattern
  (``-> e`` then ``<- e, ee, s, es``) for either role.

The DH function is plugged in as a ``DHFunction``: it names itself for the
protocol name, says how many bytes a public key takes in a handshake
message, and computes ``DH(local key pair, remote public key)``. The core
never looks inside a key. Because BIP324's ElligatorSwift ECDH (the SV2 DH,
see ``sv2.noise``) hashes both public encodings with the initiator's first,
``dh`` is also told whether the local key belongs to the initiator; a plain
DH such as X25519 ignores that. The tests run this core with an X25519 DH
against the ``noiseprotocol`` package as an oracle.

Nothing here is SV2-specific (no certificate, no frame layout) and nothing
does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sv2.errors import DecryptError, HandshakeTruncated, NoiseError, StateError

__all__ = [
    "HASH_SIZE",
    "MAC_SIZE",
    "MAX_MESSAGE_SIZE",
    "CipherState",
    "DHFunction",
    "KeyPair",
    "NXHandshake",
    "SymmetricState",
    "hkdf2",
    "nonce_bytes",
    "nx_protocol_name",
]

MAC_SIZE = 16  # Poly1305 tag
HASH_SIZE = 32  # SHA-256: HASHLEN in the Noise spec
MAX_MESSAGE_SIZE = 65535  # largest Noise message, handshake or transport

# Noise reserves nonce 2**64 - 1; SV2 never rekeys, so reaching it is fatal.
_MAX_NONCE = (1 << 64) - 1
_MAX_PAIR_NONCE = _MAX_NONCE - 1  # encrypt_two's fast path needs n and n + 1 below _MAX_NONCE
# 4 zero bytes then the counter as LE64: the pad is part of the format, so
# one pack call builds the whole 12-byte nonce.
_pack_nonce = struct.Struct("<4xQ").pack


def nonce_bytes(n: int) -> bytes:
    """The 12-byte ChaCha20-Poly1305 nonce for counter ``n``."""
    return _pack_nonce(n)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise HKDF with two outputs (RFC 5869 with empty info, L = 64)."""
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    out2 = _hmac(temp, out1 + b"\x02")
    return out1, out2


class CipherState:
    """A ChaCha20-Poly1305 key and its nonce counter (Noise CipherState).

    Without a key, encryption and decryption are the identity, as Noise
    requires before the first MixKey. The nonce advances only after a
    successful operation, so a failed decrypt leaves the state as it was.
    """

    __slots__ = ("_aead", "n")

    def __init__(self, key: bytes | None = None) -> None:
        # One AEAD object per key: building it is far costlier than a call.
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        self.n = 0

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    def encrypt_with_ad(self, ad: bytes | None, plaintext: bytes | memoryview) -> bytes:
        aead = self._aead
        if aead is None:
            return bytes(plaintext)
        n = self.n
        if n >= _MAX_NONCE:
            # We have sent every message this key allows: our side must close.
            raise StateError("send nonce space exhausted; the connection must be closed")
        ct = aead.encrypt(_pack_nonce(n), plaintext, ad)
        self.n = n + 1
        return ct

    def encrypt_two(self, first: bytes | memoryview, second: bytes | memoryview) -> bytes:
        """``encrypt_with_ad(None, first) + encrypt_with_ad(None, second)``, in one call.

        An SV2 frame is two transport messages back to back (header, then
        payload); this is that pair with one nonce check and no second
        method call. Near nonce exhaustion it takes the two-call path, so the
        counter and the error are exactly those of two calls.
        """
        aead = self._aead
        n = self.n
        if aead is None or n >= _MAX_PAIR_NONCE:
            return self.encrypt_with_ad(None, first) + self.encrypt_with_ad(None, second)
        enc = aead.encrypt
        ct = enc(_pack_nonce(n), first, None) + enc(_pack_nonce(n + 1), second, None)
        self.n = n + 2
        return ct

    def decrypt_with_ad(self, ad: bytes | None, ciphertext: bytes | bytearray | memoryview) -> bytes:
        aead = self._aead
        if aead is None:
            return bytes(ciphertext)
        n = self.n
        if n >= _MAX_NONCE:
            # The peer sent one message more than its key allows.
            raise NoiseError("receive nonce space exhausted; the connection must be closed")
        try:
            pt = aead.decrypt(_pack_nonce(n), ciphertext, ad)
        except InvalidTag:
            raise DecryptError(f"AEAD tag mismatch at nonce {n}") from None
        self.n = n + 1
        return pt


class SymmetricState:
    """Noise SymmetricState: chaining key ``ck``, handshake hash ``h``, cipher.

    ``protocol_name`` is the full name, e.g. ``b"Noise_NX_25519_ChaChaPoly_SHA256"``;
    ``prologue`` is mixed in right away, as InitializeSymmetric plus
    MixHash(prologue) do in the spec.
    """

    def __init__(self, protocol_name: bytes, prologue: bytes = b"") -> None:
        if len(protocol_name) <= HASH_SIZE:
            # A short name is used as is, zero-padded to HASHLEN.
            self.h = protocol_name.ljust(HASH_SIZE, b"\x00")
        else:
            self.h = _sha256(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()
        # Mixed in even when empty (SV2's prologue is), as Noise specifies.
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = _sha256(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, key = hkdf2(self.ck, ikm)
        self.cipher = CipherState(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ct = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        pt = self.cipher.decrypt_with_ad(self.h, ciphertext)
        # Noise hashes the ciphertext, not the plaintext.
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator->responder, responder->initiator) transport ciphers."""
        k1, k2 = hkdf2(self.ck, b"")
        return CipherState(k1), CipherState(k2)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A DH key pair: ``secret`` as the DH function takes it, ``public`` as sent on the wire."""

    secret: bytes
    public: bytes


class DHFunction(Protocol):
    """What the Noise core needs from a DH function."""

    @property
    def name(self) -> str:
        """The DH part of the protocol name, e.g. ``"25519"``."""
        ...

    @property
    def public_size(self) -> int:
        """Bytes a public key occupies in a handshake message (DHLEN in the spec)."""
        ...

    def dh(self, local: KeyPair, remote_public: bytes, *, initiator: bool) -> bytes:
        """The shared secret of ``local`` and ``remote_public``.

        ``initiator`` tells whether ``local`` is the initiator's key; in NX
        every DH pairs one initiator key with one responder key. A peer's key
        that cannot be used must raise ``ProtocolError`` (e.g. ``NoiseError``).
        """
        ...


def nx_protocol_name(dh: DHFunction) -> bytes:
    """``Noise_NX_<dh>_ChaChaPoly_SHA256``: the only cipher and hash this core implements."""
    return f"Noise_NX_{dh.name}_ChaChaPoly_SHA256".encode("ascii")


class NXHandshake:
    """The Noise NX handshake for one side, over any ``DHFunction``.

    Message 1 (initiator -> responder) is ``e`` and a payload in clear;
    message 2 (responder -> initiator) is ``e, ee, s, es`` and an encrypted
    payload. ``e`` (and ``s`` for the responder) are given up front, as in
    the spec's Initialize(); the core never generates keys. Each side calls
    its two steps once, in order: the initiator ``write_message_1`` then
    ``read_message_2``; the responder ``read_message_1`` then
    ``write_message_2``. Anything else raises ``StateError``. A step that
    fails leaves the object unusable. ``payload_size`` on the read steps,
    when the caller's protocol fixes the payload length, makes any other
    message length an error before anything is processed.
    """

    def __init__(
        self,
        dh: DHFunction,
        *,
        initiator: bool,
        e: KeyPair,
        s: KeyPair | None = None,
        prologue: bytes = b"",
    ) -> None:
        if not initiator and s is None:
            raise ValueError("the NX responder needs a static key pair")
        self._dh = dh
        self.initiator = initiator
        self._e = e
        self._s = s
        self.symmetric = SymmetricState(nx_protocol_name(dh), prologue)
        self.remote_ephemeral: bytes | None = None
        self.remote_static: bytes | None = None
        self._step = 0  # messages processed; -1 once a step has failed

    @property
    def handshake_hash(self) -> bytes:
        return self.symmetric.h

    @property
    def chaining_key(self) -> bytes:
        return self.symmetric.ck

    @property
    def complete(self) -> bool:
        return self._step == 2

    def _begin(self, what: str, step: int, initiator: bool) -> None:
        if initiator is not self.initiator:
            side = "initiator" if initiator else "responder"
            raise StateError(f"{what} is a step of the {side}, not of this side")
        if self._step != step:
            stage = "failed" if self._step < 0 else f"after {self._step} message(s)"
            raise StateError(f"{what} in handshake stage {stage}")
        self._step = -1  # until the step completes

    def _check_size(self, what: str, message: bytes, fixed: int, payload_size: int | None) -> None:
        size = len(message)
        if payload_size is not None:
            expected = fixed + payload_size
            if size > expected:
                # Not truncation, but just as fatal: the caller framed the
                # stream wrongly or the peer speaks something else.
                raise NoiseError(f"{what} must be exactly {expected} bytes, got {size}")
        else:
            expected = fixed
        if size < expected:
            raise HandshakeTruncated(f"{what} needs {expected} bytes, got {size}")
        if size > MAX_MESSAGE_SIZE:
            raise NoiseError(f"{what} of {size} bytes exceeds the Noise limit {MAX_MESSAGE_SIZE}")

    def write_message_1(self, payload: bytes = b"") -> bytes:
        """Initiator: ``-> e`` followed by ``payload`` (no key yet, so in clear)."""
        self._begin("write_message_1", 0, initiator=True)
        ss = self.symmetric
        ss.mix_hash(self._e.public)
        # Without a key this is MixHash(payload); it is still required when empty.
        out = self._e.public + ss.encrypt_and_hash(payload)
        self._step = 1
        return out

    def read_message_1(self, message: bytes, *, payload_size: int | None = None) -> bytes:
        """Responder: take the initiator's ``e``; returns the payload."""
        self._begin("read_message_1", 0, initiator=False)
        n = self._dh.public_size
        self._check_size("handshake message 1", message, n, payload_size)
        ss = self.symmetric
        self.remote_ephemeral = bytes(message[:n])
        ss.mix_hash(self.remote_ephemeral)
        payload = ss.decrypt_and_hash(bytes(message[n:]))
        self._step = 1
        return payload

    def write_message_2(self, payload: bytes = b"") -> bytes:
        """Responder: ``<- e, ee, s, es`` followed by the encrypted ``payload``."""
        self._begin("write_message_2", 1, initiator=False)
        assert self._s is not None and self.remote_ephemeral is not None
        ss, dh, re = self.symmetric, self._dh, self.remote_ephemeral
        ss.mix_hash(self._e.public)
        ss.mix_key(dh.dh(self._e, re, initiator=False))  # ee
        static_ct = ss.encrypt_and_hash(self._s.public)
        ss.mix_key(dh.dh(self._s, re, initiator=False))  # es: responder side is DH(s, re)
        out = self._e.public + static_ct + ss.encrypt_and_hash(payload)
        self._step = 2
        return out

    def read_message_2(self, message: bytes, *, payload_size: int | None = None) -> bytes:
        """Initiator: take ``e, ee, s, es``; returns the decrypted payload.

        The responder's static key is then in ``remote_static``; the caller
        decides whether to trust it (Noise NX itself authenticates nothing).
        """
        self._begin("read_message_2", 1, initiator=True)
        n = self._dh.public_size
        fixed = n + (n + MAC_SIZE) + MAC_SIZE  # e, encrypted s, payload tag
        self._check_size("handshake message 2", message, fixed, payload_size)
        ss, dh = self.symmetric, self._dh
        re = bytes(message[:n])
        ss.mix_hash(re)
        ss.mix_key(dh.dh(self._e, re, initiator=True))  # ee
        rs = ss.decrypt_and_hash(bytes(message[n : 2 * n + MAC_SIZE]))
        ss.mix_key(dh.dh(self._e, rs, initiator=True))  # es: initiator side is DH(e, rs)
        payload = ss.decrypt_and_hash(bytes(message[2 * n + MAC_SIZE :]))
        self.remote_ephemeral, self.remote_static = re, rs
        self._step = 2
        return payload

    def transport_ciphers(self) -> tuple[CipherState, CipherState]:
        """(send, receive) CipherStates for this side, once both messages are done."""
        if self._step != 2:
            raise StateError("transport_ciphers() before the handshake completed")
        c1, c2 = self.symmetric.split()  # c1 carries initiator->responder traffic
        return (c1, c2) if self.initiator else (c2, c1)
