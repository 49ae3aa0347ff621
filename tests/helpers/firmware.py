"""Sans-IO models of how real SV1 firmware treats what the proxy sends, for hub tests (no sockets).

Each model reads the lines the hub wrote to one ``MinerSocketDouble`` and
decides, as the named firmware does (docs/FIRMWARE.md section 2, rows tagged
S: read in the firmware's source), which work it hashes and at which
difficulty; ``share`` then grinds a real share on that work and submits it
through the hub, as the firmware would:

* ``Cpuminer`` (pooler cpuminer 2.5.1, row 9): mining.set_difficulty is
  stored and applies from the next notify. A notify with a new sv1_job_id and
  clean_jobs false does not interrupt the threads: they keep hashing the job
  they have, at the difficulty it came with, until their next scan round
  (``next_scan``).
* ``Bfgminer`` (bfgminer 5.5.0, row 11): every notify, whatever its id or
  clean flag, restarts work with extranonce2 = 0 at the latest difficulty, so a
  notify whose content it already hashed makes it find (and submit) the very
  same shares again. ``repeats`` lists every notify whose content (all but the
  id and the clean flag) equals an earlier one.

Not modelled: bfgminer reading an integer difficulty against a 2^224 - 1
diff-1 target (the tests' difficulties are not integers), ntime rolling by
the firmware itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from sv2 import work
from tests.helpers.jobs import submit
from tests.helpers.rig import MinerSocketDouble, Rig

Content = tuple[str, bytes, bytes, tuple[bytes, ...], int, int, int]


@dataclass(frozen=True)
class Work:
    """One mining.notify as the firmware holds it, with the difficulty in force for it."""

    sv1_job_id: str
    prev_hash: bytes  # header byte order
    coinb1: bytes
    coinb2: bytes
    branches: tuple[bytes, ...]
    version: int
    nbits: int
    ntime: int
    clean: bool
    difficulty: float

    @classmethod
    def from_notify(cls, params: list[Any], difficulty: float) -> Work:
        return cls(
            sv1_job_id=params[0],
            prev_hash=work.sv2_prevhash_from_sv1(params[1]),
            coinb1=bytes.fromhex(params[2]),
            coinb2=bytes.fromhex(params[3]),
            branches=tuple(bytes.fromhex(b) for b in params[4]),
            version=int(params[5], 16),
            nbits=int(params[6], 16),
            ntime=int(params[7], 16),
            clean=bool(params[8]),
            difficulty=difficulty,
        )

    @property
    def content(self) -> Content:
        """What the firmware hashes: everything but the id and the clean flag."""
        return (self.prev_hash.hex(), self.coinb1, self.coinb2, self.branches, self.version, self.nbits, self.ntime)

    @property
    def target(self) -> int:
        return work.target_from_difficulty(self.difficulty)

    def grind(self, extranonce1: bytes, extranonce2: bytes, *, start: int = 0) -> int:
        """The first nonce from ``start`` whose header meets this work's difficulty (merkle root computed once)."""
        root = work.merkle_root(work.sha256d(self.coinb1 + extranonce1 + extranonce2 + self.coinb2), self.branches)
        target = self.target
        for nonce in range(start, start + 50_000_000):
            h = work.sha256d(work.header(self.version, self.prev_hash, root, self.ntime, self.nbits, nonce))
            if work.hash_meets_target(h, target):
                return nonce
        raise AssertionError("no nonce found")

    def hash(self, extranonce1: bytes, extranonce2: bytes, nonce: int) -> bytes:
        root = work.merkle_root(work.sha256d(self.coinb1 + extranonce1 + extranonce2 + self.coinb2), self.branches)
        return work.sha256d(work.header(self.version, self.prev_hash, root, self.ntime, self.nbits, nonce))


@dataclass
class FirmwareModel:
    """What every model shares: reading the proxy's lines, the subscription, submitting."""

    rig: Rig
    sock: MinerSocketDouble
    worker: str = "farm.w1"
    notified: list[Work] = field(default_factory=list)
    current: Work | None = None  # the work being hashed
    extranonce2: int = 0  # the firmware's extranonce2 counter
    _read: int = 0  # chunks of sock.written already read
    _difficulty: float = 0.0  # the latest mining.set_difficulty received
    _req_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10_000))

    @property
    def extranonce1(self) -> bytes:
        sub = next(m["result"] for m in self.sock.messages() if isinstance(m.get("result"), list))
        return bytes.fromhex(sub[1])

    @property
    def extranonce2_size(self) -> int:
        sub = next(m["result"] for m in self.sock.messages() if isinstance(m.get("result"), list))
        return int(sub[2])

    def feed(self) -> list[Work]:
        """Read the lines written since the last call; returns the notifies among them."""
        new: list[Work] = []
        for msg in self.sock.messages(self._read):
            if msg.get("method") == "mining.set_difficulty":
                self._difficulty = float(msg["params"][0])
            elif msg.get("method") == "mining.notify":
                w = Work.from_notify(msg["params"], self._difficulty)
                self.on_notify(w)
                self.notified.append(w)
                new.append(w)
        self._read = len(self.sock.written)
        return new

    def on_notify(self, w: Work) -> None:
        raise NotImplementedError

    def share(self) -> dict[str, Any]:
        """Find the next share on the current work (next extranonce2) and submit it; the proxy's reply."""
        assert self.current is not None and self.sock.miner is not None
        w = self.current
        en2 = self.extranonce2.to_bytes(self.extranonce2_size, "big")
        self.extranonce2 += 1
        nonce = w.grind(self.extranonce1, en2)
        req = submit(next(self._req_ids), self.worker, w.sv1_job_id, en2, w.ntime, nonce)
        self.rig.hub.handle(self.sock.miner, req)
        return self.sock.last_reply()


@dataclass
class Cpuminer(FirmwareModel):
    """pooler cpuminer: a new non-clean job waits for the threads' next scan round."""

    def on_notify(self, w: Work) -> None:
        if self.current is None or w.clean:
            self.current = w

    def next_scan(self) -> None:
        """The threads' next scan round: take the latest job."""
        self.current = self.notified[-1]


@dataclass
class Bfgminer(FirmwareModel):
    """bfgminer: every notify restarts work with extranonce2 0 at the latest difficulty."""

    repeats: list[Work] = field(default_factory=list)

    def on_notify(self, w: Work) -> None:
        if any(w.content == old.content for old in self.notified):
            self.repeats.append(w)
        self.current = w
        self.extranonce2 = 0
