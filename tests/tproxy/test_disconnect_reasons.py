"""Disconnect events say why the connection ended (issue 13): closed by the miner, idle, flood,
bad input, as the SV1 server decided it, through real TCP."""

from __future__ import annotations

import json

from tests.helpers.stack import running
from tests.helpers.sv1_client import Sv1TestClient
from tests.helpers.waiting import until
from tproxy.shares.record import EVENT_DISCONNECT, EventRecord


class EventCollector:
    """Test double of the share log's event sink: keeps the records in memory."""

    def __init__(self) -> None:
        self.records: list[EventRecord] = []

    def submit_event(self, record: EventRecord) -> None:
        self.records.append(record)

    def disconnect_reason(self, worker: str) -> str | None:
        return next((r.reason for r in self.records if r.event_type == EVENT_DISCONNECT and r.worker_name == worker), None)


async def test_disconnect_events_say_why_the_server_closed_the_connection() -> None:
    async with running() as st:
        sink = EventCollector()
        st.proxy.hub.events.sink = sink
        ds = st.proxy.settings.downstream
        ds.idle_timeout_s = 0.5
        ds.max_pending_submits = 4

        gone = await Sv1TestClient.connect(st.proxy.sv1_port)
        await gone.handshake("farm.gone")
        await gone.close()

        idle = await Sv1TestClient.connect(st.proxy.sv1_port)
        await idle.handshake("farm.idle")  # then silent past idle_timeout_s

        flood = await Sv1TestClient.connect(st.proxy.sv1_port)
        await flood.handshake("farm.flood")
        ping = json.dumps({"id": 9, "method": "mining.ping", "params": []}).encode() + b"\n"
        await flood.send_raw(ping * 50)  # 50 lines in one read, max_pending_submits 4

        bad = await Sv1TestClient.connect(st.proxy.sv1_port)
        await bad.handshake("farm.bad")
        await bad.send_raw(b"x" * (ds.max_line_bytes + 10))  # a line that never ends within the limit

        reasons = {"farm.gone": "closed", "farm.idle": "idle", "farm.flood": "flood", "farm.bad": "bad-input"}
        await until(lambda: all(sink.disconnect_reason(w) is not None for w in reasons))
        assert {w: sink.disconnect_reason(w) for w in reasons} == reasons
        for c in (idle, flood, bad):
            await c.close()
