"""sv2.keys: base58check authority key strings against keys_base58.json."""

from __future__ import annotations

from typing import Any

import pytest
from coincurve import PublicKeyXOnly

from sv2 import keys
from sv2.errors import KeyFormatError
from tests.helpers.vectors import load_vector

H = bytes.fromhex
V = load_vector("keys_base58")


@pytest.mark.parametrize("item", V["public_keys"], ids=lambda i: i["name"])
def test_public_key_vector(item: dict[str, Any]) -> None:
    text = item["base58check"]
    assert keys.b58check_decode(text).hex() == item["decoded_hex"]
    assert keys.decode_public_key(text).hex() == item["xonly_pubkey_hex"]
    assert keys.encode_public_key(H(item["xonly_pubkey_hex"])) == text
    assert text.startswith("9")


@pytest.mark.parametrize("item", V["key_pairs"], ids=lambda i: i["name"])
def test_key_pair_vector(item: dict[str, Any]) -> None:
    secret = keys.decode_secret_key(item["secret_base58check"])
    assert secret.hex() == item["secret_hex"]
    assert keys.encode_secret_key(secret) == item["secret_base58check"]
    assert keys.xonly_from_secret(secret).hex() == item["xonly_pubkey_hex"]
    assert keys.b58check_decode(item["public_base58check"]).hex() == item["public_decoded_hex"]
    assert keys.decode_public_key(item["public_base58check"]).hex() == item["xonly_pubkey_hex"]
    assert keys.encode_public_key(H(item["xonly_pubkey_hex"])) == item["public_base58check"]


@pytest.mark.parametrize("item", V["invalid_public_keys"], ids=lambda i: i["expected_error"])
def test_invalid_public_key_vector(item: dict[str, Any]) -> None:
    text = item["base58check"]
    if item["decoded_len"] is not None:
        payload = keys.b58check_decode(text)
        assert len(payload) == item["decoded_len"]
        assert payload[:2].hex() == item["decoded_prefix_hex"]
    with pytest.raises(KeyFormatError, match=item["expected_error"]):
        keys.decode_public_key(text)


def _non_curve_x() -> bytes:
    # About half of all x values have no point; the first one found is fixed.
    for i in range(1, 100):
        x = i.to_bytes(32, "big")
        try:
            PublicKeyXOnly(x)
        except ValueError:
            return x
    raise AssertionError("no invalid x found")


@pytest.mark.parametrize(
    "xonly", [_non_curve_x(), b"\xff" * 32], ids=["not-on-curve", "above-field-prime"]
)
def test_public_key_with_invalid_x_coordinate(xonly: bytes) -> None:
    text = keys.b58check_encode(b"\x01\x00" + xonly)
    with pytest.raises(KeyFormatError, match="x coordinate"):
        keys.decode_public_key(text)
    with pytest.raises(KeyFormatError, match="x coordinate"):
        keys.encode_public_key(xonly)


def test_public_key_too_long() -> None:
    _, xonly = keys.generate_keypair()
    with pytest.raises(KeyFormatError, match="length"):
        keys.decode_public_key(keys.b58check_encode(b"\x01\x00" + xonly + b"\x00"))


def test_public_key_version_two_rejected() -> None:
    _, xonly = keys.generate_keypair()
    with pytest.raises(KeyFormatError, match="version 2"):
        keys.decode_public_key(keys.b58check_encode(b"\x02\x00" + xonly))


@pytest.mark.parametrize("bad", ["0", "O", "I", "l", "+", "é"])
def test_invalid_base58_character(bad: str) -> None:
    text = V["public_keys"][0]["base58check"]
    with pytest.raises(KeyFormatError, match="character"):
        keys.decode_public_key(text[:5] + bad + text[6:])


def test_too_short_for_checksum() -> None:
    with pytest.raises(KeyFormatError, match="too short"):
        keys.b58check_decode("1")


def test_surrounding_whitespace_is_ignored() -> None:
    item = V["key_pairs"][1]
    assert (
        keys.decode_public_key(f"  {item['public_base58check']}\n").hex()
        == item["xonly_pubkey_hex"]
    )
    assert keys.decode_secret_key(f"{item['secret_base58check']} ").hex() == item["secret_hex"]


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\x00\x00\x01", b"\x01\x02\x03", b"\xff" * 40, b"\x00" * 3 + b"\xff"]
)
def test_base58_round_trip_keeps_leading_zeros(data: bytes) -> None:
    text = keys.b58encode(data)
    assert keys.b58decode(text) == data
    assert keys.b58check_decode(keys.b58check_encode(data)) == data


def test_base58_known_values() -> None:
    assert keys.b58encode(b"") == ""
    assert keys.b58encode(b"\x00\x00") == "11"
    assert keys.b58encode(b"\x39") == "z"
    assert keys.b58encode(b"\x3a") == "21"


@pytest.mark.parametrize(
    "secret",
    [
        b"\x00" * 32,
        H("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"),
        b"\x01" * 31,
    ],
    ids=["zero", "group-order", "short"],
)
def test_invalid_secret_key(secret: bytes) -> None:
    with pytest.raises(KeyFormatError, match="secret key"):
        keys.decode_secret_key(keys.b58check_encode(secret))
    with pytest.raises(KeyFormatError, match="secret key"):
        keys.encode_secret_key(secret)


def test_secret_key_bad_checksum() -> None:
    text = V["key_pairs"][0]["secret_base58check"]
    tampered = text[:-1] + ("2" if text[-1] != "2" else "3")
    with pytest.raises(KeyFormatError, match="checksum"):
        keys.decode_secret_key(tampered)


def test_generate_keypair_round_trips() -> None:
    secret, xonly = keys.generate_keypair()
    assert len(secret) == 32 and len(xonly) == 32
    assert keys.xonly_from_secret(secret) == xonly
    assert keys.decode_secret_key(keys.encode_secret_key(secret)) == secret
    text = keys.encode_public_key(xonly)
    assert text.startswith("9")
    assert keys.decode_public_key(text) == xonly
    assert keys.generate_keypair()[0] != secret


def test_key_format_error_is_value_error() -> None:
    # Config loaders catch ValueError; KeyFormatError must be one.
    with pytest.raises(ValueError):
        keys.decode_public_key("not a key")
