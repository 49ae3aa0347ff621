"""Text a miner sends is stored by one rule (tproxy.text.clean_text), and a row the
database still rejects costs only itself: real chdb, canary rows around the bad ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.share_log import INSTANCE, assert_counters_consistent, fast_settings, shares
from tproxy.shares.pipeline import ShareLog
from tproxy.shares.record import ShareRecord
from tproxy.shares.spool import read_quarantine_file
from tproxy.text import REPLACEMENT, clean_text

LONE = json.loads('"\\ud800"')  # what the SV1 parser makes of "\ud800" on the wire
NASTY = {
    "surrogate": f"rig{LONE}x",
    "two-surrogates": f"{LONE}a{json.loads(chr(34) + chr(92) + 'udfff' + chr(34))}",
    "nul": "rig\x00one",
    "control": "rig\x01\x1b[31m\x7f",
    "newlines": "rig\r\nline2\n",
    "long": "w" * 10_000,
    "unicode": "mineur-été-😀",
}


def test_valid_text_is_stored_exactly() -> None:
    for name in ("surrogate", "two-surrogates"):
        assert clean_text(NASTY[name]) != NASTY[name]
    for name in ("nul", "control", "newlines", "long", "unicode"):
        assert clean_text(NASTY[name]) == NASTY[name]


def test_each_lone_surrogate_becomes_one_replacement_character() -> None:
    assert clean_text(NASTY["surrogate"]) == f"rig{REPLACEMENT}x"
    assert clean_text(NASTY["two-surrogates"]) == f"{REPLACEMENT}a{REPLACEMENT}"
    for s in NASTY.values():
        out = clean_text(s)
        out.encode("utf-8")  # never fails
        assert clean_text(out) == out


def expected_name(r: ShareRecord) -> str:
    return clean_text(r.worker_name)


async def stored(log: ShareLog) -> dict[int, tuple[str, str, str]]:
    sc = log._store.schema
    rows = await log._query_rows(f"SELECT share_seq, worker_name, sv1_job_id, extranonce FROM {sc.q(sc.shares)}")
    return {int(seq): (w, j, e) for seq, w, j, e in rows}


async def test_batch_with_nasty_names_lands_whole(tmp_path: Path, opened: Any) -> None:
    s = fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool", batch_size=200)
    log = await opened(ShareLog(s, INSTANCE))
    sent = shares(1000)
    bad_seqs = {}
    for k, (label, text) in enumerate(NASTY.items()):
        i = 37 + 131 * k  # spread over several batches, canaries all around
        sent[i] = sent[i]._replace(worker_name=text, sv1_job_id=text[:50], extranonce=text[-20:])
        bad_seqs[sent[i].share_seq] = label
    for r in sent:
        log.submit(r)
    assert await log.flush(30)
    got = await stored(log)
    assert len(got) == 1000
    for r in sent:
        assert got[r.share_seq] == (clean_text(r.worker_name), clean_text(r.sv1_job_id),
                                    clean_text(r.extranonce)), bad_seqs.get(r.share_seq)
    assert got[sent[37].share_seq][0] == f"rig{REPLACEMENT}x"
    assert len(got[sent[37 + 131 * 5].share_seq][0]) == 10_000
    st = log.stats()
    assert (st.quarantined, st.quarantined_rows, st.failed_batches, st.written) == (0, 0, 0, 1000)
    assert not (tmp_path / "spool" / "quarantine").exists()
    assert_counters_consistent(st)
    await log.close()


def quarantined_rows(spool_dir: Path) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for f in sorted((spool_dir / "quarantine").glob("rejected-*.seg")):
        for _kind, _token, rows in read_quarantine_file(f):
            out.extend(rows)
    return out


def poisoned(r: ShareRecord, how: str) -> ShareRecord:
    # Values clean_text does not fix (not text at all): only the database can refuse them.
    return r._replace(nonce=-5) if how == "nonce" else r._replace(worker_name=None)


async def test_rows_the_database_rejects_cost_only_themselves(tmp_path: Path, opened: Any) -> None:
    s = fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool", batch_size=500)
    log = await opened(ShareLog(s, INSTANCE))
    sent = shares(1500)
    bad_idx = {3: "nonce", 250: "name", 499: "nonce", 1200: "name"}
    for i, how in bad_idx.items():
        sent[i] = poisoned(sent[i], how)
    for r in sent:
        log.submit(r)
    assert await log.flush(30)
    got = await stored(log)
    bad_seqs = {sent[i].share_seq for i in bad_idx}
    assert set(got) == {r.share_seq for r in sent} - bad_seqs
    st = log.stats()
    assert (st.written, st.quarantined_rows, st.dropped) == (1496, 4, 0)
    assert_counters_consistent(st)
    q = quarantined_rows(tmp_path / "spool")
    assert sorted(int(str(row[3])) for row in q) == sorted(bad_seqs)  # column 3 is share_seq
    await log.close()


async def test_rejected_rows_isolated_on_replay_too(tmp_path: Path, opened: Any) -> None:
    """The same with the batch spooled first (database down), then replayed."""
    spool = tmp_path / "spool"
    down = fast_settings("http://127.0.0.1:9", spool, batch_size=400)
    log = await opened(ShareLog(down, INSTANCE))
    sent = shares(800)
    sent[17] = poisoned(sent[17], "nonce")
    for r in sent:
        log.submit(r)
    await log.close()
    assert log.stats().spool_pending == 800
    up = fast_settings(f"chdb://{tmp_path / 'db'}", spool, batch_size=400)
    log2 = await opened(ShareLog(up, INSTANCE))
    assert await log2.flush(30)
    st = log2.stats()
    assert (st.recovered, st.written, st.replayed, st.quarantined_rows) == (800, 799, 799, 1)
    assert_counters_consistent(st)
    got = await stored(log2)
    assert sent[17].share_seq not in got and len(got) == 799
    assert [row[3] for row in quarantined_rows(spool)] == [sent[17].share_seq]
    assert quarantined_rows(spool)[0][4] == sent[17].worker_name  # the original row, whole
    await log2.close()
