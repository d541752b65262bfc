"""``fleet audit verify`` over 1,000,000 entries: seconds, and the ratio to a bare sha256
loop over the same canonical bytes, measured in the same run.

    python bench/bench_audit_verify.py [--entries 1000000] [--db PATH]

Builds a SQLite controller database (migrated with the real migrations) whose audit log
holds ``--entries`` realistic entries — bulk inserts (executemany, 10,000 per batch) with
the real canonical form and hash chain, a signed anchor every 1,000 entries with the real
Ed25519 key — then times ``audit.verify`` (what ``fleet audit verify --data-dir`` and
``GET /api/v1/audit/verify`` run). The baseline chains sha256 over exactly the bytes
``verify`` hashes, with nothing else: no database, no JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert, update
from sqlmodel import Session

from edgefleet.cloud import audit
from edgefleet.cloud.db import make_engine, migrate

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ACTORS = [f"operator-{i}" for i in range(20)] + ["reconciler", "admin"]
ACTIONS = [("rollout.pause", "/api/v1/rollouts/{rollout_id}/pause"), ("deploy", "/api/v1/deployments"),
           ("capture.set", "/api/v1/settings/capture"), ("token.create", "/api/v1/tokens"),
           ("review.label", "/api/v1/review/{event_id}/label"), ("device.enrol", "/api/v1/devices")]
BATCH = 10_000


def entries(n: int) -> Iterator[tuple[int, datetime, str, str, str, str, dict]]:
    for seq in range(1, n + 1):
        action, path = ACTIONS[seq % len(ACTIONS)]
        actor = ACTORS[seq % len(ACTORS)]
        # keys in sorted order, nothing secret: exactly what append stores (checked in build)
        summary = {"body": {"max_per_minute": seq % 17, "reason": f"bench entry {seq}", "tags": ["a", "b"]},
                   "method": "POST", "path": path}
        yield (seq, T0 + timedelta(milliseconds=seq), actor, "operator", action, f"target-{seq % 997}", summary)


def build(db: Path, keys: Path, n: int) -> float:
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    signer = audit.AuditSigner.open(keys)
    assert signer is not None
    start = time.perf_counter()
    prev, rows, anchors, last_anchor = audit.GENESIS, [], [], 0
    with Session(engine) as s:
        for seq, ts, actor, role, action, target, summary in entries(n):
            if seq == 1:
                assert json.dumps(audit.bounded_summary(summary)) == json.dumps(summary)
            digest = audit.chain_hash(prev, audit.entry_bytes(seq, audit.ts_text(ts), actor, role, action, target, summary))
            rows.append(dict(seq=seq, ts=ts, actor=actor, role=role, action=action, target=target,
                             summary=summary, prev_hash=prev, hash=digest))
            prev = digest
            if seq % 1000 == 1 or seq == n:
                a = audit.make_anchor(signer, seq, digest, last_anchor, ts)
                anchors.append(dict(seq=a.seq, hash=a.hash, ts=a.ts, prev_seq=a.prev_seq, key_id=a.key_id,
                                    signature=a.signature))
                last_anchor = seq
            if len(rows) == BATCH:
                s.connection().execute(insert(audit.AuditEntry.__table__), rows)  # type: ignore[attr-defined]
                rows = []
        if rows:
            s.connection().execute(insert(audit.AuditEntry.__table__), rows)  # type: ignore[attr-defined]
        s.execute(insert(audit.AuditAnchor), anchors)
        s.execute(update(audit.AuditHead).values(seq=n, hash=prev, anchor_seq=last_anchor, anchor_at=T0))
        s.commit()
    engine.dispose()
    return time.perf_counter() - start


def bare_sha256(n: int) -> float:
    """Chain sha256 over the same canonical bytes; only the hashing is timed."""
    total, prev, chunk = 0.0, audit.GENESIS, []
    for seq, ts, actor, role, action, target, summary in entries(n):
        chunk.append(audit.entry_bytes(seq, audit.ts_text(ts), actor, role, action, target, summary))
        if len(chunk) == BATCH or seq == n:
            start = time.perf_counter()
            for data in chunk:
                prev = hashlib.sha256(prev.encode("ascii") + data).hexdigest()
            total += time.perf_counter() - start
            chunk = []
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--db", type=Path, default=None, help="database file to build (default: a temporary one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        db = args.db or Path(tmp) / "controller.db"
        built = build(db, Path(tmp) / "keys", args.entries)
        print(f"built {args.entries:,} entries in {built:.1f} s ({db.stat().st_size / 2**20:.0f} MiB)")
        engine = make_engine(f"sqlite:///{db}")
        signer = audit.AuditSigner.open(Path(tmp) / "keys", create=False)
        assert signer is not None
        with Session(engine) as s:
            start = time.perf_counter()
            report = audit.verify(s, signer.keys())
            verify_s = time.perf_counter() - start
        engine.dispose()
        assert report.ok and report.entries == args.entries, report.problems[:3]
        bare = bare_sha256(args.entries)
        print(f"verify: {verify_s:.2f} s for {report.entries:,} entries and {report.anchors:,} anchors "
              f"({verify_s / report.entries * 1e6:.1f} µs/entry)")
        print(f"bare sha256 chain over the same bytes: {bare:.2f} s; ratio verify / sha256 = {verify_s / bare:.1f}")


if __name__ == "__main__":
    main()
