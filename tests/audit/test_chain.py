"""The hash chain and its anchors: a good chain verifies; each kind of tampering is found,
with the seq where it starts and its kind."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlmodel import Session, select

from edgefleet.cloud import audit
from edgefleet.cloud.db import make_engine, migrate

from .conftest import fill, sql


def test_a_good_chain_verifies_and_is_anchored_every_n_entries(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    report = log.verify()
    assert report.ok, report.problems
    assert (report.entries, report.head_seq) == (35, 35)
    assert report.anchors == 4 and report.last_anchor_seq == 31  # 1, 11, 21, 31
    with Session(log.engine) as s:
        rows = list(s.exec(select(audit.AuditEntry).order_by(audit.AuditEntry.seq)).all())
    assert [r.seq for r in rows] == list(range(1, 36))
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:]))
    first = rows[0]
    data = audit.entry_bytes(1, audit.ts_text(first.ts), first.actor, first.role, first.action, first.target, first.summary)
    assert first.hash == audit.chain_hash(audit.GENESIS, data)  # sha256(prev_hash || canonical JSON)
    with log.engine.connect() as conn:  # stored as the canonical text itself: verify hashes it unparsed
        stored = conn.execute(text("SELECT summary FROM audit_entry WHERE seq = 1")).scalar()
    assert stored == audit.canonical_text(first.summary)


def test_an_empty_log_verifies(log) -> None:  # type: ignore[no-untyped-def]
    assert log.verify().ok


def test_anchors_also_come_after_the_interval_even_below_n(audit_db) -> None:  # type: ignore[no-untyped-def]
    engine, home = audit_db
    log = audit.AuditLog.open(engine, home, audit.AnchorPolicy(every=1000, interval=timedelta(minutes=10)))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for minutes in (0, 1, 2, 11, 12, 25):
        log.record(actor="a", role="admin", action="x", now=t0 + timedelta(minutes=minutes))
    with Session(engine) as s:
        assert [a.seq for a in s.exec(select(audit.AuditAnchor).order_by(audit.AuditAnchor.seq))] == [1, 4, 6]
    assert log.verify().ok


def _first(report: audit.VerifyReport) -> tuple[int, str]:
    assert not report.ok, "tampering was not detected"
    p = report.first
    assert p is not None
    return p.seq, p.kind


def test_an_edited_field_is_found(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    sql(log.engine, "UPDATE audit_entry SET actor = 'someone-else' WHERE seq = 17")
    assert _first(log.verify()) == (17, "edited")


def test_an_edited_summary_is_found(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    sql(log.engine, "UPDATE audit_entry SET summary = :s WHERE seq = 5", s=json.dumps({"body": {"i": 99}}))
    assert _first(log.verify()) == (5, "edited")


def test_an_edited_time_is_found(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    with Session(log.engine) as s:
        e = s.get(audit.AuditEntry, 23)
        assert e is not None
        e.ts = e.ts - timedelta(hours=1)
        s.add(e)
        s.commit()
    assert _first(log.verify()) == (23, "edited")


def test_a_deleted_entry_is_found(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    sql(log.engine, "DELETE FROM audit_entry WHERE seq = 17")
    report = log.verify()
    assert _first(report) == (17, "deleted")
    assert len(report.problems) == 1


def test_deleted_entries_renumbered_to_close_the_gap_are_found(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 25)
    sql(log.engine, "DELETE FROM audit_entry WHERE seq = 17")
    for seq in range(18, 26):
        sql(log.engine, "UPDATE audit_entry SET seq = :new WHERE seq = :old", new=seq - 1, old=seq)
    sql(log.engine, "UPDATE audit_head SET seq = 24")
    assert _first(log.verify()) == (17, "deleted")


def test_two_swapped_entries_are_found_as_reordered(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    sql(log.engine, "UPDATE audit_entry SET seq = -1 WHERE seq = 17")
    sql(log.engine, "UPDATE audit_entry SET seq = 17 WHERE seq = 18")
    sql(log.engine, "UPDATE audit_entry SET seq = 18 WHERE seq = -1")
    report = log.verify()
    assert _first(report) == (17, "reordered")
    assert {(p.seq, p.kind) for p in report.problems} >= {(17, "reordered"), (18, "reordered")}


def test_distant_swapped_entries_are_found_as_reordered(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    sql(log.engine, "UPDATE audit_entry SET seq = -1 WHERE seq = 4")
    sql(log.engine, "UPDATE audit_entry SET seq = 4 WHERE seq = 29")
    sql(log.engine, "UPDATE audit_entry SET seq = 29 WHERE seq = -1")
    assert _first(log.verify()) == (4, "reordered")


def test_a_truncated_tail_is_found(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    sql(log.engine, "DELETE FROM audit_entry WHERE seq > 33")  # after the last anchor (31)
    assert _first(log.verify()) == (34, "truncated")


def test_a_truncated_tail_past_a_signed_anchor_is_found(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    with Session(log.engine) as s:
        e25 = s.get(audit.AuditEntry, 25)
        assert e25 is not None
        h = e25.hash
    sql(log.engine, "DELETE FROM audit_entry WHERE seq > 25")
    sql(log.engine, "UPDATE audit_head SET seq = 25, hash = :h", h=h)  # the anchor at 31 stays
    assert _first(log.verify()) == (26, "truncated")


def test_a_forged_anchor_signature_is_found(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    with Session(log.engine) as s:
        a = s.get(audit.AuditAnchor, 11)
        assert a is not None
        forged = Ed25519PrivateKey.generate().sign(
            audit.anchor_message(a.seq, a.hash, a.prev_seq, audit.ts_text(a.ts))).hex()
    sql(log.engine, "UPDATE audit_anchor SET signature = :sig WHERE seq = 11", sig=forged)
    assert _first(log.verify()) == (11, "anchor")


def test_an_anchor_by_an_unknown_key_is_found(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 15)
    sql(log.engine, "UPDATE audit_anchor SET key_id = 'ffffffffffffffff' WHERE seq = 11")
    p = log.verify().first
    assert p is not None and (p.seq, p.kind) == (11, "anchor") and "unknown key" in p.detail


def test_a_removed_anchor_is_found(log) -> None:  # type: ignore[no-untyped-def]
    fill(log, 35)
    sql(log.engine, "DELETE FROM audit_anchor WHERE seq = 11")
    assert _first(log.verify()) == (21, "anchor")


def test_a_rewritten_and_rehashed_chain_is_found_by_the_next_anchor(log) -> None:  # type: ignore[no-untyped-def]
    """Someone edits entry 15 and recomputes every hash after it (and the head): the
    chain is consistent again, but the entry at the signed anchor 21 is not the one signed."""
    fill(log, 35)
    with Session(log.engine) as s:
        rows = list(s.exec(select(audit.AuditEntry).order_by(audit.AuditEntry.seq)).all())
        prev = rows[13].hash
        for e in rows[14:]:
            if e.seq == 15:
                e.actor = "nobody"
            e.prev_hash = prev
            e.hash = prev = audit.chain_hash(prev, audit.entry_bytes(
                e.seq, audit.ts_text(e.ts), e.actor, e.role, e.action, e.target, e.summary))
            s.add(e)
        s.commit()
        s.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})
        s.commit()
    assert _first(log.verify()) == (21, "edited")


def test_verify_reads_the_chain_a_page_at_a_time(log, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(audit, "_PAGE", 7)
    fill(log, 30)
    assert log.verify().ok
    sql(log.engine, "DELETE FROM audit_entry WHERE seq = 14")  # at a page boundary
    assert _first(log.verify()) == (14, "deleted")


def test_concurrent_appends_from_threads_keep_one_chain(log) -> None:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                log.record(actor=f"thread-{n}", role="admin", action="rollout.pause", target=str(i))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = log.verify()
    assert report.ok, report.problems
    assert report.entries == report.head_seq == 100


def test_two_replicas_on_postgresql_never_fork_the_chain(postgres, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engines = [make_engine(postgres), make_engine(postgres)]
    migrate(engines[0])
    logs = [audit.AuditLog.open(e, tmp_path, audit.AnchorPolicy(every=7)) for e in engines]  # one key, two replicas
    errors: list[BaseException] = []

    def worker(log: audit.AuditLog, n: int) -> None:
        try:
            for i in range(20):
                log.record(actor=f"replica-{n}", role="admin", action="deploy", target=str(i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(logs[n % 2], n)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = logs[1].verify()
    assert report.ok, report.problems
    assert report.entries == 80
    for e in engines:
        e.dispose()


def test_the_key_file_is_private_and_kept(audit_db) -> None:  # type: ignore[no-untyped-def]
    _, home = audit_db
    first = audit.AuditSigner.open(home / "keys")
    again = audit.AuditSigner.open(home / "keys")
    assert first is not None and again is not None and first.key_id == again.key_id
    assert (home / "keys" / audit.KEY_FILE).stat().st_mode & 0o777 == 0o600
    (home / "keys" / audit.KEY_FILE).write_text("not a key")
    with pytest.raises(audit.AuditError, match="not a usable private key"):
        audit.AuditSigner.open(home / "keys")


def test_summaries_lose_secrets_and_stay_small() -> None:
    s = audit.bounded_summary({
        "token": "efk_abc", "mqtt_password": "p", "nested": {"private_key": "k", "ok": 1},
        "note": "efd_device-token-pasted-here", "pem": "-----BEGIN PRIVATE KEY-----", "long": "x" * 1000,
        "many": list(range(100)), "nan": float("nan"),
    })
    text_ = json.dumps(s)
    for secret in ("efk_abc", '"p"', '"k"', "efd_device", "BEGIN PRIVATE"):
        assert secret not in text_
    assert s["token"] == s["mqtt_password"] == s["nested"]["private_key"] == audit.REDACTED
    assert s["nested"]["ok"] == 1 and len(s["long"]) <= 256 and len(s["many"]) == 21 and s["nan"] == "nan"
    huge = audit.bounded_summary({f"field{i}": "y" * 200 for i in range(40)})
    assert huge["truncated"] is True
