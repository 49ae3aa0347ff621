"""Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256 for SV2, both roles, sans-IO.

This module owns the SV2 Noise layer: the symmetric state, the two handshake
roles, the server certificate (SIGNATURE_NOISE_MESSAGE) and the transport
ciphers that encrypt SV2 frames after the handshake. It performs no I/O and
reads the clock only through an injectable ``now`` callable.

Why this is written by hand instead of on the ``noiseprotocol`` package
(which is installed): that package cannot express this handshake without
reaching into its internals. Its protocol-name parser accepts only the
25519 and 448 DH functions, so the SV2 name is rejected up front. Its
handshake reader cuts public keys out of a message using the DH function's
key length, while SV2 sends 64-byte ElligatorSwift encodings whose DH
result is 32 bytes. Most decisively, its DH callback receives only a
private and a public key. The SV2 DH is BIP324 ``v2_ecdh``, whose hash
covers both 64-byte encodings with the initiator's first, so the callback
would need to know which role it is playing and the exact bytes of the other
key. A role-bound custom DH object could be squeezed in, but it would depend
on undocumented library behaviour. The Noise symmetric state needed for one
fixed pattern is a few dozen lines over ``hashlib``/``hmac`` and
``cryptography``'s ChaCha20Poly1305, which is the smaller risk.

Wire summary (see the team reference, section 3):

- act 1, initiator -> responder, 64 bytes: ``ell(e)``;
- act 2, responder -> initiator, 234 bytes: ``ell(e) || enc(ell(s)) || enc(cert)``;
- transport: each SV2 frame is a 22-byte encrypted header followed by the
  payload encrypted in chunks of at most 65519 plaintext bytes; an empty
  payload sends nothing after the header.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKeyXOnly
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sv2 import ellswift
from sv2.errors import (
    AuthorityKeyMismatch,
    CertificateError,
    CertificateExpired,
    DecryptError,
    EncodeError,
    HandshakeTruncated,
    KeyFormatError,
    NoiseError,
    StateError,
)
from sv2.framing import HEADER_SIZE
from sv2.keys import generate_secret, xonly_from_secret

__all__ = [
    "ACT1_SIZE",
    "ACT2_SIZE",
    "CERT_LEEWAY",
    "HEADER_CT_SIZE",
    "MAC_SIZE",
    "MAX_CHUNK_CIPHERTEXT",
    "MAX_CHUNK_PLAINTEXT",
    "PROTOCOL_NAME",
    "SIGNATURE_MESSAGE_SIZE",
    "CipherState",
    "NoiseInitiator",
    "NoiseResponder",
    "NoiseTransport",
    "SignatureNoiseMessage",
    "SymmetricState",
    "hkdf2",
    "nonce_bytes",
]

PROTOCOL_NAME = b"Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256"
MAC_SIZE = 16
ELLSWIFT_SIZE = ellswift.ELLSWIFT_SIZE
SIGNATURE_MESSAGE_SIZE = 74
ACT1_SIZE = ELLSWIFT_SIZE
ACT2_SIZE = ELLSWIFT_SIZE + (ELLSWIFT_SIZE + MAC_SIZE) + (SIGNATURE_MESSAGE_SIZE + MAC_SIZE)
HEADER_CT_SIZE = HEADER_SIZE + MAC_SIZE
MAX_CHUNK_CIPHERTEXT = 65535  # largest Noise message
MAX_CHUNK_PLAINTEXT = MAX_CHUNK_CIPHERTEXT - MAC_SIZE
CERT_LEEWAY = 10  # seconds of clock slack SRI allows on both ends of the window

# Noise reserves nonce 2**64 - 1; SV2 never rekeys, so reaching it is fatal.
_MAX_NONCE = (1 << 64) - 1
# 4 zero bytes then the counter as LE64: the pad is part of the format, so
# one pack call builds the whole 12-byte nonce.
_pack_nonce = struct.Struct("<4xQ").pack
_CERT_FIELDS = struct.Struct("<HII")


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
            raise NoiseError("nonce space exhausted; the connection must be closed")
        ct = aead.encrypt(_pack_nonce(n), plaintext, ad)
        self.n = n + 1
        return ct

    def decrypt_with_ad(self, ad: bytes | None, ciphertext: bytes | memoryview) -> bytes:
        aead = self._aead
        if aead is None:
            return bytes(ciphertext)
        n = self.n
        if n >= _MAX_NONCE:
            raise NoiseError("nonce space exhausted; the connection must be closed")
        try:
            pt = aead.decrypt(_pack_nonce(n), ciphertext, ad)
        except InvalidTag:
            raise DecryptError(f"AEAD tag mismatch at nonce {n}") from None
        self.n = n + 1
        return pt


class SymmetricState:
    """Noise SymmetricState: chaining key ``ck``, handshake hash ``h``, cipher."""

    def __init__(self) -> None:
        # The name is longer than HASHLEN, so Noise hashes it.
        self.ck = _sha256(PROTOCOL_NAME)
        self.h = self.ck
        self.cipher = CipherState()
        # The SV2 prologue is empty but is still mixed in, as Noise specifies.
        self.mix_hash(b"")

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


@dataclass(frozen=True)
class SignatureNoiseMessage:
    """The responder's certificate, sent encrypted as the payload of act 2.

    Layout (74 bytes): version U16 LE, valid_from U32 LE, not_valid_after
    U32 LE (unix seconds), then a 64-byte BIP340 signature by the pool's
    authority key over ``digest(static_xonly)``.
    """

    version: int
    valid_from: int
    not_valid_after: int
    signature: bytes

    def signed_fields(self) -> bytes:
        """The first 10 bytes of the encoding, which the signature covers."""
        for name, value, bits in (
            ("version", self.version, 16),
            ("valid_from", self.valid_from, 32),
            ("not_valid_after", self.not_valid_after, 32),
        ):
            if not 0 <= value < (1 << bits):
                raise EncodeError(f"SignatureNoiseMessage.{name}", f"{value} does not fit U{bits}")
        return _CERT_FIELDS.pack(self.version, self.valid_from, self.not_valid_after)

    def encode(self) -> bytes:
        if len(self.signature) != 64:
            raise EncodeError(
                "SignatureNoiseMessage.signature", f"must be 64 bytes, got {len(self.signature)}"
            )
        return self.signed_fields() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> SignatureNoiseMessage:
        if len(data) != SIGNATURE_MESSAGE_SIZE:
            raise CertificateError(
                f"SignatureNoiseMessage must be {SIGNATURE_MESSAGE_SIZE} bytes, got {len(data)}"
            )
        version, valid_from, not_valid_after = _CERT_FIELDS.unpack_from(data)
        return cls(version, valid_from, not_valid_after, bytes(data[10:]))

    def digest(self, static_xonly: bytes) -> bytes:
        """The 32-byte BIP340 message: SHA256(first 10 bytes || static x-only key)."""
        if len(static_xonly) != 32:
            raise ValueError(f"static x-only key must be 32 bytes, got {len(static_xonly)}")
        return _sha256(self.signed_fields() + static_xonly)

    @classmethod
    def sign(
        cls,
        authority_secret: bytes,
        static_xonly: bytes,
        valid_from: int,
        not_valid_after: int,
        aux: bytes | None = None,
        *,
        version: int = 0,
    ) -> SignatureNoiseMessage:
        """Build and sign a certificate for ``static_xonly`` (``aux`` None: random)."""
        if len(authority_secret) != 32:
            # coincurve would silently left-pad a short secret.
            raise ValueError(f"authority secret must be 32 bytes, got {len(authority_secret)}")
        unsigned = cls(version, valid_from, not_valid_after, b"")
        digest = unsigned.digest(static_xonly)
        # BIP340 hashes the 32-byte message internally; it is not hashed again here.
        sig = PrivateKey(authority_secret).sign_schnorr(
            digest, os.urandom(32) if aux is None else aux
        )
        return cls(version, valid_from, not_valid_after, sig)

    def verify(
        self, authority_xonly: bytes, static_xonly: bytes, now: int, leeway: int = CERT_LEEWAY
    ) -> None:
        """Raise unless the signature and the validity window both check out.

        The signature is checked first: until it verifies, the time fields are
        unauthenticated and a complaint about them would be misleading.
        Like SRI, the window is widened by ``leeway`` seconds on both ends and
        the version is not checked (SRI sends 0; a stricter check would only
        break a future certificate format).
        """
        # Length first: libsecp reads 32 bytes from whatever buffer it is given.
        if len(authority_xonly) != 32:
            raise KeyFormatError(f"authority key must be 32 bytes, got {len(authority_xonly)}")
        try:
            key = PublicKeyXOnly(authority_xonly)
        except ValueError:
            raise KeyFormatError("authority key is not a valid x-only public key") from None
        if not key.verify(self.signature, self.digest(static_xonly)):
            raise AuthorityKeyMismatch(
                "certificate signature does not verify under the configured authority key "
                f"{authority_xonly.hex()}"
            )
        if now < self.valid_from - leeway:
            raise CertificateExpired(
                f"certificate not yet valid: valid_from={self.valid_from}, now={now}, "
                f"leeway={leeway}s"
            )
        if now > self.not_valid_after + leeway:
            raise CertificateExpired(
                f"certificate expired: not_valid_after={self.not_valid_after}, now={now}, "
                f"leeway={leeway}s"
            )


class NoiseTransport:
    """Per-direction transport ciphers after a completed handshake.

    Each SV2 frame is two or more AEAD messages with empty associated data:
    the 6-byte header alone (22 bytes of ciphertext), then the payload in
    chunks of at most ``MAX_CHUNK_PLAINTEXT`` bytes. Each AEAD call uses the
    next nonce of its direction. Frame-size limits are the caller's policy;
    ``encrypted_payload_length`` tells it how many bytes to wait for.
    """

    __slots__ = ("_recv", "_send", "handshake_hash")

    def __init__(self, send: CipherState, recv: CipherState, handshake_hash: bytes) -> None:
        self._send = send
        self._recv = recv
        # The final h identifies this session; useful for channel binding and logs.
        self.handshake_hash = handshake_hash

    @property
    def send_nonce(self) -> int:
        return self._send.n

    @property
    def recv_nonce(self) -> int:
        return self._recv.n

    @staticmethod
    def encrypted_payload_length(n: int) -> int:
        """Ciphertext bytes that follow the header for a plaintext payload of ``n`` bytes."""
        if n < 0:
            raise ValueError(f"payload length cannot be negative: {n}")
        chunks = -(-n // MAX_CHUNK_PLAINTEXT)
        return n + MAC_SIZE * chunks

    def encrypt_frame(self, frame: bytes) -> bytes:
        """Encrypt one plaintext SV2 frame (6-byte header + payload) for the wire."""
        size = len(frame)
        if size < HEADER_SIZE:
            raise EncodeError(
                "frame", f"{size} bytes is shorter than the {HEADER_SIZE}-byte header"
            )
        declared = frame[3] | frame[4] << 8 | frame[5] << 16
        if declared != size - HEADER_SIZE:
            # The peer sizes its read from the header, so a mismatch would
            # desynchronise the stream; refuse to send it.
            raise EncodeError(
                "frame", f"header declares {declared} payload bytes but {size - HEADER_SIZE} follow"
            )
        enc = self._send.encrypt_with_ad
        view = memoryview(frame)
        header_ct = enc(None, view[:HEADER_SIZE])
        if size == HEADER_SIZE:
            return header_ct
        if size - HEADER_SIZE <= MAX_CHUNK_PLAINTEXT:
            return header_ct + enc(None, view[HEADER_SIZE:])
        parts = [header_ct]
        for off in range(HEADER_SIZE, size, MAX_CHUNK_PLAINTEXT):
            parts.append(enc(None, view[off : off + MAX_CHUNK_PLAINTEXT]))
        return b"".join(parts)

    def decrypt_header(self, ct22: bytes) -> bytes:
        """Decrypt the 22-byte header ciphertext to the 6-byte plaintext header."""
        if len(ct22) != HEADER_CT_SIZE:
            raise NoiseError(f"encrypted header must be {HEADER_CT_SIZE} bytes, got {len(ct22)}")
        return self._recv.decrypt_with_ad(None, ct22)

    def decrypt_payload(self, ct: bytes) -> bytes:
        """Decrypt a whole payload ciphertext (all its chunks) to the plaintext payload."""
        size = len(ct)
        if size == 0:
            return b""
        if 0 < size % MAX_CHUNK_CIPHERTEXT <= MAC_SIZE:
            # No plaintext length maps to this; the encoder never emits an empty chunk.
            raise NoiseError(f"{size} is not a valid encrypted payload length")
        dec = self._recv.decrypt_with_ad
        if size <= MAX_CHUNK_CIPHERTEXT:
            return dec(None, ct)
        view = memoryview(ct)
        return b"".join(
            dec(None, view[off : off + MAX_CHUNK_CIPHERTEXT])
            for off in range(0, size, MAX_CHUNK_CIPHERTEXT)
        )


def _check_act_length(data: bytes, expected: int, act: str) -> None:
    if len(data) < expected:
        raise HandshakeTruncated(f"{act} needs {expected} bytes, got {len(data)}")
    if len(data) > expected:
        # Not truncation, but just as fatal: the caller framed the stream wrongly
        # or the peer speaks something else.
        raise NoiseError(f"{act} must be exactly {expected} bytes, got {len(data)}")


class NoiseInitiator:
    """Client side of the handshake: ``write_act1``, then ``read_act2``.

    ``authority_pubkey`` is the pool's 32-byte x-only authority key. With
    ``None`` the certificate is decoded but **not verified at all** (neither
    signature nor validity window), which is what SRI does when no key is
    configured. That mode offers no protection against a man in the middle;
    it exists for tests and tooling, and the proxy's configuration always
    supplies a key.

    ``now`` returns unix seconds and is only read to check the certificate.
    ``ephemeral_secret`` / ``ephemeral_aux`` fix the otherwise random
    ephemeral key and its ellswift encoding, for reproducible transcripts.
    """

    def __init__(
        self,
        authority_pubkey: bytes | None,
        *,
        now: Callable[[], float] = time.time,
        ephemeral_secret: bytes | None = None,
        ephemeral_aux: bytes | None = None,
    ) -> None:
        if authority_pubkey is not None:
            if len(authority_pubkey) != 32:
                raise KeyFormatError(
                    f"authority public key must be 32 x-only bytes, got {len(authority_pubkey)}"
                )
            try:
                PublicKeyXOnly(authority_pubkey)
            except ValueError:
                raise KeyFormatError("authority public key is not a valid x coordinate") from None
        self.authority_pubkey = authority_pubkey
        self._now = now
        self._e_secret = ephemeral_secret if ephemeral_secret is not None else generate_secret()
        self._e_aux = ephemeral_aux
        self._e_ell = b""
        self._ss = SymmetricState()
        self._stage = "start"  # start -> act1_sent -> done | failed
        self.remote_static_ellswift: bytes | None = None
        self.certificate: SignatureNoiseMessage | None = None

    @property
    def handshake_hash(self) -> bytes:
        return self._ss.h

    @property
    def chaining_key(self) -> bytes:
        return self._ss.ck

    def write_act1(self) -> bytes:
        """The 64-byte first handshake message (our ephemeral key, unframed)."""
        if self._stage != "start":
            raise StateError(f"write_act1 in handshake stage {self._stage}")
        self._e_ell = ellswift.create(self._e_secret, self._e_aux)
        self._ss.mix_hash(self._e_ell)
        # No key yet, so this is MixHash(b""); SRI, sv2-tp and ESP all do it.
        self._ss.encrypt_and_hash(b"")
        self._stage = "act1_sent"
        return self._e_ell

    def read_act2(self, data: bytes) -> NoiseTransport:
        """Process the responder's 234-byte reply and return the transport ciphers.

        Raises ``HandshakeTruncated`` on a short message, ``DecryptError`` on
        a bad MAC, and ``AuthorityKeyMismatch`` / ``CertificateExpired`` when
        the certificate is rejected. Any failure leaves this object unusable.
        """
        if self._stage != "act1_sent":
            raise StateError(f"read_act2 in handshake stage {self._stage}")
        self._stage = "failed"  # until we get to the end
        _check_act_length(data, ACT2_SIZE, "handshake act 2")
        ss = self._ss
        re = bytes(data[:ELLSWIFT_SIZE])
        ss.mix_hash(re)
        ss.mix_key(ellswift.xdh(self._e_ell, re, self._e_secret, initiator=True))
        rs = ss.decrypt_and_hash(bytes(data[ELLSWIFT_SIZE : 2 * ELLSWIFT_SIZE + MAC_SIZE]))
        ss.mix_key(ellswift.xdh(self._e_ell, rs, self._e_secret, initiator=True))
        cert = SignatureNoiseMessage.decode(
            ss.decrypt_and_hash(bytes(data[2 * ELLSWIFT_SIZE + MAC_SIZE :]))
        )
        if self.authority_pubkey is not None:
            cert.verify(self.authority_pubkey, ellswift.decode_xonly(rs), int(self._now()))
        self.remote_static_ellswift = rs
        self.certificate = cert
        send, recv = ss.split()
        self._stage = "done"
        return NoiseTransport(send, recv, ss.h)


class NoiseResponder:
    """Server side of the handshake: ``read_act1``, ``write_act2``, ``transport``.

    Like the SRI pool, when ``static_secret`` is None a fresh static key is
    drawn for every responder (that is, every connection), and the
    certificate is signed on the fly with ``authority_secret``: version 0,
    ``valid_from = now()``, ``not_valid_after = valid_from + cert_validity``.
    ``valid_from`` / ``not_valid_after`` override those two values, and the
    ``*_secret`` / ``*_aux`` arguments fix every random input, so tests can
    produce exact transcripts and out-of-window certificates.
    """

    def __init__(
        self,
        authority_secret: bytes,
        *,
        static_secret: bytes | None = None,
        cert_validity: int = 3600,
        now: Callable[[], float] = time.time,
        ephemeral_secret: bytes | None = None,
        ephemeral_aux: bytes | None = None,
        static_aux: bytes | None = None,
        signature_aux: bytes | None = None,
        valid_from: int | None = None,
        not_valid_after: int | None = None,
    ) -> None:
        # Derive now so that a bad authority secret fails at construction
        # rather than in the middle of a client's handshake.
        self.authority_pubkey = xonly_from_secret(authority_secret)
        self._authority_secret = authority_secret
        self._s_secret = static_secret if static_secret is not None else generate_secret()
        self.static_pubkey = xonly_from_secret(self._s_secret)
        if cert_validity < 0:
            raise ValueError(f"cert_validity must be >= 0, got {cert_validity}")
        self._cert_validity = cert_validity
        self._now = now
        self._e_secret = ephemeral_secret if ephemeral_secret is not None else generate_secret()
        self._e_aux = ephemeral_aux
        self._s_aux = static_aux
        self._sig_aux = signature_aux
        self._valid_from = valid_from
        self._not_valid_after = not_valid_after
        self._re = b""
        self._ss = SymmetricState()
        self._stage = "start"  # start -> act1_read -> done | failed
        self._transport: NoiseTransport | None = None
        self.certificate: SignatureNoiseMessage | None = None

    @property
    def handshake_hash(self) -> bytes:
        return self._ss.h

    @property
    def chaining_key(self) -> bytes:
        return self._ss.ck

    def read_act1(self, data: bytes) -> None:
        """Consume the initiator's 64-byte ephemeral key."""
        if self._stage != "start":
            raise StateError(f"read_act1 in handshake stage {self._stage}")
        self._stage = "failed"
        _check_act_length(data, ACT1_SIZE, "handshake act 1")
        self._re = bytes(data)
        self._ss.mix_hash(self._re)
        # Mirror of the initiator's EncryptAndHash(b""): MixHash of nothing.
        self._ss.decrypt_and_hash(b"")
        self._stage = "act1_read"

    def write_act2(self) -> bytes:
        """The 234-byte reply: ephemeral key, encrypted static key, encrypted certificate."""
        if self._stage != "act1_read":
            raise StateError(f"write_act2 in handshake stage {self._stage}")
        self._stage = "failed"
        ss = self._ss
        e_ell = ellswift.create(self._e_secret, self._e_aux)
        ss.mix_hash(e_ell)
        ss.mix_key(ellswift.xdh(self._re, e_ell, self._e_secret, initiator=False))
        s_ell = ellswift.create(self._s_secret, self._s_aux)
        static_ct = ss.encrypt_and_hash(s_ell)
        ss.mix_key(ellswift.xdh(self._re, s_ell, self._s_secret, initiator=False))
        valid_from = self._valid_from if self._valid_from is not None else int(self._now())
        not_valid_after = (
            self._not_valid_after
            if self._not_valid_after is not None
            else valid_from + self._cert_validity
        )
        cert = SignatureNoiseMessage.sign(
            self._authority_secret, self.static_pubkey, valid_from, not_valid_after, self._sig_aux
        )
        cert_ct = ss.encrypt_and_hash(cert.encode())
        recv, send = ss.split()  # k1 carries initiator->responder traffic
        self.certificate = cert
        self._transport = NoiseTransport(send, recv, ss.h)
        self._stage = "done"
        return e_ell + static_ct + cert_ct

    def transport(self) -> NoiseTransport:
        """The transport ciphers; available once ``write_act2`` has run."""
        if self._transport is None:
            raise StateError(f"transport() in handshake stage {self._stage}")
        return self._transport
