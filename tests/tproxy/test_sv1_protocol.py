"""tproxy.sv1.protocol: the SV1 codec against real-miner lines (sv1_messages.json),
server replies, SRI's notify conversion, and bad input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sv2 import work
from tests.helpers.vectors import load_vector
from tproxy.sv1 import protocol as p

V = load_vector("sv1_messages")


def line_of(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def decoded(line: bytes) -> Any:
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    return json.loads(line)


def req(obj: Any) -> p.Request:
    msg = p.parse_line(line_of(obj))
    assert isinstance(msg, p.Request)
    return msg


# ---------------------------------------------------------------------------
# requests seen from miners


REQUESTS = V["requests_seen_from_miners"]


def _check_request(entry: dict[str, Any]) -> None:
    line = entry["line"]
    r = req(line)
    assert r.id == line["id"]
    assert type(r.id) is type(line["id"])
    assert r.method == line["method"]
    assert r.params == line["params"]
    src = entry["from"]
    if r.method == "mining.configure":
        cfg = p.parse_configure(r.params)
        assert cfg.extensions == tuple(line["params"][0])
        if src == "BIP310 example":
            assert cfg.version_rolling_mask == 0x1FFFE000
            assert cfg.version_rolling_min_bit_count == 2
            assert cfg.minimum_difficulty == 2048.0
            assert not cfg.subscribe_extranonce
        elif src.startswith("ESP-Miner"):
            assert cfg.version_rolling_mask == 0xFFFFFFFF
            assert cfg.version_rolling_min_bit_count is None
            assert cfg.minimum_difficulty is None
        elif src.startswith("SRI sv1 test: min-bit-count"):
            assert r.id == 0
            assert cfg.version_rolling_mask == 0x1FFFFFE0
            assert cfg.version_rolling_min_bit_count == 0x16 == 22
        else:  # empty configure
            assert cfg.extensions == ()
            result = p.configure_result(
                cfg,
                server_mask=0x1FFFE000,
                allow_min_difficulty=True,
                allow_subscribe_extranonce=True,
            )
            assert result == {}
    elif r.method == "mining.subscribe":
        sub = p.parse_subscribe(r.params)
        if not r.params:
            assert sub == p.SubscribeRequest()
        elif len(r.params) == 1:
            assert sub.user_agent == "bitaxe/BM1370/v2.x"
            assert sub.extranonce1_hint is None
        else:
            assert sub.user_agent == "test-agent"
            assert sub.extranonce1_hint == "abc"  # kept as sent; not required to be hex
    elif r.method == "mining.suggest_difficulty":
        assert p.parse_suggest_difficulty(r.params) == 1000.0
    elif r.method == "mining.extranonce.subscribe":
        assert r.params == []
    elif r.method == "mining.authorize":
        auth = p.parse_authorize(r.params)
        assert auth == p.AuthorizeRequest("bc1qexample.worker1", "x")
    elif r.method == "mining.submit":
        if entry.get("expected", "").startswith("reject"):
            with pytest.raises(p.InvalidParams) as ei:
                p.parse_submit(r.params)
            assert ei.value.param == "ntime"
            assert ei.value.code == p.INVALID_PARAMS
            return
        sub2 = p.parse_submit(r.params)
        assert sub2.extranonce2 == b"\x00\x00\x00\x00"
        assert sub2.ntime == 0x6825B35B
        assert sub2.nonce == 0x000B4EC1
        if len(r.params) == 6:
            assert sub2 == p.SubmitRequest(
                "bc1qexample.worker1", "456", bytes(4), 0x6825B35B, 0xB4EC1, 0
            )
        else:
            assert sub2 == p.SubmitRequest("user", "1", bytes(4), 0x6825B35B, 0xB4EC1, None)
        assert p.submit_params(sub2) == r.params
    else:  # pragma: no cover - the vector grew a method this test does not know
        pytest.fail(f"unexpected method {r.method}")


@pytest.mark.parametrize("entry", REQUESTS, ids=lambda e: f"{e['line']['method']}:{e['from'][:40]}")
def test_requests_seen_from_miners(entry: dict[str, Any]) -> None:
    _check_request(entry)


def test_every_request_kind_is_covered() -> None:
    methods = {e["line"]["method"] for e in REQUESTS}
    assert methods == {
        "mining.configure",
        "mining.subscribe",
        "mining.suggest_difficulty",
        "mining.extranonce.subscribe",
        "mining.authorize",
        "mining.submit",
    }


# ---------------------------------------------------------------------------
# server messages


SERVER = {m["what"]: m["line"] for m in V["server_messages"]}


def _server(prefix: str) -> Any:
    (key,) = [k for k in SERVER if k.startswith(prefix)]
    return SERVER[key]


def test_subscribe_result_shape() -> None:
    want = _server("subscribe result shape")
    subs, en1_hex, size = want["result"]
    line = p.result(
        want["id"],
        p.subscribe_result(
            subs[1][1], bytes.fromhex(en1_hex), size, difficulty_subscription_id=subs[0][1]
        ),
    )
    assert decoded(line) == want
    # default: one id for both subscriptions
    same = p.subscribe_result("ae6812eb4cd7735a302a8a9dd95cf71f", b"\x01\x02", 4)
    assert same == [
        [
            ["mining.set_difficulty", "ae6812eb4cd7735a302a8a9dd95cf71f"],
            ["mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f"],
        ],
        "0102",
        4,
    ]


def test_configure_result_bip310_example() -> None:
    want = _server("configure result (BIP310 example)")
    cfg = p.parse_configure(REQUESTS[0]["line"]["params"])
    result = p.configure_result(
        cfg, server_mask=0x18000000, allow_min_difficulty=True, allow_subscribe_extranonce=True
    )
    assert decoded(p.result(want["id"], result)) == want


def test_configure_result_sri_style() -> None:
    """SRI intersects the mask with 1fffe000 (we do the same given that server mask).

    Two deliberate differences: SRI also sends ``minimum-difficulty`` when the
    miner did not ask for it, and echoes ``min-bit-count``; we answer only what
    was asked, in BIP310's response shape (WhatsMiner drops on unexpected keys).
    """
    want = _server("configure result as SRI")["result"]
    cfg = p.parse_configure(
        [
            ["version-rolling"],
            {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 16},
        ]
    )
    assert cfg.version_rolling_min_bit_count == 16
    ours = p.configure_result(
        cfg,
        server_mask=work.SRI_SV1_VERSION_MASK,
        allow_min_difficulty=False,
        allow_subscribe_extranonce=False,
    )
    assert ours == {
        k: v for k, v in want.items() if k in ("version-rolling", "version-rolling.mask")
    }
    assert set(want) - set(ours) == {"version-rolling.min-bit-count", "minimum-difficulty"}


def test_set_version_mask() -> None:
    assert decoded(p.set_version_mask(0x3000)) == _server("set_version_mask")
    with pytest.raises(ValueError):
        p.set_version_mask(2**32)


def test_set_difficulty() -> None:
    want = _server("set_difficulty")
    assert decoded(p.set_difficulty(8192)) == want
    assert decoded(p.set_difficulty(8192.0)) == want
    assert p.set_difficulty(8192.0) == p.set_difficulty(8192)  # "8192", not "8192.0"
    assert b"[8192]" in p.set_difficulty(8192.0)
    for d in (1e-8, 0.001, 683.51, 1.5e15, 2.0**60):
        assert decoded(p.set_difficulty(d))["params"] == [d]
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            p.set_difficulty(bad)


def test_set_extranonce() -> None:
    assert decoded(p.set_extranonce(bytes.fromhex("0000000100000003"), 4)) == _server(
        "set_extranonce"
    )


def test_reconnect() -> None:
    assert decoded(p.reconnect("127.0.0.1", 34255, 0)) == _server("client.reconnect")


def test_submit_replies() -> None:
    assert decoded(p.result(6, True)) == _server("submit accepted")
    assert decoded(p.error(6, p.LOW_DIFFICULTY)) == _server("submit rejected, classic")
    assert decoded(p.error(6, 23, "Low difficulty share")) == _server("submit rejected, classic")
    assert decoded(p.result(6, False)) == _server("submit rejected the SRI")


def test_server_notifications_parse_back_as_notifications() -> None:
    for line in (
        p.set_version_mask(0x3000),
        p.set_difficulty(1.0),
        p.set_extranonce(b"\x01", 4),
        p.reconnect("h", 1, 0),
        p.notify("1", "00" * 32, "", "", [], 1, 2, 3, True),
    ):
        msg = p.parse_line(line.rstrip(b"\n"))
        assert isinstance(msg, p.Notification)
        assert msg.params == json.loads(line)["params"]


# ---------------------------------------------------------------------------
# notify conversion (SRI test) and the submit version rule


def test_notify_from_sv2() -> None:
    nv = V["notify_from_sv2"]
    snph = nv["sv2_inputs"]["set_new_prev_hash"]
    job = nv["sv2_inputs"]["new_extended_mining_job"]
    prefix, suffix = work.strip_bip141(
        bytes.fromhex(job["coinbase_tx_prefix_hex"]), bytes.fromhex(job["coinbase_tx_suffix_hex"])
    )
    ntime = job["min_ntime"] if job["min_ntime"] is not None else snph["min_ntime"]
    line = p.notify(
        str(job["job_id"]),
        work.sv1_prevhash_from_sv2(bytes.fromhex(snph["prev_hash_hex"])),
        prefix.hex(),
        suffix.hex(),
        job["merkle_path"],
        job["version"],
        snph["nbits"],
        ntime,
        nv["sv2_inputs"]["clean_jobs"],
    )
    msg = decoded(line)
    assert msg["params"] == nv["expected_notify_params"]
    assert msg["method"] == nv["expected_line"]["method"] == "mining.notify"
    assert msg["params"] == nv["expected_line"]["params"]
    assert msg["id"] is None


def test_notify_formats_u32_as_8_hex_digits() -> None:
    msg = decoded(p.notify("a", "00" * 32, "01", "02", ["03" * 32], 1, 0x1D00FFFF, 0, True))
    assert msg["params"][5:] == ["00000001", "1d00ffff", "00000000", True]


def test_submit_to_sv2_version_rule() -> None:
    sv = V["submit_to_sv2"]
    sub = p.parse_submit(["u", "1", "00", "00000000", "00000000", sv["version_bits_hex"]])
    assert sub.version_bits is not None
    version = work.apply_version_bits(
        sv["job_version"], sub.version_bits, int(sv["version_rolling_mask_hex"], 16)
    )
    assert version == sv["expected_sv2_version"]


# ---------------------------------------------------------------------------
# framing


def test_line_buffer_basic() -> None:
    buf = p.LineBuffer()
    assert buf.feed(b'{"id":1}\r\n{"id"') == [b'{"id":1}']
    assert buf.pending == 5
    assert buf.feed(b":2}\n\n  \r\n") == [b'{"id":2}']  # blank lines are dropped
    assert buf.pending == 0
    assert buf.feed(b"") == []
    assert buf.feed(b"a\nb\nc") == [b"a", b"b"]
    assert buf.feed(b"\n") == [b"c"]


def test_line_buffer_too_long_without_newline() -> None:
    buf = p.LineBuffer(max_line=100)
    buf.feed(b"x" * 60)
    with pytest.raises(p.LineTooLong) as ei:
        buf.feed(b"x" * 41)
    assert ei.value.code == p.PARSE_ERROR
    assert isinstance(ei.value, p.Sv1ProtocolError)
    assert buf.pending == 0


def test_line_buffer_too_long_with_newline() -> None:
    buf = p.LineBuffer(max_line=10)
    assert buf.feed(b"x" * 10 + b"\r\n") == [b"x" * 10]  # exactly the limit is fine
    with pytest.raises(p.LineTooLong):
        buf.feed(b"y" * 11 + b"\n")
    with pytest.raises(p.LineTooLong):
        p.LineBuffer(10).feed(b"ok\n" + b"z" * 11)  # the unterminated remainder too


def test_line_buffer_is_bounded() -> None:
    buf = p.LineBuffer(max_line=1000)
    with pytest.raises(p.LineTooLong):
        for _ in range(10_000):
            buf.feed(b"a" * 100)
            assert buf.pending <= 1000
    with pytest.raises(ValueError):
        p.LineBuffer(0)


@given(
    st.lists(
        st.binary(max_size=30).filter(lambda b: b"\n" not in b and b.strip() != b""), max_size=20
    ),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20),
)
def test_line_buffer_any_chunking(lines: list[bytes], cuts: list[int]) -> None:
    lines = [ln.rstrip(b"\r") for ln in lines if ln.rstrip(b"\r").strip()]
    stream = b"".join(ln + b"\n" for ln in lines)
    buf = p.LineBuffer(max_line=64)
    out: list[bytes] = []
    i = 0
    k = 0
    while i < len(stream):
        n = cuts[k % len(cuts)]
        out += buf.feed(stream[i : i + n])
        i += n
        k += 1
    assert out == lines
    assert buf.pending == 0


# ---------------------------------------------------------------------------
# parse_line


def test_ids_are_kept_exactly() -> None:
    # cpuminer: every submit uses id 4
    a = req({"id": 4, "method": "mining.submit", "params": ["u", "1", "00", "0", "0"]})
    b = req({"id": 4, "method": "mining.submit", "params": ["u", "2", "00", "0", "0"]})
    assert a.id == b.id == 4
    assert req({"id": "abc", "method": "mining.subscribe", "params": []}).id == "abc"
    assert req({"id": "4", "method": "mining.subscribe"}).id == "4"
    assert req({"id": None, "method": "mining.subscribe", "params": []}).id is None
    assert req({"id": 1.5, "method": "x"}).id == 1.5
    # echoed unchanged
    assert decoded(p.result("abc", True))["id"] == "abc"
    assert decoded(p.error(None, 20))["id"] is None
    assert decoded(p.result(1.5, True))["id"] == 1.5


def test_params_null_or_missing_is_empty() -> None:
    assert req({"id": 1, "method": "mining.subscribe", "params": None}).params == []
    assert req({"id": 1, "method": "mining.subscribe"}).params == []


def test_unknown_method_is_still_a_request() -> None:
    r = req({"id": 9, "method": "mining.get_transactions", "params": ["1"]})
    assert r == p.Request(9, "mining.get_transactions", ["1"])


def test_responses_and_notifications() -> None:
    msg = p.parse_line(b'{"id":1,"result":true,"error":null}')
    assert msg == p.Response(1, True, None)
    msg = p.parse_line(b'{"id":2,"result":null,"error":[21,"Job not found",null]}')
    assert msg == p.Response(2, None, [21, "Job not found", None])
    # no id member at all: a notification (SRI omits the id on notifications)
    assert p.parse_line(b'{"method":"mining.ping","params":[]}') == p.Notification(
        "mining.ping", []
    )
    # a client method with id null is a request (bfgminer)
    assert p.parse_line(b'{"id":null,"method":"mining.authorize","params":["w"]}') == p.Request(
        None, "mining.authorize", ["w"]
    )


@pytest.mark.parametrize(
    ("raw", "exc", "code"),
    [
        (b'{"id":1,"method":"mining.subscribe","params":[', p.ParseError, -32700),
        (b'{"id":1,"method":"mining.subscribe"', p.ParseError, -32700),
        (b"", p.ParseError, -32700),
        (b"   ", p.ParseError, -32700),
        (b"GET / HTTP/1.1", p.ParseError, -32700),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32), p.TlsClientHello, -32700),
        (b"\x16\x03", p.TlsClientHello, -32700),
        (b'{"id":1,"method":"\xff\xfe"}', p.ParseError, -32700),
        (b'{"id":1,"method":"mining.subscribe","params":["\xc3"]}', p.ParseError, -32700),
        (b"[" * 100_000, p.ParseError, -32700),
        (b'{"id":' + b"9" * 5000 + b"}", p.ParseError, -32700),
        (b"[1,2]", p.InvalidRequest, -32600),
        (b'"mining.subscribe"', p.InvalidRequest, -32600),
        (b"42", p.InvalidRequest, -32600),
        (b"null", p.InvalidRequest, -32600),
        (b"{}", p.InvalidRequest, -32600),
        (b'{"id":1,"method":5,"params":[]}', p.InvalidRequest, -32600),
        (b'{"id":1,"method":["mining.submit"]}', p.InvalidRequest, -32600),
        (b'{"id":1,"method":"mining.submit","params":{"a":1}}', p.InvalidRequest, -32600),
        (b'{"id":1,"method":"mining.submit","params":"x"}', p.InvalidRequest, -32600),
        (b'{"id":[1],"method":"mining.submit","params":[]}', p.InvalidRequest, -32600),
        (b'{"id":true,"method":"mining.submit","params":[]}', p.InvalidRequest, -32600),
        (b'{"id":Infinity,"method":"mining.submit","params":[]}', p.InvalidRequest, -32600),
    ],
    ids=lambda v: v if isinstance(v, int) else None,
)
def test_bad_lines(raw: bytes, exc: type[p.Sv1ProtocolError], code: int) -> None:
    with pytest.raises(exc) as ei:
        p.parse_line(raw)
    assert ei.value.code == code
    assert isinstance(ei.value, p.Sv1ProtocolError)
    # the error is reportable as a line
    assert decoded(p.error(None, ei.value.code, str(ei.value)))["error"][0] == code


@given(st.binary(max_size=200))
def test_parse_line_random_bytes_raises_only_protocol_errors(data: bytes) -> None:
    try:
        p.parse_line(data)
    except p.Sv1ProtocolError:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": JSON,
            "method": st.sampled_from(["mining.submit", "mining.configure", "x"]) | JSON,
            "params": JSON,
            "result": JSON,
        },
    )
)
def test_parse_line_random_objects_raise_only_protocol_errors(obj: dict[str, Any]) -> None:
    try:
        msg = p.parse_line(json.dumps(obj).encode())
    except p.Sv1ProtocolError:
        return
    if isinstance(msg, p.Request):
        # every typed parser fails only with InvalidParams on arbitrary params
        for parse in (
            p.parse_configure,
            p.parse_subscribe,
            p.parse_authorize,
            p.parse_submit,
            p.parse_suggest_difficulty,
        ):
            try:
                parse(msg.params)
            except p.InvalidParams:
                pass
        # and an answer can always be serialized with its id
        decoded(p.result(msg.id, True))


@given(st.lists(JSON, max_size=7))
def test_typed_parsers_raise_only_invalid_params(params: list[Any]) -> None:
    for parse in (
        p.parse_configure,
        p.parse_subscribe,
        p.parse_authorize,
        p.parse_submit,
        p.parse_suggest_difficulty,
    ):
        try:
            parse(params)
        except p.InvalidParams as e:
            assert e.code == p.INVALID_PARAMS
            assert e.param


# ---------------------------------------------------------------------------
# typed params


GOOD_SUBMIT = ["w", "1", "0000abcd", "6825b35b", "000b4ec1", "00006000"]


def test_submit_accepts_json_integers_and_int_job_ids() -> None:
    sub = p.parse_submit(["w", 456, "00", 1746839905, 0, 0x2000])
    assert sub == p.SubmitRequest("w", "456", b"\x00", 1746839905, 0, 0x2000)
    assert p.parse_submit(["w", "1", "", "1", "ffffffff"]).nonce == 0xFFFFFFFF
    assert p.parse_submit(["w", "1", "AbCd", "1", "FFFFFFFF"]).extranonce2 == b"\xab\xcd"
    # a null sixth param is the 5-param form
    assert p.parse_submit(["w", "1", "00", "1", "2", None]).version_bits is None


@pytest.mark.parametrize(
    ("index", "value", "param"),
    [
        (0, None, "worker_name"),
        (0, ["w"], "worker_name"),
        (1, None, "sv1_job_id"),
        (1, {"a": 1}, "sv1_job_id"),
        (1, 1.5, "sv1_job_id"),
        (2, 0, "extranonce2"),
        (2, None, "extranonce2"),
        (2, "abc", "extranonce2"),
        (2, "zz", "extranonce2"),
        (2, "0x00", "extranonce2"),
        (2, "00" * 33, "extranonce2"),
        (3, "123456789", "ntime"),
        (3, "0x123", "ntime"),
        (3, "", "ntime"),
        (3, " 1234", "ntime"),
        (3, "+123", "ntime"),
        (3, -1, "ntime"),
        (3, 2**32, "ntime"),
        (3, 1.0, "ntime"),
        (3, None, "ntime"),
        (3, True, "ntime"),
        (4, 1.5, "nonce"),
        (4, -0.5, "nonce"),
        (4, "-1", "nonce"),
        (4, "g0000000", "nonce"),
        (4, [], "nonce"),
        (5, "1_000", "version_bits"),
        (5, "000000000", "version_bits"),
        (5, -1, "version_bits"),
    ],
)
def test_submit_bad_params(index: int, value: Any, param: str) -> None:
    params = list(GOOD_SUBMIT)
    params[index] = value
    with pytest.raises(p.InvalidParams) as ei:
        p.parse_submit(params)
    assert ei.value.param == param
    assert ei.value.code == p.INVALID_PARAMS
    assert param in str(ei.value)


@pytest.mark.parametrize("n", [0, 1, 4, 7])
def test_submit_wrong_param_count(n: int) -> None:
    with pytest.raises(p.InvalidParams) as ei:
        p.parse_submit([*GOOD_SUBMIT, "x"][:n])
    assert ei.value.param == "params"


submits = st.builds(
    p.SubmitRequest,
    worker_name=st.text(max_size=20),
    sv1_job_id=st.text(max_size=12),
    extranonce2=st.binary(max_size=p.MAX_EXTRANONCE2_BYTES),
    ntime=st.integers(0, 2**32 - 1),
    nonce=st.integers(0, 2**32 - 1),
    version_bits=st.none() | st.integers(0, 2**32 - 1),
)


@given(submits, st.one_of(st.integers(), st.text(max_size=5), st.none()))
def test_submit_round_trip(sub: p.SubmitRequest, msg_id: int | str | None) -> None:
    params = p.submit_params(sub)
    assert all(len(x) == 8 for x in params[3:])
    assert p.parse_submit(params) == sub
    # through the wire as well
    r = p.parse_line(p.request(msg_id, "mining.submit", params))
    assert isinstance(r, p.Request)
    assert r.id == msg_id
    assert p.parse_submit(r.params) == sub


def test_authorize_variants() -> None:
    assert p.parse_authorize(["w"]) == p.AuthorizeRequest("w", "")
    assert p.parse_authorize(["w", None]) == p.AuthorizeRequest("w", "")
    assert p.parse_authorize(["w", ""]) == p.AuthorizeRequest("w", "")
    assert p.parse_authorize([123, 456]) == p.AuthorizeRequest("123", "456")
    assert p.parse_authorize(["", "x"]).worker_name == ""  # refusing it is policy
    for bad, param in (
        ([], "worker_name"),
        ([None], "worker_name"),
        ([["w"]], "worker_name"),
        (["w", {}], "password"),
    ):
        with pytest.raises(p.InvalidParams) as ei:
            p.parse_authorize(bad)
        assert ei.value.param == param


def test_subscribe_variants() -> None:
    assert p.parse_subscribe(["cpuminer/2.5.1", "not-hex-previous-id"]) == p.SubscribeRequest(
        "cpuminer/2.5.1", "not-hex-previous-id"
    )
    assert p.parse_subscribe([None, None, None, None]) == p.SubscribeRequest()
    assert p.parse_subscribe(["a", None, "pool.example", "3333"]) == p.SubscribeRequest(
        "a", None, "pool.example", 3333
    )
    assert p.parse_subscribe(["a", None, "h", 3333]).port == 3333
    assert p.parse_subscribe([123]).user_agent == "123"
    for bad, param in (
        (["a", "b", "c", "d", "e"], "params"),
        ([["agent"]], "user_agent"),
        (["a", {}], "extranonce1"),
        (["a", None, "h", "abc"], "port"),
        (["a", None, "h", 70000], "port"),
        (["a", None, "h", -1], "port"),
        (["a", None, "h", "\u00b2"], "port"),
    ):
        with pytest.raises(p.InvalidParams) as ei:
            p.parse_subscribe(bad)
        assert ei.value.param == param


def test_configure_variants() -> None:
    assert p.parse_configure([]) == p.ConfigureRequest(())
    assert p.parse_configure([[], None]).extensions == ()
    cfg = p.parse_configure([["version-rolling"]])  # no params object: default mask
    assert cfg.version_rolling_mask == 0xFFFFFFFF
    cfg = p.parse_configure(
        [
            ["version-rolling", "subscribe-extranonce", "info", "minimum-difficulty"],
            {
                "version-rolling.mask": 0x1FFFE000,
                "minimum-difficulty.value": "0.5",
                "info.connection-url": "stratum+tcp://proxy:3333",
                "info.hw-version": "BM1370",
                "info.sw-version": 2,
                "info.bad": {"x": 1},
            },
        ]
    )
    assert cfg.version_rolling_mask == 0x1FFFE000
    assert cfg.subscribe_extranonce
    assert cfg.minimum_difficulty == 0.5
    assert cfg.info == {
        "connection-url": "stratum+tcp://proxy:3333",
        "hw-version": "BM1370",
        "sw-version": "2",
    }
    # extension params are ignored for extensions that were not requested
    cfg = p.parse_configure([["version-rolling"], {"minimum-difficulty.value": "junk"}])
    assert cfg.minimum_difficulty is None
    for bad, param in (
        (["version-rolling"], "extensions"),
        ([[1]], "extensions"),
        ([["x"] * 33], "extensions"),
        ([[], []], "extension-params"),
        ([["version-rolling"], {"version-rolling.mask": "xyz"}], "version-rolling.mask"),
        ([["version-rolling"], {"version-rolling.mask": "123456789"}], "version-rolling.mask"),
        ([["version-rolling"], {"version-rolling.mask": -1}], "version-rolling.mask"),
        (
            [["version-rolling"], {"version-rolling.min-bit-count": "zz"}],
            "version-rolling.min-bit-count",
        ),
        (
            [["version-rolling"], {"version-rolling.min-bit-count": 33}],
            "version-rolling.min-bit-count",
        ),
        (
            [["version-rolling"], {"version-rolling.min-bit-count": 2.5}],
            "version-rolling.min-bit-count",
        ),
        ([["minimum-difficulty"], {"minimum-difficulty.value": "abc"}], "minimum-difficulty.value"),
        ([["minimum-difficulty"], {"minimum-difficulty.value": -1}], "minimum-difficulty.value"),
        ([["minimum-difficulty"], {"minimum-difficulty.value": "nan"}], "minimum-difficulty.value"),
        ([["minimum-difficulty"], {"minimum-difficulty.value": True}], "minimum-difficulty.value"),
    ):
        with pytest.raises(p.InvalidParams) as ei:
            p.parse_configure(bad)
        assert ei.value.param == param


def test_configure_result_only_requested_keys() -> None:
    def result(exts: list[str], params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        cfg = p.parse_configure([exts, params or {}])
        opts: dict[str, Any] = {
            "server_mask": 0x1FFFE000,
            "allow_min_difficulty": True,
            "allow_subscribe_extranonce": True,
        }
        opts.update(kw)
        return p.configure_result(cfg, **opts)

    # WhatsMiner-style: only version-rolling asked -> exactly its two keys
    assert result(["version-rolling"], {"version-rolling.mask": "ffffffff"}) == {
        "version-rolling": True,
        "version-rolling.mask": "1fffe000",
    }
    assert result(["version-rolling"], {"version-rolling.mask": "00001fff"}) == {
        "version-rolling": False,
        "version-rolling.mask": "00000000",
    }
    assert result(["subscribe-extranonce"]) == {"subscribe-extranonce": True}
    assert result(["subscribe-extranonce"], allow_subscribe_extranonce=False) == {
        "subscribe-extranonce": False
    }
    assert result(["minimum-difficulty"], {"minimum-difficulty.value": 64}) == {
        "minimum-difficulty": True
    }
    assert result(
        ["minimum-difficulty"], {"minimum-difficulty.value": 64}, allow_min_difficulty=False
    ) == {"minimum-difficulty": False}
    assert result(["minimum-difficulty"]) == {"minimum-difficulty": False}  # no value given
    assert result(["info"], {"info.hw-id": "x"}) == {"info": True}
    assert result(["some-future-ext"]) == {"some-future-ext": False}
    # duplicates are answered once
    assert list(result(["version-rolling", "version-rolling"])) == [
        "version-rolling",
        "version-rolling.mask",
    ]


def test_suggest_difficulty() -> None:
    assert p.parse_suggest_difficulty([1000]) == 1000.0
    assert p.parse_suggest_difficulty(["1000"]) == 1000.0
    assert p.parse_suggest_difficulty([0.001]) == 0.001
    assert p.parse_suggest_difficulty(["1e-8"]) == 1e-8
    for bad in (
        [],
        [0],
        [-1],
        ["abc"],
        [True],
        [None],
        [[1]],
        ["inf"],
        ["nan"],
        [math.nan],
        [math.inf],
    ):
        with pytest.raises(p.InvalidParams) as ei:
            p.parse_suggest_difficulty(bad)
        assert ei.value.param == "difficulty"
    # a NaN straight off the wire (json accepts the token)
    r = req({"id": 1, "method": "mining.suggest_difficulty", "params": [float("nan")]})
    with pytest.raises(p.InvalidParams):
        p.parse_suggest_difficulty(r.params)


# ---------------------------------------------------------------------------
# serializers


def test_error_codes_and_messages() -> None:
    assert (
        p.OTHER,
        p.JOB_NOT_FOUND,
        p.DUPLICATE,
        p.LOW_DIFFICULTY,
        p.UNAUTHORIZED,
        p.NOT_SUBSCRIBED,
    ) == (
        20,
        21,
        22,
        23,
        24,
        25,
    )
    assert (p.PARSE_ERROR, p.INVALID_REQUEST, p.METHOD_NOT_FOUND, p.INVALID_PARAMS) == (
        -32700,
        -32600,
        -32601,
        -32602,
    )
    for code, message in p.ERROR_MESSAGES.items():
        assert decoded(p.error(7, code)) == {
            "id": 7,
            "result": None,
            "error": [code, message, None],
        }
    assert decoded(p.error("x", 21, 'job "9" \n gone'))["error"] == [21, 'job "9" \n gone', None]


def test_result_values() -> None:
    for value in (True, False, None, 0, "pong", {"version-rolling": True}, [[["a", "b"]], "00", 4]):
        assert decoded(p.result(3, value)) == {"id": 3, "result": value, "error": None}
    assert p.result(4, True) == b'{"id":4,"result":true,"error":null}\n'


def test_request_serializer() -> None:
    line = p.request(1, "mining.subscribe", ["cpuminer/2.5.1"])
    assert decoded(line) == {"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}
    assert p.parse_line(line) == p.Request(1, "mining.subscribe", ["cpuminer/2.5.1"])


def test_error_exception_types() -> None:
    e = p.InvalidParams("nonce", "must be hex")
    assert e.code == p.INVALID_PARAMS and e.param == "nonce" and "nonce" in str(e)
    assert p.Sv1ProtocolError("x").code == p.OTHER
    assert p.Sv1ProtocolError("x", code=p.UNAUTHORIZED).code == p.UNAUTHORIZED
    assert issubclass(p.LineTooLong, p.ParseError)
    assert issubclass(p.TlsClientHello, p.ParseError)


@given(
    st.text(max_size=12),
    st.text(max_size=70),
    st.lists(st.text(max_size=66), max_size=5),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_notify_is_valid_json_for_any_strings(
    job_id: str, hexish: str, branches: list[str], u32: int, clean: bool
) -> None:
    line = p.notify(job_id, hexish, hexish, "ab" * 40, branches, u32, u32, u32, clean)
    msg = decoded(line)
    assert msg["params"] == [
        job_id,
        hexish,
        hexish,
        "ab" * 40,
        branches,
        f"{u32:08x}",
        f"{u32:08x}",
        f"{u32:08x}",
        clean,
    ]


# parse_submit's fast path against parse_submit_checked: strings that are nearly hex, with
# whitespace, signs, 0x prefixes, underscores, non-ASCII digits; numbers, nulls, bools.
_HEX_TOKENS = ["00", "a7", "F0", "9", "0x", " ", "\t", "_", "+", "-", "g", "\u0663", "\uff10", "\n"]
_NEAR_HEX = st.lists(st.sampled_from(_HEX_TOKENS), max_size=6).map("".join)
_SUBMIT_VALUE = st.one_of(
    _NEAR_HEX, st.text(max_size=6), st.none(), st.booleans(), st.integers(-1, 2**33), st.floats(allow_nan=True),
    st.binary(max_size=8).map(bytes.hex), st.integers(0, 2**32 - 1).map(lambda v: f"{v:08x}"),
    st.binary(min_size=30, max_size=34).map(bytes.hex), st.text(alphabet="0", min_size=60, max_size=70),
)


def _parse_outcome(fn: Any, params: list[Any]) -> tuple[str, Any]:
    try:
        return "ok", fn(params)
    except p.Sv1ProtocolError as e:
        return type(e).__name__, (str(e), getattr(e, "param", None), e.code)


@settings(max_examples=300)
@given(st.one_of(
    st.lists(_SUBMIT_VALUE, min_size=4, max_size=7),
    # the usual shape (two names, then hex fields) with one or more fields near-miss hex
    st.tuples(st.text(max_size=4), st.text(max_size=3), _NEAR_HEX | _SUBMIT_VALUE, _NEAR_HEX | _SUBMIT_VALUE,
              _NEAR_HEX | _SUBMIT_VALUE, st.lists(_NEAR_HEX | _SUBMIT_VALUE, max_size=1)).map(
        lambda t: [*t[:5], *t[5]]),
    # valid ntime and nonce: the extranonce2 alone decides (lengths around the 32-byte bound)
    st.tuples(_NEAR_HEX | st.binary(min_size=30, max_size=34).map(bytes.hex) | _SUBMIT_VALUE,
              st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(
        lambda t: ["w", "1", t[0], f"{t[1]:x}", f"{t[2]:08X}"]),
))
def test_parse_submit_fast_path_gives_the_checked_result_or_error(params: list[Any]) -> None:
    fast, checked = _parse_outcome(p.parse_submit, params), _parse_outcome(p.parse_submit_checked, params)
    assert fast == checked
    if fast[0] == "ok":
        assert type(fast[1].extranonce2) is bytes and type(fast[1].ntime) is int


@given(submits)
def test_parse_submit_fast_path_takes_every_well_formed_submit(sub: p.SubmitRequest) -> None:
    params: list[Any] = p.submit_params(sub)
    assert p.parse_submit(params) == p.parse_submit_checked(params) == sub
