"""Hostile values in every param position of every SV1 method (issue 11.2) and invalid text (11.1).

The property: any JSON value in any position of any request, decoded by the
real codec and handed to a real ``MinerSession`` holding a real job, gives
exactly one reply line with the request's id carrying either a result or a
JSON-RPC error; no exception escapes. Then one TCP test per class shows the
connection stays open afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.jobs import future_job, open_success, prev_hash
from tproxy.sv1 import protocol as p
from tproxy.sv1.session import MinerSession
from tproxy.sv1.vardiff import Vardiff
from tproxy.upstream.channel import ChannelState

T0 = 1_700_000_000.0

# Strings with lone surrogates, NULs and control characters (hypothesis leaves surrogates out by default).
_TEXT = st.text(st.characters(codec=None, categories=None), max_size=40)
_NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**32, 2**64, 10**309, -(10**309), 1e308, 5e-324, 0.5]),
)
_SCALARS = st.one_of(
    st.none(), st.booleans(), _NUMBERS, _TEXT,
    st.sampled_from(["512.000000", "1e400", "nan", "inf", "-5", "0", "1fffe000", "ffffffff", "zz", "00000000"]),
)
JSON_VALUES = st.recursive(
    st.one_of(_SCALARS, _SCALARS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)

CONFIGURE_PARAMS: dict[str, Any] = {
    "version-rolling.mask": "1fffe000",
    "version-rolling.min-bit-count": 16,
    "minimum-difficulty.value": 2048,
    "info.url": "x",
}
TEMPLATES: dict[str, list[Any]] = {
    "mining.subscribe": ["cgminer/4.12", "deadbeef", "127.0.0.1", 3333],
    "mining.authorize": ["farm.w1", "x"],
    "mining.configure": [["version-rolling", "minimum-difficulty", "subscribe-extranonce", "info"], CONFIGURE_PARAMS],
    "mining.submit": ["farm.w1", "1", "00000000", "00000000", "00000000", "00000000"],
    "mining.suggest_difficulty": [512],
    "mining.extranonce.subscribe": [],
    "mining.ping": [],
    "mining.get_transactions": ["1"],
    "mining.multi_version": [1],
}


def ready_session() -> MinerSession:
    vd = Vardiff(shares_per_minute=6.0, start_difficulty=1e-6, min_difficulty=1e-9, max_difficulty=1e15,
                 retarget_interval_s=1.0, now=T0)
    s = MinerSession(client_id=1, peer="127.0.0.1:1", extranonce1=b"\x00\x07", extranonce2_size=4,
                     server_version_mask=0x1FFFE000, vardiff=vd, now=T0)
    for i, (method, params) in enumerate(
        [("mining.subscribe", ["cgminer/4.12"]), ("mining.authorize", ["farm.w1", "x"])]
    ):
        s.handle(p.Request(i, method, params), T0)
    ch = ChannelState.from_open_success(open_success(1, 7), extranonce1_size=2, extranonce2_size=4)
    ch.on_new_extended_job(future_job(7, 1))
    job = ch.on_set_new_prev_hash(prev_hash(7, 1))
    assert job is not None
    s.send_job("1", job, b'{"id":null,"method":"mining.notify","params":["1"]}\n', clean=True, now=T0)
    return s


def variants(method: str, value: Any) -> list[list[Any]]:
    """``value`` in every param position of ``method`` (and in every extension value of configure)."""
    template = TEMPLATES[method]
    out = [[value], [value, value, value, value, value, value]]
    for i in range(len(template) + 1):
        params = list(template)
        if i < len(params):
            params[i] = value
        else:
            params.append(value)
        out.append(params)
    if method == "mining.configure":
        for key in CONFIGURE_PARAMS:
            out.append([template[0], {**CONFIGURE_PARAMS, key: value}])
    return out


def answer(session: MinerSession, req_id: Any, method: str, params: list[Any]) -> dict[str, Any]:
    """The request goes through the real codec (dumps, parse_line) and the session; one reply comes back."""
    line = json.dumps({"id": req_id, "method": method, "params": params}).encode()
    try:
        msg = p.parse_line(line)
    except p.Sv1ProtocolError as e:  # e.g. an integer past the decoder's digit limit: a parse error reply
        return json.loads(p.error(None, e.code, str(e)))
    assert isinstance(msg, p.Request)
    out, _event = session.handle(msg, T0 + 1)
    replies = [json.loads(x) for x in out.splitlines()]
    mine = [r for r in replies if r.get("method") is None]
    assert len(mine) == 1, replies
    assert mine[0]["id"] == (p.clean_text(req_id) if isinstance(req_id, str) else req_id)
    return mine[0]  # type: ignore[no-any-return]


# Every class of hostile value, tried in every position of every method (deterministic);
# the hypothesis test below then tries random members of the classes and nestings of them.
HOSTILE: list[Any] = [
    10**400, -(10**400), 10**309, 2**64, 2**32, -1, 0, 1e308, 5e-324, float("nan"), float("inf"), float("-inf"),
    True, False, None, "", "1e400", "nan", "-5", "512.000000", "zz", "rig\ud800x", "\x00\n\x1b", "x" * 5000,
    [], [10**400], {}, {"a": [None, {"b": float("nan")}]},
]


@pytest.mark.parametrize("method", sorted(TEMPLATES))
def test_every_hostile_value_in_every_position_gets_a_result_or_an_error(method: str) -> None:
    session = ready_session()
    for value in HOSTILE:
        for params in variants(method, value):
            answer(session, 7, method, params)
    assert answer(session, 99, "mining.ping", [])["result"] == "pong"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(sorted(TEMPLATES)), value=JSON_VALUES, req_id=st.integers(0, 10**6) | _TEXT)
def test_any_value_in_any_position_gets_a_result_or_an_error(method: str, value: Any, req_id: Any) -> None:
    session = ready_session()
    for params in variants(method, value):
        r = answer(session, req_id, method, params)
        assert set(r) == {"id", "result", "error"}, r
        if r["error"] is not None:  # [code, message, data]
            code, message = r["error"][0], r["error"][1]
            assert isinstance(code, int) and isinstance(message, str) and r["result"] is None
    # the session still works afterwards
    assert answer(session, 99, "mining.ping", [])["result"] == "pong"


@pytest.mark.parametrize(
    "value",
    [10**400, -(10**400), 1e400, "1e400", float("nan"), float("-inf"), -5, 0, True, None, "abc", [512], {"d": 1}, "x" * 200],
    ids=lambda v: repr(v)[:16],
)
def test_suggest_difficulty_refuses_every_bad_number_with_invalid_params(value: Any) -> None:
    with pytest.raises(p.InvalidParams):
        p.parse_suggest_difficulty([value])


@pytest.mark.parametrize("value,expected", [(512, 512.0), ("512.000000", 512.0), (0.5, 0.5), (" 64 ", 64.0)])
def test_suggest_difficulty_accepts_numbers_and_numeric_strings(value: Any, expected: float) -> None:
    assert p.parse_suggest_difficulty([value]) == expected


@pytest.mark.parametrize("value", [10**400, 1e400, float("nan"), -1, True, "abc", [1]], ids=lambda v: repr(v)[:16])
def test_configure_minimum_difficulty_refuses_bad_numbers(value: Any) -> None:
    with pytest.raises(p.InvalidParams):
        p.parse_configure([["minimum-difficulty"], {"minimum-difficulty.value": value}])


@pytest.mark.parametrize("value", [True, 2**32, -1, 1.5, "xyz", "123456789", [1], {}])
def test_configure_version_rolling_mask_and_min_bits_refuse_bad_values(value: Any) -> None:
    with pytest.raises(p.InvalidParams):
        p.parse_configure([["version-rolling"], {"version-rolling.mask": value}])
    with pytest.raises(p.InvalidParams):
        p.parse_configure([["version-rolling"], {"version-rolling.min-bit-count": value}])


def test_huge_numbers_in_the_json_text_are_parse_errors_or_params_errors() -> None:
    with pytest.raises(p.ParseError):  # past the int parser's digit limit
        p.parse_line(b'{"id":1,"method":"mining.suggest_difficulty","params":[1' + b"0" * 5000 + b"]}")
    msg = p.parse_line(b'{"id":1,"method":"mining.suggest_difficulty","params":[1e400]}')
    assert isinstance(msg, p.Request)
    with pytest.raises(p.InvalidParams):
        p.parse_suggest_difficulty(msg.params)


def test_lone_surrogates_become_replacement_characters_and_valid_text_is_kept() -> None:
    line = json.dumps({"id": "a\ud800", "method": "mining.authorize",
                       "params": ["rig\ud800x\x00\n\u00e9\U0001f600", {"k\udfff": ["\udc00"]}]}).encode()
    msg = p.parse_line(line)
    assert isinstance(msg, p.Request)
    assert msg.id == "a\ufffd"
    assert msg.params[0] == "rig\ufffdx\x00\n\u00e9\U0001f600"
    assert msg.params[1] == {"k\ufffd": ["\ufffd"]}
    assert p.clean_text("x" * 10_000) == "x" * 10_000  # names are never truncated
    # a valid escaped pair is one character, not two replacements
    assert p.parse_line(b'{"id":1,"method":"m","params":["\\ud83d\\ude00"]}').params == ["\U0001f600"]  # type: ignore[union-attr]


@pytest.mark.parametrize("depth", [40, 900, 990, 3000])
@pytest.mark.parametrize("leaf", [b'"\\ud800"', b"1"])
def test_deep_nesting_is_a_parse_error_never_a_recursion_error(depth: int, leaf: bytes) -> None:
    line = b'{"id":1,"method":"mining.submit","params":[' + b"[" * depth + leaf + b"]" * depth + b"]}"
    with pytest.raises(p.ParseError):
        p.parse_line(line)
