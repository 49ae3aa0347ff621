"""sv2.ellswift against the BIP324 vectors, plus its input checks."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from coincurve import PublicKey

from sv2 import ellswift
from sv2.errors import NoiseError, ProtocolError
from sv2.keys import generate_keypair, xonly_from_secret
from tests.helpers.vectors import load_vector

H = bytes.fromhex
BIP324 = load_vector("bip324_ellswift_ecdh")
ROWS = BIP324["vectors"]
ROW_IDS = [f"bip324-{r['bip324_in_idx']}" for r in ROWS]


def _ordered(row: dict[str, Any]) -> tuple[bytes, bytes]:
    """(initiator key, responder key) for a row, from our side's point of view."""
    ours, theirs = H(row["ellswift_ours"]), H(row["ellswift_theirs"])
    return (ours, theirs) if row["initiating"] else (theirs, ours)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_xdh_matches_bip324_row(row: dict[str, Any]) -> None:
    ell_a, ell_b = _ordered(row)
    shared = ellswift.xdh(ell_a, ell_b, H(row["priv_ours"]), initiator=row["initiating"])
    assert shared.hex() == row["shared_secret"]


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_xdh_wrong_role_or_order_gives_another_secret(row: dict[str, Any]) -> None:
    ell_a, ell_b = _ordered(row)
    secret = H(row["priv_ours"])
    flipped_flag = ellswift.xdh(ell_a, ell_b, secret, initiator=not row["initiating"])
    swapped_keys = ellswift.xdh(ell_b, ell_a, secret, initiator=row["initiating"])
    assert flipped_flag.hex() != row["shared_secret"]
    assert swapped_keys.hex() != row["shared_secret"]


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_decode_xonly_matches_bip324_row(row: dict[str, Any]) -> None:
    assert ellswift.decode_xonly(H(row["ellswift_ours"])).hex() == row["x_ours"]
    assert ellswift.decode_xonly(H(row["ellswift_ours"])) == xonly_from_secret(H(row["priv_ours"]))


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_shared_secret_formula(row: dict[str, Any]) -> None:
    # Recompute x_shared through coincurve (x is independent of the lifted
    # point's Y parity) and the BIP324 tagged hash by hand.
    their_x = ellswift.decode_xonly(H(row["ellswift_theirs"]))
    point = PublicKey(b"\x02" + their_x).multiply(H(row["priv_ours"]))
    x_shared = point.format(compressed=True)[1:]
    assert x_shared.hex() == row["x_shared"]
    tag = hashlib.sha256(b"bip324_ellswift_xonly_ecdh").digest()
    assert tag.hex() == BIP324["tag_hash_hex"]
    ell_a, ell_b = _ordered(row)
    assert hashlib.sha256(tag + tag + ell_a + ell_b + x_shared).hexdigest() == row["shared_secret"]


def test_create_with_fixed_aux_matches_handshake_vector() -> None:
    v = load_vector("noise_handshake_derived")
    inputs, public = v["inputs"], v["derived_public"]
    for secret, aux, expected in (
        (
            "initiator_ephemeral_secret_hex",
            "initiator_ephemeral_ellswift_aux_hex",
            "initiator_ephemeral_ellswift_hex",
        ),
        (
            "responder_ephemeral_secret_hex",
            "responder_ephemeral_ellswift_aux_hex",
            "responder_ephemeral_ellswift_hex",
        ),
        (
            "responder_static_secret_hex",
            "responder_static_ellswift_aux_hex",
            "responder_static_ellswift_hex",
        ),
    ):
        assert ellswift.create(H(inputs[secret]), H(inputs[aux])).hex() == public[expected]
    static = H(public["responder_static_ellswift_hex"])
    assert ellswift.decode_xonly(static).hex() == public["responder_static_xonly_hex"]


def test_create_random_aux_gives_distinct_encodings_of_one_key() -> None:
    secret, xonly = generate_keypair()
    a, b = ellswift.create(secret), ellswift.create(secret)
    assert len(a) == len(b) == 64
    assert a != b
    assert ellswift.decode_xonly(a) == ellswift.decode_xonly(b) == xonly


def test_both_parties_agree_with_random_keys() -> None:
    sec_i, _ = generate_keypair()
    sec_r, _ = generate_keypair()
    ell_i, ell_r = ellswift.create(sec_i), ellswift.create(sec_r)
    from_initiator = ellswift.xdh(ell_i, ell_r, sec_i, initiator=True)
    from_responder = ellswift.xdh(ell_i, ell_r, sec_r, initiator=False)
    assert from_initiator == from_responder
    assert len(from_initiator) == 32


@pytest.mark.parametrize("length", [0, 63, 65])
def test_peer_key_of_wrong_length_is_protocol_error(length: int) -> None:
    secret, _ = generate_keypair()
    good = ellswift.create(secret)
    with pytest.raises(NoiseError, match="64-byte"):
        ellswift.decode_xonly(b"\x01" * length)
    with pytest.raises(ProtocolError, match="responder"):
        ellswift.xdh(good, b"\x01" * length, secret, initiator=True)
    with pytest.raises(ProtocolError, match="initiator"):
        ellswift.xdh(b"\x01" * length, good, secret, initiator=False)


def test_any_64_bytes_decode_to_a_key() -> None:
    # ElligatorSwift maps every 64-byte string to a point, so a peer cannot
    # make decoding fail; all-zero and all-ff are the usual edge inputs.
    for raw in (b"\x00" * 64, b"\xff" * 64):
        assert len(ellswift.decode_xonly(raw)) == 32


@pytest.mark.parametrize(
    "secret",
    [
        b"",
        b"\x01" * 31,
        b"\x00" * 32,
        H("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"),
    ],
    ids=["empty", "short", "zero", "group-order"],
)
def test_bad_local_secret_is_value_error(secret: bytes) -> None:
    with pytest.raises(ValueError, match="secret key"):
        ellswift.create(secret)
    with pytest.raises(ValueError, match="secret key"):
        ellswift.xdh(b"\x01" * 64, b"\x02" * 64, secret, initiator=True)


def test_bad_aux_length_is_value_error() -> None:
    secret, _ = generate_keypair()
    with pytest.raises(ValueError, match="aux"):
        ellswift.create(secret, b"\x00" * 31)


def test_coincurve_is_within_the_tested_range_and_exposes_the_ellswift_api() -> None:
    """sv2.ellswift calls coincurve's private cffi layer, so the dependency is pinned to the
    major version it is tested on; a coincurve outside that range, or one whose bundled
    libsecp256k1 lacks these functions, must fail here rather than at the first handshake."""
    from importlib.metadata import requires, version

    from coincurve._libsecp256k1 import lib
    from packaging.requirements import Requirement

    spec = next(Requirement(r) for r in requires("tproxy") or [] if r.startswith("coincurve"))
    assert spec.specifier.contains(version("coincurve")), (version("coincurve"), str(spec.specifier))
    assert str(spec.specifier) == "<22,>=21.0"
    for name in (
        "secp256k1_ellswift_create",
        "secp256k1_ellswift_decode",
        "secp256k1_ellswift_xdh",
        "secp256k1_ellswift_xdh_hash_function_bip324",
        "secp256k1_ec_pubkey_serialize",
    ):
        assert hasattr(lib, name), name
