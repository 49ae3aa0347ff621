"""Benchmark: CPU per share of the SV1 share path, sans-IO (no sockets, no event loop).

Drives the real ``Hub`` with the real ``ChannelManager`` behind it (as the
runtime wires them) with pre-built ``mining.submit`` lines: per share
``LineBuffer.feed``, ``protocol.parse_line`` and ``Hub.handle`` -- the work the
SV1 server does for one line, minus the socket. Only the two sockets are
replaced: the pool writer keeps nothing (``send`` drops the message) and the
miner's write drops the reply. Every share meets the miner's target (the
bench_proxy setting); about ``--forward-ratio`` of them meet the channel
target and are forwarded upstream as SubmitSharesExtended. With
``--share-log`` a sink that drops the records is attached, so
``ShareRecord.from_share`` runs per share as in the product.

The baselines, measured interleaved with it in the same run, are the
unavoidable work of one share: ``orjson.loads`` of the line plus one double
SHA-256 of an 80-byte header (A), and A plus the share's other hashes, the
coinbase txid and one double SHA-256 per merkle branch (B).

Timing is CPU time of this process (``time.process_time``), best of
``--rounds``; call counts per share come from one extra run under cProfile
and do not depend on the machine's load (``--profile`` also prints the top
entries by own time).

Run: .venv/bin/python bench/bench_session.py [--shares 20000] [--rounds 5] [--branches 2] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from sv2 import work
from sv2.keys import encode_public_key, generate_keypair
from sv2.messages import NewExtendedMiningJob, OpenExtendedMiningChannelSuccess, SetNewPrevHash
from tproxy.config import Settings, UpstreamSettings
from tproxy.sv1 import protocol as p
from tproxy.sv1.hub import Hub, Miner
from tproxy.upstream.manager import ChannelManager

MINER_DIFFICULTY = 1e-10  # as bench_proxy: the target clamps to 2**256-1, every hash is a valid share
CHANNEL_ID = 7


class PoolDouble:
    """The pool socket writer, minus the socket: every SV2 message is dropped."""

    closed = False
    user_identity = "bench"

    def send(self, msg: Any) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class NullShareLog:
    """A share log that takes every record and keeps none (replies are written at once)."""

    def submit(self, record: Any) -> None:
        pass

    def submit_pool_verdict(self, record: Any) -> None:
        pass

    def submit_event(self, record: Any) -> None:
        pass

    def answer(self, miner: object, write: Any, line: bytes, record: Any) -> None:
        write(line)


def _drop(data: bytes) -> None:
    pass


class Bench:
    """A hub with ``miners`` ready miners on one aggregated channel, and a job to submit shares for."""

    def __init__(self, miners: int, branches: int, forward_ratio: float, share_log: bool) -> None:
        _, xonly = generate_keypair()
        settings = Settings(
            upstreams=[UpstreamSettings(address="127.0.0.1", port=3333, authority_pubkey=encode_public_key(xonly))],
            downstream={"address": "127.0.0.1", "port": 0},
            difficulty={"start_difficulty": MINER_DIFFICULTY, "min_difficulty": MINER_DIFFICULTY, "vardiff": False},
            proxy={"instance_id": "bench", "job_keepalive_interval_s": 0},
        )
        sink = NullShareLog() if share_log else None
        self.hub = Hub(settings, sink, event_sink=sink)
        manager = ChannelManager(settings, self.hub)
        self.hub.connect_upstream(manager)
        self.miners: list[Miner] = []
        for i in range(miners):
            m = self.hub.open(f"10.0.0.1:{4000 + i}", _drop, lambda: None)
            assert m is not None
            for method, params in (("mining.subscribe", ["bench/1.0"]), ("mining.authorize", [f"bench.w{i}", "x"])):
                self.hub.handle(m, p.Request(1, method, params))
            self.miners.append(m)
        pool = PoolDouble()
        manager.attach(pool)  # type: ignore[arg-type]
        target = work.target_to_bytes(min(int(work.MAX_TARGET * forward_ratio), work.MAX_TARGET))
        manager.on_upstream_message(pool, OpenExtendedMiningChannelSuccess(  # type: ignore[arg-type]
            request_id=1, channel_id=CHANNEL_ID, target=target, extranonce_size=16,
            extranonce_prefix=b"\x01\x00\x00\x07", group_channel_id=99))
        self.ntime = int(time.time())
        self.merkle_path = tuple(hashlib.sha256(bytes([i])).digest() for i in range(branches))
        # A non-segwit coinbase of dev-pool size (about 50 + 16 + 60 bytes around the extranonce).
        prefix = b"\x02\x00\x00\x00\x01" + bytes(32) + b"\xff\xff\xff\xff\x23\x03\x01\x02\x03"
        suffix = b"\xff\xff\xff\xff\x01" + bytes(8) + b"\x16\x00\x14" + bytes(20) + bytes(4)
        manager.on_upstream_message(pool, NewExtendedMiningJob(  # type: ignore[arg-type]
            channel_id=CHANNEL_ID, job_id=1, min_ntime=None, version=0x20000000, version_rolling_allowed=True,
            merkle_path=self.merkle_path, coinbase_tx_prefix=prefix, coinbase_tx_suffix=suffix))
        manager.on_upstream_message(pool, SetNewPrevHash(  # type: ignore[arg-type]
            channel_id=CHANNEL_ID, job_id=1, prev_hash=bytes(range(32)), min_ntime=self.ntime, nbits=0x1B00D7C0))
        job = manager.channels[CHANNEL_ID].latest
        assert job is not None and all(m.session.latest is not None for m in self.miners)
        self.coinbase = job.coinb1 + bytes(6) + job.coinb2
        self.header = bytes(80)
        self._nonce = 0

    def lines(self, n: int) -> list[tuple[Miner, bytes]]:
        """``n`` fresh submit lines (new nonces: none is a duplicate), round-robin over the miners."""
        out = []
        miners = self.miners
        for k in range(n):
            self._nonce += 1
            m = miners[k % len(miners)]
            s = m.session
            assert s.latest is not None
            en2 = (k % len(miners)).to_bytes(s.extranonce2_size, "big").hex()
            out.append((m, (
                f'{{"id":4,"method":"mining.submit","params":["{s.worker_name}","{s.latest[0]}",'
                f'"{en2}","{self.ntime:08x}","{self._nonce:08x}"]}}\n'
            ).encode()))
        return out

    def run(self, lines: list[tuple[Miner, bytes]]) -> None:
        """What the SV1 server does per line, minus the socket."""
        handle = self.hub.handle
        parse_line = p.parse_line
        buf = p.LineBuffer()
        for miner, data in lines:
            for line in buf.feed(data):
                msg = parse_line(line)
                assert type(msg) is p.Request
                handle(miner, msg)

    def baseline_a(self, lines: list[tuple[Miner, bytes]]) -> None:
        loads, sha256d, header = orjson.loads, work.sha256d, self.header
        for _, data in lines:
            loads(data)
            sha256d(header)

    def baseline_b(self, lines: list[tuple[Miner, bytes]]) -> None:
        loads, sha256d, header, coinbase, path = orjson.loads, work.sha256d, self.header, self.coinbase, self.merkle_path
        for _, data in lines:
            loads(data)
            root = sha256d(coinbase)
            for node in path:
                root = sha256d(root + node)
            sha256d(header)


def cpu(fn: Any, arg: Any) -> float:
    t0 = time.process_time()
    fn(arg)
    return time.process_time() - t0


def profile(bench: Bench, n: int, top: int) -> str:
    lines = bench.lines(n)
    prof = cProfile.Profile()
    prof.enable()
    bench.run(lines)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    calls = stats.total_calls  # type: ignore[attr-defined]
    head = f"  function calls per share under cProfile: {calls / n:.1f}\n"
    if top:
        stats.sort_stats("tottime").print_stats(top)
        body = out.getvalue()
        head += "\n".join("    " + ln for ln in body.splitlines()[body.count("\n") - top - 3:]) + "\n"
    return head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shares", type=int, default=20_000, help="shares per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--miners", type=int, default=100)
    ap.add_argument("--branches", type=int, default=2, help="merkle branches of the job (the dev pool sends 1-3)")
    ap.add_argument("--forward-ratio", type=float, default=0.1)
    ap.add_argument("--share-log", action="store_true", help="attach a share log sink (ShareRecord per share)")
    ap.add_argument("--profile", action="store_true", help="print the top entries by own time")
    a = ap.parse_args()
    bench = Bench(a.miners, a.branches, a.forward_ratio, a.share_log)
    bench.run(bench.lines(2000))  # warm up
    best = {"hub": float("inf"), "a": float("inf"), "b": float("inf")}
    for _ in range(a.rounds):
        lines = bench.lines(a.shares)
        best["hub"] = min(best["hub"], cpu(bench.run, lines))
        best["a"] = min(best["a"], cpu(bench.baseline_a, lines))
        best["b"] = min(best["b"], cpu(bench.baseline_b, lines))
    us = {k: v / a.shares * 1e6 for k, v in best.items()}
    print(f"python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}, {a.miners} miners, "
          f"{a.branches} merkle branches, ~{a.forward_ratio:.0%} forwarded, share log {'on' if a.share_log else 'off'}; "
          f"CPU us per share, best of {a.rounds} x {a.shares}")
    print(f"  share path (feed + parse_line + Hub.handle) : {us['hub']:6.2f} us")
    print(f"  baseline A (orjson.loads + sha256d header)  : {us['a']:6.2f} us   path / A = {us['hub'] / us['a']:.1f}")
    print(f"  baseline B (A + coinbase and merkle hashes)  : {us['b']:6.2f} us   path / B = {us['hub'] / us['b']:.1f}")
    print(profile(bench, a.shares, 30 if a.profile else 0), end="")


if __name__ == "__main__":
    main()
