"""bench/sv1_loadgen.py against a tiny SV1 server in the test: the handshake it does, the
submits it sends (fresh nonce, the job of the last notify) and the replies it counts."""

from __future__ import annotations

import importlib.util
import json
import socketserver
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
REJECTED_NONCE = 3  # the server refuses this nonce on every connection
NEW_JOB_AFTER = 5  # the server sends a new job with its 5th reply on a connection


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sv1_loadgen", REPO / "bench" / "sv1_loadgen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sv1_loadgen"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


loadgen = _load()


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submits: list[list[Any]] = []  # params of every mining.submit
        self.sent_true = 0  # replies with result true to a submit
        self.sent_false = 0


def notify(job: str) -> bytes:
    params = [job, "00" * 32, "01", "02", [], "20000000", "1d00ffff", "6553f100", True]
    return json.dumps({"id": None, "method": "mining.notify", "params": params}).encode() + b"\n"


def make_handler(rec: Recorder) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            replies = 0
            for raw in self.rfile:
                req = json.loads(raw)
                method, rid = req["method"], req["id"]
                if method == "mining.subscribe":
                    self.reply(rid, [[["mining.notify", "1"]], "abcd", 4])
                elif method == "mining.authorize":
                    self.reply(rid, True, tail=notify("j1"))
                else:
                    assert method == "mining.submit"
                    ok = int(req["params"][4], 16) != REJECTED_NONCE
                    replies += 1
                    with rec.lock:
                        rec.submits.append(req["params"])
                        rec.sent_true += ok
                        rec.sent_false += not ok
                    self.reply(
                        rid, ok or None, tail=notify("j2") if replies == NEW_JOB_AFTER else b""
                    )

        def reply(self, rid: int, result: object, tail: bytes = b"") -> None:
            line = json.dumps(
                {"id": rid, "result": result, "error": None if result else [23, "no", None]}
            )
            self.wfile.write(line.encode() + b"\n" + tail)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[int, Recorder]]:
    rec = Recorder()
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), make_handler(rec))
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1], rec
    srv.shutdown()
    srv.server_close()


def test_rounds_then_closed_loop_count_what_the_server_answered(
    server: tuple[int, Recorder],
) -> None:
    port, rec = server
    n = 20
    sl = loadgen.Slice(port, 0, n, real=True)
    try:
        sl.open()
        assert (len(sl.socks), sl.failed) == (n, 0)
        rounds = [
            sl.run("round") for _ in range(NEW_JOB_AFTER + 1)
        ]  # nonces 1..6 on every connection
        closed = sl.run("closed", 0.3)
    finally:
        sl.close()
    assert [(r["done"], r["lost"]) for r in rounds] == [(n, 0)] * len(rounds)
    assert [r["rejected"] for r in rounds] == [
        n if i + 1 == REJECTED_NONCE else 0 for i in range(len(rounds))
    ]
    with rec.lock:
        sent, submits = rec.sent_true + rec.sent_false, list(rec.submits)
    # the run counts the replies received before its end; at most one per connection came after
    after_rounds = sent - n * len(rounds)
    assert after_rounds - n <= closed["done"] <= after_rounds
    assert (closed["rejected"], closed["lost"]) == (0, 0)
    by_user: dict[str, list[list[Any]]] = {}
    for p in submits:
        by_user.setdefault(p[0], []).append(p)
    assert sorted(by_user) == sorted(f"bench.w{i}" for i in range(n))
    for user, params in by_user.items():
        nonces = [int(p[4], 16) for p in params]
        assert nonces == list(range(1, len(nonces) + 1)), user  # fresh, in order, none repeated
        assert {p[1] for p in params[:NEW_JOB_AFTER]} == {"j1"}
        assert {p[1] for p in params[NEW_JOB_AFTER:]} == {"j2"}  # the notify re-rendered the line
        index = int(user.removeprefix("bench.w"))
        assert {p[2] for p in params} == {index.to_bytes(4, "big").hex()}  # extranonce2 of its size
        assert {p[3] for p in params} == {"6553f100"}


def test_processes_split_the_connections_and_sum_the_results(server: tuple[int, Recorder]) -> None:
    port, rec = server
    n = 30
    with loadgen.Generators(port, n, 3) as gen:
        assert (gen.open, gen.failed) == (n, 0)
        r = gen.run("round")
        paced = gen.run("paced", 0.3, 100.0)
    assert (r.done, r.rejected, r.lost) == (n, 0, 0)
    assert r.cpu_s > 0 and sum(r.hist.values()) == n
    assert r.percentile_ms(0.5) <= r.percentile_ms(0.99)
    assert paced.lost == 0
    with rec.lock:
        users = {p[0] for p in rec.submits}
        total = len(rec.submits)
    assert users == {f"bench.w{i}" for i in range(n)}  # each process its own slice, no overlap
    assert total >= n + paced.done


def test_null_server_answers_every_line(tmp_path: Path) -> None:
    import subprocess

    srv = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "sv1_loadgen.py"), "--serve-null", "0", "0", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert srv.stdout is not None
        port = json.loads(srv.stdout.readline())["port"]
        with loadgen.Generators(port, 10, 1, real=False) as gen:
            assert gen.open == 10
            r = gen.run("round")
            closed = gen.run("closed", 0.2)
        assert (r.done, r.rejected, r.lost) == (10, 0, 0)
        assert closed.done > 0 and closed.rejected == 0
    finally:
        srv.terminate()
        srv.wait(10)
