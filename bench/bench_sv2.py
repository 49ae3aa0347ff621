"""Benchmark: SV2 encode+encrypt and decrypt+decode against bare ChaCha20-Poly1305.

Prints messages/s for 100-byte payloads through the full stack
(message encode -> frame -> Noise transport encrypt, and back), and, in the
same run, the same count of bare ``cryptography`` ChaCha20Poly1305 calls on
100-byte buffers, with the ratio. A second block does the same for
SubmitSharesExtended (the share hot path, 33-byte payload).

Timing: CPU time of this process (``time.process_time``), best of
``--rounds`` rounds, and the four figures of a block are measured interleaved
within each round. The machine this runs on is shared, so wall-clock figures
swing with other load by a factor of 2 or more; CPU time and interleaving keep
the sv2/bare ratio comparable between runs. The bare baseline is one AEAD
call on a ``payload``-sized buffer per op, same nonce, no Python around it.

A second baseline, the floor, is what a frame cannot go below in pure
Python: exactly two bare AEAD calls per op (the 6-byte header, then the
payload; on receive their 22-byte and payload ciphertexts) plus one
``struct`` pack (send) or unpack (receive) of the header, same nonce, no
message encode or decode. Its ratio to the bare baseline is the best the sv2
figure could reach without moving per-frame work out of the interpreter;
``sv2/floor`` on the sv2 lines says how much of that the stack reaches.

``--profile`` instead runs each sv2 loop under cProfile and prints the top
entries by own time (the figures in docs/PERFORMANCE.md).

Run: .venv/bin/python bench/bench_sv2.py [--seconds 1] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sv2.connection import Sv2Connection
from sv2.keys import generate_keypair
from sv2.messages import Message, NewExtendedMiningJob, SubmitSharesExtended
from sv2.noise import NoiseInitiator, NoiseResponder


def rate(fn: Callable[[int], float], seconds: float, batch: int = 2000) -> float:
    """Messages per CPU second of ``fn(batch)`` (which returns its own CPU seconds), over ``seconds``."""
    n = 0
    spent = 0.0
    while spent < seconds:
        spent += fn(batch)
        n += batch
    return n / spent


def timed(loop: Callable[[int], None]) -> Callable[[int], float]:
    """Wrap ``loop(n)`` so that it returns the CPU seconds it took."""

    def run(n: int) -> float:
        t0 = time.process_time()
        loop(n)
        return time.process_time() - t0

    return run


def connected_pair() -> tuple[Sv2Connection, Sv2Connection]:
    secret, xonly = generate_keypair()
    client = Sv2Connection(NoiseInitiator(xonly))
    server = Sv2Connection(NoiseResponder(secret))
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    return client, server


def job_with_payload(size: int) -> NewExtendedMiningJob:
    fixed = 23  # every field but the two coinbase byte strings
    body = size - fixed
    msg = NewExtendedMiningJob(
        channel_id=1, job_id=42, min_ntime=1_700_000_000, version=0x20000000, version_rolling_allowed=True,
        merkle_path=(), coinbase_tx_prefix=b"\x01" * (body // 2), coinbase_tx_suffix=b"\x02" * (body - body // 2),
    )
    assert len(msg.encode()) == size, len(msg.encode())
    return msg


class Sv2Loops:
    """The two sv2 loops of one message over fresh connections."""

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.client, _server = connected_pair()
        self.rx_client, self.rx_server = connected_pair()

    def encode_encrypt(self, n: int) -> None:
        send, msg = self.client.send, self.msg
        for _ in range(n):
            send(msg)

    def stream(self, n: int) -> bytes:
        """n frames for the receive side (made untimed; its nonces advance with them)."""
        send, msg = self.rx_client.send, self.msg
        return b"".join([send(msg) for _ in range(n)])

    def decrypt_decode(self, stream: bytes, n: int) -> None:
        self.rx_server.receive_data(stream)
        got = 0
        for _m in self.rx_server.messages():
            got += 1
        assert got == n

    def timed_receive(self, n: int) -> float:
        stream = self.stream(n)
        t0 = time.process_time()
        self.decrypt_decode(stream, n)
        return time.process_time() - t0


def bench_message(label: str, msg: Message, seconds: float, rounds: int) -> None:
    payload_len = len(msg.encode())
    loops = Sv2Loops(msg)
    wire = len(connected_pair()[0].send(msg))

    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    buf = os.urandom(payload_len)
    ct = aead.encrypt(nonce, buf, None)
    header = struct.Struct("<HBHB")  # the SV2 frame header, as sv2.framing packs it
    header_ct = aead.encrypt(nonce, header.pack(0x8000, 0x1B, payload_len, 0), None)

    def bare_encrypt(n: int) -> None:
        enc = aead.encrypt
        for _ in range(n):
            enc(nonce, buf, None)

    def bare_decrypt(n: int) -> None:
        dec = aead.decrypt
        for _ in range(n):
            dec(nonce, ct, None)

    def floor_encrypt(n: int) -> None:
        enc, pack = aead.encrypt, header.pack
        for _ in range(n):
            enc(nonce, pack(0x8000, 0x1B, payload_len, 0), None)
            enc(nonce, buf, None)

    def floor_decrypt(n: int) -> None:
        dec, unpack = aead.decrypt, header.unpack
        for _ in range(n):
            unpack(dec(nonce, header_ct, None))
            dec(nonce, ct, None)

    loops_in_order = (
        timed(loops.encode_encrypt), timed(bare_encrypt), timed(floor_encrypt),
        loops.timed_receive, timed(bare_decrypt), timed(floor_decrypt),
    )  # fmt: skip
    best = [0.0] * len(loops_in_order)
    for _ in range(rounds):
        for i, fn in enumerate(loops_in_order):
            best[i] = max(best[i], rate(fn, seconds))
    tx, bare_tx, floor_tx, rx, bare_rx, floor_rx = best
    print(f"\n{label}: payload {payload_len} bytes, {wire} bytes on the wire per frame")
    print(f"  encode+encrypt  (sv2 stack)      : {tx:12,.0f} msg/s   sv2/floor = {tx / floor_tx:.2f}")
    print(f"  bare ChaCha20Poly1305 encrypt    : {bare_tx:12,.0f} ops/s   ratio sv2/bare = {tx / bare_tx:.2f}")
    print(f"  two AEAD calls + header pack     : {floor_tx:12,.0f} ops/s   ratio floor/bare = {floor_tx / bare_tx:.2f}")
    print(f"  decrypt+decode  (sv2 stack)      : {rx:12,.0f} msg/s   sv2/floor = {rx / floor_rx:.2f}")
    print(f"  bare ChaCha20Poly1305 decrypt    : {bare_rx:12,.0f} ops/s   ratio sv2/bare = {rx / bare_rx:.2f}")
    print(f"  two AEAD calls + header unpack   : {floor_rx:12,.0f} ops/s   ratio floor/bare = {floor_rx / bare_rx:.2f}")
    print("  (each SV2 frame costs 2 AEAD calls: 6-byte header + payload; ideal ratio is about 0.5;")
    print("   the floor is those two calls and the header (un)pack alone, the best pure Python can do)")


def profile_message(label: str, msg: Message, n: int = 20000, top: int = 10) -> None:
    """cProfile of the send and the receive loop, top entries by own time."""
    loops = Sv2Loops(msg)
    stream = loops.stream(n)
    for what in ("encode+encrypt", "decrypt+decode"):
        prof = cProfile.Profile(time.process_time)
        if what == "encode+encrypt":
            prof.runcall(loops.encode_encrypt, n)
        else:
            prof.runcall(loops.decrypt_decode, stream, n)
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
        body = out.getvalue()
        # Calls per message do not depend on the machine's load; the times do.
        calls: int = stats.total_calls  # type: ignore[attr-defined]
        print(f"\n### {label} {what}, {n} messages: {calls / n:.0f} function calls per message\n")
        print(body[body.index("   ncalls") :].rstrip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per figure per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept")
    ap.add_argument("--profile", action="store_true", help="print cProfile top entries instead")
    args = ap.parse_args()
    share = SubmitSharesExtended(
        channel_id=1, sequence_number=7, job_id=42, nonce=123456, ntime=1_700_000_000, version=0x20000000,
        extranonce=bytes(8),
    )
    cases: list[tuple[str, Message]] = [
        ("NewExtendedMiningJob", job_with_payload(100)),
        ("SubmitSharesExtended", share),
    ]
    if args.profile:
        for label, msg in cases:
            profile_message(label, msg)
        return
    print(f"python {sys.version.split()[0]}, best of {args.rounds} x {args.seconds:g} CPU s per figure")
    for label, msg in cases:
        bench_message(label, msg, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
