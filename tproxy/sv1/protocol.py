"""Stratum V1 JSON-RPC codec, sans-IO.

Bytes in, typed values out, and back. No sockets, no clock, no policy: the
session decides what to answer. Framing is one JSON object per ``\\n``
terminated line (a ``\\r\\n`` is tolerated). Every failure caused by peer
input raises a ``Sv1ProtocolError`` subclass carrying the JSON-RPC/Stratum
error ``code`` to answer with:

* ``ParseError`` (-32700): not UTF-8, not JSON (including an integer past Python's
  digit limit), nested deeper than ``MAX_JSON_DEPTH``, a TLS ClientHello, a line too long;
* ``InvalidRequest`` (-32600): not an object, method not a string, params not a list;
* ``InvalidParams`` (-32602): a method's params do not have the expected shape
  (``param`` names the offending parameter).

Leniency copied from real firmware (reference section 10.6): ids are echoed
unchanged (int, string or null; cpuminer reuses id 4 for every submit), null or
missing params mean ``[]``, subscribe takes 0-4 params with nulls, passwords
may be missing/null/numbers, ntime/nonce/version_bits may be JSON integers.

Numbers: every numeric param is type- and range-checked (bool, null, NaN,
infinities, integers beyond the float range, strings that are not numbers are
``InvalidParams``), so no peer value raises anything but a ``Sv1ProtocolError``.
Text: every string is kept exactly as received except that a lone surrogate
becomes U+FFFD (``clean_text``, applied once here at parse time; the share
log and monitoring rely on it).

Decoding: ``orjson`` reads the lines it reads exactly as the stdlib would; a line
it refuses (NaN/Infinity literals, 1e400, lone surrogate escapes, deep nesting)
or might read differently (an integer of 19+ digits, which it turns into a float
past 64 bits) is decoded by ``json`` instead, so what is accepted and what each
value is stays the stdlib's.

Serializers return one complete line (``bytes`` ending in ``b"\\n"``).
Notifications carry ``"id": null`` like classic pools.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson

from tproxy.errors import Sv1BadRequest, Sv1Garbage
from tproxy.text import clean_text

__all__ = [
    "DUPLICATE",
    "ERROR_MESSAGES",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "JOB_NOT_FOUND",
    "LOW_DIFFICULTY",
    "METHOD_NOT_FOUND",
    "NOT_SUBSCRIBED",
    "OTHER",
    "PARSE_ERROR",
    "UNAUTHORIZED",
    "AuthorizeRequest",
    "ConfigureRequest",
    "InvalidParams",
    "InvalidRequest",
    "JsonId",
    "LineBuffer",
    "LineTooLong",
    "Notification",
    "ParseError",
    "Request",
    "Response",
    "SubmitRequest",
    "SubscribeRequest",
    "Sv1ProtocolError",
    "TlsClientHello",
    "clean_text",
    "configure_result",
    "error",
    "notify",
    "parse_authorize",
    "parse_configure",
    "parse_line",
    "parse_submit",
    "parse_submit_checked",
    "parse_subscribe",
    "parse_suggest_difficulty",
    "reconnect",
    "request",
    "result",
    "set_difficulty",
    "set_extranonce",
    "set_version_mask",
    "submit_params",
    "subscribe_result",
    "tls_sniff",
]

# ---------------------------------------------------------------------------
# error codes

OTHER: Final = 20
JOB_NOT_FOUND: Final = 21
DUPLICATE: Final = 22
LOW_DIFFICULTY: Final = 23
UNAUTHORIZED: Final = 24
NOT_SUBSCRIBED: Final = 25
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602

ERROR_MESSAGES: Final[dict[int, str]] = {
    OTHER: "Other/Unknown",
    JOB_NOT_FOUND: "Job not found",
    DUPLICATE: "Duplicate share",
    LOW_DIFFICULTY: "Low difficulty share",
    UNAUTHORIZED: "Unauthorized worker",
    NOT_SUBSCRIBED: "Not subscribed",
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
}

DEFAULT_MAX_LINE: Final = 16384
MAX_JSON_DEPTH: Final = 32
MAX_EXTRANONCE2_BYTES: Final = 32
MAX_EXTENSIONS: Final = 32
DEFAULT_VERSION_ROLLING_MASK: Final = 0xFFFFFFFF

# Server-to-client methods: with "id": null they are notifications, not requests.
SERVER_METHODS: Final = frozenset(
    {
        "mining.notify",
        "mining.set_difficulty",
        "mining.set_extranonce",
        "mining.set_version_mask",
        "mining.set_version",
        "client.reconnect",
        "client.show_message",
    }
)


class Sv1ProtocolError(Sv1BadRequest):
    """Bad input from an SV1 peer; ``code`` is the error code to answer with."""

    code: int = OTHER

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ParseError(Sv1ProtocolError):
    """The line is not UTF-8 JSON (-32700)."""

    code = PARSE_ERROR


class LineTooLong(Sv1Garbage, ParseError):
    """A line exceeded the configured maximum before its newline arrived (closes the connection)."""


class TlsClientHello(Sv1Garbage, ParseError):
    """The peer speaks TLS (bfgminer with stratum+ssl, scanners) to a plain-TCP port: closed, not answered."""


class InvalidRequest(Sv1ProtocolError):
    """Valid JSON that is not a JSON-RPC message object (-32600)."""

    code = INVALID_REQUEST


class InvalidParams(Sv1ProtocolError):
    """A method's params are missing or malformed (-32602); ``param`` names which."""

    code = INVALID_PARAMS

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"invalid {param}: {reason}")
        self.param = param
        self.reason = reason


# ---------------------------------------------------------------------------
# framing


class LineBuffer:
    """Splits a byte stream into lines; bounded by ``max_line`` bytes per line.

    ``feed`` returns complete, non-blank lines without their terminator (a
    trailing ``\\r`` is removed). A line longer than ``max_line`` raises
    ``LineTooLong`` whether or not its newline has arrived; after that the
    buffer is empty and the connection should be closed.
    """

    __slots__ = ("_buf", "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be >= 1")
        self.max_line = max_line
        self._buf = b""

    @property
    def pending(self) -> int:
        """Bytes held waiting for a newline."""
        return len(self._buf)

    def _too_long(self, n: int) -> LineTooLong:
        self._buf = b""
        return LineTooLong(f"line longer than {self.max_line} bytes (got {n}+)")

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            buf = self._buf + data if self._buf else bytes(data)
            if len(buf) > self.max_line:
                raise self._too_long(len(buf))
            self._buf = buf
            return []
        parts = (self._buf + data).split(b"\n")
        rest = parts.pop()
        self._buf = b""
        out: list[bytes] = []
        limit = self.max_line
        for line in parts:
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > limit:
                raise self._too_long(len(line))
            if line and not line.isspace():
                out.append(line)
        if len(rest) > limit:
            raise self._too_long(len(rest))
        self._buf = rest
        return out


# ---------------------------------------------------------------------------
# TLS on the plain port

TLS_SNIFF_BYTES: Final = 5
TLS_MESSAGE: Final = "TLS ClientHello on the SV1 port; this port speaks plain stratum+tcp, not TLS"


def tls_sniff(head: bytes) -> bool | None:
    """Whether the first bytes of a connection are a TLS/SSL ClientHello.

    True for a TLS record header (``16 03 00..04``: SSL 3.0 to TLS 1.3, whose
    ClientHello says 0301 or 0303 here) and for an SSLv2-style hello (2-byte
    length with the top bit set, message type 1, version 0002 or 0300..0304);
    False when the bytes cannot start one; None while too few bytes have
    arrived to tell (a client may send one byte at a time). A JSON line
    starts with ``{`` (or whitespace), never with either form.
    """
    if not head:
        return None
    b0 = head[0]
    if b0 == 0x16:
        if len(head) < 2:
            return None
        if head[1] != 0x03:
            return False
        return None if len(head) < 3 else head[2] <= 0x04
    if b0 & 0x80:
        if len(head) < 5:
            return None
        return head[2] == 0x01 and (head[3:5] == b"\x00\x02" or (head[3] == 0x03 and head[4] <= 0x04))
    return False


def looks_like_tls(head: bytes) -> bool:
    """``tls_sniff`` decided: True only for a recognised ClientHello start."""
    return tls_sniff(head) is True or head[:2] == b"\x16\x03"


# ---------------------------------------------------------------------------
# text received from miners

def _checked(value: Any, depth: int, clean: bool) -> Any:
    """``value`` with ``clean_text`` applied to every string (keys too) if ``clean``; a nesting
    deeper than ``MAX_JSON_DEPTH`` is a ParseError (no SV1 message nests past 3, and every later
    reader may then walk params recursively without meeting RecursionError)."""
    if depth > MAX_JSON_DEPTH:
        raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        return clean_text(value) if clean else value
    if isinstance(value, list):
        return [_checked(v, depth + 1, clean) for v in value]
    if isinstance(value, dict):
        return {(clean_text(k) if clean else k): _checked(v, depth + 1, clean) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------
# messages

JsonId = int | float | str | None
"""A JSON-RPC id as the peer sent it (echo it back unchanged)."""


class Request(NamedTuple):
    """A method call from the peer. ``id`` is echoed unchanged, even if repeated.

    A NamedTuple, not a frozen dataclass, because one is built for every line a
    miner sends (every share): as immutable, and about half the cost to build.
    """

    id: JsonId
    method: str
    params: list[Any]


@dataclass(frozen=True, slots=True)
class Notification:
    """A method call that expects no answer (no id, or a server method with id null)."""

    method: str
    params: list[Any]


@dataclass(frozen=True, slots=True)
class Response:
    """An answer to one of our requests."""

    id: JsonId
    result: Any
    error: Any


# A JSON integer orjson may not read exactly: past 64 bits it becomes a float. A line
# holds a run of 19 digits exactly when, with every digit turned into "0", it holds 19
# zeros; one translate and one substring search cost less than half the regex search
# ``[0-9]{19}`` (tests/tproxy/test_sv1_json_decode.py compares the two).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def has_long_digits(line: bytes) -> bool:
    """Whether ``line`` holds 19 consecutive ASCII digits (orjson may misread such an integer)."""
    return _LONG_DIGITS in line.translate(_DIGITS_TO_ZERO)


def _decode(line: bytes) -> Any:
    """The JSON value of one line, as ``json.loads`` gives it; ParseError if there is none."""
    if not has_long_digits(line):
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass  # refused: maybe valid for the stdlib (NaN, 1e400, "\ud800"), which decides
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("line is not valid UTF-8") from None
    try:
        # ValueError also covers an integer of more than sys.int_info's digit limit
        # (4300 by default); 1e400 parses as inf and is refused where a number is read.
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ParseError("line is not valid JSON") from None


def parse_line(line: bytes) -> Request | Response | Notification:
    """Decode one line (terminator optional) into a typed message.

    Unknown methods still parse to a ``Request``; choosing to answer "method
    not found" is the session's policy. Raises ``ParseError`` or
    ``InvalidRequest``; never anything else for any input bytes.
    """
    # A ClientHello starts with 0x16 or a byte with the top bit set; a JSON line never does.
    if line and (line[0] == 0x16 or line[0] >= 0x80) and looks_like_tls(line[:TLS_SNIFF_BYTES]):
        raise TlsClientHello(TLS_MESSAGE)
    msg = _decode(line)
    # A lone surrogate can only come from a \u escape (strict UTF-8 refuses the bytes); a
    # nesting deeper than MAX_JSON_DEPTH needs that many brackets. Both checks are C-speed.
    clean = b"\\u" in line
    if clean or line.count(b"[") + line.count(b"{") > MAX_JSON_DEPTH:
        msg = _checked(msg, 0, clean)
    if not isinstance(msg, dict):
        raise InvalidRequest(f"expected a JSON object, got {type(msg).__name__}")
    msg_id = msg.get("id")
    if type(msg_id) is not int and msg_id is not None and (  # an int id (the usual) is valid as it is
        isinstance(msg_id, bool)
        or not isinstance(msg_id, int | str | float)
        or (isinstance(msg_id, float) and not math.isfinite(msg_id))
    ):
        raise InvalidRequest("id must be a finite number, a string or null")
    method = msg.get("method")
    if method is None:
        if "result" in msg or "error" in msg:
            return Response(msg_id, msg.get("result"), msg.get("error"))
        raise InvalidRequest("object has neither a method nor a result")
    if not isinstance(method, str):
        raise InvalidRequest(f"method must be a string, got {type(method).__name__}")
    params = msg.get("params")
    if params is None:
        params = []
    elif not isinstance(params, list):
        raise InvalidRequest(f"params must be a list, got {type(params).__name__}")
    if "id" not in msg or (msg_id is None and method in SERVER_METHODS):
        return Notification(method, params)
    return Request(msg_id, method, params)


# ---------------------------------------------------------------------------
# typed params

_HEX_U32 = re.compile(r"[0-9a-fA-F]{1,8}")
_HEX_BYTES = re.compile(r"(?:[0-9a-fA-F]{2})*")
_PORT = re.compile(r"[0-9]{1,5}")
_U32_MAX = 0xFFFFFFFF
_TEXT_INT_LIMIT = 10**64  # a number sent where a name is expected: bounded so str() never fails
_MAX_NUMBER_TEXT = 64


def _param(params: list[Any], index: int, name: str) -> Any:
    if index >= len(params):
        raise InvalidParams(name, "missing")
    return params[index]


def _text(value: Any, name: str, *, allow_null: bool = False) -> str | None:
    """A string param; numbers are accepted and rendered as decimal text."""
    if isinstance(value, str):
        return value
    if value is None:
        if allow_null:
            return None
        raise InvalidParams(name, "must be a string, got null")
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= _TEXT_INT_LIMIT:
            raise InvalidParams(name, "number too large for a name")
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < _TEXT_INT_LIMIT:
        return str(int(value))
    raise InvalidParams(name, f"must be a string, got {type(value).__name__}")


def _u32(value: Any, name: str) -> int:
    """ntime/nonce/version_bits: big-endian hex (1-8 digits) or a JSON integer in U32."""
    if isinstance(value, str):
        if _HEX_U32.fullmatch(value) is None:
            raise InvalidParams(name, "must be 1 to 8 hex digits")
        return int(value, 16)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= _U32_MAX:
            raise InvalidParams(name, "out of U32 range")
        return value
    if isinstance(value, float):
        raise InvalidParams(name, "must be an integer, not a fractional number")
    raise InvalidParams(name, f"must be a hex string, got {type(value).__name__}")


def _number(value: Any, name: str) -> float:
    """A finite number, or a string holding one."""
    if isinstance(value, bool):
        raise InvalidParams(name, "must be a number, got bool")
    if isinstance(value, int | float):
        try:
            d = float(value)
        except OverflowError:  # an integer beyond the float range (json reads 10**400 exactly)
            raise InvalidParams(name, "out of range") from None
    elif isinstance(value, str):
        # cpuminer-opt sends "512.000000"; a longer string is not a number any firmware sends.
        if len(value) > _MAX_NUMBER_TEXT:
            raise InvalidParams(name, "not a number")
        try:
            d = float(value.strip())
        except ValueError:
            raise InvalidParams(name, "not a number") from None
    else:
        raise InvalidParams(name, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(d):
        raise InvalidParams(name, "must be finite")
    return d


@dataclass(frozen=True, slots=True)
class ConfigureRequest:
    """``mining.configure`` (BIP310). Extension params are read only when the
    extension is requested; ``version_rolling_mask`` defaults to ``ffffffff``."""

    extensions: tuple[str, ...]
    version_rolling_mask: int = DEFAULT_VERSION_ROLLING_MASK
    version_rolling_min_bit_count: int | None = None
    minimum_difficulty: float | None = None
    subscribe_extranonce: bool = False
    info: dict[str, str] = field(default_factory=dict)


def parse_configure(params: list[Any]) -> ConfigureRequest:
    exts_raw = params[0] if params else []
    if exts_raw is None:
        exts_raw = []
    if not isinstance(exts_raw, list):
        raise InvalidParams("extensions", "must be a list of names")
    if len(exts_raw) > MAX_EXTENSIONS:
        raise InvalidParams("extensions", f"more than {MAX_EXTENSIONS}")
    if not all(isinstance(e, str) for e in exts_raw):
        raise InvalidParams("extensions", "every name must be a string")
    extensions: tuple[str, ...] = tuple(dict.fromkeys(exts_raw))
    ext_params = params[1] if len(params) > 1 else {}
    if ext_params is None:
        ext_params = {}
    if not isinstance(ext_params, dict):
        raise InvalidParams("extension-params", "must be an object")

    mask = DEFAULT_VERSION_ROLLING_MASK
    min_bits: int | None = None
    if "version-rolling" in extensions:
        raw_mask = ext_params.get("version-rolling.mask")
        if raw_mask is not None:
            mask = _u32(raw_mask, "version-rolling.mask")
        raw_bits = ext_params.get("version-rolling.min-bit-count")
        if raw_bits is not None:
            # SRI reads a string as hex ("16" -> 22); BIP310 sends a JSON integer.
            min_bits = _u32(raw_bits, "version-rolling.min-bit-count")
            if min_bits > 32:
                raise InvalidParams("version-rolling.min-bit-count", "more than 32 bits")

    min_diff: float | None = None
    if "minimum-difficulty" in extensions:
        raw = ext_params.get("minimum-difficulty.value")
        if raw is not None:
            min_diff = _number(raw, "minimum-difficulty.value")
            if min_diff < 0:
                raise InvalidParams("minimum-difficulty.value", "must not be negative")

    info: dict[str, str] = {}
    if "info" in extensions:
        for k, v in ext_params.items():
            if (
                k.startswith("info.")
                and isinstance(v, str | int | float)
                and not isinstance(v, bool)
            ):
                if isinstance(v, int) and abs(v) >= _TEXT_INT_LIMIT:
                    continue  # str() of a huge integer may raise; an info value is optional
                info[k[5:]] = str(v)[:256]

    return ConfigureRequest(
        extensions=extensions,
        version_rolling_mask=mask,
        version_rolling_min_bit_count=min_bits,
        minimum_difficulty=min_diff,
        subscribe_extranonce="subscribe-extranonce" in extensions,
        info=info,
    )


def configure_result(
    req: ConfigureRequest,
    *,
    server_mask: int,
    allow_min_difficulty: bool,
    allow_subscribe_extranonce: bool,
) -> dict[str, Any]:
    """The ``mining.configure`` result object.

    Only keys for extensions the miner asked for (WhatsMiner firmware drops the
    connection on unexpected keys). Version rolling: the granted mask is the
    miner's mask AND ``server_mask``; it is true when that is non-zero (SRI does
    not refuse on min-bit-count, and neither do we). Unknown extensions: false.
    """
    out: dict[str, Any] = {}
    for ext in req.extensions:
        if ext == "version-rolling":
            mask = req.version_rolling_mask & server_mask & _U32_MAX
            out["version-rolling"] = mask != 0
            out["version-rolling.mask"] = f"{mask:08x}"
        elif ext == "minimum-difficulty":
            out["minimum-difficulty"] = allow_min_difficulty and req.minimum_difficulty is not None
        elif ext == "subscribe-extranonce":
            out["subscribe-extranonce"] = allow_subscribe_extranonce
        elif ext == "info":
            out["info"] = True
        else:
            out[ext] = False
    return out


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """``mining.subscribe``. ``extranonce1_hint`` is whatever the miner sent (cpuminer
    sends its previous subscription id; it need not be hex)."""

    user_agent: str | None = None
    extranonce1_hint: str | None = None
    host: str | None = None
    port: int | None = None


def parse_subscribe(params: list[Any]) -> SubscribeRequest:
    if len(params) > 4:
        raise InvalidParams("params", f"expected at most 4, got {len(params)}")
    agent = _text(params[0], "user_agent", allow_null=True) if params else None
    hint = _text(params[1], "extranonce1", allow_null=True) if len(params) > 1 else None
    host = _text(params[2], "host", allow_null=True) if len(params) > 2 else None
    port: int | None = None
    if len(params) > 3 and params[3] is not None:
        port_text = _text(params[3], "port")
        if port_text is None or _PORT.fullmatch(port_text) is None or int(port_text) > 65535:
            raise InvalidParams("port", "must be an integer 0..65535")
        port = int(port_text)
    return SubscribeRequest(agent, hint, host, port)


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    worker_name: str
    password: str = ""


def parse_authorize(params: list[Any]) -> AuthorizeRequest:
    name = _text(_param(params, 0, "worker_name"), "worker_name")
    assert name is not None
    password = ""
    if len(params) > 1:
        password = _text(params[1], "password", allow_null=True) or ""
    return AuthorizeRequest(name, password)


class SubmitRequest(NamedTuple):
    """``mining.submit``; ``version_bits`` is None for the 5-param form.

    A NamedTuple, like ``Request``: one is built for every share.
    """

    worker_name: str
    sv1_job_id: str
    extranonce2: bytes
    ntime: int
    nonce: int
    version_bits: int | None = None


def parse_submit(params: list[Any]) -> SubmitRequest:
    """The params of ``mining.submit``; ``InvalidParams`` if they do not have its shape.

    Fast path, for the form every firmware sends: five or six strings, ntime, nonce
    and version_bits (or a null) of 1 to 8 hex digits, an extranonce2 of at most
    ``MAX_EXTRANONCE2_BYTES`` in hex. It is read here with the checks inlined and
    returns only on success; anything else (numbers, nulls, bad hex: every error)
    goes through ``parse_submit_checked``, which decides. tests/tproxy/test_sv1_protocol.py
    checks that both give the same result or the same error on random params.
    """
    n = len(params)
    if n == 5:
        worker, job_id, en2, ntime, nonce = params
        bits = None
    elif n == 6:
        worker, job_id, en2, ntime, nonce, bits = params
        if bits is not None and (type(bits) is not str or _HEX_U32.fullmatch(bits) is None):
            return parse_submit_checked(params)
    else:
        return parse_submit_checked(params)
    if (
        type(worker) is str
        and type(job_id) is str
        and type(en2) is str
        and type(ntime) is str
        and type(nonce) is str
        and len(en2) <= 2 * MAX_EXTRANONCE2_BYTES
        and _HEX_U32.fullmatch(ntime) is not None
        and _HEX_U32.fullmatch(nonce) is not None
    ):
        try:
            raw = bytes.fromhex(en2)
        except ValueError:
            return parse_submit_checked(params)
        # fromhex skips whitespace between bytes: the length tells that it met none
        if 2 * len(raw) == len(en2):
            return SubmitRequest(
                worker, job_id, raw, int(ntime, 16), int(nonce, 16), None if bits is None else int(bits, 16)
            )
    return parse_submit_checked(params)


def parse_submit_checked(params: list[Any]) -> SubmitRequest:
    """``parse_submit`` for any params, one check at a time (the reference the fast path follows)."""
    n = len(params)
    if n not in (5, 6):
        raise InvalidParams("params", f"expected 5 or 6, got {n}")
    worker = _text(params[0], "worker_name")
    job_id = _text(params[1], "sv1_job_id")
    assert worker is not None and job_id is not None
    en2 = params[2]
    if not isinstance(en2, str):
        raise InvalidParams("extranonce2", f"must be a hex string, got {type(en2).__name__}")
    if len(en2) > 2 * MAX_EXTRANONCE2_BYTES:
        raise InvalidParams("extranonce2", f"longer than {MAX_EXTRANONCE2_BYTES} bytes")
    if _HEX_BYTES.fullmatch(en2) is None:
        raise InvalidParams("extranonce2", "must be an even number of hex digits")
    version_bits = None
    if n == 6 and params[5] is not None:
        version_bits = _u32(params[5], "version_bits")
    return SubmitRequest(
        worker,
        job_id,
        bytes.fromhex(en2),
        _u32(params[3], "ntime"),
        _u32(params[4], "nonce"),
        version_bits,
    )


def submit_params(sub: SubmitRequest) -> list[str]:
    """The params of ``mining.submit`` as a miner formats them (``%08x`` integers)."""
    out = [
        sub.worker_name,
        sub.sv1_job_id,
        sub.extranonce2.hex(),
        f"{sub.ntime:08x}",
        f"{sub.nonce:08x}",
    ]
    if sub.version_bits is not None:
        out.append(f"{sub.version_bits:08x}")
    return out


def parse_suggest_difficulty(params: list[Any]) -> float:
    d = _number(_param(params, 0, "difficulty"), "difficulty")
    if d <= 0:
        raise InvalidParams("difficulty", "must be > 0")
    return d


# ---------------------------------------------------------------------------
# serializers

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _str_json(s: str) -> str:
    """JSON for a string; alphanumeric ASCII (hex, job ids) skips the encoder."""
    if not s or (s.isascii() and s.isalnum()):
        return '"' + s + '"'
    return _dumps(s)


def _id_json(msg_id: JsonId) -> str:
    if type(msg_id) is int:
        return str(msg_id)
    if msg_id is None:
        return "null"
    return _dumps(msg_id)


def result(msg_id: JsonId, value: Any) -> bytes:
    """``{"id":..,"result":value,"error":null}``."""
    if value is True and type(msg_id) is int:  # the reply to every accepted share
        return b'{"id":%d,"result":true,"error":null}\n' % msg_id
    if value is True:
        body = "true"
    elif value is False:
        body = "false"
    else:
        body = _dumps(value)
    return f'{{"id":{_id_json(msg_id)},"result":{body},"error":null}}\n'.encode()


def error(msg_id: JsonId, code: int, message: str | None = None) -> bytes:
    """``{"id":..,"result":null,"error":[code,"message",null]}``."""
    if message is None:
        message = ERROR_MESSAGES.get(code, "error")
    return (
        f'{{"id":{_id_json(msg_id)},"result":null,"error":[{int(code)},{_dumps(message)},null]}}\n'
    ).encode()


def request(msg_id: JsonId, method: str, params: list[Any]) -> bytes:
    """A method call line (what a miner sends; used by tests and simulators)."""
    return (
        f'{{"id":{_id_json(msg_id)},"method":{_dumps(method)},"params":{_dumps(params)}}}\n'
    ).encode()


def _notification(method: str, params_json: str) -> bytes:
    return f'{{"id":null,"method":"{method}","params":{params_json}}}\n'.encode()


def notify(
    sv1_job_id: str,
    prevhash_hex: str,
    coinb1_hex: str,
    coinb2_hex: str,
    branches: list[str],
    version: int,
    nbits: int,
    ntime: int,
    clean_jobs: bool,
) -> bytes:
    """``mining.notify``; version, nbits and ntime are rendered ``%08x``.

    Hex strings are written without going through the JSON encoder (they need
    no escaping); anything else is encoded normally, so the line is always valid.
    """
    params = ",".join(
        (
            _str_json(sv1_job_id),
            _str_json(prevhash_hex),
            _str_json(coinb1_hex),
            _str_json(coinb2_hex),
            "[" + ",".join([_str_json(b) for b in branches]) + "]",
            f'"{version:08x}","{nbits:08x}","{ntime:08x}"',
            "true" if clean_jobs else "false",
        )
    )
    return _notification("mining.notify", "[" + params + "]")


def _difficulty_json(d: float) -> str:
    if isinstance(d, bool) or not isinstance(d, int | float):
        raise ValueError(f"difficulty must be a number, got {type(d).__name__}")
    if not math.isfinite(d) or d <= 0:
        raise ValueError(f"difficulty must be finite and > 0, got {d!r}")
    if isinstance(d, int):
        return str(d)
    if d.is_integer() and d < 2**53:
        return str(int(d))  # 8192 rather than 8192.0, for integer-only parsers
    return repr(d)


def set_difficulty(d: float) -> bytes:
    """``mining.set_difficulty [d]``; integral values are written without ``.0``."""
    return _notification("mining.set_difficulty", f"[{_difficulty_json(d)}]")


def set_version_mask(mask: int) -> bytes:
    """``mining.set_version_mask ["%08x"]`` (BIP310 name, not SRI's ``mining.set_version``)."""
    if not 0 <= mask <= _U32_MAX:
        raise ValueError("mask out of U32 range")
    return _notification("mining.set_version_mask", f'["{mask:08x}"]')


def set_extranonce(extranonce1: bytes, extranonce2_size: int) -> bytes:
    """``mining.set_extranonce [extranonce1_hex, extranonce2_size]``."""
    return _notification(
        "mining.set_extranonce", f'["{extranonce1.hex()}",{int(extranonce2_size)}]'
    )


def reconnect(host: str, port: int, wait: int = 0) -> bytes:
    """``client.reconnect [host, port, wait]`` (cpuminer needs host and port present)."""
    return _notification("client.reconnect", _dumps([host, int(port), int(wait)]))


def subscribe_result(
    subscription_id: str,
    extranonce1: bytes,
    extranonce2_size: int,
    *,
    difficulty_subscription_id: str | None = None,
) -> list[Any]:
    """The ``mining.subscribe`` result: subscriptions, extranonce1 hex, extranonce2_size.

    Both subscription tuples use ``subscription_id`` unless a separate id is
    given for ``mining.set_difficulty``.
    """
    diff_id = subscription_id if difficulty_subscription_id is None else difficulty_subscription_id
    return [
        [["mining.set_difficulty", diff_id], ["mining.notify", subscription_id]],
        extranonce1.hex(),
        int(extranonce2_size),
    ]
