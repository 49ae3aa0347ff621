"""sv2.noise_core against the ``noiseprotocol`` package as an oracle.

Our DH-agnostic NX state machine is driven with an X25519 DH (a small class
over ``cryptography`` below) and must agree byte for byte with
noiseprotocol's ``Noise_NX_25519_ChaChaPoly_SHA256`` given the same prologue,
static and ephemeral keys and payloads: both handshake messages, the
handshake hash, and transport ciphertexts in both directions. This checks
the generic Noise core only; the SV2 specifics above it (ElligatorSwift DH,
the certificate payload, frame layout) are checked against the SV2 vectors
in test_noise.py. Hypothesis draws random keys and payloads; one fixed case
pins the data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection

from sv2.errors import (
    DecryptError,
    HandshakeTruncated,
    LocalProtocolError,
    NoiseError,
    ProtocolError,
    StateError,
)
from sv2.noise_core import CipherState, KeyPair, NXHandshake, SymmetricState, nx_protocol_name

NAME = b"Noise_NX_25519_ChaChaPoly_SHA256"

# noiseprotocol warns whenever an ephemeral key is injected; injecting them is
# the point here (its documented testing use).
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")


class X25519DH:
    """X25519 as a ``DHFunction`` for the core (test side only)."""

    name = "25519"
    public_size = 32

    @staticmethod
    def keypair(secret: bytes) -> KeyPair:
        public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
        return KeyPair(secret, public)

    def dh(self, local: KeyPair, remote_public: bytes, *, initiator: bool) -> bytes:
        # Plain X25519 is symmetric: which side ``local`` is does not matter.
        key = X25519PrivateKey.from_private_bytes(local.secret)
        return key.exchange(X25519PublicKey.from_public_bytes(remote_public))


@dataclass(frozen=True)
class Case:
    prologue: bytes
    initiator_e: bytes
    responder_e: bytes
    responder_s: bytes
    payload1: bytes
    payload2: bytes
    to_responder: list[bytes]
    to_initiator: list[bytes]


def ours(case: Case) -> tuple[NXHandshake, NXHandshake]:
    dh = X25519DH()
    ini = NXHandshake(dh, initiator=True, e=dh.keypair(case.initiator_e), prologue=case.prologue)
    res = NXHandshake(
        dh,
        initiator=False,
        e=dh.keypair(case.responder_e),
        s=dh.keypair(case.responder_s),
        prologue=case.prologue,
    )
    return ini, res


def theirs(case: Case) -> tuple[NoiseConnection, NoiseConnection]:
    ini = NoiseConnection.from_name(NAME)
    ini.set_as_initiator()
    ini.set_prologue(case.prologue)
    ini.set_keypair_from_private_bytes(Keypair.EPHEMERAL, case.initiator_e)
    ini.start_handshake()
    res = NoiseConnection.from_name(NAME)
    res.set_as_responder()
    res.set_prologue(case.prologue)
    res.set_keypair_from_private_bytes(Keypair.STATIC, case.responder_s)
    res.set_keypair_from_private_bytes(Keypair.EPHEMERAL, case.responder_e)
    res.start_handshake()
    return ini, res


def check_against_oracle(case: Case) -> None:
    ini, res = ours(case)
    o_ini, o_res = theirs(case)

    msg1 = ini.write_message_1(case.payload1)
    assert msg1 == bytes(o_ini.write_message(case.payload1))
    assert res.read_message_1(msg1) == case.payload1 == bytes(o_res.read_message(msg1))

    msg2 = res.write_message_2(case.payload2)
    assert msg2 == bytes(o_res.write_message(case.payload2))
    assert ini.read_message_2(msg2) == case.payload2 == bytes(o_ini.read_message(msg2))
    assert o_ini.handshake_finished and o_res.handshake_finished
    assert ini.complete and res.complete
    assert ini.remote_static == X25519DH.keypair(case.responder_s).public

    h = o_ini.get_handshake_hash()
    assert ini.handshake_hash == res.handshake_hash == h == o_res.get_handshake_hash()

    i_send, i_recv = ini.transport_ciphers()
    r_send, r_recv = res.transport_ciphers()
    for pt in case.to_responder:
        ct = i_send.encrypt_with_ad(None, pt)
        assert ct == o_ini.encrypt(pt)
        # Each side decrypts what the other implementation sent.
        assert r_recv.decrypt_with_ad(None, ct) == pt == o_res.decrypt(ct)
    for pt in case.to_initiator:
        ct = r_send.encrypt_with_ad(None, pt)
        assert ct == o_res.encrypt(pt)
        assert i_recv.decrypt_with_ad(None, ct) == pt == o_ini.decrypt(ct)


FIXED = Case(
    prologue=b"sv2 noise core cross-test",
    initiator_e=bytes(range(32)),
    responder_e=bytes(range(32, 64)),
    responder_s=bytes(range(64, 96)),
    payload1=b"hello from the initiator",
    payload2=bytes(74),  # the size of SV2's certificate payload
    to_responder=[b"", b"share", bytes(1000)],
    to_initiator=[b"job", b""],
)


def test_protocol_name_is_exactly_hashlen() -> None:
    # 32 bytes: used zero-padded rather than hashed, the other branch of
    # InitializeSymmetric than SV2's longer name takes.
    assert nx_protocol_name(X25519DH()) == NAME and len(NAME) == 32
    assert SymmetricState(NAME).ck == NAME


def test_fixed_case_matches_noiseprotocol() -> None:
    check_against_oracle(FIXED)


def test_empty_prologue_and_payloads_match_noiseprotocol() -> None:
    check_against_oracle(
        Case(b"", FIXED.initiator_e, FIXED.responder_e, FIXED.responder_s, b"", b"", [b""], [b""])
    )


secrets = st.binary(min_size=32, max_size=32)
payloads = st.binary(max_size=600)


@settings(max_examples=60, deadline=None)
@given(
    prologue=st.binary(max_size=100),
    initiator_e=secrets,
    responder_e=secrets,
    responder_s=secrets,
    payload1=payloads,
    payload2=payloads,
    to_responder=st.lists(payloads, max_size=4),
    to_initiator=st.lists(payloads, max_size=4),
)
def test_random_cases_match_noiseprotocol(
    prologue: bytes,
    initiator_e: bytes,
    responder_e: bytes,
    responder_s: bytes,
    payload1: bytes,
    payload2: bytes,
    to_responder: list[bytes],
    to_initiator: list[bytes],
) -> None:
    check_against_oracle(
        Case(
            prologue, initiator_e, responder_e, responder_s, payload1, payload2,
            to_responder, to_initiator,
        )
    )


def test_different_prologues_do_not_agree() -> None:
    ini, _ = ours(FIXED)
    _, res = ours(replace(FIXED, prologue=b"other"))
    res.read_message_1(ini.write_message_1(b""))
    with pytest.raises(DecryptError):
        ini.read_message_2(res.write_message_2(b""))


# -- the core's own rules: step order, sizes, error classes --------------------------------------


def test_step_order_is_enforced_as_local_errors() -> None:
    ini, res = ours(FIXED)
    with pytest.raises(StateError, match="responder"):
        ini.read_message_1(b"\x00" * 32)
    with pytest.raises(StateError):
        ini.read_message_2(b"\x00" * 96)  # before write_message_1
    with pytest.raises(StateError):
        res.write_message_2()  # before read_message_1
    with pytest.raises(StateError):
        ini.transport_ciphers()
    res.read_message_1(ini.write_message_1())
    with pytest.raises(StateError):
        ini.write_message_1()
    ini.read_message_2(res.write_message_2())
    assert issubclass(StateError, LocalProtocolError) and not issubclass(StateError, ProtocolError)


def test_truncated_message_2_is_a_peer_error_and_kills_the_handshake() -> None:
    ini, res = ours(FIXED)
    res.read_message_1(ini.write_message_1())
    msg2 = res.write_message_2(b"payload")
    with pytest.raises(HandshakeTruncated):
        ini.read_message_2(msg2[: 32 + 48 + 15])  # one byte short of the empty-payload minimum
    with pytest.raises(StateError, match="failed"):
        ini.read_message_2(msg2)


def test_fixed_payload_size_is_exact() -> None:
    ini, res = ours(FIXED)
    res.read_message_1(ini.write_message_1())
    msg2 = res.write_message_2(b"12345")
    with pytest.raises(NoiseError, match="exactly 100"):
        ini.read_message_2(msg2, payload_size=4)


def test_responder_needs_a_static_key() -> None:
    dh = X25519DH()
    with pytest.raises(ValueError, match="static"):
        NXHandshake(dh, initiator=False, e=dh.keypair(FIXED.responder_e))


def test_cipher_state_without_key_is_identity() -> None:
    cs = CipherState()
    assert cs.encrypt_with_ad(b"ad", b"clear") == b"clear" and cs.n == 0
