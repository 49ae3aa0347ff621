"""Worker and upstream events from the hub, and the difficulty memory (issue 13), on the rig
(hub + channel manager, test doubles for the sockets and the share log, a hand-moved clock),
plus ``DifficultyMemory`` on its own file."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.rig import Rig
from tests.helpers.stack import DIFF, proxy_settings
from tproxy.config import Settings
from tproxy.events import UpstreamDown, UpstreamUp, Verdict
from tproxy.shares import record as r
from tproxy.sv1.diffmemory import DifficultyMemory


def settings(**kw: object) -> Settings:
    s = proxy_settings([3333, 3334])
    return s.model_copy(update=kw)


def test_connect_authorize_silence_offline_share_online_disconnect() -> None:
    s = settings()
    s = s.model_copy(update={"events": s.events.model_copy(update={"worker_silence_s": 60.0})})
    rig = Rig(settings=s)
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    sock = rig.ready_miner("farm.w1")
    rig.clock.t += 59
    rig.hub.tick()
    assert rig.log.event_types() == [r.EVENT_UPSTREAM_UP, r.EVENT_CONNECT, r.EVENT_AUTHORIZE]
    rig.clock.t += 1
    rig.hub.tick()
    rig.hub.tick()  # once only
    assert rig.log.event_types()[-1] == r.EVENT_OFFLINE
    off = rig.log.events[-1]
    assert (off.online, off.since_ms, off.address, off.user_agent) == (False, int(rig.clock.t * 1000), "10.0.0.1:4000", "test/1.0")
    assert rig.share(sock, job, b"\x00" * 4)["result"] is True
    on = rig.log.events[-1]
    assert (on.event_type, on.online, on.last_share_ms) == (r.EVENT_ONLINE, True, int(rig.clock.t * 1000))
    assert sock.miner is not None
    rig.hub.close(sock.miner)
    gone = rig.log.events[-1]
    assert (gone.event_type, gone.reason, gone.online, gone.worker_name) == (r.EVENT_DISCONNECT, "closed", False, "farm.w1")
    assert [e.event_seq for e in rig.log.events] == list(range(1, len(rig.log.events) + 1))
    assert rig.hub.events.counts[r.EVENT_OFFLINE] == 1


def test_a_tick_taken_in_steps_skips_a_miner_that_disconnected_meanwhile() -> None:
    s = settings()
    s = s.model_copy(update={"events": s.events.model_copy(update={"worker_silence_s": 60.0})})
    rig = Rig(settings=s)
    rig.pool_up()
    (cid,) = rig.answer_opens()
    rig.new_block(cid, 1)
    rig.ready_miner("farm.a")
    gone = rig.ready_miner("farm.b")
    rig.clock.t += 60
    steps = rig.hub.tick_steps()  # as the running proxy takes it: the loop runs between two steps
    next(steps)
    assert gone.miner is not None
    rig.hub.close(gone.miner)
    for _ in steps:
        pass
    assert [(e.event_type, e.worker_name) for e in rig.log.events][-2:] == [
        (r.EVENT_DISCONNECT, "farm.b"),
        (r.EVENT_OFFLINE, "farm.a"),
    ]


def test_outage_disconnect_reason_and_upstream_changes() -> None:
    rig = Rig(settings=settings(proxy=settings().proxy.model_copy(update={"outage_reconnect_after_s": 60.0})))
    sock = rig.ready_miner("farm.w1")
    hub = rig.hub
    hub.on_upstream_event(UpstreamUp("127.0.0.1:3333"))
    hub.on_upstream_event(UpstreamUp("127.0.0.1:3333"))  # a second channel on the same connection
    hub.on_upstream_event(UpstreamDown("closed by the pool"))
    rig.clock.t += 60
    hub.tick()
    assert sock.closed and sock.miner is not None
    hub.close(sock.miner)  # what the SV1 server does once the socket is closed
    hub.on_upstream_event(UpstreamUp("127.0.0.1:3334"))
    hub.on_upstream_event(UpstreamUp("127.0.0.1:3333"))  # a switch while up: fail-back
    hub.on_upstream_event(UpstreamDown("Reconnect"))
    hub.on_upstream_event(UpstreamUp("pool.example:4444"))
    hub.on_upstream_event(UpstreamDown("lost"))
    hub.on_upstream_event(UpstreamUp("pool.example:4444"))
    ups = [(e.event_type, e.reason, e.detail) for e in rig.log.events if e.worker_name == "" and e.client_id == 0]
    assert ups == [
        (r.EVENT_UPSTREAM_UP, "connected", "127.0.0.1:3333"),
        (r.EVENT_UPSTREAM_DOWN, "closed by the pool", "127.0.0.1:3333"),
        (r.EVENT_UPSTREAM_UP, "failover", "127.0.0.1:3334"),
        (r.EVENT_UPSTREAM_UP, "failback", "127.0.0.1:3333"),
        (r.EVENT_UPSTREAM_DOWN, "Reconnect", "127.0.0.1:3333"),
        (r.EVENT_UPSTREAM_UP, "reconnect", "pool.example:4444"),
        (r.EVENT_UPSTREAM_DOWN, "lost", "pool.example:4444"),
        (r.EVENT_UPSTREAM_UP, "reconnected", "pool.example:4444"),
    ]
    gone = [e for e in rig.log.events if e.event_type == r.EVENT_DISCONNECT]
    assert [(e.worker_name, e.reason) for e in gone] == [("farm.w1", "outage")]


def test_pool_reject_burst() -> None:
    s = settings()
    rig = Rig(settings=s.model_copy(update={"events": s.events.model_copy(update={"reject_burst_count": 3})}))
    sock = rig.ready_miner("farm.w1")
    assert sock.miner is not None
    cid = sock.miner.client_id

    def verdict(v: str) -> None:
        rig.hub.on_upstream_event(Verdict(1, cid, "farm.w1", 7, 1, 1, v))

    for v in ["invalid-share", "invalid-share", "accepted", "stale-share", "stale-share"]:
        verdict(v)
    assert r.EVENT_POOL_REJECT_BURST not in rig.log.event_types()  # never 3 in a row
    verdict("stale-share")
    burst = rig.log.events[-1]
    assert (burst.event_type, burst.reason, burst.worker_name) == (r.EVENT_POOL_REJECT_BURST, "stale-share", "farm.w1")


def memory_settings(path: Path, **difficulty: object) -> Settings:
    s = settings()
    return s.model_copy(update={"difficulty": s.difficulty.model_copy(update={"memory_path": str(path), **difficulty})})


def test_difficulty_memory_applies_at_authorize_clamped_and_suggest_wins(tmp_path: Path) -> None:
    path = tmp_path / "mem.json"
    path.write_text(json.dumps({"format": 1, "workers": {
        "farm.big": [1e30, 1_745_600_000.0], "farm.old": [5.0, 1_000.0], "farm.ok": [DIFF * 8, 1_745_599_000.0]}}))
    rig = Rig(settings=memory_settings(path, max_difficulty=1e6))
    ok = rig.ready_miner("farm.ok")
    big = rig.ready_miner("farm.big")
    old = rig.ready_miner("farm.old")  # older than memory_max_age_s: start difficulty
    assert ok.miner is not None and big.miner is not None and old.miner is not None
    assert (ok.miner.session.difficulty, big.miner.session.difficulty, old.miner.session.difficulty) == (DIFF * 8, 1e6, DIFF)
    mem = [e for e in rig.log.events if e.event_type == r.EVENT_DIFFICULTY]
    assert [(e.worker_name, e.reason, e.old_difficulty, e.difficulty) for e in mem] == [
        ("farm.ok", "memory", DIFF, DIFF * 8), ("farm.big", "memory", DIFF, 1e6)]
    sugg = rig.connect()
    rig.send(sugg, "mining.subscribe", ["test/1.0"])
    rig.send(sugg, "mining.suggest_difficulty", [DIFF * 2])
    rig.send(sugg, "mining.authorize", ["farm.ok", "x"])
    assert sugg.miner is not None and sugg.miner.session.difficulty == DIFF * 2
    # Disconnects are remembered and written at shutdown.
    rig.hub.close(sugg.miner)
    rig.hub.events.close()
    saved = json.loads(path.read_text())["workers"]
    assert saved["farm.ok"][0] == DIFF * 2 and "farm.old" not in saved


def test_difficulty_memory_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "mem.json"
    m = DifficultyMemory(path, max_age_s=100.0, max_workers=2)
    assert m.load(0.0) == 0  # no file yet
    m.remember("a", 1.0, 10.0)
    m.remember("b", 2.0, 11.0)
    m.remember("c", 3.0, 12.0)  # over the bound: the least recently seen goes
    m.remember("", 5.0, 12.0)  # no name, nothing to remember
    m.remember("d", float("nan"), 12.0)
    assert m.flush(12.0) and not list(path.parent.glob("*.tmp"))
    m2 = DifficultyMemory(path, max_age_s=100.0, max_workers=2)
    assert m2.load(50.0) == 2
    assert (m2.recall("a", 50.0), m2.recall("b", 50.0), m2.recall("c", 50.0)) == (None, 2.0, 3.0)
    assert m2.recall("b", 112.0) is None  # aged out
    path.write_text("{not json")
    m3 = DifficultyMemory(path, max_age_s=100.0, max_workers=2)
    assert m3.load(50.0) == 0  # damaged: an empty memory, not an error
    m3.remember("e", 7.0, 60.0)
    m3.maybe_flush(60.0)  # on the memory's thread; flush() waits for it
    m3.remember("f", 8.0, 60.5)
    m3.maybe_flush(60.5)  # debounced: not before FLUSH_INTERVAL_S
    assert m3.flush(61.0)
    assert json.loads(path.read_text())["workers"] == {"e": [7.0, 60.0], "f": [8.0, 60.5]}
    mem_only = DifficultyMemory(None, max_age_s=100.0, max_workers=2)
    mem_only.remember("a", 1.0, 1.0)
    assert mem_only.flush(1.0) and mem_only.recall("a", 2.0) == 1.0
