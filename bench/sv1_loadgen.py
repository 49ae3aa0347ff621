"""A cheap SV1 share generator for the benchmarks: plain sockets on ``select.epoll``, K processes.

Owns the load side of bench_proxy.py and bench_workers.py (and the connection
holding of ``bench_workers.py --hold``). It is built to cost the measured
server as little CPU as possible on a 2-core machine:

* no asyncio, no StreamReader, no JSON on the share path: each connection has
  one pre-rendered submit line (``user``, ``job_id``, ``extranonce2``, ``ntime``
  filled in) with a ``%08x`` slot for the nonce, which counts up per
  connection (a repeat would be a duplicate share);
* a reply is counted by its newline, an accepted one by ``true`` in it; only a
  read that carries a ``"method"`` (a notify, a set_difficulty) or a partial
  line goes through a line split (and a notify re-renders the connection's
  submit line);
* one ``perf_counter()`` per epoll wake-up stamps every reply of that batch and
  the submits it triggers; latencies go to an ``array('d')`` and leave the
  process as a histogram with 1% wide buckets (percentiles good to 1%).

Handshake, per connection, as the asyncio generator did before: connect (from
source address ``127.0.0.{2 + index // 4000}``, with IP_BIND_ADDRESS_NO_PORT:
ephemeral ports are per source address, and the kernel's search for a free one
grows with the ports in use: 20,000 per address took 64 s of set-up for 19,500
connections, 15 s of it in the kernel; 4,000 per address, 9 s), ``mining.subscribe ["bench/1.0"]`` and wait for its reply (the
extranonce2 size is ``result[2]``), ``mining.authorize ["bench.w<index>", "x"]``
and wait for ``true``, then (``real`` servers only) wait for the first
``mining.notify``. The echo and null servers of bench_proxy.py answer
``true`` to everything and send no notify: run them with ``real=False``.

Modes of a run: ``closed`` (every connection keeps one submit in flight, for
``seconds``), ``paced`` (``rate`` submits/s over all connections, round-robin,
an idle connection at a time), ``round`` (one submit on every connection, and
wait until each is answered: proves every connection works).

``Generators(port, n, processes)`` spawns ``python bench/sv1_loadgen.py``
children, each with its own slice of the connections and its own
RLIMIT_NOFILE (raised to the hard limit: one process holds at most about
``hard - 200`` connections). A child talks JSON lines: it prints ``{"open": ..}``
once its connections are up, then runs one command per stdin line and
prints its result (counts, its own CPU seconds, the latency histogram).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import resource
import select
import socket
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

CONNS_PER_SOURCE = 4_000  # per source address: the kernel's search for a free port stays short
FD_HEADROOM = 200  # the epoll fd, pipes, files: what a process holds besides its connections
HANDSHAKE_WINDOW = (
    500  # connections in handshake at once (the server's accept backlog is bounded too)
)
STALL_TIMEOUT_S = 60.0  # set-up and rounds give up after this long without any progress
DRAIN_TIMEOUT_S = 10.0
BUCKET = math.log(1.01)  # latency histogram: bucket b holds [1.01**b, 1.01**(b+1)) microseconds
READ_SIZE = 65536
IN, OUT = select.EPOLLIN, select.EPOLLOUT
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2+


def raise_nofile() -> int:
    """Raise the soft limit on open files to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def source_address(index: int) -> str:
    return f"127.0.0.{2 + index // CONNS_PER_SOURCE}"


def submit_template(user: str, job_id: str, en2: str, ntime: str) -> bytes:
    """The connection's mining.submit line, ``%08x`` where the nonce goes."""
    user, job_id, en2, ntime = (f.replace("%", "%%") for f in (user, job_id, en2, ntime))
    return f'{{"id":4,"method":"mining.submit","params":["{user}","{job_id}","{en2}","{ntime}","%08x"]}}\n'.encode()


@dataclass
class Result:
    """What a run produced, summed over processes."""

    done: int = 0  # replies counted
    rejected: int = 0  # replies without ``true``
    lost: int = 0  # connections closed by the server during the run
    cpu_s: float = 0.0  # the generator processes' own CPU over the run (user + system)
    sys_s: float = 0.0  # the system part of it (the loopback TCP path is charged to the sender)
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, other: dict[str, Any]) -> None:
        """Add one process's result (a JSON object: histogram keys are strings)."""
        self.done += other["done"]
        self.rejected += other["rejected"]
        self.lost += other["lost"]
        self.cpu_s += other["cpu_s"]
        self.sys_s += other["sys_s"]
        for b, c in other["hist"].items():
            self.hist[int(b)] = self.hist.get(int(b), 0) + c

    def percentile_ms(self, q: float) -> float:
        """The q-quantile of the submit->reply latencies, in ms (nan without any)."""
        total = sum(self.hist.values())
        if not total:
            return float("nan")
        rank, seen = q * total, 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen > rank:
                return math.exp((b + 0.5) * BUCKET) / 1000
        return math.exp((max(self.hist) + 0.5) * BUCKET) / 1000


def histogram(latencies_s: array[float]) -> dict[int, int]:
    hist: dict[int, int] = {}
    log, scale = math.log, 1 / BUCKET
    for x in latencies_s:
        b = int(log(max(x * 1e6, 1.0)) * scale)
        hist[b] = hist.get(b, 0) + 1
    return hist


class Slice:
    """One process's connections: handshake, then closed, paced or round runs."""

    def __init__(self, port: int, first: int, count: int, *, real: bool) -> None:
        self.port, self.first, self.count, self.real = port, first, count, real
        self.ep = select.epoll()
        self.socks: dict[int, socket.socket] = {}
        self.index: dict[int, int] = {}
        self.line: dict[int, bytes] = {}  # the pre-rendered submit line
        self.nonce: dict[int, int] = {}
        self.partial: dict[int, bytes] = {}  # an unterminated line, rare
        self.sent_at: dict[int, float] = {}
        self.busy: dict[int, bool] = {}  # a submit in flight
        self.job: dict[int, tuple[str, str]] = {}  # (job_id, ntime) of the last notify
        self.en2_size: dict[int, int] = {}
        self.stage: dict[int, int] = {}  # handshake: 0 connecting, 1 subscribed, 2 authorized
        self.failed = 0

    # ---------------------------------------------------------------- handshake

    def open(self) -> None:
        """Connect and hand-shake every connection, HANDSHAKE_WINDOW at a time (a loaded
        server may take minutes for tens of thousands: only a stall of STALL_TIMEOUT_S ends it)."""
        pending = started = ready = 0
        progress_at = time.monotonic()
        while ready + self.failed < self.count and time.monotonic() - progress_at < STALL_TIMEOUT_S:
            while pending < HANDSHAKE_WINDOW and started < self.count:
                pending += self._connect(self.first + started)
                started += 1
            for fd, ev in self.ep.poll(1.0):
                before = fd in self.socks and self._ready(fd)
                self._handshake_event(fd, ev)
                if fd not in self.socks:
                    pending -= 1
                elif not before and self._ready(fd):
                    ready += 1
                    pending -= 1
                    progress_at = time.monotonic()
        for fd in [fd for fd in self.socks if not self._ready(fd)]:
            self.failed += self._close(fd)

    def _ready(self, fd: int) -> bool:
        return self.stage[fd] == 3 and (fd in self.job or not self.real)

    def _connect(self, index: int) -> bool:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # the port is picked at connect(), not searched for among every bound one at bind()
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source_address(index), 0))
        err = sock.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.failed += 1
            return False
        fd = sock.fileno()
        self.socks[fd], self.index[fd], self.nonce[fd], self.partial[fd] = sock, index, 0, b""
        self.stage[fd], self.busy[fd], self.en2_size[fd] = 0, False, 4
        self.ep.register(fd, OUT)
        return True

    def _handshake_event(self, fd: int, ev: int) -> None:
        sock = self.socks.get(fd)
        if sock is None:
            return
        if self.stage[fd] == 0 and ev & OUT:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.failed += self._close(fd)
                return
            self.stage[fd] = 1
            self.ep.modify(fd, IN)
            os.write(fd, b'{"id":1,"method":"mining.subscribe","params":["bench/1.0"]}\n')
            return
        try:
            data = os.read(fd, READ_SIZE)
        except OSError:
            data = b""
        if not data:
            self.failed += self._close(fd)
            return
        *lines, self.partial[fd] = (self.partial[fd] + data).split(b"\n")
        for ln in lines:
            if ln.strip() and not self._handshake_line(fd, json.loads(ln)):
                self.failed += self._close(fd)
                return

    def _handshake_line(self, fd: int, msg: dict[str, object]) -> bool:
        """Handle one line of the handshake; False when the server refused it."""
        if msg.get("method") == "mining.notify":
            self._on_notify(fd, msg)
        elif msg.get("id") == 1 and self.stage[fd] == 1:
            result = msg.get("result")
            if self.real and not isinstance(result, list):
                return False
            if isinstance(result, list):
                self.en2_size[fd] = int(result[2])
            self.stage[fd] = 2
            user = f"bench.w{self.index[fd]}"
            os.write(
                fd, f'{{"id":2,"method":"mining.authorize","params":["{user}","x"]}}\n'.encode()
            )
        elif msg.get("id") == 2 and self.stage[fd] == 2:
            if msg.get("result") is not True:
                return False
            self.stage[fd] = 3
            self._render(fd)
        return True

    def _on_notify(self, fd: int, msg: dict[str, object]) -> None:
        params = msg["params"]
        self.job[fd] = (str(params[0]), str(params[7]))  # type: ignore[index]
        if self.stage[fd] == 3:
            self._render(fd)

    def _render(self, fd: int) -> None:
        job_id, ntime = self.job.get(fd, ("0", "00000000"))
        en2 = self.index[fd].to_bytes(self.en2_size[fd], "big").hex()
        self.line[fd] = submit_template(f"bench.w{self.index[fd]}", job_id, en2, ntime)

    def _close(self, fd: int) -> int:
        """Close one connection: 1 if it was open (a failed handshake or a connection lost)."""
        sock = self.socks.pop(fd, None)
        if sock is None:
            return 0
        with contextlib.suppress(OSError):
            self.ep.unregister(fd)
        sock.close()
        return 1

    # ---------------------------------------------------------------- runs

    def _slow_read(self, fd: int, data: bytes) -> tuple[int, int]:
        """Replies and accepted replies in ``data`` when it has a notification or a partial line."""
        *lines, self.partial[fd] = (self.partial[fd] + data).split(b"\n")
        replies = accepted = 0
        for ln in lines:
            if b'"method"' in ln:
                msg = json.loads(ln)
                if msg.get("method") == "mining.notify":
                    self._on_notify(fd, msg)
            elif ln.strip():
                replies += 1
                accepted += b"true" in ln
        return replies, accepted

    def run(self, mode: str, seconds: float = 0.0, rate: float = 0.0) -> dict[str, Any]:
        """One run (``closed``, ``paced`` or ``round``), then wait for what is still in flight."""
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        lat: array[float] = array("d")
        if mode == "closed":
            counts = self._closed(seconds, lat)
        elif mode == "paced":
            counts = self._paced(seconds, rate, lat)
        else:
            counts = self._round(lat)
        self._drain()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        sys_s = ru1.ru_stime - ru0.ru_stime
        cpu_s = ru1.ru_utime - ru0.ru_utime + sys_s
        done, rejected, lost = counts
        return {
            "done": done,
            "rejected": rejected,
            "lost": lost,
            "cpu_s": cpu_s,
            "sys_s": sys_s,
            "hist": histogram(lat),
        }

    def _send(self, fd: int, now: float) -> None:
        nonce = self.nonce[fd] + 1
        self.nonce[fd] = nonce
        self.sent_at[fd] = now
        self.busy[fd] = True
        os.write(fd, self.line[fd] % nonce)

    def _closed(self, seconds: float, lat: array[float]) -> tuple[int, int, int]:
        """Every connection keeps one submit in flight until ``seconds`` are over."""
        now = time.perf_counter
        read, poll, line, nonce, sent_at, busy = (
            os.read,
            self.ep.poll,
            self.line,
            self.nonce,
            self.sent_at,
            self.busy,
        )
        t = now()
        for fd in self.socks:
            self._send(fd, t)
        end = t + seconds
        done = rejected = lost = 0
        while t < end:
            events = poll(0.05)
            t = now()
            for fd, _ in events:
                try:
                    data = read(fd, READ_SIZE)
                except OSError:
                    data = b""
                if not data:
                    lost += self._close(fd)
                    continue
                if data[-1] != 10 or self.partial[fd] or b'"method"' in data:
                    n, ok = self._slow_read(fd, data)
                    if not n:
                        continue
                else:
                    n, ok = data.count(b"\n"), data.count(b"true")
                done += n
                rejected += n - ok
                lat.append(t - sent_at[fd])
                busy[fd] = False
                if t < end:
                    n = nonce[fd] + 1
                    nonce[fd] = n
                    sent_at[fd] = t
                    busy[fd] = True
                    os.write(fd, line[fd] % n)
        return done, rejected, lost

    def _paced(self, seconds: float, rate: float, lat: array[float]) -> tuple[int, int, int]:
        """``rate`` submits/s over this slice, round-robin over the idle connections."""
        fds = list(self.socks)
        start = t = time.perf_counter()
        end, sent, turn = start + seconds, 0, 0
        done = rejected = lost = 0
        while t < end and fds:
            due = int((t - start) * rate) - sent
            for _ in range(len(fds)):
                if due <= 0:
                    break
                fd = fds[turn % len(fds)]
                turn += 1
                if fd in self.socks and not self.busy[fd]:
                    self._send(fd, t)
                    sent += 1
                    due -= 1
            n, ok, gone = self._collect(
                self.ep.poll(min(0.001, 1 / rate)), time.perf_counter(), lat
            )
            done, rejected, lost = done + n, rejected + n - ok, lost + gone
            t = time.perf_counter()
        return done, rejected, lost

    def _round(self, lat: array[float]) -> tuple[int, int, int]:
        """One submit on every connection; wait until every one is answered (or a stall)."""
        t = time.perf_counter()
        for fd in self.socks:
            self._send(fd, t)
        done = rejected = lost = 0
        waiting, progress_at = len(self.socks), time.monotonic()
        while waiting > 0 and time.monotonic() - progress_at < STALL_TIMEOUT_S:
            n, ok, gone = self._collect(self.ep.poll(0.5), time.perf_counter(), lat)
            done, rejected, lost = done + n, rejected + n - ok, lost + gone
            if n or gone:
                waiting -= n + gone
                progress_at = time.monotonic()
        return done, rejected, lost

    def _collect(
        self, events: list[tuple[int, int]], t: float, lat: array[float]
    ) -> tuple[int, int, int]:
        """Count the replies of one epoll batch (the slow, general path: paced, round, drain)."""
        done = accepted = lost = 0
        for fd, _ in events:
            try:
                data = os.read(fd, READ_SIZE)
            except OSError:
                data = b""
            if not data:
                lost += self._close(fd)
                continue
            n, ok = self._slow_read(fd, data)
            if n:
                done, accepted = done + n, accepted + ok
                lat.append(t - self.sent_at[fd])
                self.busy[fd] = False
        return done, accepted, lost

    def _drain(self) -> None:
        """Wait for the replies still in flight (not counted: the run is over)."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while any(self.busy[fd] for fd in self.socks) and time.monotonic() < deadline:
            self._collect(self.ep.poll(0.1), 0.0, array("d"))

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
        self.ep.close()


# ---------------------------------------------------------------- the ceiling's server


NULL_REPLY = b'{"id":4,"result":true,"error":null}\n'


def serve_null(host: str = "127.0.0.1", port: int = 0) -> None:
    """The null server, on epoll as the generator: answers the subscribe and the authorize
    by id, then every further line with one constant reply, without parsing it. Against it
    the generator measures its own ceiling (both sides cost a few microseconds a line).
    Prints ``{"port": ..}`` once listening; runs until killed."""
    lsock = socket.create_server((host, port), backlog=4096)
    lsock.setblocking(False)
    ep = select.epoll()
    ep.register(lsock.fileno(), IN)
    socks: dict[int, socket.socket] = {}
    setup: dict[int, bytes] = {}  # connections still in their handshake: the unterminated line
    print(json.dumps({"port": lsock.getsockname()[1]}), flush=True)
    while True:
        for fd, _ in ep.poll():
            if fd == lsock.fileno():
                _accept_all(lsock, ep, socks, setup)
                continue
            try:
                data = os.read(fd, READ_SIZE)
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                socks.pop(fd).close()
                setup.pop(fd, None)
            elif fd in setup:
                _null_setup(fd, setup, data)
            else:
                os.write(fd, NULL_REPLY * data.count(b"\n"))


def _accept_all(
    lsock: socket.socket, ep: select.epoll, socks: dict[int, socket.socket], setup: dict[int, bytes]
) -> None:
    while True:
        try:
            sock, _ = lsock.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks[sock.fileno()] = sock
        setup[sock.fileno()] = b""
        ep.register(sock.fileno(), IN)


def _null_setup(fd: int, setup: dict[int, bytes], data: bytes) -> None:
    """Subscribe and authorize: answer each by its id, ``true``; the second ends the setup."""
    *lines, rest = (setup[fd] + data).split(b"\n")
    setup[fd] = rest
    for ln in lines:
        msg_id = json.loads(ln)["id"]
        os.write(fd, b'{"id":%d,"result":true,"error":null}\n' % msg_id)
        if msg_id == 2:
            del setup[fd]
            return


# ---------------------------------------------------------------- limits


def _sysctl(name: str) -> list[int]:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def limit_report(n: int, generators: int, server_processes: int) -> list[str]:
    """What caps ``n`` connections from ``generators`` processes to ``server_processes``
    (one line per limit; a line starting with ``CAP`` is one that ``n`` exceeds)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_proc = hard - FD_HEADROOM if hard != resource.RLIM_INFINITY else 1 << 20
    out = []
    per_gen, per_srv = -(-n // generators), -(-n // server_processes)
    for who, k, per in (("generator", generators, per_gen), ("server", server_processes, per_srv)):
        tag = "CAP" if per > per_proc else "ok "
        spread = (
            "; SO_REUSEPORT spreads them unevenly by a few %" if who == "server" and k > 1 else ""
        )
        out.append(
            f"{tag} RLIMIT_NOFILE hard {hard} per process: {k} {who} process(es) hold at most"
            f" {k * per_proc:,} ({per:,} each{spread})"
        )
    ports = _sysctl("net.ipv4.ip_local_port_range")
    if len(ports) == 2:
        span = ports[1] - ports[0] + 1
        tag = "CAP" if span < CONNS_PER_SOURCE else "ok "
        out.append(
            f"{tag} ip_local_port_range {ports[0]}-{ports[1]}: {span:,} ports per source address,"
            f" {CONNS_PER_SOURCE:,} used on each of {-(-n // CONNS_PER_SOURCE)} (127.0.0.2..)"
        )
    somax = _sysctl("net.core.somaxconn")
    if somax:
        tag = "ok " if somax[0] >= HANDSHAKE_WINDOW * generators else "low"
        out.append(
            f"{tag} net.core.somaxconn {somax[0]}: {generators} x {HANDSHAKE_WINDOW} connects at once"
            " (an overflowing accept queue slows the set-up, it does not cap N)"
        )
    mem = _sysctl("net.ipv4.tcp_mem")
    if len(mem) == 3:
        page = os.sysconf("SC_PAGE_SIZE")
        out.append(
            f"ok  net.ipv4.tcp_mem high {mem[2] * page / 2**20:,.0f} MiB for all socket buffers:"
            f" {2 * n:,} sockets (both ends), {mem[2] * page / (2 * n) / 1024:,.1f} KiB each at most"
        )
    for name, need in (("fs.file-max", 2 * n), ("fs.nr_open", per_srv)):
        v = _sysctl(name)
        if v:
            out.append(f"{'CAP' if v[0] < need else 'ok '} {name} {v[0]:,} (needs {need:,})")
    return out


# ---------------------------------------------------------------- parent side


class Generators:
    """``processes`` generator children holding ``n`` connections to ``port`` between them."""

    def __init__(self, port: int, n: int, processes: int = 1, *, real: bool = True) -> None:
        per = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
        firsts = [sum(per[:i]) for i in range(processes)]
        self.children = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    str(port),
                    str(first),
                    str(count),
                    *([] if real else ["--not-real"]),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for first, count in zip(firsts, per, strict=True)
        ]
        opened = [self._read(c) for c in self.children]
        self.open = sum(int(o["open"]) for o in opened)
        self.failed = sum(int(o["failed"]) for o in opened)

    @staticmethod
    def _read(child: subprocess.Popen[str]) -> dict[str, Any]:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator {child.args!r} exited early")
        out: dict[str, Any] = json.loads(line)
        return out

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    def run(self, mode: str, seconds: float = 0.0, rate: float = 0.0) -> Result:
        """Start the run in every child at once (rate is the total), and sum their results."""
        share = rate / len(self.children)
        for c in self.children:
            assert c.stdin is not None
            c.stdin.write(json.dumps({"mode": mode, "seconds": seconds, "rate": share}) + "\n")
            c.stdin.flush()
        total = Result()
        for c in self.children:
            total.add(self._read(c))
        return total

    def close(self) -> None:
        for c in self.children:
            with contextlib.suppress(OSError):
                assert c.stdin is not None
                c.stdin.close()
        for c in self.children:
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()

    def __enter__(self) -> Generators:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def child_main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="one load-generator process (spawned by Generators)")
    ap.add_argument(
        "--serve-null", action="store_true", help="run the null server instead (PORT 0 0)"
    )
    ap.add_argument("port", type=int)
    ap.add_argument("first", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument(
        "--not-real", action="store_true", help="echo/null server: no extranonce2 size, no notify"
    )
    args = ap.parse_args(argv)
    raise_nofile()
    if args.serve_null:
        serve_null(port=args.port)
        return
    sl = Slice(args.port, args.first, args.count, real=not args.not_real)
    sl.open()
    print(json.dumps({"open": len(sl.socks), "failed": sl.failed}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        print(json.dumps(sl.run(cmd["mode"], cmd["seconds"], cmd["rate"])), flush=True)
    sl.close()


if __name__ == "__main__":
    child_main()
