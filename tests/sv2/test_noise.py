"""sv2.noise: primitives, certificate, handshake and transport.

Vectors: noise_primitives, bip340_schnorr, noise_certificate_derived and
noise_handshake_derived. Then a random-key handshake in memory, and one test
per rejection case with the specific error class it must raise.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from typing import Any

import pytest
from coincurve import PrivateKey, PublicKeyXOnly
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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
    ProtocolError,
    StateError,
)
from sv2.keys import decode_public_key, decode_secret_key, generate_keypair
from sv2.noise import (
    ACT1_SIZE,
    ACT2_SIZE,
    HEADER_CT_SIZE,
    MAC_SIZE,
    MAX_CHUNK_CIPHERTEXT,
    MAX_CHUNK_PLAINTEXT,
    PROTOCOL_NAME,
    SIGNATURE_MESSAGE_SIZE,
    CipherState,
    NoiseInitiator,
    NoiseResponder,
    NoiseTransport,
    SignatureNoiseMessage,
    SymmetricState,
    hkdf2,
    nonce_bytes,
)
from tests.helpers.vectors import load_vector

H = bytes.fromhex
PRIM = load_vector("noise_primitives")
CERT = load_vector("noise_certificate_derived")
HS = load_vector("noise_handshake_derived")
SCHNORR = load_vector("bip340_schnorr")
NOW = 1_700_000_060


def frame(msg_type: int, payload: bytes, ext: int = 0) -> bytes:
    """A plaintext SV2 frame: U16 extension, U8 type, U24 length, payload."""
    return (
        ext.to_bytes(2, "little") + bytes([msg_type]) + len(payload).to_bytes(3, "little") + payload
    )


# --------------------------------------------------------------------------
# noise_primitives.json


def test_protocol_name_and_initial_state() -> None:
    assert PROTOCOL_NAME.decode("ascii") == PRIM["protocol_name_ascii"]
    assert len(PROTOCOL_NAME) == PRIM["protocol_name_len"]
    ss = SymmetricState(PROTOCOL_NAME)
    assert ss.ck.hex() == PRIM["initial_ck_hex"]
    assert ss.h.hex() == PRIM["initial_h_hex"]
    assert hashlib.sha256(ss.ck).hexdigest() == PRIM["initial_h_hex"]
    assert not ss.cipher.has_key


@pytest.mark.parametrize("item", PRIM["chachapoly_nonce_examples"], ids=lambda i: str(i["n"]))
def test_nonce_layout(item: dict[str, Any]) -> None:
    assert nonce_bytes(item["n"]).hex() == item["nonce12_hex"]


def test_cipher_state_uses_the_nonce_layout() -> None:
    key = bytes(range(32))
    cs = CipherState(key)
    raw = ChaCha20Poly1305(key)
    for n in range(3):
        assert cs.n == n
        assert cs.encrypt_with_ad(b"ad", b"hello") == raw.encrypt(nonce_bytes(n), b"hello", b"ad")
    cs.n = 4294967296
    assert cs.encrypt_with_ad(None, b"x") == raw.encrypt(H("000000000000000001000000"), b"x", None)


def test_hkdf2_against_rfc5869_a3() -> None:
    v = PRIM["hkdf2_rfc5869_a3"]
    ck, ikm = H(v["chaining_key_hex"]), H(v["input_key_material_hex"])
    assert hmac.digest(ck, ikm, "sha256").hex() == v["temp_key_hex"]
    o1, o2 = hkdf2(ck, ikm)
    assert o1.hex() == v["output1_hex"]
    assert o2.hex() == v["output2_hex"]
    assert (o1 + o2).hex().startswith(v["rfc_okm_first_42_bytes_hex"])
    # And against an independent HKDF: salt = chaining key, empty info, 64 bytes.
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=ck, info=b"").derive(ikm)
    assert okm == o1 + o2


def test_sizes() -> None:
    s = PRIM["sizes"]
    assert s["ellswift_pubkey"] == ellswift.ELLSWIFT_SIZE
    assert s["mac"] == MAC_SIZE
    assert s["handshake_msg1_initiator_to_responder"] == ACT1_SIZE
    assert s["signature_noise_message_plain"] == SIGNATURE_MESSAGE_SIZE
    assert s["signature_noise_message_encrypted"] == SIGNATURE_MESSAGE_SIZE + MAC_SIZE
    assert s["encrypted_static_key"] == ellswift.ELLSWIFT_SIZE + MAC_SIZE
    assert s["handshake_msg2_responder_to_initiator"] == ACT2_SIZE
    assert s["frame_header_encrypted"] == HEADER_CT_SIZE
    assert s["frame_header_plain"] + MAC_SIZE == HEADER_CT_SIZE
    assert s["max_noise_message_ciphertext"] == MAX_CHUNK_CIPHERTEXT
    assert s["max_plaintext_per_chunk"] == MAX_CHUNK_PLAINTEXT


@pytest.mark.parametrize(
    "item",
    PRIM["encrypted_payload_length"]["examples"],
    ids=lambda i: str(i["plaintext_payload_len"]),
)
def test_encrypted_payload_length(item: dict[str, Any]) -> None:
    n = item["plaintext_payload_len"]
    assert NoiseTransport.encrypted_payload_length(n) == item["payload_ciphertext_len"]
    assert (
        HEADER_CT_SIZE + NoiseTransport.encrypted_payload_length(n)
        == item["total_on_wire_with_header"]
    )


@pytest.mark.parametrize("n", [0, 1, 6, 82, 65518, 65519, 65520, 131038, 131039])
def test_encrypted_frame_has_the_computed_size(n: int) -> None:
    send = NoiseTransport(CipherState(b"\x01" * 32), CipherState(b"\x02" * 32), b"")
    recv = NoiseTransport(CipherState(b"\x02" * 32), CipherState(b"\x01" * 32), b"")
    payload = bytes(i % 251 for i in range(n))
    wire = send.encrypt_frame(frame(0x20, payload))
    assert len(wire) == HEADER_CT_SIZE + NoiseTransport.encrypted_payload_length(n)
    # One nonce for the header plus one per chunk; an empty payload uses none.
    assert send.send_nonce == 1 + -(-n // MAX_CHUNK_PLAINTEXT)
    assert recv.decrypt_header(wire[:HEADER_CT_SIZE]) == frame(0x20, payload)[:6]
    assert recv.decrypt_payload(wire[HEADER_CT_SIZE:]) == payload
    assert recv.recv_nonce == send.send_nonce


def test_encrypted_payload_length_rejects_negative() -> None:
    with pytest.raises(ValueError):
        NoiseTransport.encrypted_payload_length(-1)


# --------------------------------------------------------------------------
# bip340_schnorr.json (the primitive behind the certificate)


@pytest.mark.parametrize("row", SCHNORR["vectors"], ids=lambda r: f"bip340-{r['index']}")
def test_bip340_rows(row: dict[str, Any]) -> None:
    pub = PublicKeyXOnly(H(row["public_key"]))
    msg, sig = H(row["message"]), H(row["signature"])
    assert pub.verify(sig, msg) is row["verifies"]
    if row["secret_key"] is not None:
        key = PrivateKey(H(row["secret_key"]))
        assert key.public_key_xonly.format().hex() == row["public_key"]
        assert key.sign_schnorr(msg, H(row["aux_rand"])).hex() == row["signature"]


def test_certificate_signature_is_bip340_over_the_digest() -> None:
    # The certificate code must hand the 32-byte digest to BIP340 unchanged.
    cert = SignatureNoiseMessage.decode(H(CERT["message_hex"]))
    digest = cert.digest(H(CERT["server_static_xonly_hex"]))
    key = PrivateKey(H(CERT["authority_secret_hex"]))
    assert key.sign_schnorr(digest, H(CERT["bip340_aux_rand_hex"])) == cert.signature
    assert PublicKeyXOnly(H(CERT["authority_xonly_pubkey_hex"])).verify(cert.signature, digest)


# --------------------------------------------------------------------------
# noise_certificate_derived.json


def test_certificate_decode_encode() -> None:
    raw = H(CERT["message_hex"])
    cert = SignatureNoiseMessage.decode(raw)
    assert cert.version == CERT["version"]
    assert cert.valid_from == CERT["valid_from"]
    assert cert.not_valid_after == CERT["not_valid_after"]
    assert cert.signature.hex() == CERT["signature_hex"]
    assert cert.encode() == raw
    assert len(raw) == SIGNATURE_MESSAGE_SIZE


def test_certificate_digest() -> None:
    cert = SignatureNoiseMessage.decode(H(CERT["message_hex"]))
    static = H(CERT["server_static_xonly_hex"])
    assert cert.digest(static).hex() == CERT["digest_hex"]
    assert hashlib.sha256(H(CERT["message_hex"])[:10] + static).hexdigest() == CERT["digest_hex"]


def test_certificate_sign_reproduces_vector() -> None:
    cert = SignatureNoiseMessage.sign(
        H(CERT["authority_secret_hex"]),
        H(CERT["server_static_xonly_hex"]),
        CERT["valid_from"],
        CERT["not_valid_after"],
        H(CERT["bip340_aux_rand_hex"]),
    )
    assert cert.encode().hex() == CERT["message_hex"]


def test_certificate_sign_with_random_aux_still_verifies() -> None:
    args = (H(CERT["authority_secret_hex"]), H(CERT["server_static_xonly_hex"]), 10, 20)
    a, b = SignatureNoiseMessage.sign(*args), SignatureNoiseMessage.sign(*args)
    assert a.signature != b.signature
    for cert in (a, b):
        cert.verify(H(CERT["authority_xonly_pubkey_hex"]), H(CERT["server_static_xonly_hex"]), 15)


def test_certificate_verifies_inside_window() -> None:
    cert = SignatureNoiseMessage.decode(H(CERT["message_hex"]))
    cert.verify(H(CERT["authority_xonly_pubkey_hex"]), H(CERT["server_static_xonly_hex"]), NOW)


@pytest.mark.parametrize("case", CERT["negative_cases"], ids=lambda c: c["case"])
def test_certificate_negative_cases(case: dict[str, Any]) -> None:
    assert case["verifies"] is False
    cert = SignatureNoiseMessage.decode(H(case.get("message_hex", CERT["message_hex"])))
    authority = H(case.get("authority_xonly_pubkey_hex", CERT["authority_xonly_pubkey_hex"]))
    with pytest.raises(AuthorityKeyMismatch):
        cert.verify(authority, H(CERT["server_static_xonly_hex"]), NOW)


def test_certificate_for_another_static_key_is_rejected() -> None:
    cert = SignatureNoiseMessage.decode(H(CERT["message_hex"]))
    _, other_static = generate_keypair()
    with pytest.raises(AuthorityKeyMismatch):
        cert.verify(H(CERT["authority_xonly_pubkey_hex"]), other_static, NOW)


def _vector_cert_verify(now: int, leeway: int = 10) -> None:
    cert = SignatureNoiseMessage.decode(H(CERT["message_hex"]))
    cert.verify(
        H(CERT["authority_xonly_pubkey_hex"]), H(CERT["server_static_xonly_hex"]), now, leeway
    )


def test_sri_validity_window_with_leeway() -> None:
    vf, nva = CERT["valid_from"], CERT["not_valid_after"]
    for now in (vf - 10, vf, nva, nva + 10):
        _vector_cert_verify(now)
    with pytest.raises(CertificateExpired, match="not yet valid"):
        _vector_cert_verify(vf - 11)
    with pytest.raises(CertificateExpired, match="expired"):
        _vector_cert_verify(nva + 11)


def test_sv2_tp_validity_window_without_leeway() -> None:
    vf, nva = CERT["valid_from"], CERT["not_valid_after"]
    _vector_cert_verify(vf, leeway=0)
    _vector_cert_verify(nva, leeway=0)
    with pytest.raises(CertificateExpired, match="not yet valid"):
        _vector_cert_verify(vf - 1, leeway=0)
    with pytest.raises(CertificateExpired, match="expired"):
        _vector_cert_verify(nva + 1, leeway=0)


def test_bad_signature_is_reported_before_the_time_window() -> None:
    cert = SignatureNoiseMessage.decode(H(CERT["negative_cases"][0]["message_hex"]))
    with pytest.raises(AuthorityKeyMismatch):
        cert.verify(H(CERT["authority_xonly_pubkey_hex"]), H(CERT["server_static_xonly_hex"]), 0)


def test_certificate_version_is_not_checked_like_sri() -> None:
    cert = SignatureNoiseMessage.sign(
        H(CERT["authority_secret_hex"]), H(CERT["server_static_xonly_hex"]), 10, 20, version=7
    )
    assert SignatureNoiseMessage.decode(cert.encode()).version == 7
    cert.verify(H(CERT["authority_xonly_pubkey_hex"]), H(CERT["server_static_xonly_hex"]), 15)


@pytest.mark.parametrize("length", [0, 73, 75])
def test_certificate_decode_wrong_length(length: int) -> None:
    with pytest.raises(CertificateError, match="74"):
        SignatureNoiseMessage.decode(b"\x00" * length)


@pytest.mark.parametrize(
    ("field", "value"),
    [("version", 1 << 16), ("valid_from", -1), ("not_valid_after", 1 << 32), ("signature", b"x")],
)
def test_certificate_encode_out_of_range(field: str, value: Any) -> None:
    cert = replace(SignatureNoiseMessage.decode(H(CERT["message_hex"])), **{field: value})
    with pytest.raises(EncodeError, match=field):
        cert.encode()


def test_certificate_verify_rejects_malformed_authority_key() -> None:
    cert = SignatureNoiseMessage.decode(H(CERT["message_hex"]))
    with pytest.raises(KeyFormatError):
        cert.verify(b"\x01" * 31, H(CERT["server_static_xonly_hex"]), NOW)
    with pytest.raises(KeyFormatError):
        cert.verify(b"\xff" * 32, H(CERT["server_static_xonly_hex"]), NOW)


# --------------------------------------------------------------------------
# noise_handshake_derived.json

HSI = HS["inputs"]
HS_CERT = HSI["certificate"]


def vector_initiator() -> NoiseInitiator:
    return NoiseInitiator(
        H(HSI["authority_xonly_pubkey_hex"]),
        now=lambda: HS_CERT["verify_at_unix_time"],
        ephemeral_secret=H(HSI["initiator_ephemeral_secret_hex"]),
        ephemeral_aux=H(HSI["initiator_ephemeral_ellswift_aux_hex"]),
    )


def vector_responder() -> NoiseResponder:
    return NoiseResponder(
        H(HSI["authority_secret_hex"]),
        static_secret=H(HSI["responder_static_secret_hex"]),
        ephemeral_secret=H(HSI["responder_ephemeral_secret_hex"]),
        ephemeral_aux=H(HSI["responder_ephemeral_ellswift_aux_hex"]),
        static_aux=H(HSI["responder_static_ellswift_aux_hex"]),
        signature_aux=H(HS_CERT["bip340_aux_rand_hex"]),
        valid_from=HS_CERT["valid_from"],
        not_valid_after=HS_CERT["not_valid_after"],
        now=lambda: 0,  # must not matter: both bounds are fixed
    )


def test_vector_inputs_match_key_strings() -> None:
    assert (
        decode_secret_key(HSI["authority_secret_base58check"]).hex() == HSI["authority_secret_hex"]
    )
    assert (
        decode_public_key(HSI["authority_public_base58check"]).hex()
        == HSI["authority_xonly_pubkey_hex"]
    )


def test_vector_state_trace_step_by_step() -> None:
    """Drive SymmetricState by hand through the NX steps and match every h/ck."""
    pub = HS["derived_public"]
    ie, re, rs = (
        H(pub["initiator_ephemeral_ellswift_hex"]),
        H(pub["responder_ephemeral_ellswift_hex"]),
        H(pub["responder_static_ellswift_hex"]),
    )
    ee = ellswift.xdh(ie, re, H(HSI["initiator_ephemeral_secret_hex"]), initiator=True)
    assert ee == ellswift.xdh(ie, re, H(HSI["responder_ephemeral_secret_hex"]), initiator=False)
    es = ellswift.xdh(ie, rs, H(HSI["initiator_ephemeral_secret_hex"]), initiator=True)
    assert es == ellswift.xdh(ie, rs, H(HSI["responder_static_secret_hex"]), initiator=False)
    assert ee.hex() == HS["ecdh"]["ee_hex"]
    assert es.hex() == HS["ecdh"]["es_hex"]

    cert_plain = H(HS["certificate"]["signature_noise_message_hex (74 bytes)"])
    ss = SymmetricState(PROTOCOL_NAME)
    states = [(ss.h, ss.ck)]
    ss.mix_hash(ie)
    states.append((ss.h, ss.ck))
    assert ss.encrypt_and_hash(b"") == b""
    states.append((ss.h, ss.ck))
    ss.mix_hash(re)
    states.append((ss.h, ss.ck))
    assert hkdf2(ss.ck, ee)[1].hex() == HS["handshake_keys"]["k_after_ee_hex"]
    ss.mix_key(ee)
    states.append((ss.h, ss.ck))
    c1 = ss.encrypt_and_hash(rs)
    states.append((ss.h, ss.ck))
    assert hkdf2(ss.ck, es)[1].hex() == HS["handshake_keys"]["k_after_es_hex"]
    ss.mix_key(es)
    states.append((ss.h, ss.ck))
    c2 = ss.encrypt_and_hash(cert_plain)
    states.append((ss.h, ss.ck))

    assert len(states) == len(HS["state_trace"])
    for (h, ck), step in zip(states, HS["state_trace"], strict=True):
        assert (h.hex(), ck.hex()) == (step["h_hex"], step["ck_hex"]), step["after"]
    assert (re + c1 + c2).hex() == HS["message2_responder_to_initiator_hex"]


def test_vector_handshake_messages_and_states() -> None:
    trace = HS["state_trace"]
    ini, res = vector_initiator(), vector_responder()
    assert ini.handshake_hash.hex() == trace[0]["h_hex"]
    msg1 = ini.write_act1()
    assert msg1.hex() == HS["message1_initiator_to_responder_hex"]
    assert ini.handshake_hash.hex() == trace[2]["h_hex"]
    res.read_act1(msg1)
    assert res.handshake_hash.hex() == trace[2]["h_hex"]
    msg2 = res.write_act2()
    assert msg2.hex() == HS["message2_responder_to_initiator_hex"]
    assert (res.handshake_hash.hex(), res.chaining_key.hex()) == (
        HS["final_h_hex"],
        HS["final_ck_hex"],
    )
    t_ini = ini.read_act2(msg2)
    assert (ini.handshake_hash.hex(), ini.chaining_key.hex()) == (
        HS["final_h_hex"],
        HS["final_ck_hex"],
    )
    assert t_ini.handshake_hash == res.transport().handshake_hash == H(HS["final_h_hex"])
    assert ini.remote_static_ellswift == H(HS["derived_public"]["responder_static_ellswift_hex"])
    cert_hex = HS["certificate"]["signature_noise_message_hex (74 bytes)"]
    assert ini.certificate is not None and ini.certificate.encode().hex() == cert_hex
    assert res.certificate is not None and res.certificate.encode().hex() == cert_hex
    assert res.static_pubkey.hex() == HS["derived_public"]["responder_static_xonly_hex"]


def test_vector_transport_keys() -> None:
    keys = HS["transport_keys"]
    k1, k2 = hkdf2(H(HS["final_ck_hex"]), b"")
    assert (k1.hex(), k2.hex()) == (
        keys["c1_initiator_to_responder_hex"],
        keys["c2_responder_to_initiator_hex"],
    )
    # The handshake's own Split must give ciphers keyed the same way.
    first = HS["transport_frames"][0]
    plain = H(first["plain_frame_hex"])
    expected_header = first["header_ciphertext_hex (nonce 0, 22 bytes)"]
    assert CipherState(k1).encrypt_with_ad(None, plain[:6]).hex() == expected_header
    ini, res = vector_initiator(), vector_responder()
    res.read_act1(ini.write_act1())
    t_ini = ini.read_act2(res.write_act2())
    assert t_ini.encrypt_frame(plain)[:HEADER_CT_SIZE].hex() == expected_header


def _header_hex(item: dict[str, Any]) -> str:
    return str(next(v for k, v in item.items() if k.startswith("header_ciphertext_hex")))


def _payload_hex(item: dict[str, Any]) -> str:
    return str(next((v for k, v in item.items() if k.startswith("payload_ciphertext_hex")), ""))


def test_vector_transport_frames_both_ways() -> None:
    ini, res = vector_initiator(), vector_responder()
    res.read_act1(ini.write_act1())
    t_ini = ini.read_act2(res.write_act2())
    t_res = res.transport()
    for item in HS["transport_frames"]:
        sender, receiver = (
            (t_ini, t_res) if item["direction"].startswith("initiator") else (t_res, t_ini)
        )
        plain = H(item["plain_frame_hex"])
        wire = sender.encrypt_frame(plain)
        assert wire.hex() == item["wire_hex"]
        assert wire.hex() == _header_hex(item) + _payload_hex(item)
        header = receiver.decrypt_header(wire[:HEADER_CT_SIZE])
        assert header == plain[:6]
        length = int.from_bytes(header[3:6], "little")
        ct = wire[HEADER_CT_SIZE:]
        assert len(ct) == NoiseTransport.encrypted_payload_length(length)
        assert receiver.decrypt_payload(ct) == plain[6:]
    # The initiator sent two frames (2 + 1 AEAD calls), the responder one (2).
    assert t_ini.send_nonce == 3 and t_res.recv_nonce == 3
    assert t_res.send_nonce == 2 and t_ini.recv_nonce == 2


# --------------------------------------------------------------------------
# Random keys, in memory


def handshake(
    *,
    authority: tuple[bytes, bytes] | None = None,
    verify_with: bytes | None = None,
    client_now: float = NOW,
    **responder_kwargs: Any,
) -> tuple[NoiseInitiator, NoiseResponder, bytes]:
    """Run act 1 and write act 2; return both sides and act 2 (not yet read)."""
    secret, xonly = authority or generate_keypair()
    ini = NoiseInitiator(verify_with or xonly, now=lambda: client_now)
    responder_kwargs.setdefault("now", lambda: NOW)
    res = NoiseResponder(secret, **responder_kwargs)
    act1 = ini.write_act1()
    assert len(act1) == ACT1_SIZE
    res.read_act1(act1)
    act2 = res.write_act2()
    assert len(act2) == ACT2_SIZE
    return ini, res, act2


def connected() -> tuple[NoiseTransport, NoiseTransport]:
    ini, res, act2 = handshake()
    return ini.read_act2(act2), res.transport()


def roundtrip(sender: NoiseTransport, receiver: NoiseTransport, plain: bytes) -> bytes:
    wire = sender.encrypt_frame(plain)
    header = receiver.decrypt_header(wire[:HEADER_CT_SIZE])
    length = int.from_bytes(header[3:6], "little")
    ct_len = NoiseTransport.encrypted_payload_length(length)
    assert len(wire) == HEADER_CT_SIZE + ct_len
    return header + receiver.decrypt_payload(wire[HEADER_CT_SIZE:])


def test_random_handshake_then_frames_both_ways() -> None:
    t_ini, t_res = connected()
    assert t_ini.handshake_hash == t_res.handshake_hash
    big = bytes(i % 253 for i in range(2 * MAX_CHUNK_PLAINTEXT + 1000))  # three chunks
    frames = [
        frame(0x00, b"setup connection"),
        frame(0x04, b""),
        frame(0x20, big, ext=0x8000),
        frame(0x21, b"\x00" * MAX_CHUNK_PLAINTEXT),
        frame(0x22, b"\x01" * (MAX_CHUNK_PLAINTEXT + 1)),
        frame(0x01, b"ok"),
    ]
    for plain in frames:
        assert roundtrip(t_ini, t_res, plain) == plain
        assert roundtrip(t_res, t_ini, plain) == plain
    assert t_ini.send_nonce == t_res.recv_nonce == 2 + 1 + 4 + 2 + 3 + 2
    assert t_res.send_nonce == t_ini.recv_nonce == t_ini.send_nonce


def test_empty_payload_sends_only_the_header() -> None:
    t_ini, t_res = connected()
    wire = t_ini.encrypt_frame(frame(0x04, b""))
    assert len(wire) == HEADER_CT_SIZE
    assert t_res.decrypt_header(wire) == frame(0x04, b"")
    assert t_res.decrypt_payload(b"") == b""
    assert t_res.recv_nonce == 1


def test_responder_signs_certificate_on_the_fly() -> None:
    ini, res, act2 = handshake(cert_validity=120)
    ini.read_act2(act2)
    assert ini.certificate == res.certificate
    assert ini.certificate is not None
    assert (ini.certificate.version, ini.certificate.valid_from) == (0, NOW)
    assert ini.certificate.not_valid_after == NOW + 120
    assert ini.remote_static_ellswift is not None
    assert ellswift.decode_xonly(ini.remote_static_ellswift) == res.static_pubkey


def test_fresh_static_key_per_responder() -> None:
    secret, _ = generate_keypair()
    a, b = NoiseResponder(secret), NoiseResponder(secret)
    assert a.static_pubkey != b.static_pubkey
    assert a.authority_pubkey == b.authority_pubkey


def test_fixed_static_key_is_used() -> None:
    static_secret, static_xonly = generate_keypair()
    ini, res, act2 = handshake(static_secret=static_secret)
    ini.read_act2(act2)
    assert res.static_pubkey == static_xonly


def test_no_authority_key_skips_verification() -> None:
    secret, _ = generate_keypair()
    ini = NoiseInitiator(None, now=lambda: NOW)
    res = NoiseResponder(secret, valid_from=1, not_valid_after=2)  # long expired
    res.read_act1(ini.write_act1())
    t_ini = ini.read_act2(res.write_act2())
    assert roundtrip(t_ini, res.transport(), frame(0, b"x")) == frame(0, b"x")


def test_default_clock_is_wall_time() -> None:
    secret, xonly = generate_keypair()
    ini, res = NoiseInitiator(xonly), NoiseResponder(secret)
    res.read_act1(ini.write_act1())
    ini.read_act2(res.write_act2())


# --------------------------------------------------------------------------
# Rejections, one class each


def test_wrong_authority_key_is_rejected() -> None:
    _, other = generate_keypair()
    ini, _, act2 = handshake(verify_with=other)
    with pytest.raises(AuthorityKeyMismatch):
        ini.read_act2(act2)


@pytest.mark.parametrize(
    "offset",
    [0, 63, 64, 100, 143, 144, 200, 233],
    ids=lambda o: f"{'ephemeral' if o < 64 else 'static' if o < 144 else 'certificate'}-{o}",
)
def test_tampered_act2_is_decrypt_error(offset: int) -> None:
    ini, _, act2 = handshake()
    tampered = bytearray(act2)
    tampered[offset] ^= 0x01
    with pytest.raises(DecryptError):
        ini.read_act2(bytes(tampered))


def test_expired_certificate_is_rejected() -> None:
    ini, _, act2 = handshake(valid_from=NOW - 7200, not_valid_after=NOW - 3600)
    with pytest.raises(CertificateExpired, match="expired"):
        ini.read_act2(act2)


def test_not_yet_valid_certificate_is_rejected() -> None:
    # The pool's clock runs an hour ahead of ours.
    ini, _, act2 = handshake(client_now=NOW - 3600)
    with pytest.raises(CertificateExpired, match="not yet valid"):
        ini.read_act2(act2)


def test_clock_skew_within_leeway_is_accepted() -> None:
    ini, _, act2 = handshake(client_now=NOW - 10)
    ini.read_act2(act2)


def test_truncated_act1() -> None:
    ini = NoiseInitiator(None)
    res = NoiseResponder(generate_keypair()[0])
    with pytest.raises(HandshakeTruncated):
        res.read_act1(ini.write_act1()[:63])


def test_overlong_act1_is_not_called_truncation() -> None:
    res = NoiseResponder(generate_keypair()[0])
    with pytest.raises(NoiseError, match="exactly 64") as exc:
        res.read_act1(b"\x01" * 65)
    assert not isinstance(exc.value, HandshakeTruncated)


def test_truncated_act2() -> None:
    ini, _, act2 = handshake()
    with pytest.raises(HandshakeTruncated):
        ini.read_act2(act2[:233])


def test_overlong_act2() -> None:
    ini, _, act2 = handshake()
    with pytest.raises(NoiseError, match="exactly 234"):
        ini.read_act2(act2 + b"\x00")


def test_tampered_transport_header() -> None:
    t_ini, t_res = connected()
    wire = bytearray(t_ini.encrypt_frame(frame(0x01, b"payload")))
    wire[3] ^= 0x80
    with pytest.raises(DecryptError):
        t_res.decrypt_header(bytes(wire[:HEADER_CT_SIZE]))


@pytest.mark.parametrize("where", ["ciphertext", "mac"])
def test_tampered_transport_payload(where: str) -> None:
    t_ini, t_res = connected()
    wire = bytearray(t_ini.encrypt_frame(frame(0x01, b"payload")))
    wire[HEADER_CT_SIZE if where == "ciphertext" else -1] ^= 0x01
    t_res.decrypt_header(bytes(wire[:HEADER_CT_SIZE]))
    with pytest.raises(DecryptError):
        t_res.decrypt_payload(bytes(wire[HEADER_CT_SIZE:]))


def test_tampered_later_chunk_of_large_payload() -> None:
    t_ini, t_res = connected()
    wire = bytearray(t_ini.encrypt_frame(frame(0x20, b"\x07" * (MAX_CHUNK_PLAINTEXT + 5))))
    wire[-3] ^= 0x01
    t_res.decrypt_header(bytes(wire[:HEADER_CT_SIZE]))
    with pytest.raises(DecryptError):
        t_res.decrypt_payload(bytes(wire[HEADER_CT_SIZE:]))


def test_replayed_frame() -> None:
    t_ini, t_res = connected()
    wire = t_ini.encrypt_frame(frame(0x04, b""))
    t_res.decrypt_header(wire)
    with pytest.raises(DecryptError):
        t_res.decrypt_header(wire)


def test_reordered_frames() -> None:
    t_ini, t_res = connected()
    first = t_ini.encrypt_frame(frame(0x04, b""))
    second = t_ini.encrypt_frame(frame(0x05, b""))
    with pytest.raises(DecryptError):
        t_res.decrypt_header(second)
    assert t_res.decrypt_header(first) == frame(0x04, b"")


def test_failed_decrypt_leaves_the_nonce_unchanged() -> None:
    t_ini, t_res = connected()
    wire = t_ini.encrypt_frame(frame(0x04, b""))
    with pytest.raises(DecryptError):
        t_res.decrypt_header(bytes([wire[0] ^ 1]) + wire[1:])
    assert t_res.recv_nonce == 0
    assert t_res.decrypt_header(wire) == frame(0x04, b"")


def test_direction_keys_differ() -> None:
    # A frame reflected back to its sender must not decrypt.
    t_ini, _ = connected()
    with pytest.raises(DecryptError):
        t_ini.decrypt_header(t_ini.encrypt_frame(frame(0x04, b"")))


def test_transport_errors_are_protocol_errors() -> None:
    # The connection layer closes on ProtocolError; everything above must be one.
    for cls in (DecryptError, HandshakeTruncated, AuthorityKeyMismatch, CertificateExpired):
        assert issubclass(cls, ProtocolError)


@pytest.mark.parametrize("size", [1, 16, MAX_CHUNK_CIPHERTEXT + 16])
def test_impossible_payload_ciphertext_length(size: int) -> None:
    _, t_res = connected()
    with pytest.raises(NoiseError, match="not a valid encrypted payload length"):
        t_res.decrypt_payload(b"\x00" * size)


def test_header_ciphertext_of_wrong_size() -> None:
    _, t_res = connected()
    with pytest.raises(NoiseError, match="22"):
        t_res.decrypt_header(b"\x00" * 21)


def test_encrypt_frame_rejects_inconsistent_frames() -> None:
    t_ini, _ = connected()
    with pytest.raises(EncodeError, match="header declares 3"):
        t_ini.encrypt_frame(b"\x00\x00\x01\x03\x00\x00ab")
    with pytest.raises(EncodeError, match="shorter"):
        t_ini.encrypt_frame(b"\x00\x00\x01")
    assert t_ini.send_nonce == 0


def test_nonce_exhaustion() -> None:
    cs = CipherState(b"\x01" * 32)
    cs.n = (1 << 64) - 1
    # Sending past the last nonce is our side's limit (a local state error);
    # receiving past it means the peer sent one message too many.
    with pytest.raises(StateError, match="exhausted"):
        cs.encrypt_with_ad(None, b"x")
    assert not issubclass(StateError, ProtocolError)
    with pytest.raises(NoiseError, match="exhausted"):
        cs.decrypt_with_ad(None, b"x" * 17)
    assert cs.n == (1 << 64) - 1


def test_encrypt_two_is_two_encrypt_calls() -> None:
    fast, slow = CipherState(b"\x02" * 32), CipherState(b"\x02" * 32)
    fast.n = slow.n = 41
    got = fast.encrypt_two(b"header", memoryview(b"payload"))
    assert got == slow.encrypt_with_ad(None, b"header") + slow.encrypt_with_ad(None, b"payload")
    assert fast.n == slow.n == 43
    # Without a key both messages pass through, as encrypt_with_ad does.
    assert CipherState().encrypt_two(b"ab", b"cd") == b"abcd"


def test_encrypt_two_near_nonce_exhaustion_behaves_like_two_calls() -> None:
    cs = CipherState(b"\x01" * 32)
    cs.n = (1 << 64) - 2
    with pytest.raises(StateError, match="exhausted"):
        cs.encrypt_two(b"header", b"payload")
    # The first message used the last nonce, exactly as two separate calls would.
    assert cs.n == (1 << 64) - 1


@pytest.mark.parametrize(
    "size", [0, 1, 33, MAX_CHUNK_PLAINTEXT, MAX_CHUNK_PLAINTEXT + 1, 3 * MAX_CHUNK_PLAINTEXT]
)
def test_encrypt_message_equals_encrypt_frame(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    plain = frame(0x1B, payload, ext=0x8000)
    key = b"\x03" * 32
    a = NoiseTransport(CipherState(key), CipherState(key), b"")
    b = NoiseTransport(CipherState(key), CipherState(key), b"")
    assert a.encrypt_message(plain[:6], payload) == b.encrypt_frame(plain)
    chunks = -(-size // MAX_CHUNK_PLAINTEXT)
    assert a.send_nonce == b.send_nonce == 1 + chunks


# --------------------------------------------------------------------------
# Misuse: out-of-order calls and bad local keys


def test_initiator_call_order() -> None:
    ini = NoiseInitiator(None)
    with pytest.raises(StateError):
        ini.read_act2(b"\x00" * ACT2_SIZE)
    ini.write_act1()
    with pytest.raises(StateError):
        ini.write_act1()


def test_initiator_is_dead_after_a_failed_act2() -> None:
    ini, _, act2 = handshake()
    with pytest.raises(HandshakeTruncated):
        ini.read_act2(act2[:10])
    with pytest.raises(StateError):
        ini.read_act2(act2)


def test_responder_call_order() -> None:
    res = NoiseResponder(generate_keypair()[0])
    with pytest.raises(StateError):
        res.write_act2()
    with pytest.raises(StateError):
        res.transport()
    res.read_act1(NoiseInitiator(None).write_act1())
    with pytest.raises(StateError):
        res.read_act1(b"\x00" * ACT1_SIZE)
    with pytest.raises(StateError):
        res.transport()
    res.write_act2()
    with pytest.raises(StateError):
        res.write_act2()
    res.transport()


@pytest.mark.parametrize("key", [b"\x01" * 31, b"\xff" * 32], ids=["short", "not-on-curve"])
def test_initiator_rejects_bad_authority_key(key: bytes) -> None:
    with pytest.raises(KeyFormatError):
        NoiseInitiator(key)


@pytest.mark.parametrize("secret", [b"\x00" * 32, b"\x01" * 31], ids=["zero", "short"])
def test_responder_rejects_bad_authority_secret(secret: bytes) -> None:
    with pytest.raises(KeyFormatError):
        NoiseResponder(secret)
