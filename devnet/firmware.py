"""Scripted SV1 clients that behave like real mining firmware (docs/FIRMWARE.md, section 5).

Owns one client class per firmware profile. Each speaks the profile's connect
sequence (order, ids, params, what it waits for), treats what the proxy sends
the way that firmware does (when a new difficulty takes effect, what a
re-sent notify or ``clean_jobs`` does to the running work, which extranonce2
and nonce it restarts from) and submits in the firmware's form (5 or 6
params, masked or XOR version bits, nonce padding, request ids).

They mine for real: ``devnet.miner`` builds the header from the notify and
scans nonces with sha256d (``MinerJob``, ``scan_nonces``); only shares that
meet the target the firmware believes in are submitted. Every submit is kept
(``submitted``) with its outcome, so a test can count accepted and rejected
shares (by SV1 error code and message) and duplicates, i.e. the same header
(same work) submitted twice, whatever the job id. ``hashrate`` may be changed
while running (a throttle, like sleeping between hashes) to make a proxy's
vardiff retarget up and down. ``violations`` lists what would break the real
device (a notify before the subscribe reply for a Bitaxe, a difficulty below
1 for Braiins OS, ...); such events are recorded, not raised. A client makes
one connection and does not reconnect; ``pause()`` stops hashing but keeps the
connection so that the replies to the last submits still arrive.

Profiles (FIRMWARE.md P-numbers): P0 ``CpuMiner``, P2 ``BraiinsOs``, P5
``Whatsminer``, P7 ``EspMiner``, P8 ``NerdMiner``, P9 ``CpuMinerOpt``,
P10 ``BfgMiner``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from devnet.miner import MinerJob, deposit_bits, scan_nonces, target_from_difficulty

log = logging.getLogger("devnet.firmware")

WORKER = "bc1qexample.w1"
MAX_LINE = 1 << 20
BFG_POOL_DIFF1 = (1 << 224) - 1  # bfgminer's diff-1 for an integer "pool difficulty"
NERD_NONCE_START = 0xDA54E700
MAX_KNOWN_JOBS = 256


@dataclass(slots=True)
class Submitted:
    """One mining.submit as written, and its reply once it arrived."""

    job_id: str
    extranonce2: str
    ntime: int
    nonce: int
    version: int | None  # the 6th param as sent (None: 5-param submit)
    header_hash: bytes
    difficulty: float  # what the firmware believed the share was worth
    accepted: bool | None = None  # None: no reply yet
    error: tuple[int, str] | None = None

    @property
    def key(self) -> tuple[str, str, int, int, int | None]:
        """(sv1 job id, extranonce2, ntime, nonce, version) as submitted."""
        return (self.job_id, self.extranonce2, self.ntime, self.nonce, self.version)


@dataclass(slots=True)
class Work:
    """What the hashing loop is scanning: one job, one extranonce2, one version."""

    job: MinerJob
    target: int
    difficulty: float
    en2_index: int
    extranonce2: bytes
    version: int
    nonce: int
    end: int
    header76: bytes = b""


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: dict[str, deque[asyncio.Future[dict[str, Any]] | Submitted]] = field(default_factory=dict)


def _key(rid: Any) -> str:
    return json.dumps(rid)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class FirmwareClient:
    """Common machinery; subclasses set the profile (see the module docstring)."""

    profile: ClassVar[str] = "base"
    user_agent: ClassVar[str] = ""
    submit_id: ClassVar[int | None] = None  # fixed id of every submit (cpuminer: 4)

    def __init__(
        self, host: str, port: int, *, worker: str = WORKER, password: str = "x",
        hashrate: float = 20_000.0, batch: int = 256, nonces_per_work: int = 4096,
    ) -> None:
        self.host, self.port, self.worker, self.password = host, port, worker, password
        self.hashrate = hashrate
        self.batch = batch
        self.nonces_per_work = nonces_per_work
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.version_mask: int | None = None
        self.difficulty: float | None = None  # last set_difficulty value taken
        self.jobs: dict[str, MinerJob] = {}  # known sv1 job ids (for profiles that check)
        self.work: Work | None = None
        self.queued: MinerJob | None = None  # a non-clean new job waiting for the next work unit
        self.en2_counter = 0
        self.submitted: list[Submitted] = []
        self.difficulties: list[float] = []  # every set_difficulty received
        self.notifies = 0
        self.violations: list[str] = []
        self.hashes = 0
        self.dropped = 0  # shares found on a job a clean notify dropped before they were sent
        self.paused = False  # set by pause(): stop hashing, stay connected (to collect replies)
        self.ready = asyncio.Event()  # authorized
        self._conn: _Conn | None = None
        self._next_id = 1
        self._work_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rate_t0 = 0.0
        self._rate_hashes = 0

    # -- results ---------------------------------------------------------------

    @property
    def accepted(self) -> int:
        return sum(1 for s in self.submitted if s.accepted is True)

    @property
    def rejected(self) -> Counter[tuple[int, str]]:
        return Counter(s.error or (0, "") for s in self.submitted if s.accepted is False)

    @property
    def unanswered(self) -> int:
        return sum(1 for s in self.submitted if s.accepted is None)

    def duplicates(self) -> list[Submitted]:
        """Submits whose header (the work itself) was already submitted, whatever the job id."""
        seen: set[bytes] = set()
        dups = []
        for s in self.submitted:
            if s.header_hash in seen:
                dups.append(s)
            seen.add(s.header_hash)
        return dups

    def retargets(self) -> tuple[int, int]:
        """(ups, downs) among the set_difficulty values received."""
        d = self.difficulties
        ups = sum(1 for a, b in itertools.pairwise(d) if b > a)
        downs = sum(1 for a, b in itertools.pairwise(d) if b < a)
        return ups, downs

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"firmware-{self.profile}")
        return self._task

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def pause(self) -> None:
        """Stop hashing (shares already found are still sent) but keep the connection."""
        self.paused = True

    async def __aenter__(self) -> FirmwareClient:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_LINE)
        self._conn = _Conn(reader, writer)
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.handshake()
            tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._mine())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t.done():
                    t.result()  # a bug in the client surfaces in the test
        except (ConnectionError, OSError) as e:
            log.info("%s: connection ended: %s", self.profile, e)
        finally:
            for t in tasks:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
            writer.close()

    # -- wire ------------------------------------------------------------------

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def write_nowait(self, msg: dict[str, Any]) -> None:
        assert self._conn is not None
        self._conn.writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    async def write(self, msg: dict[str, Any]) -> None:
        self.write_nowait(msg)
        assert self._conn is not None
        await self._conn.writer.drain()

    def send_nowait(self, method: str, params: list[Any], rid: Any) -> asyncio.Future[dict[str, Any]]:
        """Write a request; the returned future gets its reply (FIFO among equal ids)."""
        assert self._conn is not None
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if rid is not None:
            self._conn.pending.setdefault(_key(rid), deque()).append(fut)
        self.write_nowait({"id": rid, "method": method, "params": params})
        return fut

    async def send(self, method: str, params: list[Any], rid: Any) -> asyncio.Future[dict[str, Any]]:
        fut = self.send_nowait(method, params, rid)
        assert self._conn is not None
        await self._conn.writer.drain()
        return fut

    async def read_line(self) -> dict[str, Any]:
        assert self._conn is not None
        line = await self._conn.reader.readline()
        if not line:
            raise ConnectionError("proxy closed the connection")
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise ValueError(f"not a JSON object: {line[:100]!r}")
        return msg

    async def reply(self, fut: asyncio.Future[dict[str, Any]], timeout: float = 10.0) -> dict[str, Any]:
        """Read and handle lines until ``fut`` has its reply (handshake phase, before the read loop)."""
        async with asyncio.timeout(timeout):
            while not fut.done():
                await self._handle(await self.read_line())
        return fut.result()

    async def _read_loop(self) -> None:
        while True:
            try:
                msg = await self.read_line()
            except ValueError as e:
                log.info("%s: ignoring %s", self.profile, e)
                continue
            await self._handle(msg)

    async def _handle(self, msg: dict[str, Any]) -> None:
        if msg.get("method"):
            self.on_message(str(msg["method"]), msg.get("params") or [], msg.get("id"))
            return
        assert self._conn is not None
        q = self._conn.pending.get(_key(msg.get("id")))
        if not q:
            return
        p = q.popleft()
        if isinstance(p, Submitted):
            p.accepted = msg.get("result") is True and msg.get("error") is None
            err = msg.get("error")
            if not p.accepted:
                p.error = (_int(err[0]), str(err[1])) if isinstance(err, list) and len(err) >= 2 else (0, str(err))
        elif not p.done():
            p.set_result(msg)

    # -- what the proxy sends ----------------------------------------------------

    def on_message(self, method: str, params: list[Any], rid: Any) -> None:
        if method == "mining.set_difficulty":
            self.on_set_difficulty(params[0])
        elif method == "mining.notify":
            self.notifies += 1
            self._on_notify_params(params)
        elif method == "mining.set_version_mask":
            self.version_mask = int(params[0], 16)

    def on_set_difficulty(self, value: Any) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            self.violations.append(f"set_difficulty {value!r} is not a positive number")
            return
        self.difficulties.append(float(value))
        self.difficulty = float(value)

    def _on_notify_params(self, params: list[Any]) -> None:
        if not self.extranonce1:
            self.violations.append("mining.notify before the subscribe reply")
            return
        if self.difficulty is None:  # FIRMWARE.md section 4 rule 5 (BOS would not even start)
            self.violations.append("mining.notify before any mining.set_difficulty")
        job = MinerJob.from_notify(
            params, difficulty=self.difficulty or 1.0,
            extranonce1=self.extranonce1, extranonce2_size=self.extranonce2_size,
        )
        job = replace(job, target=self.target_for(job.difficulty))
        known = job.job_id in self.jobs
        if job.clean_jobs:
            self.jobs.clear()
        self.jobs[job.job_id] = job
        while len(self.jobs) > MAX_KNOWN_JOBS:
            del self.jobs[next(iter(self.jobs))]
        self.on_notify(job, known)

    def target_for(self, difficulty: float) -> int:
        return target_from_difficulty(difficulty)

    def on_notify(self, job: MinerJob, known: bool) -> None:
        """Default (pooler cpuminer): a known id is no new work; clean restarts, else next round."""
        if known:
            return
        if job.clean_jobs or self.work is None:
            self.start_work(job, self.en2_counter)
        else:
            self.queued = job

    # -- work ------------------------------------------------------------------

    def rolled_version(self, job: MinerJob, en2_index: int) -> int:
        mask = self.version_mask
        if not mask:
            return job.version
        return (job.version & ~mask & 0xFFFFFFFF) | deposit_bits(en2_index + 1, mask)

    def extranonce2(self, en2_index: int, size: int) -> bytes:
        return (en2_index % (1 << (8 * size))).to_bytes(size, "little")  # counted LE, like cpuminer

    def start_work(self, job: MinerJob, en2_index: int, nonce: int = 0) -> None:
        """Hash ``job`` from (en2_index, nonce): a restart when the same values come again."""
        en2 = self.extranonce2(en2_index, job.extranonce2_size)
        version = self.rolled_version(job, en2_index)
        w = Work(job, job.target, job.difficulty, en2_index, en2, version, nonce, nonce + self.nonces_per_work)
        w.header76 = job.header(en2, version, 0)[:76]
        self.work = w
        self.en2_counter = en2_index + 1
        self.queued = None
        self._work_changed.set()

    def next_unit(self, w: Work) -> None:
        """The scan round of ``w`` is done: the queued job, else the next extranonce2."""
        self.start_work(self.queued or w.job, self.en2_counter)

    def mining_allowed(self) -> bool:
        return True

    def set_running_difficulty(self, difficulty: float) -> None:
        """For firmware that apply a new difficulty to the running job at once."""
        if self.work is not None:
            self.work.target = self.target_for(difficulty)
            self.work.difficulty = difficulty

    async def _throttle(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._rate_t0 > 1.0:  # a short window, so a hashrate change shows at once
            self._rate_t0, self._rate_hashes = now, 0
        self._rate_hashes += n
        await asyncio.sleep(max(0.0, self._rate_t0 + self._rate_hashes / self.hashrate - now))

    async def _mine(self) -> None:
        while True:
            w = self.work
            if w is None or self.paused or not self.mining_allowed():
                self._work_changed.clear()
                await self._work_changed.wait()
                continue
            if w.nonce >= w.end:
                self.next_unit(w)
                continue
            count = min(self.batch, w.end - w.nonce)
            found = scan_nonces(w.header76, w.nonce, count, w.target)
            w.nonce += count
            self.hashes += count
            for nonce, h in found:
                await self.submit(w, nonce, h)
            await self._throttle(count)

    # -- submitting --------------------------------------------------------------

    def version_param(self, w: Work) -> str | None:
        return None

    def nonce_param(self, nonce: int) -> str:
        return f"{nonce:08x}"

    async def submit(self, w: Work, nonce: int, h: bytes) -> None:
        assert self._conn is not None
        if w.job.job_id not in self.jobs:
            # A clean notify dropped the job while its shares waited to be written: cpuminer
            # and bfgminer do not send those (Avalon would; no profile here does).
            self.dropped += 1
            return
        v = self.version_param(w)
        params: list[Any] = [self.worker, w.job.job_id, w.extranonce2.hex(), f"{w.job.ntime:08x}", self.nonce_param(nonce)]
        if v is not None:
            params.append(v)
        rid = self.submit_id if self.submit_id is not None else self._take_id()
        share = Submitted(w.job.job_id, w.extranonce2.hex(), w.job.ntime, nonce,
                          int(v, 16) if v is not None else None, h, w.difficulty)
        self.submitted.append(share)
        self._conn.pending.setdefault(_key(rid), deque()).append(share)
        await self.write({"id": rid, "method": "mining.submit", "params": params})

    # -- connect sequence --------------------------------------------------------

    async def handshake(self) -> None:
        raise NotImplementedError

    def on_subscribe_reply(self, resp: dict[str, Any]) -> bool:
        result = resp.get("result")
        if not isinstance(result, list) or len(result) < 3 or not result[1]:
            self.violations.append(f"unusable subscribe reply {resp!r}")
            return False
        self.extranonce1 = bytes.fromhex(result[1])
        self.extranonce2_size = int(result[2])
        return True

    def on_configure_reply(self, resp: dict[str, Any]) -> None:
        result = resp.get("result")
        if isinstance(result, dict) and result.get("version-rolling") is True:
            self.version_mask = int(str(result.get("version-rolling.mask", "0")), 16)

    async def authorized(self, resp: dict[str, Any]) -> None:
        if resp.get("result") is not True:
            raise ConnectionError(f"authorize refused: {resp!r}")
        self.ready.set()


class CpuMiner(FirmwareClient):
    """P0, pooler cpuminer 2.5.1: subscribe, authorize; a re-sent known job id is ignored."""

    profile = "cpuminer"
    user_agent = "cpuminer/2.5.1"
    submit_id = 4

    async def handshake(self) -> None:
        if not self.on_subscribe_reply(await self.reply(await self.send("mining.subscribe", [self.user_agent], 1))):
            raise ConnectionError("subscribe failed")
        await self.authorized(await self.reply(await self.send("mining.authorize", [self.worker, self.password], 2)))


class BfgMiner(FirmwareClient):
    """P10, bfgminer 5.5.0: every notify restarts work at extranonce2 0, nonce 0 (known id or not)."""

    profile = "bfgminer"
    user_agent = "bfgminer/5.5.0"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.txlist_requests: list[asyncio.Future[dict[str, Any]]] = []

    async def handshake(self) -> None:
        if not self.on_subscribe_reply(await self.reply(await self.send("mining.subscribe", [self.user_agent], 0))):
            raise ConnectionError("subscribe failed")
        await self.authorized(await self.reply(await self.send("mining.authorize", [self.worker, self.password], "auth")))

    def target_for(self, difficulty: float) -> int:
        # An integer is a "pool difficulty" on bfgminer's own diff-1 (FIRMWARE.md table 2, row 11).
        if difficulty == int(difficulty):
            return BFG_POOL_DIFF1 // int(difficulty)
        return target_from_difficulty(difficulty)

    def on_notify(self, job: MinerJob, known: bool) -> None:
        self.start_work(job, 0)
        if job.merkle_branch:  # asks for the block contents; any answer (even an error) will do
            self.txlist_requests.append(
                self.send_nowait("mining.get_transactions", [job.job_id], f"txlist{job.job_id}"))


class CpuMinerOpt(FirmwareClient):
    """P9, cpuminer-opt 26.1: extranonce.subscribe after authorize, a string suggest_difficulty;
    every notify restarts, but the extranonce2 counter continues for the same id (no repeats)."""

    profile = "cpuminer-opt"
    user_agent = "cpuminer-opt-26.1-x64L"
    submit_id = 4

    def __init__(self, *args: Any, suggest: float | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.suggest = suggest
        self.extranonce_subscribe_reply: dict[str, Any] | None = None

    async def handshake(self) -> None:
        if not self.on_subscribe_reply(await self.reply(await self.send("mining.subscribe", [self.user_agent], 1))):
            raise ConnectionError("subscribe failed")
        await self.authorized(await self.reply(await self.send("mining.authorize", [self.worker, self.password], 2)))
        fut = await self.send("mining.extranonce.subscribe", [], 3)
        with contextlib.suppress(TimeoutError):
            self.extranonce_subscribe_reply = await self.reply(fut, timeout=3.0)
        if self.suggest is not None:  # the keepalive form: id 1 again, the number as a string
            await self.send("mining.suggest_difficulty", [f"{self.suggest:f}"], 1)

    def on_notify(self, job: MinerJob, known: bool) -> None:
        same = self.work is not None and self.work.job.job_id == job.job_id
        self.start_work(job, self.en2_counter if same else 0)


class EspMiner(FirmwareClient):
    """P7, ESP-Miner (Bitaxe) v2.15.0: configure/subscribe/authorize back to back, XOR version
    field, suggest_difficulty after authorize; a known id is ignored unless clean_jobs."""

    profile = "esp-miner"
    user_agent = "bitaxe/BM1370/v2.15.0"

    def __init__(self, *args: Any, suggest: float = 1000, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.suggest = suggest

    async def handshake(self) -> None:
        configure = await self.send(
            "mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}], 1)
        subscribe = await self.send("mining.subscribe", [self.user_agent], 2)
        authorize = await self.send("mining.authorize", [self.worker, self.password], 3)
        self.on_configure_reply(await self.reply(configure))
        if not self.on_subscribe_reply(await self.reply(subscribe)):
            raise ConnectionError("subscribe failed")
        await self.authorized(await self.reply(authorize))
        await self.send("mining.suggest_difficulty", [self.suggest], 4)
        self._next_id = 5

    def on_notify(self, job: MinerJob, known: bool) -> None:
        if known and not job.clean_jobs:
            return  # a duplicate notify: ignored
        if job.clean_jobs or self.work is None:
            self.start_work(job, 0)  # the clean flush restarts extranonce2 at 0
        else:
            self.queued = job

    def version_param(self, w: Work) -> str | None:
        return f"{(w.version ^ w.job.version) & 0xFFFFFFFF:08x}"


class Whatsminer(FirmwareClient):
    """P5, Whatsminer (btminer): suggest_difficulty as the first line, configure, subscribe with
    a session id, authorize; masked 6th param; a re-notify continues the extranonce2 counter,
    a clean one (or a new prevhash) resets it to 0. A new difficulty applies from the next
    notify (ckolivas cgminer's queue of one value per notify is not modelled)."""

    profile = "whatsminer"
    user_agent = "whatsminer/v1.0"

    async def handshake(self) -> None:
        await self.send("mining.suggest_difficulty", [65536], 1)
        configure = await self.send("mining.configure", [["version-rolling"], {
            "version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 16}], 2)
        self.on_configure_reply(await self.reply(configure))
        subscribe = await self.send("mining.subscribe", [self.user_agent, "27dce2daa197369b"], 3)
        if not self.on_subscribe_reply(await self.reply(subscribe)):
            raise ConnectionError("subscribe failed")
        if self.extranonce2_size > 8:
            self.violations.append(f"extranonce2_size {self.extranonce2_size} > 8: never submits")
        await self.authorized(await self.reply(await self.send("mining.authorize", [self.worker, self.password], 4)))
        self._next_id = 5

    def on_notify(self, job: MinerJob, known: bool) -> None:
        new_tip = self.work is not None and self.work.job.prevhash != job.prevhash
        if job.clean_jobs or new_tip or self.work is None:
            self.start_work(job, 0)
        else:
            self.queued = job

    def version_param(self, w: Work) -> str | None:
        return f"{w.version & (self.version_mask or 0):08x}"


class BraiinsOs(FirmwareClient):
    """P2, Braiins OS (open bOSminer): configure first (mask 1fffe000 or close), 4-param
    subscribe and authorize with an empty password back to back; mines only after authorize,
    the subscribe reply and one set_difficulty; the difficulty (an integer) applies at once;
    every notify replaces the job and hashes a fixed extranonce2 again."""

    profile = "braiins-os"
    user_agent = "Braiins OS 2019-06-05"

    def __init__(self, *args: Any, cpu_difficulty: bool = False, **kw: Any) -> None:
        # cpu_difficulty: keep fractional difficulties instead of truncating them (a test at
        # CPU speed needs difficulties < 1, which the real firmware turns into 0 and divides by).
        super().__init__(*args, **kw)
        self.cpu_difficulty = cpu_difficulty
        self.password = ""
        self._authorized = False

    async def handshake(self) -> None:
        configure = await self.send("mining.configure", [["version-rolling"], {
            "version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 16}], 0)
        resp = await self.reply(configure)
        result = resp.get("result")
        if not (isinstance(result, dict) and result.get("version-rolling") is True
                and result.get("version-rolling.mask") == "1fffe000"):
            self.violations.append(f"configure reply refused by BOS: {resp!r}")
            raise ConnectionError("BOS requires version rolling with mask 1fffe000")
        self.version_mask = 0x1FFFE000
        subscribe = await self.send("mining.subscribe", [self.user_agent, None, f"{self.host}:{self.port}", None], 1)
        authorize = await self.send("mining.authorize", [self.worker, ""], 3)
        if not self.on_subscribe_reply(await self.reply(subscribe)):
            raise ConnectionError("subscribe failed")
        await self.authorized(await self.reply(authorize))
        self._authorized = True
        self._next_id = 4

    def on_set_difficulty(self, value: Any) -> None:
        super().on_set_difficulty(value)
        if self.difficulty is None:
            return
        if self.difficulty < 1 and not self.cpu_difficulty:
            self.violations.append(f"difficulty {self.difficulty} < 1: BOS truncates it to 0")
        d = self.difficulty if self.cpu_difficulty else float(max(1, int(self.difficulty)))
        self.difficulty = d
        self.set_running_difficulty(d)
        self._work_changed.set()

    def on_notify(self, job: MinerJob, known: bool) -> None:
        self.start_work(job, 0)  # extranonce2 is fixed per connection

    def next_unit(self, w: Work) -> None:
        w.end += self.nonces_per_work  # the same extranonce2: go on with the nonce range

    def mining_allowed(self) -> bool:
        return self._authorized and self.difficulty is not None

    def version_param(self, w: Work) -> str | None:
        return f"{w.version & 0x1FFFE000:08x}"


class NerdMiner(FirmwareClient):
    """P8, NerdMiner v2 V1.8.3: takes the one line after subscribe as its reply, authorize and
    suggest_difficulty without waiting; every notify restarts at nonce 0xDA54E700 with the fixed
    extranonce2 00000001; nonces submitted without zero padding."""

    profile = "nerdminer"
    user_agent = "NerdMinerV2/V1.8.3"

    async def handshake(self) -> None:
        await self.send("mining.subscribe", [self.user_agent], 1)
        assert self._conn is not None
        self._conn.pending.clear()  # the next line IS the reply, whatever it is
        if not self.on_subscribe_reply(await self.read_line()):
            raise ConnectionError("first line after subscribe is not its reply")
        authorize = await self.send("mining.authorize", [self.worker, self.password], 2)
        await self.send("mining.suggest_difficulty", [0.00015], 3)
        self._next_id = 4
        await self.authorized(await self.reply(authorize))

    def extranonce2(self, en2_index: int, size: int) -> bytes:
        if size == 2:
            return bytes.fromhex("0001")
        if size == 8:
            return (1).to_bytes(8, "big")
        return bytes.fromhex("00000001")

    def on_notify(self, job: MinerJob, known: bool) -> None:
        self.start_work(job, 0, NERD_NONCE_START)

    def next_unit(self, w: Work) -> None:
        w.end = min(w.end + self.nonces_per_work, 1 << 32)

    def nonce_param(self, nonce: int) -> str:
        return f"{nonce:x}"


PROFILES: dict[str, type[FirmwareClient]] = {
    c.profile: c for c in (CpuMiner, BfgMiner, CpuMinerOpt, EspMiner, Whatsminer, BraiinsOs, NerdMiner)
}

__all__ = [
    "PROFILES",
    "BfgMiner",
    "BraiinsOs",
    "CpuMiner",
    "CpuMinerOpt",
    "EspMiner",
    "FirmwareClient",
    "NerdMiner",
    "Submitted",
    "Whatsminer",
    "Work",
]
