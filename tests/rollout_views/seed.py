"""A rollout over part of a bulk-seeded fleet (``tests/device_views/seed.py``), with members
in every status the member list can show, written straight into the database (for the
rollout views' tests and ``bench/bench_rollout_views.py``).

Rollout ``r-views`` puts ``digits:2.0`` into the control slot of every ``STRIDE``-th device
in waves 10/50/100: wave 0 ended, wave 1 runs, wave 2 waits. Member ``k`` (device
``dev-…`` of index ``k * STRIDE``) is in wave ``(k // 3) % 3`` and, by ``k % 8``: not dispatched,
dispatched and installing, running it healthy, active, failed, reverted, timed out, or
dispatched long ago and silent — crossed with the device's own online/offline state.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from edgefleet.cloud.rollout.model import RolloutState, WaveRecord
from edgefleet.cloud.rollout.tables import Rollout, RolloutMember
from edgefleet.cloud.tables import Device, ModelVersion
from tests.device_views.seed import device_id, seed

ROLLOUT = "r-views"
STRIDE = 2
NEW = {"name": "digits", "version": "2.0", "digest": "b" * 64}
OLD = {"name": "digits", "version": "1.0", "digest": "a" * 64}


def seed_rollout(engine: Engine, members: int, *, fleet: int | None = None, rollout_id: str = ROLLOUT,
                 now: float | None = None) -> list[str]:
    """A fleet of ``fleet`` devices (default ``members * STRIDE``) and a rollout over ``members``
    of them; returns the member device ids."""
    now = time.time() if now is None else now
    seed(engine, fleet if fleet is not None else members * STRIDE)
    with Session(engine) as s:
        mv = s.exec(select(ModelVersion).where(ModelVersion.name == "digits", ModelVersion.version == "2.0")).one()
        state = RolloutState(rollout_id=rollout_id, state="running", current_wave=1, started_at=now - 7200,
                             wave_started_at=now - 600,
                             history=(WaveRecord(index=0, started_at=now - 7200, ended_at=now - 600, outcome="passed"),))
        s.add(Rollout(id=rollout_id, model_version_id=mv.id or 0, model_name="digits", model_version="2.0",
                      digest=NEW["digest"], slot="control", select="all", waves="10,50,100", soak="5m", gates=[],
                      on_breach="pause", device_timeout="30m", state="running", state_json=state.model_dump_json(),
                      created_at=now - 7200, updated_at=now))
        s.flush()
        ids, rows = [], []
        for k in range(members):
            d = device_id(k * STRIDE)
            ids.append(d)
            rows.append(member_fields(rollout_id, d, k, now))
        conn = s.connection()
        for lo in range(0, len(rows), 5000):
            conn.execute(insert(RolloutMember.__table__), rows[lo:lo + 5000])  # type: ignore[arg-type]
            for k in range(lo, min(lo + 5000, members)):
                rep = reported(k)
                if rep is not None:
                    conn.execute(update(Device.__table__).where(Device.__table__.c.id == ids[k])  # type: ignore[attr-defined]
                                 .values(reported=rep))
        s.commit()
    return ids


def member_fields(rollout_id: str, device: str, k: int, now: float) -> dict[str, Any]:
    kind = k % 8
    dispatched = None if kind == 0 else (now - 7000 if kind == 7 else now - 300)
    return {"rollout_id": rollout_id, "device_id": device, "wave": (k // 3) % 3, "assigned_at": now - 7200,
            "dispatched_at": dispatched, "previous": OLD if dispatched else None,
            "reverted_at": now - 100 if kind == 5 else None, "timed_out_at": now - 50 if kind == 6 else None,
            "seen_phase": "downloading" if kind == 1 else None, "seen_target": None,
            "phase_since": now - 200 if kind == 1 else None, "frames": 10 * k, "errors": k % 2, "nan_outputs": 0,
            "candidate_p99_ms": 3.0 if kind in (2, 3) else None, "candidate_periods": 1 if kind in (2, 3) else 0,
            "baseline_p99_ms": 2.0, "baseline_periods": 1, "agreement": None, "agreement_frames": 0}


def reported(k: int) -> dict[str, Any] | None:
    """What member ``k``'s device reports for the control slot (None: the seed's, digits:1.0 healthy)."""
    kind = k % 8
    slot = {1: {"installed": OLD, "target": NEW, "phase": "downloading"},
            2: {"installed": NEW, "phase": "healthy"},
            3: {"installed": NEW, "phase": "active"},
            4: {"installed": OLD, "target": NEW, "phase": "failed", "error_code": "E_SELF_TEST"},
            5: {"installed": OLD, "phase": "healthy"}}.get(kind)
    return None if slot is None else {"slots": {"control": slot}}
