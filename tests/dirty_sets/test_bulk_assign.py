"""``fleet.assign`` and a wave's new members are written with a few Core statements, not an
ORM object per device (issue 14), and still leave what the ORM path left: the assignment and
device rows, history, dirty marks, Device objects that show the new generation, and no stale
assignment object in the session."""

from __future__ import annotations

import time

from sqlmodel import Session, select

from edgefleet.cloud.devices import fleet
from edgefleet.cloud.devices.history import DeviceHistory
from edgefleet.cloud.rollout.service import RolloutCreate, start_rollout
from edgefleet.cloud.rollout.tables import RolloutMember
from edgefleet.cloud.tables import Device, ModelVersion, SlotAssignment

from .conftest import Db, N


def _model(s: Session, version: str) -> ModelVersion:
    mv = s.exec(select(ModelVersion).where(ModelVersion.version == version)).one()
    return mv


def _generations(db: Db) -> dict[str, int]:
    with db.session() as s:
        return {d.id: d.desired_generation for d in s.exec(select(Device)).all()}


def test_a_deploy_to_every_device_is_a_few_statements_and_marks_each_device(db: Db) -> None:
    db.clear_marks()
    before = _generations(db)
    with db.session() as s, db.counting() as sql:
        changed = fleet.assign(s, _model(s, "1.0"), "control", db.devices)
    assert sorted(d.id for d in changed) == db.devices
    assert all(d.desired_generation == before[d.id] + 1 for d in changed)  # the objects show it
    writes = [q for q in sql.touching_devices() if not q.lstrip().upper().startswith("SELECT")]
    assert 0 < len(writes) <= 4, writes  # assignments, generations, history: one executemany each
    assert _generations(db) == {d: g + 1 for d, g in before.items()}
    assert db.marks() == set(db.devices)
    with db.session() as s:
        rows = s.exec(select(SlotAssignment).where(SlotAssignment.slot == "control")).all()
        assert {(a.device_id, a.model_version_id, a.rollout_id) for a in rows} == {
            (d, _model(s, "1.0").id, None) for d in db.devices}
        history = s.exec(select(DeviceHistory).where(DeviceHistory.kind == "desired")).all()
        assert len(history) == N and all(h.data["generation"] == before[h.device_id] + 1 for h in history)


def test_a_committed_assignment_is_not_written_again_and_unchanged_devices_are_left_alone(db: Db) -> None:
    with db.session() as s:
        fleet.assign(s, _model(s, "1.0"), "control", db.devices[:4])
    db.clear_marks()
    before = _generations(db)
    with db.session() as s, db.counting() as sql:
        changed = fleet.assign(s, _model(s, "1.0"), "control", db.devices[:6])  # 4 already have it
        s.commit()
    assert sorted(d.id for d in changed) == db.devices[4:6]
    assert _generations(db) == {d: g + (1 if d in db.devices[4:6] else 0) for d, g in before.items()}
    assert db.marks() == set(db.devices[4:6])
    device_updates = [q for q in sql.seen if q.lstrip().upper().startswith("UPDATE DEVICE ")]
    assert len(device_updates) == 1  # one executemany; the objects are not flushed a second time


def test_a_changed_and_a_removed_assignment_are_read_fresh_in_the_same_session(db: Db) -> None:
    target = db.devices[0]
    with db.session() as s:
        fleet.assign(s, _model(s, "1.0"), "control", [target])
        loaded = s.get(SlotAssignment, (target, "control"))  # an object in this session's identity map
        assert loaded is not None and loaded.model_version_id == _model(s, "1.0").id
        fleet.assign(s, _model(s, "2.0"), "control", [target], rollout_id=None)
        again = s.get(SlotAssignment, (target, "control"))
        assert again is not None and again.model_version_id == _model(s, "2.0").id
        gen = s.get(Device, target).desired_generation  # type: ignore[union-attr]
        fleet.assign(s, None, "control", [target])
        assert s.get(SlotAssignment, (target, "control")) is None
        assert s.get(Device, target).desired_generation == gen + 1  # type: ignore[union-attr]
        assert fleet.assign(s, None, "control", [target]) == []  # nothing left to remove


def test_a_wave_inserts_its_members_with_their_history_and_marks(db: Db) -> None:
    with db.session() as s:
        rid = start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1s",
                                             device_timeout="10m"), time.time()).id
    db.clear_marks()
    r = db.reconciler.run_once(time.time())
    assert r.set_desired == N
    with db.session() as s:
        members = s.exec(select(RolloutMember).where(RolloutMember.rollout_id == rid)).all()
        assert sorted(m.device_id for m in members) == db.devices
        assert all(m.wave == 0 and m.dispatched_at is not None and m.frames == 0 for m in members)
        joined = s.exec(select(DeviceHistory).where(DeviceHistory.kind == "rollout")).all()
        assert sorted(h.device_id for h in joined) == db.devices
        assert all(h.data == {"rollout": rid, "wave": 0} and h.slot == "control" for h in joined)
        owners = s.exec(select(SlotAssignment).where(SlotAssignment.slot == "control")).all()
        assert {a.rollout_id for a in owners} == {rid} and len(owners) == N
    assert db.marks() == set(db.devices)
