"""Benchmark: SV2 encode+encrypt and decrypt+decode against bare ChaCha20-Poly1305.

Prints messages/s for 100-byte payloads through the full stack
(message encode -> frame -> Noise transport encrypt, and back), and, in the
same run, the same count of bare ``cryptography`` ChaCha20Poly1305 calls on
100-byte buffers, with the ratio. A second block does the same for
SubmitSharesExtended (the share hot path, 33-byte payload).

Run: .venv/bin/python bench/bench_sv2.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def rate(fn: Callable[[int], None], seconds: float, batch: int = 2000) -> float:
    """Best-of-3 messages/s of ``fn(batch)`` run repeatedly for ``seconds`` each."""
    results = []
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            fn(batch)
            n += batch
        results.append(n / elapsed)
    return max(results)


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


def bench_message(label: str, msg: Message, seconds: float) -> None:
    payload_len = len(msg.encode())
    client, _server = connected_pair()

    def encode_encrypt(n: int) -> None:
        send = client.send
        for _ in range(n):
            send(msg)

    # Prepare a long stream of encrypted frames for the receive side (nonces advance).
    sample = client.send(msg)
    frames_per_batch = 2000

    rx_client, rx_server = connected_pair()

    def decrypt_decode(n: int) -> None:
        stream = b"".join(rx_client.send(msg) for _ in range(n))
        t0 = time.perf_counter()
        rx_server.receive_data(stream)
        got = 0
        for _m in rx_server.messages():
            got += 1
        assert got == n
        decrypt_decode.elapsed += time.perf_counter() - t0  # type: ignore[attr-defined]

    decrypt_decode.elapsed = 0.0  # type: ignore[attr-defined]

    def measure_receive(seconds: float) -> float:
        best = 0.0
        for _ in range(3):
            decrypt_decode.elapsed = 0.0  # type: ignore[attr-defined]
            n = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds * 1.5:
                decrypt_decode(frames_per_batch)
                n += frames_per_batch
            best = max(best, n / decrypt_decode.elapsed)  # type: ignore[attr-defined]
        return best

    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    buf = os.urandom(payload_len)
    ct = aead.encrypt(nonce, buf, None)

    def bare_encrypt(n: int) -> None:
        enc = aead.encrypt
        for _ in range(n):
            enc(nonce, buf, None)

    def bare_decrypt(n: int) -> None:
        dec = aead.decrypt
        for _ in range(n):
            dec(nonce, ct, None)

    tx = rate(encode_encrypt, seconds)
    rx = measure_receive(seconds)
    bare_tx = rate(bare_encrypt, seconds)
    bare_rx = rate(bare_decrypt, seconds)
    print(f"\n{label}: payload {payload_len} bytes, {len(sample)} bytes on the wire per frame")
    print(f"  encode+encrypt  (sv2 stack)      : {tx:12,.0f} msg/s")
    print(f"  bare ChaCha20Poly1305 encrypt    : {bare_tx:12,.0f} ops/s   ratio sv2/bare = {tx / bare_tx:.2f}")
    print(f"  decrypt+decode  (sv2 stack)      : {rx:12,.0f} msg/s")
    print(f"  bare ChaCha20Poly1305 decrypt    : {bare_rx:12,.0f} ops/s   ratio sv2/bare = {rx / bare_rx:.2f}")
    print("  (each SV2 frame costs 2 AEAD calls: 6-byte header + payload; ideal ratio is about 0.5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement (best of 3)")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, best of 3 x {args.seconds:g}s per figure")
    bench_message("NewExtendedMiningJob", job_with_payload(100), args.seconds)
    share = SubmitSharesExtended(
        channel_id=1, sequence_number=7, job_id=42, nonce=123456, ntime=1_700_000_000, version=0x20000000,
        extranonce=bytes(8),
    )
    bench_message("SubmitSharesExtended", share, args.seconds)
    _ = statistics  # keep import for future percentile figures


if __name__ == "__main__":
    main()
