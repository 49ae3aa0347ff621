"""Synthetic SV1 miner: an asyncio Stratum V1 client that really hashes.

Owns the client side of SV1 as real firmware speaks it (reference section
10.6), in four dialects:

* ``cpuminer``: ``mining.subscribe ["cpuminer/2.5.1"]`` (on a reconnect with
  the previous subscription id), ``mining.authorize``, no configure, every
  submit with id 4 and 5 params;
* ``bitaxe``: ``mining.configure`` version-rolling mask ``ffffffff`` first,
  then subscribe, ``mining.suggest_difficulty``, ``mining.extranonce.subscribe``,
  authorize; always 6-param submits whose version field is
  ``rolled_version XOR job_version``;
* ``whatsminer`` / ``antminer``: configure version-rolling ``1fffe000`` with
  ``min-bit-count``, subscribe, authorize; 6-param submits in the BIP310
  masked form (``rolled_version & mask``) when a mask was granted.

It applies ``mining.set_difficulty`` to the next ``mining.notify`` (like
cpuminer), honours ``clean_jobs``, ``mining.set_extranonce``,
``mining.set_version_mask`` and ``client.reconnect``, and reconnects with
exponential backoff when the connection drops.

Hashing: coinbase = coinb1 ‖ extranonce1 ‖ extranonce2 ‖ coinb2, merkle root
from the branches as received, header with the notify prevhash word-swapped,
then nonces scanned with hashlib double SHA-256 (first 64 header bytes
pre-hashed once) in small batches that yield to the event loop, optionally
throttled to ``hashrate_limit``. Only shares that meet the current target
are submitted, unless ``submit_invalid`` asks for deliberately bad ones too.
The hashing code is independent of ``sv2.work`` on purpose: the miner is a
test oracle for the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import struct
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

log = logging.getLogger("devnet.miner")

Dialect = Literal["cpuminer", "bitaxe", "whatsminer", "antminer"]
DIALECTS: tuple[Dialect, ...] = ("cpuminer", "bitaxe", "whatsminer", "antminer")

DIFF1 = 0xFFFF << 208
MAX_TARGET = (1 << 256) - 1
MAX_LINE = 1 << 20
CPUMINER_SUBMIT_ID = 4
REJECTED_WITHOUT_ERROR = 0  # rejected_by_code key for {"result": false, "error": null}

_AGENTS: dict[str, str] = {
    "cpuminer": "cpuminer/2.5.1",
    "bitaxe": "bitaxe/BM1370/v2.4.0",
    "whatsminer": "whatsminer/v1.1",
    "antminer": "bmminer/2.0.0",
}
_U32 = struct.Struct("<I")
_sha256 = hashlib.sha256


class MinerError(Exception):
    """The pool refused the miner (authorize false, bad subscribe reply...)."""


def target_from_difficulty(difficulty: float) -> int:
    """``floor(DIFF1 / d)``, the float taken at its shortest decimal form (cpuminer's constant)."""
    if not difficulty > 0:
        raise ValueError(f"difficulty must be > 0, got {difficulty!r}")
    q = Fraction(repr(float(difficulty)))
    return min(MAX_TARGET, DIFF1 * q.denominator // q.numerator)


def sha256d(data: bytes) -> bytes:
    return _sha256(_sha256(data).digest()).digest()


def swap_words(data: bytes) -> bytes:
    """Reverse the bytes inside each 4-byte word (SV1 prevhash <-> header order)."""
    return b"".join(data[i : i + 4][::-1] for i in range(0, len(data), 4))


def deposit_bits(value: int, mask: int) -> int:
    """Spread the low bits of ``value`` over the set bits of ``mask`` (PDEP)."""
    out = 0
    bit = 0
    m = mask
    while m:
        low = m & -m
        if value >> bit & 1:
            out |= low
        bit += 1
        m ^= low
    return out


def scan_nonces(header76: bytes, start: int, count: int, target: int) -> list[tuple[int, bytes]]:
    """Hash nonces ``start .. start+count-1``; return (nonce, hash) of those meeting ``target``."""
    base = _sha256(header76[:64])
    tail = header76[64:76]
    pack = _U32.pack
    sha = _sha256
    found = []
    for nonce in range(start, start + count):
        h = base.copy()
        h.update(tail + pack(nonce))
        digest = sha(h.digest()).digest()
        if int.from_bytes(digest, "little") <= target:
            found.append((nonce, digest))
    return found


@dataclass(frozen=True, slots=True)
class MinerJob:
    """A mining.notify with what was in force when it arrived (target, extranonce1)."""

    job_id: str
    prevhash: bytes  # header byte order (already word-swapped back)
    coinb1: bytes
    coinb2: bytes
    merkle_branch: tuple[bytes, ...]
    version: int
    nbits: int
    ntime: int
    clean_jobs: bool
    target: int
    difficulty: float
    extranonce1: bytes
    extranonce2_size: int

    @classmethod
    def from_notify(
        cls, params: list[Any], *, difficulty: float, extranonce1: bytes, extranonce2_size: int
    ) -> MinerJob:
        if len(params) < 9:
            raise ValueError(f"mining.notify needs 9 params, got {len(params)}")
        job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params[:9]
        return cls(
            job_id=str(job_id),
            prevhash=swap_words(bytes.fromhex(prevhash)),
            coinb1=bytes.fromhex(coinb1),
            coinb2=bytes.fromhex(coinb2),
            merkle_branch=tuple(bytes.fromhex(b) for b in branch),
            version=int(version, 16),
            nbits=int(nbits, 16),
            ntime=int(ntime, 16),
            clean_jobs=bool(clean),
            target=target_from_difficulty(difficulty),
            difficulty=difficulty,
            extranonce1=extranonce1,
            extranonce2_size=extranonce2_size,
        )

    def merkle_root(self, extranonce2: bytes) -> bytes:
        root = sha256d(self.coinb1 + self.extranonce1 + extranonce2 + self.coinb2)
        for node in self.merkle_branch:
            root = sha256d(root + node)
        return root

    def header(self, extranonce2: bytes, version: int, nonce: int, ntime: int | None = None) -> bytes:
        """The 80-byte header for one attempt."""
        return (
            _U32.pack(version)
            + self.prevhash
            + self.merkle_root(extranonce2)
            + struct.pack("<III", self.ntime if ntime is None else ntime, self.nbits, nonce)
        )


@dataclass(slots=True)
class SubmittedShare:
    """One mining.submit and, once answered, its result (``record=True`` keeps these)."""

    job_id: str
    extranonce2: str
    ntime: int
    nonce: int
    version_bits: int | None
    hash: bytes
    meets_target: bool
    result: bool | None = None
    error: Any = None


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[dict[str, Any]] | None
    share: SubmittedShare | None = None


@dataclass(slots=True)
class _Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: dict[Any, deque[_Pending]] = field(default_factory=dict)
    next_id: int = 1


def _default_suggestion(hashrate_limit: float | None) -> float:
    """About two shares a second at the configured (or a typical CPU) hashrate.

    A hint that never slows a test down much. A real Bitaxe suggests its
    configured difficulty (1000 by default).
    """
    rate = hashrate_limit if hashrate_limit is not None else 300_000.0
    return max(1e-8, rate / 2 / 2**32)


class SyntheticMiner:
    """One simulated SV1 mining device (see the module docstring for the dialects)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        worker_name: str = "synthetic.worker",
        password: str = "x",
        dialect: Dialect = "cpuminer",
        hashrate_limit: float | None = None,
        extranonce2_start: int = 0,
        submit_invalid: bool = False,
        suggest_difficulty: float | None = None,
        roll_version: bool = True,
        reconnect: bool = True,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        request_timeout_s: float = 10.0,
        batch_size: int = 2048,
        nonces_per_work: int = 1 << 18,
        record: bool = False,
        user_agent: str | None = None,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")
        if hashrate_limit is not None and hashrate_limit <= 0:
            raise ValueError("hashrate_limit must be > 0")
        self.host = host
        self.port = port
        self.worker_name = worker_name
        self.password = password
        self.dialect: Dialect = dialect
        self.hashrate_limit = hashrate_limit
        self.extranonce2_start = extranonce2_start
        self.submit_invalid = submit_invalid
        self.suggested_difficulty = (
            _default_suggestion(hashrate_limit) if suggest_difficulty is None else suggest_difficulty
        )
        self.roll_version = roll_version
        self.reconnect = reconnect
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.batch_size = max(1, batch_size)
        self.nonces_per_work = max(self.batch_size, nonces_per_work)
        self.user_agent = user_agent or _AGENTS[dialect]
        self.record: list[SubmittedShare] | None = [] if record else None
        self._init_state()

    def _init_state(self) -> None:
        """Protocol state, counters and task plumbing of a miner that has not run yet."""
        # protocol state (reset on every connection unless noted)
        self.subscription_id: str | None = None  # kept across reconnects (cpuminer resumes with it)
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.difficulty = 1.0
        self.version_mask: int | None = None
        self.authorized = False
        self.job: MinerJob | None = None
        self._next_extranonce1: tuple[bytes, int] | None = None
        self._work_units = 0

        # counters (kept across reconnects)
        self.submitted = 0
        self.accepted = 0
        self.rejected = 0
        self.rejected_by_code: Counter[int] = Counter()
        self.invalid_submitted = 0
        self.unanswered = 0
        self.last_error: Any = None
        self.hashes = 0
        self.jobs_received = 0
        self.clean_jobs_received = 0
        self.connects = 0
        self.reconnect_requests = 0
        self.received: deque[dict[str, Any]] = deque(maxlen=256)  # last server messages, for tests

        self.connected = asyncio.Event()
        self.ready = asyncio.Event()  # authorized and holding a job
        self._job_changed = asyncio.Event()
        self._session: _Session | None = None
        self._closing = False
        self._redirect: tuple[str, int, float] | None = None
        self._task: asyncio.Task[None] | None = None
        self._rate_t0 = 0.0
        self._rate_hashes = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run the miner in a background task (``close()`` stops it)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"miner-{self.worker_name}")
        return self._task

    async def run(self) -> None:
        """Connect, mine, and reconnect with backoff until ``close()`` (or a drop without ``reconnect``)."""
        backoff = self.backoff_initial_s
        while not self._closing:
            good = False
            try:
                good = await self._run_session()
            except (OSError, TimeoutError, MinerError, ValueError) as e:
                self.last_error = str(e)
                log.info("miner %s: session ended: %s", self.worker_name, e)
            if self._closing:
                break
            redirect, self._redirect = self._redirect, None
            if redirect is not None:
                self.host, self.port, wait = redirect
                await asyncio.sleep(wait)
                backoff = self.backoff_initial_s
                continue
            if not self.reconnect:
                break
            if good:
                backoff = self.backoff_initial_s
            await asyncio.sleep(backoff)
            backoff = min(self.backoff_max_s, backoff * 2)

    async def close(self) -> None:
        """Stop mining and disconnect."""
        self._closing = True
        self._job_changed.set()
        s = self._session
        if s is not None:
            s.writer.close()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 2.0)
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def __aenter__(self) -> SyntheticMiner:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_for(self, predicate: Callable[[SyntheticMiner], bool], timeout: float = 10.0) -> None:
        """Poll ``predicate(self)`` until true; ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await asyncio.sleep(0.01)

    # -- helpers for tests ---------------------------------------------------

    async def request(self, method: str, params: list[Any], *, request_id: Any = None) -> dict[str, Any]:
        """Send one request and wait for its response (matched FIFO among equal ids)."""
        s = self._require_session()
        rid = request_id if request_id is not None else self._take_id(s)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        s.pending.setdefault(rid, deque()).append(_Pending(fut))
        await self._write(s, {"id": rid, "method": method, "params": params})
        async with asyncio.timeout(self.request_timeout_s):
            return await fut

    async def submit_raw(self, params: list[Any], *, request_id: Any = None) -> dict[str, Any]:
        """Send a ``mining.submit`` with exactly ``params``; return the response (counters untouched)."""
        return await self.request("mining.submit", params, request_id=request_id)

    async def send_line(self, line: str | dict[str, Any]) -> None:
        """Write one raw line (a dict is JSON-encoded); no response is awaited."""
        s = self._require_session()
        data = line if isinstance(line, str) else json.dumps(line, separators=(",", ":"))
        s.writer.write(data.encode() + (b"" if data.endswith("\n") else b"\n"))
        await s.writer.drain()

    def share_params(
        self,
        job_id: str,
        extranonce2: bytes,
        ntime: int,
        nonce: int,
        rolled_version: int | None = None,
        job_version: int | None = None,
    ) -> list[Any]:
        """The mining.submit params this dialect would send for a share.

        ``job_version`` defaults to the current job's version.
        """
        params: list[Any] = [self.worker_name, job_id, extranonce2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
        if job_version is None:
            job_version = self.job.version if self.job is not None else 0
        vbits = self._version_field(job_version, rolled_version)
        if vbits is not None:
            params.append(f"{vbits:08x}")
        return params

    # -- session ---------------------------------------------------------------

    def _require_session(self) -> _Session:
        if self._session is None:
            raise MinerError("not connected")
        return self._session

    def _take_id(self, s: _Session) -> int:
        rid = s.next_id
        s.next_id += 1
        return rid

    async def _write(self, s: _Session, obj: dict[str, Any]) -> None:
        s.writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        await s.writer.drain()

    async def _run_session(self) -> bool:
        """One connection. Returns True if it got as far as mining."""
        async with asyncio.timeout(self.connect_timeout_s):
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_LINE)
        s = _Session(reader, writer)
        self._session = s
        self.connects += 1
        self.authorized = False
        self.version_mask = None
        self.job = None
        self._next_extranonce1 = None
        self.ready.clear()
        self.connected.set()
        read_task = asyncio.create_task(self._read_loop(s), name=f"miner-read-{self.worker_name}")
        mine_task: asyncio.Task[None] | None = None
        try:
            await self._handshake(s)
            mine_task = asyncio.create_task(self._mine(), name=f"miner-hash-{self.worker_name}")
            await asyncio.wait({read_task, mine_task}, return_when=asyncio.FIRST_COMPLETED)
            if mine_task.done() and not mine_task.cancelled():
                exc = mine_task.exception()
                if exc is not None:
                    raise exc
            return True
        finally:
            self.connected.clear()
            self.ready.clear()
            self._session = None
            for t in (read_task, mine_task):
                if t is not None and not t.done():
                    t.cancel()
            for t in (read_task, mine_task):
                if t is not None:
                    with contextlib.suppress(BaseException):
                        await t
            for q in s.pending.values():
                for p in q:
                    if p.future is not None and not p.future.done():
                        p.future.cancel()
                    if p.share is not None:
                        self.unanswered += 1
            s.pending.clear()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _call(self, s: _Session, method: str, params: list[Any], rid: int) -> dict[str, Any]:
        resp = await self.request(method, params, request_id=rid)
        s.next_id = max(s.next_id, rid + 1)
        return resp

    async def _fire(self, s: _Session, method: str, params: list[Any], rid: int) -> None:
        # Servers (SRI) may never answer these: do not wait for a reply.
        s.next_id = max(s.next_id, rid + 1)
        await self._write(s, {"id": rid, "method": method, "params": params})

    async def _handshake(self, s: _Session) -> None:
        d = self.dialect
        if d == "cpuminer":
            sub = [self.user_agent] + ([self.subscription_id] if self.subscription_id else [])
            self._on_subscribe(await self._call(s, "mining.subscribe", sub, 1))
            self._on_authorize(await self._call(s, "mining.authorize", [self.worker_name, self.password], 2))
            s.next_id = CPUMINER_SUBMIT_ID  # never used for cpuminer submits, which are always id 4
            return
        if d == "bitaxe":
            ext_params: dict[str, Any] = {"version-rolling.mask": "ffffffff"}
        else:
            ext_params = {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}
        self._on_configure(await self._call(s, "mining.configure", [["version-rolling"], ext_params], 1))
        self._on_subscribe(await self._call(s, "mining.subscribe", [self.user_agent], 2))
        if d == "bitaxe":
            await self._fire(s, "mining.suggest_difficulty", [self.suggested_difficulty], 3)
            await self._fire(s, "mining.extranonce.subscribe", [], 4)
            self._on_authorize(await self._call(s, "mining.authorize", [self.worker_name, self.password], 5))
        else:
            self._on_authorize(await self._call(s, "mining.authorize", [self.worker_name, self.password], 3))

    def _on_configure(self, resp: dict[str, Any]) -> None:
        result = resp.get("result")
        if isinstance(result, dict) and result.get("version-rolling") is True:
            try:
                self.version_mask = int(str(result.get("version-rolling.mask", "0")), 16)
            except ValueError:
                self.version_mask = None
        else:
            self.version_mask = None

    def _on_subscribe(self, resp: dict[str, Any]) -> None:
        result = resp.get("result")
        if not isinstance(result, list) or len(result) < 3:
            raise MinerError(f"bad mining.subscribe reply: {resp!r}")
        subs, en1, en2_size = result[0], result[1], result[2]
        if isinstance(subs, list):
            for item in subs:
                if isinstance(item, list) and len(item) >= 2 and item[0] == "mining.notify":
                    self.subscription_id = str(item[1])
        self.extranonce1 = bytes.fromhex(en1)
        self.extranonce2_size = int(en2_size)
        if not 1 <= self.extranonce2_size <= 32:
            raise MinerError(f"unusable extranonce2_size {self.extranonce2_size}")

    def _on_authorize(self, resp: dict[str, Any]) -> None:
        if resp.get("result") is not True:
            raise MinerError(f"authorize refused: {resp.get('error')!r}")
        self.authorized = True
        if self.job is not None:
            self.ready.set()

    # -- reading ---------------------------------------------------------------

    async def _read_loop(self, s: _Session) -> None:
        while True:
            try:
                line = await s.reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                log.warning("miner %s: line too long, disconnecting", self.worker_name)
                return
            except (ConnectionError, OSError):
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                log.info("miner %s: ignoring non-JSON line %r", self.worker_name, line[:100])
                continue
            if not isinstance(msg, dict):
                continue
            self.received.append(msg)
            if msg.get("method"):
                try:
                    await self._on_server_message(s, msg)
                except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
                    log.info("miner %s: bad %s: %s", self.worker_name, msg.get("method"), e)
            else:
                self._on_response(s, msg)

    def _on_response(self, s: _Session, msg: dict[str, Any]) -> None:
        q = s.pending.get(msg.get("id"))
        if not q:
            return
        p = q.popleft()
        if not q:
            del s.pending[msg.get("id")]
        if p.future is not None and not p.future.done():
            p.future.set_result(msg)
        if p.share is not None:
            self._account(p.share, msg)

    def _account(self, share: SubmittedShare, msg: dict[str, Any]) -> None:
        ok = msg.get("result") is True and msg.get("error") is None
        share.result = ok
        share.error = msg.get("error")
        if ok:
            self.accepted += 1
            return
        self.rejected += 1
        err = msg.get("error")
        self.last_error = err
        code = REJECTED_WITHOUT_ERROR
        if isinstance(err, list) and err:
            code = _int_or(err[0], 20)
        elif isinstance(err, dict):
            code = _int_or(err.get("code"), 20)
        elif err is not None:
            code = 20
        self.rejected_by_code[code] += 1

    async def _on_server_message(self, s: _Session, msg: dict[str, Any]) -> None:
        method = msg["method"]
        params = msg.get("params") or []
        if method == "mining.set_difficulty":
            d = float(params[0])
            if d > 0:
                self.difficulty = d
        elif method == "mining.notify":
            en1, en2_size = self.extranonce1, self.extranonce2_size
            if self._next_extranonce1 is not None:
                en1, en2_size = self._next_extranonce1
                self._next_extranonce1 = None
                self.extranonce1, self.extranonce2_size = en1, en2_size
            job = MinerJob.from_notify(params, difficulty=self.difficulty, extranonce1=en1, extranonce2_size=en2_size)
            self.jobs_received += 1
            if job.clean_jobs:
                self.clean_jobs_received += 1
            # Like cpuminer, always move to the newest job; clean_jobs only
            # means the old ones are no longer worth submitting for.
            self.job = job
            self._job_changed.set()
            if self.authorized:
                self.ready.set()
        elif method == "mining.set_extranonce":
            self._next_extranonce1 = (bytes.fromhex(params[0]), int(params[1]))
        elif method == "mining.set_version_mask":
            self.version_mask = int(params[0], 16)
        elif method == "client.reconnect":
            self.reconnect_requests += 1
            host = str(params[0]) if len(params) > 0 and params[0] else self.host
            port = int(params[1]) if len(params) > 1 and params[1] not in (None, "") else self.port
            wait = float(params[2]) if len(params) > 2 and params[2] is not None else 0.0
            self._redirect = (host, port, max(0.0, min(wait, 60.0)))
            s.writer.close()
        elif method == "mining.ping":
            if msg.get("id") is not None:
                await self._write(s, {"id": msg["id"], "result": "pong", "error": None})
        elif method == "client.get_version":
            if msg.get("id") is not None:
                await self._write(s, {"id": msg["id"], "result": self.user_agent, "error": None})
        elif method == "client.show_message":
            log.info("miner %s: pool says %r", self.worker_name, params)
        else:
            log.debug("miner %s: ignoring %s", self.worker_name, method)

    # -- hashing ---------------------------------------------------------------

    def _rolled_version(self, job: MinerJob, unit: int) -> int:
        mask = self.version_mask
        if not self.roll_version or not mask:
            return job.version
        bits = deposit_bits(unit + 1, mask)
        return (job.version & ~mask & 0xFFFFFFFF) | bits

    def _version_field(self, job_version: int, rolled_version: int | None) -> int | None:
        """The 6th submit param for this dialect, or None for a 5-param submit."""
        if self.dialect == "cpuminer":
            return None
        rolled = job_version if rolled_version is None else rolled_version
        if self.dialect == "bitaxe":
            return (rolled ^ job_version) & 0xFFFFFFFF
        if self.version_mask is None:
            return None
        return rolled & self.version_mask

    async def _throttle(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.hashrate_limit is None:
            await asyncio.sleep(0)
            return
        if now - self._rate_t0 > 5.0:
            self._rate_t0, self._rate_hashes = now, 0
        self._rate_hashes += n
        due = self._rate_t0 + self._rate_hashes / self.hashrate_limit
        await asyncio.sleep(max(0.0, due - now))

    async def _mine(self) -> None:
        self._rate_t0, self._rate_hashes = asyncio.get_running_loop().time(), 0
        en2_counter = self.extranonce2_start
        while not self._closing:
            job = self.job
            if job is None or not self.authorized:
                self._job_changed.clear()
                await self._job_changed.wait()
                continue
            size = job.extranonce2_size
            en2 = (en2_counter % (1 << (8 * size))).to_bytes(size, "little")  # cpuminer counts LE
            en2_counter += 1
            version = self._rolled_version(job, self._work_units)
            self._work_units += 1
            header76 = job.header(en2, version, 0)[:76]
            nonce = 0
            while nonce < self.nonces_per_work and self.job is job and not self._closing:
                count = min(self.batch_size, self.nonces_per_work - nonce)
                found = scan_nonces(header76, nonce, count, job.target)
                self.hashes += count
                for n, h in found:
                    await self._submit(job, en2, n, version, h, True)
                    if self.submit_invalid:
                        await self._submit_invalid(job, en2, header76, n, version)
                nonce += count
                await self._throttle(count)

    async def _submit_invalid(self, job: MinerJob, en2: bytes, header76: bytes, after: int, version: int) -> None:
        # The next nonce that does NOT meet the target (almost always after+1).
        n = (after + 1) & 0xFFFFFFFF
        for _ in range(64):
            h = sha256d(header76 + _U32.pack(n))
            if int.from_bytes(h, "little") > job.target:
                self.invalid_submitted += 1
                await self._submit(job, en2, n, version, h, False)
                return
            n = (n + 1) & 0xFFFFFFFF

    async def _submit(self, job: MinerJob, en2: bytes, nonce: int, version: int, h: bytes, meets: bool) -> None:
        s = self._session
        if s is None:
            return
        params = self.share_params(job.job_id, en2, job.ntime, nonce, version, job.version)
        share = SubmittedShare(
            job.job_id, en2.hex(), job.ntime, nonce,
            int(params[5], 16) if len(params) > 5 else None, h, meets,
        )
        rid = CPUMINER_SUBMIT_ID if self.dialect == "cpuminer" else self._take_id(s)
        s.pending.setdefault(rid, deque()).append(_Pending(None, share))
        self.submitted += 1
        if self.record is not None:
            self.record.append(share)
        try:
            await self._write(s, {"id": rid, "method": "mining.submit", "params": params})
        except (ConnectionError, OSError):
            return


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


async def run_miners(
    n: int,
    host: str,
    port: int,
    *,
    duration: float | None = None,
    worker_prefix: str = "synthetic",
    dialects: Iterable[Dialect] = ("cpuminer",),
    **kwargs: Any,
) -> list[SyntheticMiner]:
    """Run ``n`` miners against ``host:port`` (dialects cycled) for ``duration`` seconds.

    With ``duration=None`` they run until the calling task is cancelled. The
    miners are closed either way and returned, so their counters can be read.
    """
    kinds = list(dialects) or ["cpuminer"]
    miners = [
        SyntheticMiner(host, port, worker_name=f"{worker_prefix}.{i + 1}", dialect=kinds[i % len(kinds)], **kwargs)
        for i in range(n)
    ]
    for m in miners:
        m.start()
    try:
        if duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)
    finally:
        await asyncio.gather(*(m.close() for m in miners), return_exceptions=True)
    return miners


__all__ = [
    "DIALECTS",
    "Dialect",
    "MinerError",
    "MinerJob",
    "SubmittedShare",
    "SyntheticMiner",
    "run_miners",
    "scan_nonces",
    "target_from_difficulty",
]
