"""A synthetic fleet written straight into the database in bulk (for the device views'
tests and bench/bench_device_list.py): no agents, no ingest, just rows.

Device ``i`` (id ``dev-000123``): hardware profile ``PROFILES[i % 4]``, tag
``site=SITES[i % 5]``, online when ``i % 3 == 0``, never seen when ``i % 11 == 5`` (and
not online), stale when ``i % 7 == 0``, revoked when ``i % 50 == 49``; its control slot is
assigned ``digits:1.0`` (even i) or ``digits:2.0`` (odd i) and reports it installed, and
every 4th device has ``digits:2.0`` in shadow.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from edgefleet.cloud.tables import Device, ModelVersion, SlotAssignment

PROFILES = ("jetson-orin-nano", "jetson-agx-orin", "jetson-orin-nx", "cpu-x86_64")
SITES = ("dock", "gate", "lab", "yard", "roof")
BATCH = 5000


def device_id(i: int) -> str:
    return f"dev-{i:06d}"


def expected(i: int) -> dict[str, Any]:
    """What the seed made device ``i``: its filterable facts."""
    revoked = i % 50 == 49
    online = i % 3 == 0
    seen = online or i % 11 != 5
    state = "revoked" if revoked else "online" if online else "offline" if seen else "never_seen"
    return {"profile": PROFILES[i % 4], "site": SITES[i % 5], "state": state, "online": online and not revoked,
            "stale": i % 7 == 0 and not revoked, "control": "digits:1.0" if i % 2 == 0 else "digits:2.0",
            "shadow": "digits:2.0" if i % 4 == 0 else None}


def _versions(session: Session) -> dict[str, int]:
    ids = {}
    for version in ("1.0", "2.0"):
        mv = session.exec(select(ModelVersion).where(ModelVersion.name == "digits", ModelVersion.version == version)).first()
        if mv is None:
            mv = ModelVersion(name="digits", version=version, digest=("a" if version == "1.0" else "b") * 64, size=1000)
            session.add(mv)
            session.flush()
        ids[f"digits:{version}"] = mv.id or 0
    return ids


def seed(engine: Engine, n: int, *, start: int = 0) -> None:
    """Devices ``start`` … ``start + n - 1``, in batches of ``BATCH`` rows per statement."""
    now = datetime.now(timezone.utc)
    with Session(engine) as session:
        mv = _versions(session)
        for lo in range(start, start + n, BATCH):
            devices, slots = [], []
            for i in range(lo, min(start + n, lo + BATCH)):
                e = expected(i)
                installed = {"name": "digits", "version": e["control"].split(":")[1], "digest": "0" * 64}
                devices.append({
                    "id": device_id(i), "hardware_id": e["profile"], "tags": {"site": e["site"]},
                    "online": e["online"], "last_seen": None if e["state"] == "never_seen" else now - timedelta(seconds=i % 600),
                    "agent_version": "1.0", "desired_generation": 1, "reported_generation": 1,
                    "reported": {"slots": {"control": {"installed": installed, "phase": "healthy"}}},
                    "telemetry": {"fps": 15.0, "latency_ms": {"p50": 1.0, "p95": 1.5, "p99": 2.0}},
                    "created_at": now, "director_generation": 1, "credentials_epoch": 0, "director_version": 1,
                    "revoked_at": now if e["state"] == "revoked" else None,
                    "stale_since": now if e["stale"] else None,
                    "stale_reason": "holds director metadata v0, signed v1" if e["stale"] else None,
                })
                slots.append({"device_id": device_id(i), "slot": "control", "model_version_id": mv[e["control"]],
                              "assigned_at": now})
                if e["shadow"]:
                    slots.append({"device_id": device_id(i), "slot": "shadow", "model_version_id": mv[e["shadow"]],
                                  "assigned_at": now})
            conn = session.connection()  # Core executemany: one statement per batch, not per row group
            conn.execute(insert(Device.__table__), devices)  # type: ignore[arg-type]
            conn.execute(insert(SlotAssignment.__table__), slots)  # type: ignore[arg-type]
        session.commit()
