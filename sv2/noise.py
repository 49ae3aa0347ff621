"""Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256 for SV2, both roles, sans-IO.

This module owns the SV2 layer on top of the DH-agnostic Noise core in
``sv2.noise_core``: the SV2 DH function (``EllSwiftDH``: ElligatorSwift
public keys and BIP324 ECDH through coincurve), the server certificate
(SIGNATURE_NOISE_MESSAGE, the payload of act 2), the two handshake roles
(``NoiseInitiator`` / ``NoiseResponder``) and the transport ciphers that
encrypt SV2 frames after the handshake (``NoiseTransport``). It performs no
I/O and reads the clock only through an injectable ``now`` callable.

Why the handshake does not run on the ``noiseprotocol`` package: that
package cannot express this handshake without reaching into its internals.
Its protocol-name parser accepts only the 25519 and 448 DH functions, so the
SV2 name is rejected up front. Its handshake reader cuts public keys out of a
message using the DH function's key length, while SV2 sends 64-byte
ElligatorSwift encodings whose DH result is 32 bytes. Most decisively, its DH
callback receives only a private and a public key. The SV2 DH is BIP324
``v2_ecdh``, whose hash covers both 64-byte encodings with the initiator's
first, so the callback would need to know which role it is playing and the
exact bytes of the other key. A role-bound custom DH object could be squeezed
in, but it would depend on undocumented library behaviour. The Noise
symmetric state for one fixed pattern is a few dozen lines over
``hashlib``/``hmac`` and ``cryptography``'s ChaCha20Poly1305, which is the
smaller risk. ``noiseprotocol`` is now the test oracle instead (a dev
dependency only): ``tests/sv2/test_noise_core.py`` runs ``sv2.noise_core``
with an X25519 DH against its ``Noise_NX_25519_ChaChaPoly_SHA256`` and
requires byte-identical handshake messages, handshake hash and transport
ciphertexts.

Wire summary (see the team reference, section 3):

- act 1, initiator -> responder, 64 bytes: ``ell(e)`` (empty payload);
- act 2, responder -> initiator, 234 bytes: ``ell(e) || enc(ell(s)) || enc(cert)``;
- transport: each SV2 frame is a 22-byte encrypted header followed by the
  payload encrypted in chunks of at most 65519 plaintext bytes; an empty
  payload sends nothing after the header.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKeyXOnly

from sv2 import ellswift
from sv2.errors import (
    AuthorityKeyMismatch,
    CertificateError,
    CertificateExpired,
    EncodeError,
    KeyFormatError,
    NoiseError,
    StateError,
)
from sv2.framing import HEADER_SIZE
from sv2.keys import SECRET_SIZE, XONLY_SIZE, generate_secret, xonly_from_secret
from sv2.noise_core import (
    MAC_SIZE,
    MAX_MESSAGE_SIZE,
    CipherState,
    KeyPair,
    NXHandshake,
    SymmetricState,
    hkdf2,
    nonce_bytes,
    nx_protocol_name,
)

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
    "EllSwiftDH",
    "NoiseInitiator",
    "NoiseResponder",
    "NoiseTransport",
    "SignatureNoiseMessage",
    "SymmetricState",
    "hkdf2",
    "nonce_bytes",
]


class EllSwiftDH:
    """The SV2 DH function for the Noise core: ElligatorSwift keys, BIP324 ECDH.

    A public key is the 64-byte ElligatorSwift encoding; the shared secret is
    BIP324 ``v2_ecdh`` (``sv2.ellswift.xdh``), which hashes both encodings
    with the initiator's first -- hence the ``initiator`` flag the core passes.
    """

    name = "Secp256k1+EllSwift"
    public_size = ellswift.ELLSWIFT_SIZE

    @staticmethod
    def keypair(secret: bytes, aux: bytes | None = None) -> KeyPair:
        """The key pair of ``secret``; ``aux`` picks the encoding (None: random)."""
        return KeyPair(secret, ellswift.create(secret, aux))

    def dh(self, local: KeyPair, remote_public: bytes, *, initiator: bool) -> bytes:
        if initiator:
            return ellswift.xdh(local.public, remote_public, local.secret, initiator=True)
        return ellswift.xdh(remote_public, local.public, local.secret, initiator=False)


# The certificate: version U16, valid_from U32, not_valid_after U32 (the signed
# fields), then a 64-byte BIP340 signature.
_CERT_FIELDS = struct.Struct("<HII")
_SCHNORR_SIZE = 64

ELLSWIFT_DH = EllSwiftDH()
PROTOCOL_NAME = nx_protocol_name(ELLSWIFT_DH)
ELLSWIFT_SIZE = ellswift.ELLSWIFT_SIZE
SIGNATURE_MESSAGE_SIZE = _CERT_FIELDS.size + _SCHNORR_SIZE  # 74
ACT1_SIZE = ELLSWIFT_SIZE  # e, no payload
ACT2_SIZE = ELLSWIFT_SIZE + (ELLSWIFT_SIZE + MAC_SIZE) + (SIGNATURE_MESSAGE_SIZE + MAC_SIZE)
HEADER_CT_SIZE = HEADER_SIZE + MAC_SIZE
MAX_CHUNK_CIPHERTEXT = MAX_MESSAGE_SIZE
MAX_CHUNK_PLAINTEXT = MAX_CHUNK_CIPHERTEXT - MAC_SIZE
CERT_LEEWAY = 10  # seconds of clock slack SRI allows on both ends of the window


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
        if len(self.signature) != _SCHNORR_SIZE:
            raise EncodeError(
                "SignatureNoiseMessage.signature",
                f"must be {_SCHNORR_SIZE} bytes, got {len(self.signature)}",
            )
        return self.signed_fields() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> SignatureNoiseMessage:
        if len(data) != SIGNATURE_MESSAGE_SIZE:
            raise CertificateError(
                f"SignatureNoiseMessage must be {SIGNATURE_MESSAGE_SIZE} bytes, got {len(data)}"
            )
        version, valid_from, not_valid_after = _CERT_FIELDS.unpack_from(data)
        return cls(version, valid_from, not_valid_after, bytes(data[_CERT_FIELDS.size :]))

    def digest(self, static_xonly: bytes) -> bytes:
        """The 32-byte BIP340 message: SHA256(first 10 bytes || static x-only key)."""
        if len(static_xonly) != XONLY_SIZE:
            raise ValueError(
                f"static x-only key must be {XONLY_SIZE} bytes, got {len(static_xonly)}"
            )
        return hashlib.sha256(self.signed_fields() + static_xonly).digest()

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
        if len(authority_secret) != SECRET_SIZE:
            # coincurve would silently left-pad a short secret.
            raise ValueError(f"authority secret must be {SECRET_SIZE} bytes, got {len(authority_secret)}")
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
        if len(authority_xonly) != XONLY_SIZE:
            raise KeyFormatError(
                f"authority key must be {XONLY_SIZE} bytes, got {len(authority_xonly)}"
            )
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
    def send_cipher(self) -> CipherState:
        """This side's sending CipherState (its nonce is ``send_nonce``)."""
        return self._send

    @property
    def recv_cipher(self) -> CipherState:
        """This side's receiving CipherState (its nonce is ``recv_nonce``)."""
        return self._recv

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
        # msg_length, the U24 LE at bytes 3..5 of sv2.framing's header, read
        # inline: this is the per-frame hot path and FrameHeader.decode would
        # build an object only to read one field.
        declared = frame[3] | frame[4] << 8 | frame[5] << 16
        if declared != size - HEADER_SIZE:
            # The peer sizes its read from the header, so a mismatch would
            # desynchronise the stream; refuse to send it.
            raise EncodeError(
                "frame", f"header declares {declared} payload bytes but {size - HEADER_SIZE} follow"
            )
        view = memoryview(frame)
        if size == HEADER_SIZE:
            return self._send.encrypt_with_ad(None, view)
        if size - HEADER_SIZE <= MAX_CHUNK_PLAINTEXT:
            return self._send.encrypt_two(view[:HEADER_SIZE], view[HEADER_SIZE:])
        enc = self._send.encrypt_with_ad
        parts = [enc(None, view[:HEADER_SIZE])]
        for off in range(HEADER_SIZE, size, MAX_CHUNK_PLAINTEXT):
            parts.append(enc(None, view[off : off + MAX_CHUNK_PLAINTEXT]))
        return b"".join(parts)

    def encrypt_message(self, header: bytes, payload: bytes) -> bytes:
        """``encrypt_frame(header + payload)`` without building the plaintext frame.

        ``header`` must be the 6-byte header that declares ``len(payload)``
        (``sv2.framing.encode_header``); it is not re-parsed here. A payload
        that needs more than one chunk takes the general ``encrypt_frame``.
        """
        if not payload:
            return self._send.encrypt_with_ad(None, header)
        if len(payload) <= MAX_CHUNK_PLAINTEXT:
            return self._send.encrypt_two(header, payload)
        return self.encrypt_frame(header + payload)

    def decrypt_header(self, ct22: bytes | bytearray | memoryview) -> bytes:
        """Decrypt the 22-byte header ciphertext to the 6-byte plaintext header."""
        if len(ct22) != HEADER_CT_SIZE:
            raise NoiseError(f"encrypted header must be {HEADER_CT_SIZE} bytes, got {len(ct22)}")
        return self._recv.decrypt_with_ad(None, ct22)

    def decrypt_payload(self, ct: bytes | bytearray | memoryview) -> bytes:
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
            if len(authority_pubkey) != XONLY_SIZE:
                raise KeyFormatError(
                    f"authority public key must be {XONLY_SIZE} x-only bytes, got {len(authority_pubkey)}"
                )
            try:
                PublicKeyXOnly(authority_pubkey)
            except ValueError:
                raise KeyFormatError("authority public key is not a valid x coordinate") from None
        self.authority_pubkey = authority_pubkey
        self._now = now
        e_secret = ephemeral_secret if ephemeral_secret is not None else generate_secret()
        self._hs = NXHandshake(
            ELLSWIFT_DH, initiator=True, e=EllSwiftDH.keypair(e_secret, ephemeral_aux)
        )
        self.remote_static_ellswift: bytes | None = None
        self.certificate: SignatureNoiseMessage | None = None

    @property
    def handshake_hash(self) -> bytes:
        return self._hs.handshake_hash

    @property
    def chaining_key(self) -> bytes:
        return self._hs.chaining_key

    def write_act1(self) -> bytes:
        """The 64-byte first handshake message (our ephemeral key, unframed)."""
        # The empty payload is still EncryptAndHash'ed (a MixHash of nothing
        # before any key): SRI, sv2-tp and ESP all do it.
        return self._hs.write_message_1(b"")

    def read_act2(self, data: bytes) -> NoiseTransport:
        """Process the responder's 234-byte reply and return the transport ciphers.

        Raises ``HandshakeTruncated`` on a short message, ``DecryptError`` on
        a bad MAC, and ``AuthorityKeyMismatch`` / ``CertificateExpired`` when
        the certificate is rejected. Any failure leaves this object unusable.
        """
        hs = self._hs
        payload = hs.read_message_2(data, payload_size=SIGNATURE_MESSAGE_SIZE)
        rs = hs.remote_static
        assert rs is not None
        cert = SignatureNoiseMessage.decode(payload)
        if self.authority_pubkey is not None:
            cert.verify(self.authority_pubkey, ellswift.decode_xonly(rs), int(self._now()))
        self.remote_static_ellswift = rs
        self.certificate = cert
        send, recv = hs.transport_ciphers()
        return NoiseTransport(send, recv, hs.handshake_hash)


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
        s_secret = static_secret if static_secret is not None else generate_secret()
        self.static_pubkey = xonly_from_secret(s_secret)
        if cert_validity < 0:
            raise ValueError(f"cert_validity must be >= 0, got {cert_validity}")
        self._cert_validity = cert_validity
        self._now = now
        e_secret = ephemeral_secret if ephemeral_secret is not None else generate_secret()
        self._hs = NXHandshake(
            ELLSWIFT_DH,
            initiator=False,
            e=EllSwiftDH.keypair(e_secret, ephemeral_aux),
            s=EllSwiftDH.keypair(s_secret, static_aux),
        )
        self._sig_aux = signature_aux
        self._valid_from = valid_from
        self._not_valid_after = not_valid_after
        self._transport: NoiseTransport | None = None
        self.certificate: SignatureNoiseMessage | None = None

    @property
    def handshake_hash(self) -> bytes:
        return self._hs.handshake_hash

    @property
    def chaining_key(self) -> bytes:
        return self._hs.chaining_key

    def read_act1(self, data: bytes) -> None:
        """Consume the initiator's 64-byte ephemeral key (its payload must be empty)."""
        self._hs.read_message_1(data, payload_size=0)

    def _sign_certificate(self) -> SignatureNoiseMessage:
        valid_from = self._valid_from if self._valid_from is not None else int(self._now())
        not_valid_after = (
            self._not_valid_after
            if self._not_valid_after is not None
            else valid_from + self._cert_validity
        )
        return SignatureNoiseMessage.sign(
            self._authority_secret, self.static_pubkey, valid_from, not_valid_after, self._sig_aux
        )

    def write_act2(self) -> bytes:
        """The 234-byte reply: ephemeral key, encrypted static key, encrypted certificate."""
        if self._hs.complete or self._hs.remote_ephemeral is None:
            # Checked here too so that a misplaced call does not sign a certificate first.
            raise StateError("write_act2 before read_act1 or after write_act2")
        cert = self._sign_certificate()
        act2 = self._hs.write_message_2(cert.encode())
        self.certificate = cert
        send, recv = self._hs.transport_ciphers()
        self._transport = NoiseTransport(send, recv, self._hs.handshake_hash)
        return act2

    def transport(self) -> NoiseTransport:
        """The transport ciphers; available once ``write_act2`` has run."""
        if self._transport is None:
            raise StateError("transport() before write_act2 completed")
        return self._transport
