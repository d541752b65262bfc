"""A pass after a committed one reads again only the devices that changed (issue 14).

The reconciler keeps what its last committed pass over a rollout planned from (member rows,
every device's observation) and reads again only the devices marked dirty since and those
its own actions changed. Two checks, both against the real database and a real ingest:

* after every pass of a driven rollout, what is kept equals a fresh full read for every
  device the next pass will not read again anyway;
* the same script of reports, presence changes, tag changes, new devices and an operator
  pause, replayed on two databases, one reconciler reading everything every pass and one
  reading incrementally, leaves the same member rows, rollout state, events and assignments.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from edgefleet.cloud import catalog
from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.devices import fleet, ingest
from edgefleet.cloud.rollout import dirty, member_rows
from edgefleet.cloud.rollout.reconciler import Reconciler, command
from edgefleet.cloud.rollout.service import RolloutCreate, start_rollout
from edgefleet.cloud.rollout.store import lock_rollout
from edgefleet.cloud.rollout.tables import Rollout
from edgefleet.cloud.tables import Device, ModelVersion
from edgefleet.protocols import ModelRef, Phase, Reported, SlotReport, Status
from edgefleet.registry import LocalBlobStore

from .conftest import Db

PHASES = (Phase.DOWNLOADING, Phase.VERIFYING, Phase.ACTIVE, Phase.HEALTHY, Phase.HEALTHY, Phase.FAILED)


def _database(path: Path, digit_models: Any, n: int) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    dirty.enable(engine)
    store = LocalBlobStore(path.parent / f"{path.stem}-blobs")
    with Session(engine, expire_on_commit=False) as s:
        for model in digit_models:
            m = model.manifest
            catalog.push_model(s, store, model.path.read_bytes(), name=m.name, version=m.version,
                               manifest=m.model_dump(mode="json", by_alias=True))
        for i in range(n):
            fleet.enrol_device(s, f"cam-{i:02d}", "cpu-x86_64", {"site": "lab"})
            ingest.apply_status(s, Status(device_id=f"cam-{i:02d}", online=True, hardware_id="cpu-x86_64"))
    return engine


def _candidate(s: Session) -> ModelRef:
    mv = s.exec(select(ModelVersion).where(ModelVersion.name == "digits", ModelVersion.version == "2.0")).one()
    return ModelRef(name="digits", version="2.0", digest=mv.digest)


def _event(s: Session, rng: random.Random, devices: list[str], step: int) -> str | None:
    """One change to the fleet, as ingest or an operator would make it; returns a command to
    give the rollout (pause/resume) or None."""
    kind = rng.choices(("report", "offline", "online", "tags", "enrol", "command"), (8, 1, 1, 1, 1, 0.3))[0]
    device_id = rng.choice(devices)
    if kind == "report":
        device = fleet.get_device(s, device_id)
        phase = rng.choice(PHASES)
        ref = _candidate(s)
        installed = ref if phase in (Phase.ACTIVE, Phase.HEALTHY) else None
        ingest.apply_reported(s, Reported(device_id=device_id, generation=device.desired_generation,
                                          hardware_id="cpu-x86_64",
                                          slots={"control": SlotReport(installed=installed, target=ref, phase=phase)}))
    elif kind in ("offline", "online"):
        ingest.apply_status(s, Status(device_id=device_id, online=kind == "online", hardware_id="cpu-x86_64"))
    elif kind == "tags":
        d = s.get(Device, device_id)
        assert d is not None
        d.tags = {**(d.tags or {}), "site": rng.choice(("lab", "depot"))}
        s.add(d)
        s.commit()
    elif kind == "enrol":
        new = f"cam-{len(devices):02d}"
        fleet.enrol_device(s, new, "cpu-x86_64", {"site": "lab"})
        ingest.apply_status(s, Status(device_id=new, online=True, hardware_id="cpu-x86_64"))
        devices.append(new)
    else:
        return "pause" if step % 2 else "resume"
    return None


def _snapshot(engine: Engine) -> dict[str, Any]:
    with engine.connect() as c:
        return {
            "members": c.execute(text("SELECT * FROM rollout_member ORDER BY rollout_id, device_id")).all(),
            "rollouts": c.execute(text("SELECT id, state, revision FROM rollout ORDER BY id")).all(),
            "events": c.execute(text("SELECT at, level, message FROM rollout_event ORDER BY id")).all(),
            "assigned": c.execute(text("SELECT device_id, slot, model_version_id, rollout_id FROM slot_assignment "
                                       "ORDER BY device_id, slot")).all(),
        }


def _drive(engine: Engine, rec: Reconciler, seed: int, t0: float, steps: int = 40, check: bool = False) -> int:
    """Start a rollout and play the seeded script, a pass after each step. With ``check``,
    compare what the reconciler keeps with a fresh read after every pass; returns how many
    passes read incrementally."""
    rng = random.Random(seed)
    devices = [f"cam-{i:02d}" for i in range(12)]
    with Session(engine, expire_on_commit=False) as s:
        rid = start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", select="tag:site=lab",
                                             waves="10,50,100", soak="0s", device_timeout="20s",
                                             gates=["failure<=0.5"]), t0).id
    incremental = 0
    for step in range(steps):
        now = t0 + 2.0 * step
        with Session(engine, expire_on_commit=False) as s:
            for _ in range(rng.randint(0, 3)):
                name = _event(s, rng, devices, step)
                if name is not None:
                    try:
                        command(s, rid, name, now, actor="test")
                    except Exception:  # not allowed in this state: nothing changed
                        s.rollback()
        before = rec._seen.get(rid)
        rec.run_once(now)
        after = rec._seen.get(rid)
        if after is not None and before is not None and not after.full:
            incremental += 1
        if check and after is not None:
            _same_as_a_fresh_read(engine, rid, after, now)
    return incremental


def _same_as_a_fresh_read(engine: Engine, rid: str, seen: Any, now: float) -> None:
    fresh = Reconciler(engine, None, holder="fresh-reader", lease_ttl_s=1e6)
    with Session(engine, expire_on_commit=False) as s:
        marked = set(dirty.read(s))
        row = lock_rollout(s, rid)
        assert row is not None
        full, _ = fresh._read(s, row, None, now)
        s.rollback()
    again = marked | seen.stale  # the next pass reads these anyway
    assert set(full.obs) - again == set(seen.obs) - again  # the same devices …
    for device_id, o in full.obs.items():
        if device_id not in again:
            assert seen.obs[device_id] == o, device_id  # … observed the same …
    kept = {d: m for d, m in seen.members.items() if d not in again}
    assert kept == {d: m for d, m in full.members.items() if d not in again}  # … and the same member rows


def test_what_a_pass_keeps_equals_a_fresh_read_of_everything_it_does_not_read_again(db: Db, digit_models) -> None:
    db.reconciler.refresh_fraction = 1.0  # read incrementally whenever there is a pass to go on from
    passes = _drive(db.engine, db.reconciler, seed=7, t0=time.time(), check=True)
    assert passes >= 10  # the check ran on passes that read incrementally, not only on full ones


def test_an_incremental_reconciler_and_a_full_one_leave_the_same_database(tmp_path: Path, digit_models,
                                                                          monkeypatch) -> None:
    from edgefleet.cloud.rollout import service

    t0 = time.time()
    for seed in (1, 2, 3):
        monkeypatch.setattr(service, "new_rollout_id", lambda seed=seed: f"r-seed{seed}")  # waves hash the id
        a = _database(tmp_path / f"full-{seed}.db", digit_models, 12)
        b = _database(tmp_path / f"incremental-{seed}.db", digit_models, 12)
        try:
            full = Reconciler(a, None, holder="full", lease_ttl_s=1e6)
            full.refresh_fraction = -1.0  # anything is too much: every pass reads everything
            quick = Reconciler(b, None, holder="quick", lease_ttl_s=1e6)
            quick.refresh_fraction = 1.0
            assert _drive(a, full, seed, t0) == 0
            assert _drive(b, quick, seed, t0) >= 10
            sa, sb = _snapshot(a), _snapshot(b)
            for key in ("members", "rollouts", "events", "assigned"):
                assert sa[key] == sb[key], (seed, key)
            assert sa["members"] and sa["events"]
        finally:
            a.dispose()
            b.dispose()


def test_the_next_pass_reads_only_the_marked_devices(db: Db) -> None:
    from .conftest import N

    with db.session() as s:
        rid = start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1h",
                                             device_timeout="10m"), time.time()).id
    t = time.time()
    db.reconciler.run_once(t)  # the wave: every device sent the model
    db.reconciler.run_once(t + 1)  # reads what the wave changed
    with db.session() as s:
        ref = _candidate(s)
        device = fleet.get_device(s, "cam-05")
        ingest.apply_reported(s, Reported(device_id="cam-05", generation=device.desired_generation,
                                          hardware_id="cpu-x86_64",
                                          slots={"control": SlotReport(target=ref, phase=Phase.DOWNLOADING)}))
    with db.counting() as sql:
        r = db.reconciler.run_once(t + 2)
    assert r.rollouts == 1 and r.skipped == 0
    device_reads = [q for q in sql.seen if q.lstrip().upper().startswith("SELECT") and " device" in q.lower()
                    and "rollout_member" not in q.lower() and "slot_assignment" not in q.lower()]
    assert device_reads and all("IN (" in q.upper() for q in device_reads)  # by id, not the whole table
    seen = db.reconciler._seen[rid]
    assert not seen.full and len(seen.obs) == N
    assert seen.members["cam-05"].seen_phase == "downloading"
    with db.session() as s:  # and the phase it saw is written
        row = member_rows.read(s, rid, ["cam-05"])["cam-05"]
    assert row.seen_phase == "downloading" and row.phase_since == t + 2


def test_a_revision_change_the_lease_or_the_periodic_full_pass_read_everything_again(db: Db) -> None:
    with db.session() as s:
        rid = start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1h",
                                             device_timeout="10m"), time.time()).id
    t = time.time()
    rec = db.reconciler
    rec.run_once(t)
    rec.run_once(t + 1)
    ingest_touch = Status(device_id="cam-01", online=False, hardware_id="cpu-x86_64")

    def touch_and_pass(at: float) -> Any:
        with db.session() as s:
            ingest.apply_status(s, ingest_touch)
        rec.run_once(at)
        return rec._seen[rid]

    assert not touch_and_pass(t + 2).full
    with db.session() as s:  # another writer moved the rollout's revision
        r = s.get(Rollout, rid)
        assert r is not None
        r.revision += 1
        s.add(r)
        s.commit()
    assert touch_and_pass(t + 3).full
    assert not touch_and_pass(t + 4).full
    rec._leased_at = t + 4 - 2 * rec.lease_ttl_s - 1  # as if the lease had lapsed meanwhile
    assert touch_and_pass(t + 5).full
    assert touch_and_pass(t + 5 + rec.full_every_s).full  # the safety net
    assert not touch_and_pass(t + 6 + rec.full_every_s).full


def test_an_offline_devices_last_seen_marks_it_and_an_online_ones_does_not(db: Db) -> None:
    """The one column the planner reads without a mark for every change: ``last_seen`` is an
    offline member's timeout clock, so it marks while the device is offline (batched ingest
    compares values, so this is where it would be missed)."""
    from contextlib import contextmanager
    from datetime import datetime, timedelta, timezone

    from edgefleet.cloud.devices import batch

    @contextmanager
    def transaction():  # type: ignore[no-untyped-def]
        with Session(db.engine, expire_on_commit=False) as s:
            yield s
            s.commit()

    at = datetime.now(timezone.utc)

    def status(online: bool, later_s: float) -> set[str]:
        db.clear_marks()
        batch.apply(transaction, [Status(device_id="cam-03", online=online, hardware_id="cpu-x86_64")],
                    clock=lambda: at + timedelta(seconds=later_s))
        return db.marks()

    assert status(False, 1) == {"cam-03"}  # went offline
    assert status(False, 2) == {"cam-03"}  # offline, heard again: its timeout clock moved
    assert status(True, 3) == {"cam-03"}  # back online
    assert status(True, 4) == set()  # online, heard again: nothing the planner reads
