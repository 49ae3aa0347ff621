"""The SV1 line decoder (orjson, with the stdlib deciding what orjson refuses) accepts and
rejects exactly what ``json.loads`` does, and gives the same values."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tproxy.sv1 import protocol as p


def stdlib(line: bytes) -> Any:
    """The reference: what parse_line decoded before orjson (ParseError for no JSON value)."""
    try:
        return json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        raise p.ParseError("no JSON value") from None


def same(line: bytes) -> None:
    try:
        want = stdlib(line)
    except p.ParseError:
        with pytest.raises(p.ParseError):
            p._decode(line)
        return
    got = p._decode(line)
    # repr tells 1 from 1.0, -0.0 from 0.0 and a float from a big int; nan != nan, but its repr matches
    assert repr(got) == repr(want)


EDGES = [
    b'{"a":1,"a":2}', b"NaN", b"[NaN]", b"[Infinity]", b"[-Infinity]", b"[1e400]", b"[-1e400]",
    b"[18446744073709551615]", b"[18446744073709551616]", b"[-9223372036854775808]",
    b"[-9223372036854775809]", b"[" + b"9" * 5000 + b"]", b"\xef\xbb\xbf{}", b'{"a":"\\ud800"}',
    b'{"a":"\\ud83d\\ude00"}', b"-0", b"[-0.0]", b"[1.0]", b"[1E5]", b"[01]", b"[1.]", b" {} ", b"{}\x0c",
    b'"\x01"', b'"\\u0000"', b"[1,]", b"", b"  ", b"[" * 2000 + b"]" * 2000, b"[" * 600 + b"]" * 600,
    b"[5e-324]", b"[1e-400]", b'{"a":\xff}', b'"\xc0\x80"', b'"\xed\xa0\x80"', b"[tru]",
    b'{"x":"a\\/b"}', b"[1.7976931348623157e308]", b"[123456789012345678901234567890.5]",
]


@pytest.mark.parametrize("line", EDGES)
def test_edge_lines_decode_as_the_stdlib_does(line: bytes) -> None:
    same(line)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(JSON)
def test_any_json_text_decodes_as_the_stdlib_does(value: Any) -> None:
    same(json.dumps(value).encode())
    same(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_fail_as_the_stdlib_does(line: bytes) -> None:
    same(line)


# Runs of digits around the length that matters (19), between separators and lookalikes.
_DIGIT_RUNS = st.lists(
    st.tuples(st.integers(0, 22), st.sampled_from([b"", b" ", b",", b".", b"-", b"\xd9\xa0", b"a"])), max_size=4
).map(lambda runs: b"".join(b"7" * n + sep for n, sep in runs))


@given(st.one_of(st.binary(max_size=60), _DIGIT_RUNS))
def test_the_long_integer_check_is_the_regex_it_replaced(line: bytes) -> None:
    import re

    assert p.has_long_digits(line) == (re.search(rb"[0-9]{19}", line) is not None)
