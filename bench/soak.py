"""A bounded hostile soak of the real proxy process (issue 11): does every answered share reach
the share log exactly once while the proxy is attacked, and does it stay up and bounded?

Everything runs on 127.0.0.1 and stops by itself:

* a ClickHouse HTTP endpoint in its own process (the tests' chdb-backed front, run as a child
  process the way bench/bench_shares.py does; nothing from tests/ is imported here), so the
  soak can take the database away and bring it back on the same port;
* the dev pool as a ``tproxy pool`` child process (so it can be frozen with SIGSTOP);
* the proxy as a ``tproxy run`` child process: monitoring on with a token, share log over HTTP;
* canary miners (devnet.hostile.Sv1Script) submitting shares throughout at a miner difficulty
  so low that every nonce is valid; each records every share it was answered for, and how;
* hostile phases, each one bounded function: bad text, big numbers, floods, slow readers,
  dribbled first lines, monitoring connection and request floods, a DB outage, a pool hang.

At the end the canaries stop, the share log is drained (monitoring's share-log counters), the
proxy gets SIGTERM, and the rows in ClickHouse are matched to the canaries' answered shares
(by nonce: canary i owns nonces i * 10**7 + k). Printed: received (the proxy's count for the
canaries), answered, logged, lost (answered, no row), duplicated (rows sharing (run_id,
share_seq)), peak RSS and descriptors of the proxy, failed /health and /metrics probes, the
first Traceback of the proxy's log. Exit 0 iff lost == 0, duplicated == 0 and no Traceback.

    .venv/bin/python bench/soak.py [--duration 120] [--canaries 20] [--rate 2] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from devnet import hostile  # noqa: E402
from devnet.hostile import HostileTally, Sv1Script  # noqa: E402
from sv2.keys import encode_public_key, encode_secret_key, generate_keypair  # noqa: E402

MINER_DIFF = 1e-10  # the target clamps to 2**256-1: every nonce is a valid share, no hashing
POOL_DIFF = 2.0**-32 / 0.25  # about a quarter of the shares meet the pool target and are forwarded
NONCE_SPAN = 10_000_000  # canary i submits nonces i * NONCE_SPAN + 1, + 2, ...
HOSTILE_NONCE = 0xF000_0000  # hostile miners' nonces, far from every canary's
INSTANCE = "soak"
TOKEN = "soak-token-0123456789"
# The canaries' names: most plain, a few hostile (their rows must be logged like any other).
CANARY_ODD_NAMES = ("\ud800lone", "nul\x00byte", "ctl\x01\x1b[31m\r\n", "long-" + "y" * 10_000)
FRONT_CODE = (
    "import sys, threading; from devnet.chdb_front import ChdbHttpFront; "
    "f = ChdbHttpFront(sys.argv[1], int(sys.argv[2])); f.start(); print(f.url, flush=True); "
    "threading.Event().wait()"
)


# --------------------------------------------------------------------------- tallies


@dataclass
class Event:
    t: float  # seconds since the soak started
    what: str


@dataclass
class Tally:
    """Everything the soak counts; ``events`` are what went wrong, with their time."""

    answered: dict[int, bool] = field(default_factory=dict)  # nonce -> answered "accepted"?
    unanswered: int = 0  # submitted, no reply (timeout or connection lost)
    reconnects: int = 0
    received: dict[int, int] = field(default_factory=dict)  # proxy's count per canary client_id
    health_fail: int = 0
    metrics_fail: int = 0
    probes: int = 0
    peak_rss_kb: int = 0
    peak_fds: int = 0
    events: list[Event] = field(default_factory=list)
    share_log: dict[str, Any] = field(default_factory=dict)
    proxy_rc: int | None = None


@dataclass
class Phase:
    name: str
    start: float
    end: float = -1.0
    hostile: HostileTally = field(default_factory=HostileTally)  # what its clients did and saw
    rss_kb: tuple[int, int] = (0, 0)  # the proxy's VmRSS when the phase started and ended


@dataclass
class Soak:
    """The running soak: where things are, the clock, the tallies."""

    args: argparse.Namespace
    tmp: Path
    sv1_port: int
    mon_port: int
    pool_port: int
    db_port: int
    t0: float = field(default_factory=time.monotonic)
    tally: Tally = field(default_factory=Tally)
    phases: list[Phase] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, what: str) -> None:
        self.tally.events.append(Event(self.now(), what))

    @property
    def mon(self) -> str:
        return f"http://127.0.0.1:{self.mon_port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- processes


def write_configs(s: Soak) -> tuple[Path, Path]:
    secret, xonly = generate_keypair()
    pool_cfg, proxy_cfg = s.tmp / "pool.toml", s.tmp / "proxy.toml"
    pool_cfg.write_text(
        f'address = "127.0.0.1"\nport = {s.pool_port}\nauthority_secret_key = "{encode_secret_key(secret)}"\n'
        f"fixed_difficulty = {POOL_DIFF}\nshare_batch_size = 1\nnew_block_interval_s = 20\nnew_job_interval_s = 3\n"
    )
    proxy_cfg.write_text(f"""
log_level = "info"
status_interval_s = 10
[[upstreams]]
address = "127.0.0.1"
port = {s.pool_port}
authority_pubkey = "{encode_public_key(xonly)}"
user_identity = "soak"
[downstream]
address = "127.0.0.1"
port = {s.sv1_port}
max_connections = {s.args.max_connections}
first_message_timeout_s = 5
idle_timeout_s = 60
[difficulty]
start_difficulty = {MINER_DIFF}
min_difficulty = {MINER_DIFF}
vardiff = false
[proxy]
instance_id = "{INSTANCE}"
job_keepalive_interval_s = 5
reconnect_backoff_initial_s = 0.2
reconnect_backoff_max_s = 1
[monitoring]
enabled = true
port = {s.mon_port}
token = "{TOKEN}"
refresh_interval_s = 1
[clickhouse]
url = "http://default:front-secret@127.0.0.1:{s.db_port}"
spool_dir = "{s.tmp / 'spool'}"
batch_max_age_s = 0.2
connect_timeout_s = 1
insert_timeout_s = 2
retry_backoff_base_s = 0.1
retry_backoff_max_s = 1
close_timeout_s = 10
""")
    return pool_cfg, proxy_cfg


def spawn(s: Soak, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    log = open(s.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it; closed with it
    p = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    log.close()
    s.procs[name] = p
    return p


def start_front(s: Soak) -> None:
    spawn(s, "front", ["-c", FRONT_CODE, str(s.tmp / "db"), str(s.db_port)])
    wait_port(s.db_port, 30, "the ClickHouse front")


def stop_front(s: Soak) -> None:
    """The database goes away as a crashed server does: the process is killed, the port closes."""
    p = s.procs.pop("front", None)
    if p is not None:
        p.kill()
        p.wait(10)


def wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"soak: {what} did not open port {port} within {timeout:.0f} s")


async def start_stack(s: Soak) -> None:
    pool_cfg, proxy_cfg = write_configs(s)
    start_front(s)
    spawn(s, "pool", ["-m", "tproxy.cli", "pool", "--config", str(pool_cfg)])
    wait_port(s.pool_port, 30, "the dev pool")
    spawn(s, "proxy", ["-m", "tproxy.cli", "run", "--config", str(proxy_cfg)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if s.procs["proxy"].poll() is not None:
            raise SystemExit(f"soak: the proxy exited at start:\n{(s.tmp / 'proxy.log').read_text()[-3000:]}")
        status, _ = await http_get(s, "/health")
        if status == 200:
            return
        await asyncio.sleep(0.3)
    raise SystemExit("soak: the proxy's /health never answered 200")


def stop_all(s: Soak) -> None:
    for name in list(s.procs):
        p = s.procs.pop(name)
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGCONT)  # a pool left frozen still has to die
            p.kill()
            p.wait(10)


# --------------------------------------------------------------------------- HTTP


_SESSION: dict[str, aiohttp.ClientSession] = {}


def session() -> aiohttp.ClientSession:
    """One client session for the soak's own monitoring requests (fresh connection each time)."""
    if "s" not in _SESSION:
        _SESSION["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))
    return _SESSION["s"]


async def http_get(s: Soak, path: str, *, token: str | None = TOKEN, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of GET ``path`` on the monitoring port; status 0 when no HTTP answer came."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        async with session().get(s.mon + path, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            return r.status, await r.read()
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return 0, b""


def db_query(s: Soak, sql: str) -> str:
    """A query on the ClickHouse front (its HTTP interface), text result."""
    url = f"http://127.0.0.1:{s.db_port}/?" + urllib.parse.urlencode({"query": sql})
    with urllib.request.urlopen(url, timeout=60) as r:
        return str(r.read().decode())


# --------------------------------------------------------------------------- canaries


def canary_name(i: int) -> str:
    odd = CANARY_ODD_NAMES[i % len(CANARY_ODD_NAMES)] if i % 5 == 4 else ""
    return f"canary.{i}{odd}"


async def canary(s: Soak, i: int, stop: asyncio.Event) -> Sv1Script | None:
    """Submit one share every 1/rate s until ``stop``; record each answer. Returns the open
    connection (closed by the caller after the proxy's per-connection counts were read)."""
    name, nonce, client, connected = canary_name(i), i * NONCE_SPAN, None, False
    while not stop.is_set():
        if client is None or client.closed.is_set():
            if client is not None:
                s.note(f"canary {i}: connection closed by the proxy")
                await client.close()
            client = await canary_connect(s, i, name)
            if client is None:
                await asyncio.sleep(1)
                continue
            s.tally.reconnects += connected
            connected = True
        nonce += 1
        try:
            r = await client.submit(name, nonce)
            s.tally.answered[nonce] = r.get("result") is True
            if r.get("result") is not True:
                s.note(f"canary {i}: share rejected: {r.get('error')}")
        except (TimeoutError, ConnectionError, OSError) as e:
            s.tally.unanswered += 1
            s.note(f"canary {i}: share not answered ({type(e).__name__})")
            await client.close()
            client = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / s.args.rate)
    return client


async def canary_connect(s: Soak, i: int, name: str) -> Sv1Script | None:
    try:
        c = await Sv1Script.connect(s.sv1_port)
    except (OSError, TimeoutError) as e:
        s.note(f"canary {i}: connect failed ({type(e).__name__}: {e})")
        return None
    try:
        await c.handshake(name)
    except (OSError, TimeoutError, ConnectionError, KeyError, IndexError, TypeError, ValueError) as e:
        s.note(f"canary {i}: handshake failed ({type(e).__name__}: {e})")
        await c.close()
        return None
    return c


async def poll_received(s: Soak) -> None:
    """The proxy's own per-connection share counts of the canaries (kept per client_id, as
    connections that close take their counters with them)."""
    offset = 0
    while True:
        status, body = await http_get(s, f"/api/v1/sv1/clients?limit=100&offset={offset}")
        if status != 200:
            return
        page = json.loads(body)
        for c in page["items"]:
            if str(c.get("worker_name", "")).startswith("canary."):
                s.tally.received[int(c["client_id"])] = int(c["shares_accepted"]) + int(c["shares_rejected"])
        offset += 100
        if offset >= int(page["total"]):
            return


# --------------------------------------------------------------------------- watchers


def sample_proc(s: Soak) -> int:
    """Update the peaks (VmHWM, descriptors) of the proxy process; return its VmRSS in kB."""
    p = s.procs.get("proxy")
    if p is None or p.poll() is not None:
        return 0
    try:
        status = Path(f"/proc/{p.pid}/status").read_text()
        s.tally.peak_fds = max(s.tally.peak_fds, len(os.listdir(f"/proc/{p.pid}/fd")))
    except OSError:
        return 0
    kb = {k: int(v) for k, v in re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", status, re.M)}
    s.tally.peak_rss_kb = max(s.tally.peak_rss_kb, kb.get("VmHWM", 0))
    return kb.get("VmRSS", 0)


async def watch(s: Soak, stop: asyncio.Event) -> None:
    """Every second: RSS and descriptors of the proxy, a /health and a /metrics probe; every 5 s
    the canaries' counts as the proxy sees them."""
    tick = 0
    while not stop.is_set():
        sample_proc(s)
        health, metrics = await asyncio.gather(http_get(s, "/health", token=None), http_get(s, "/metrics"))
        s.tally.probes += 1
        if health[0] != 200:
            s.tally.health_fail += 1
            s.note(f"/health probe: {health[0] or 'no answer'}")
        if metrics[0] != 200:
            s.tally.metrics_fail += 1
            s.note(f"/metrics probe: {metrics[0] or 'no answer'}")
        tick += 1
        if tick % 5 == 0:
            await poll_received(s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


# --------------------------------------------------------------------------- hostile phases


async def phase_bad_text(s: Soak, seconds: float, t: HostileTally) -> None:
    """Hostile worker names that mine (their rows must be logged), garbage lines, TLS bytes."""
    port = s.sv1_port
    miners = [hostile.bad_name_miner(port, name, range(HOSTILE_NONCE + 10 * k, HOSTILE_NONCE + 10 * k + 5), t)
              for k, name in enumerate(hostile.BAD_NAMES)]
    one_each = [hostile.send_lines(port, [line], t) for line in hostile.GARBAGE_LINES]
    all_in_one = hostile.send_lines(port, list(hostile.GARBAGE_LINES), t)
    tls = [hostile.send_lines(port, [hostile.TLS_CLIENT_HELLO], t, read_s=2) for _ in range(5)]
    await bounded(asyncio.gather(*miners, *one_each, all_in_one, *tls), seconds)


async def phase_big_numbers(s: Soak, seconds: float, t: HostileTally) -> None:
    """Huge, non-finite and wrongly typed numbers; deeply nested params; then a miner that
    suggested an absurd difficulty mines."""
    port = s.sv1_port
    jobs = [hostile.send_lines(port, hostile.big_number_lines(v), t) for v in hostile.BIG_NUMBERS]
    jobs += [hostile.send_lines(port, [hostile.nested_line(d)], t) for d in (100, 3_000, 7_000, 20_000)]
    for k, v in enumerate(("1" + "0" * 400, "1e999", "NaN", "-1", "1e-400")):
        suggest = f'{{"id":9,"method":"mining.suggest_difficulty","params":[{v}]}}\n'.encode()
        name = json.dumps(f"farm.big{k}")
        auth = f'{{"id":10,"method":"mining.subscribe","params":[]}}\n{{"id":11,"method":"mining.authorize","params":[{name},"x"]}}\n'
        jobs.append(hostile.send_lines(port, [suggest, auth.encode()], t, read_s=2))
    await bounded(asyncio.gather(*jobs), seconds)


async def phase_floods(s: Soak, seconds: float, t: HostileTally) -> None:
    """Many lines in one write on one connection; then connections up to the cap and past it."""
    port = s.sv1_port
    lines = [b'{"id":1,"method":"mining.subscribe","params":["flood/1.0"]}\n',
             b'{"id":2,"method":"mining.authorize","params":["farm.flood","x"]}\n']
    burst = b"".join(f'{{"id":{k},"method":"mining.submit","params":["farm.flood","1","00000000","00000000",'
                     f'"{HOSTILE_NONCE + k:08x}"]}}\n'.encode() for k in range(5_000))
    await bounded(hostile.send_lines(port, [*lines, burst], t, read_s=3), seconds / 3)
    n = s.args.max_connections + 50
    still = await bounded(hostile.flood_connections(port, n, seconds / 3, t), seconds * 2 / 3)
    s.note(f"floods: {n} connections tried, {still} still open after the hold")


async def phase_slow_readers(s: Soak, seconds: float, t: HostileTally) -> None:
    """Miners that subscribe, ask for much, and never read while jobs keep arriving."""
    cut = await bounded(asyncio.gather(*(hostile.slow_reader(s.sv1_port, f"farm.slow{k}", 5_000, seconds, t)
                                         for k in range(s.args.slow_readers))), seconds + 10)
    s.note(f"slow readers: {sum(bool(c) for c in cut or [])} of {s.args.slow_readers} cut by the proxy")


async def phase_dribble(s: Soak, seconds: float, t: HostileTally) -> None:
    """First lines sent a byte every 0.3 s, slower than first_message_timeout_s (5 s) allows."""
    line = b'{"id":1,"method":"mining.subscribe","params":["dribble/1.0"]}\n'
    cut = await bounded(asyncio.gather(*(hostile.dribble(s.sv1_port, line, 0.3, seconds, t) for _ in range(30))),
                        seconds + 10)
    s.note(f"dribble: {30 - sum(bool(c) for c in cut or [])} of 30 first lines still being dribbled, not cut, "
           f"after {seconds:.0f} s (first_message_timeout_s = 5)")


async def phase_monitoring(s: Soak, seconds: float, t: HostileTally) -> None:
    """Idle connections on the monitoring port, and request floods with, without and with a
    wrong token, including hostile worker paths."""
    idle = hostile.flood_connections(s.mon_port, s.args.idle_monitoring, seconds, t)
    partial = hostile.flood_connections(s.mon_port, 100, seconds, t, send=b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    paths = ["/metrics", "/api/v1/global", "/api/v1/workers?limit=100", "/api/v1/sv1/clients?limit=100",
             "/api/v1/workers/" + urllib.parse.quote("farm.\ufffdlone"), "/api/v1/workers/%00%0a%ff", "/api/v1/history",
             "/api/v1/workers?limit=-1&offset=99999999999999999999", "/api/v1/sv1/clients/99999999999999999999999"]
    deadline = time.monotonic() + seconds
    codes: Counter[int] = Counter()

    async def flood(token: str | None) -> None:
        k = 0
        while time.monotonic() < deadline:
            status, _ = await http_get(s, paths[k % len(paths)], token=token, timeout=3)
            codes[status] += 1
            k += 1

    floods = [flood(TOKEN) for _ in range(8)] + [flood(None) for _ in range(4)] + [flood("wrong") for _ in range(4)]
    open_idle, _, *_ = await bounded(asyncio.gather(idle, partial, *floods), seconds + 30) or [0, 0]
    s.note(f"monitoring: {s.args.idle_monitoring} idle connections, {open_idle} still open after "
           f"{seconds:.0f} s; flood answers {dict(sorted(codes.items()))}")


async def phase_db_outage(s: Soak, seconds: float, t: HostileTally) -> None:
    """ClickHouse goes away (killed, port closed) for ``seconds``, then comes back on the same port."""
    stop_front(s)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(start_front, s)


async def phase_pool_hang(s: Soak, seconds: float, t: HostileTally) -> None:
    """The pool freezes (SIGSTOP: connection open, nothing answered) for ``seconds``."""
    pool = s.procs["pool"]
    pool.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        pool.send_signal(signal.SIGCONT)


async def bounded(aw: Awaitable[Any], seconds: float) -> Any:
    """``aw``, cancelled after ``seconds`` (every phase stops by itself, whatever the proxy does)."""
    try:
        return await asyncio.wait_for(aw, seconds)
    except TimeoutError:
        return None


PhaseFn = Callable[[Soak, float, HostileTally], Awaitable[None]]


def schedule(d: float) -> list[tuple[float, float, PhaseFn]]:
    """(start, length, phase), in seconds from the start, for a soak of ``d`` seconds."""
    return [
        (0.05 * d, 10, phase_bad_text),
        (0.05 * d, 10, phase_big_numbers),
        (0.12 * d, min(12, 0.1 * d), phase_floods),  # over before the next ones need connections
        (0.25 * d, min(30, 0.3 * d), phase_slow_readers),
        (0.25 * d, min(15, 0.2 * d), phase_dribble),
        (0.35 * d, 15, phase_monitoring),
        (0.45 * d, min(30, 0.35 * d), phase_db_outage),
        (0.55 * d, min(20, 0.2 * d), phase_pool_hang),
    ]


async def run_phase(s: Soak, at: float, length: float, fn: PhaseFn) -> None:
    await asyncio.sleep(max(0.0, at - s.now()))
    ph = Phase(fn.__name__.removeprefix("phase_"), s.now())
    rss0 = sample_proc(s)
    s.phases.append(ph)
    print(f"  t={ph.start:5.1f}s  {ph.name} ({length:.0f} s)", flush=True)
    try:
        await fn(s, length, ph.hostile)
    except Exception as e:  # a phase that breaks is a fact to report, not the end of the soak
        s.note(f"phase {ph.name} failed: {type(e).__name__}: {e}")
    ph.end = s.now()
    ph.rss_kb = (rss0, sample_proc(s))


# --------------------------------------------------------------------------- the end


async def drain(s: Soak, timeout: float) -> None:
    """Wait until the share log holds nothing unwritten (queue, spool, oldest age all zero),
    twice in a row, as monitoring reports it; keep its last counters."""
    deadline, calm = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and calm < 2:
        status, body = await http_get(s, "/api/v1/global")
        sl = (json.loads(body).get("share_log") or {}) if status == 200 else {}
        if sl:
            s.tally.share_log = sl
        idle = sl and sl["queued"] == 0 and sl["spool_pending"] == 0 and sl["oldest_unwritten_age_s"] == 0
        calm = calm + 1 if idle else 0
        await asyncio.sleep(1.2)  # longer than refresh_interval_s: the next reading is a new snapshot
    if calm < 2:
        s.note(f"share log not drained after {timeout:.0f} s: {s.tally.share_log}")


def stop_proxy(s: Soak) -> None:
    """SIGTERM, as an operator stops it; its exit code is kept."""
    p = s.procs.pop("proxy")
    p.send_signal(signal.SIGTERM)
    try:
        s.tally.proxy_rc = p.wait(60)
    except subprocess.TimeoutExpired:
        s.note("proxy did not exit within 60 s of SIGTERM: killed")
        p.kill()
        s.tally.proxy_rc = p.wait(10)
    if s.tally.proxy_rc != 0:
        s.note(f"proxy exit code {s.tally.proxy_rc} after SIGTERM")


def expected_name_md5(i: int) -> str:
    """MD5 of the name as the share log must store it: exact, lone surrogates as U+FFFD."""
    name = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in canary_name(i))
    return hashlib.md5(name.encode()).hexdigest()


@dataclass
class Outcome:
    received: int  # the proxy's count of canary shares (per connection, summed)
    answered: int
    logged: int  # answered canary shares with a row
    lost: int  # answered, no row
    duplicated: int  # rows beyond the first of one (run_id, share_seq), whole table
    repeated: int  # canary shares with more than one row
    verdict_mismatch: int  # row verdict disagrees with the answer the canary got
    name_mismatch: int  # row worker_name is not the canary's name (lone surrogates as U+FFFD)
    rows_all: int
    rows_unanswered: int  # rows of canary shares that got no answer (fine either way)
    pool_verdicts: str  # what the pool answered for the forwarded shares, by verdict


def count_rows(s: Soak) -> Outcome:
    t = s.tally
    out = db_query(s, "SELECT nonce, verdict, hex(MD5(worker_name)) FROM tproxy.shares "
                      f"WHERE instance_id = '{INSTANCE}' AND startsWith(worker_name, 'canary.') FORMAT TSV")
    per_nonce: Counter[int] = Counter()
    verdict_bad = name_bad = 0
    for line in out.splitlines():
        nonce_s, verdict, md5 = line.split("\t")
        nonce = int(nonce_s)
        per_nonce[nonce] += 1
        if nonce in t.answered and (verdict == "accepted") != t.answered[nonce]:
            verdict_bad += 1
        if md5.lower() != expected_name_md5(nonce // NONCE_SPAN):
            name_bad += 1
    rows_all = int(db_query(s, "SELECT count() FROM tproxy.shares FORMAT TSV"))
    distinct = int(db_query(s, "SELECT uniqExact(run_id, share_seq) FROM tproxy.shares FORMAT TSV"))
    logged = sum(1 for n in t.answered if per_nonce[n] > 0)
    forwarded = db_query(s, "SELECT countIf(forwarded) FROM tproxy.shares FORMAT TSV").strip()
    by_verdict = db_query(s, "SELECT pool_verdict, count() FROM tproxy.pool_verdicts GROUP BY pool_verdict "
                             "ORDER BY pool_verdict FORMAT TSV")
    verdicts = ", ".join(" ".join(ln.split("\t")) for ln in by_verdict.splitlines())
    return Outcome(
        received=sum(t.received.values()), answered=len(t.answered), logged=logged,
        lost=len(t.answered) - logged, duplicated=rows_all - distinct,
        repeated=sum(1 for n, k in per_nonce.items() if k > 1), verdict_mismatch=verdict_bad,
        name_mismatch=name_bad, rows_all=rows_all,
        rows_unanswered=sum(1 for n in per_nonce if n not in t.answered),
        pool_verdicts=f"{forwarded} forwarded; pool: {verdicts}",
    )


def read_log(s: Soak, name: str) -> str:
    path = s.tmp / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def first_traceback(log: str) -> str | None:
    i = log.find("Traceback")
    if i < 0:
        return None
    lines = log[i:].splitlines()
    end = next((k + 1 for k, ln in enumerate(lines[1:], 1) if ln and not ln.startswith((" ", "Traceback"))), len(lines))
    return "\n".join(lines[: min(end, 60)])


def log_findings(log: str) -> list[str]:
    """ERROR/CRITICAL lines of the proxy's log, and WARNING kinds, counted by their text without digits."""
    kinds: Counter[str] = Counter()
    for ln in log.splitlines():
        m = re.search(r"\b(ERROR|CRITICAL|WARNING)\b\s*(.*)", ln)
        if m:
            kinds[f"{m.group(1)} {re.sub(r'[0-9]+', 'N', m.group(2))[:160]}"] += 1
    return [f"{n:6d} x {k}" for k, n in kinds.most_common(25)]


def phase_at(s: Soak, t: float) -> str:
    names = [p.name for p in s.phases if p.start - 1 <= t <= (p.end if p.end >= 0 else 1e9) + 5]
    return "+".join(names) or "none"


def report(s: Soak, o: Outcome, log: str) -> bool:
    t, tb = s.tally, first_traceback(log)
    sl = t.share_log
    received_all = sl.get("written", 0) + sl.get("spool_pending", 0) + sl.get("queued", 0) + sl.get("dropped", 0)
    rows = [
        ("canary shares received (proxy's count)", o.received), ("canary shares answered", o.answered),
        ("  of which accepted", sum(t.answered.values())), ("canary shares logged", o.logged),
        ("LOST (answered, no row)", o.lost), ("DUPLICATED rows (run_id, share_seq)", o.duplicated),
        ("canary shares with >1 row", o.repeated), ("verdict row != answer", o.verdict_mismatch),
        ("worker_name row != name sent", o.name_mismatch), ("canary shares not answered", t.unanswered),
        ("  of which logged anyway", o.rows_unanswered), ("canary reconnects", t.reconnects),
        ("all shares received (share log counters)", received_all), ("all rows in tproxy.shares", o.rows_all),
        ("share log dropped", sl.get("dropped", "?")), ("forwarded shares, pool verdicts", o.pool_verdicts), ("share log spooled / replayed", f"{sl.get('spooled', '?')} / {sl.get('replayed', '?')}"),
        ("peak RSS of the proxy (VmHWM)", f"{t.peak_rss_kb / 1024:.1f} MiB"), ("peak open descriptors", t.peak_fds),
        ("probes (1/s) /health failed", f"{t.health_fail} of {t.probes}"), ("probes (1/s) /metrics failed", f"{t.metrics_fail} of {t.probes}"),
        ("proxy exit code after SIGTERM", t.proxy_rc), ("Traceback in the proxy's log", "yes" if tb else "no"),
        ("Tracebacks in the pool's / DB front's logs (info)", " / ".join(
            str(read_log(s, n).count("Traceback")) for n in ("pool", "front"))),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nsoak summary")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print_phases(s)
    print_events(s)
    findings = log_findings(log)
    if findings:
        print("\nproxy log, ERROR/WARNING kinds (digits as N):\n  " + "\n  ".join(findings))
    if tb:
        print(f"\nfirst Traceback of the proxy's log:\n{tb}")
        print("every Traceback's exception (count x last line):\n  " + "\n  ".join(traceback_kinds(log)))
    ok = o.lost == 0 and o.duplicated == 0 and tb is None
    print(f"\nsoak: {'PASS' if ok else 'FAIL'} (lost {o.lost}, duplicated {o.duplicated}, traceback {'yes' if tb else 'no'})")
    return ok


def traceback_kinds(log: str) -> list[str]:
    """The exception line ending each Traceback of ``log``, counted."""
    kinds: Counter[str] = Counter()
    for chunk in log.split("Traceback (most recent call last):")[1:]:
        last = next((ln for ln in chunk.splitlines()[1:] if ln and not ln.startswith(" ")), "?")
        kinds[last[:200]] += 1
    return [f"{n:4d} x {k}" for k, n in kinds.most_common()]


def print_phases(s: Soak) -> None:
    print("\nphases (seconds from start; the hostile clients' connections, refused, cut by the proxy, "
          "lines sent, lines answered, hostile-named shares answered, the proxy's RSS at start -> end):")
    for p in s.phases:
        h = p.hostile
        print(f"  {p.name:<12} {p.start:5.1f}-{p.end:5.1f}  conns {h.connections:5d}  refused {h.refused:5d}  "
              f"cut {h.cut:5d}  sent {h.lines_sent:6d}  answered {h.replies:6d}  shares {h.shares_answered:3d}  "
              f"RSS {p.rss_kb[0] / 1024:.0f} -> {p.rss_kb[1] / 1024:.0f} MiB")


def print_events(s: Soak) -> None:
    """What went wrong, grouped by kind and by the phases running when it happened."""
    groups: Counter[str] = Counter()
    first: dict[str, float] = {}
    for e in s.tally.events:
        key = f"[{phase_at(s, e.t)}] {re.sub(r'canary [0-9]+', 'canary N', e.what)[:200]}"
        groups[key] += 1
        first.setdefault(key, e.t)
    if groups:
        print("events (count, first at, [phases running] what):")
        for key, n in sorted(groups.items(), key=lambda kv: first[kv[0]]):
            print(f"  {n:5d}  t={first[key]:5.1f}s  {key}")


# --------------------------------------------------------------------------- main


async def run(s: Soak) -> bool:
    d = s.args.duration
    await start_stack(s)
    s.t0 = time.monotonic()
    print(f"soak: proxy up (SV1 {s.sv1_port}, monitoring {s.mon_port}, pool {s.pool_port}, DB {s.db_port}), "
          f"{s.args.canaries} canaries at {s.args.rate:g} shares/s each, {d:.0f} s; logs in {s.tmp}", flush=True)
    stop_canaries, stop_watch = asyncio.Event(), asyncio.Event()
    canaries = [asyncio.create_task(canary(s, i, stop_canaries)) for i in range(s.args.canaries)]
    watcher = asyncio.create_task(watch(s, stop_watch))
    phases = [asyncio.create_task(run_phase(s, at, n, fn)) for at, n, fn in schedule(d)
              if fn.__name__.removeprefix("phase_") not in s.args.skip]
    await asyncio.sleep(max(0.0, d - s.now()))
    await bounded(asyncio.gather(*phases), 60)  # each is bounded; this only guards the guard
    stop_canaries.set()
    clients = await asyncio.gather(*canaries)
    await asyncio.sleep(2.5)  # monitoring serves a snapshot (refresh_interval_s = 1): let it catch up
    await poll_received(s)
    for c in clients:
        if c is not None:
            await c.close()
    print(f"  t={s.now():5.1f}s  canaries stopped; draining the share log", flush=True)
    await drain(s, s.args.drain_timeout)
    sample_proc(s)
    stop_watch.set()
    await watcher
    await asyncio.to_thread(stop_proxy, s)
    outcome = await asyncio.to_thread(count_rows, s)
    return report(s, outcome, read_log(s, "proxy"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of canary mining and hostile phases")
    p.add_argument("--canaries", type=int, default=20)
    p.add_argument("--rate", type=float, default=2.0, help="shares/s of each canary")
    p.add_argument("--max-connections", type=int, default=400, help="the proxy's downstream cap (the flood goes past it)")
    p.add_argument("--slow-readers", type=int, default=40)
    p.add_argument("--idle-monitoring", type=int, default=2000, help="idle connections held on the monitoring port")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--skip", type=lambda v: set(v.split(",")), default=set(),
                   help="phases to leave out, comma-separated (bad_text,big_numbers,floods,slow_readers,"
                        "dribble,monitoring,db_outage,pool_hang)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, spool, database)")
    a = p.parse_args(argv)
    if a.duration < 30 or a.canaries < 1 or a.canaries * NONCE_SPAN >= HOSTILE_NONCE or a.rate <= 0:
        p.error("--duration >= 30, 1 <= --canaries <= 400, --rate > 0")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # our floods and the proxy's cap need room
    tmp = Path(tempfile.mkdtemp(prefix="tproxy-soak-"))
    s = Soak(args, tmp, free_port(), free_port(), free_port(), free_port())

    async def go() -> bool:
        try:
            return await run(s)
        finally:
            if "s" in _SESSION:
                await _SESSION.pop("s").close()

    try:
        ok = asyncio.run(go())
    finally:
        stop_all(s)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
