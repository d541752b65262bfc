"""A member quiet for half its device timeout is asked to report again (rollout/nudge.py),
once per quiet spell: a device whose report was lost is then counted as what it is, one that
is really stuck still times out at the full timeout. Simulated reconciler clock; a recording
publisher stands in for MQTT only (what is published is what these tests check)."""

from __future__ import annotations

import time

from sqlmodel import Session, select

from edgefleet.cloud.devices import fleet, ingest
from edgefleet.cloud.rollout.reconciler import Reconciler
from edgefleet.cloud.rollout.service import RolloutCreate, start_rollout
from edgefleet.cloud.rollout.tables import RolloutEvent, RolloutMember
from edgefleet.cloud.tables import Device, ModelVersion
from edgefleet.protocols import ModelRef, Phase, Reported, SlotReport

from .conftest import Db, N


class Recorder:
    """``publish_devices`` as the controller's, minus signing and MQTT: records who was sent what."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish_devices(self, session: Session, devices: list[Device]) -> int:
        self.sent += [d.id for d in devices]
        return len(devices)


def _start(db: Db) -> tuple[Recorder, str]:
    rec = Recorder()
    db.reconciler = Reconciler(db.engine, rec, holder="test-nudge", lease_ttl_s=1e6)
    with db.session() as s:
        rid = start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1s",
                                             device_timeout="60s"), time.time()).id
    return rec, rid


def _healthy_on_candidate(db: Db, device_id: str) -> None:
    with db.session() as s:
        mv = s.exec(select(ModelVersion).where(ModelVersion.name == "digits", ModelVersion.version == "2.0")).one()
        device = fleet.get_device(s, device_id)
        ref = ModelRef(name="digits", version="2.0", digest=mv.digest)
        ingest.apply_reported(s, Reported(device_id=device_id, generation=device.desired_generation,
                                          hardware_id="cpu-x86_64",
                                          slots={"control": SlotReport(installed=ref, phase=Phase.HEALTHY)}))


def test_quiet_members_are_asked_once_half_way_and_a_lost_report_is_not_a_timeout(db: Db) -> None:
    rec, rid = _start(db)
    t0 = time.time()
    assert db.reconciler.run_once(t0).set_desired == N
    assert sorted(rec.sent) == sorted(db.devices)  # the wave itself
    rec.sent.clear()
    for k in range(1, 4):
        db.reconciler.run_once(t0 + k)
    assert db.reconciler.run_once(t0 + 20).skipped == 1 and rec.sent == []  # nobody due yet

    half = db.reconciler.run_once(t0 + 31)  # quiet for half the 60 s timeout: a deadline of its own
    assert half.skipped == 0
    assert sorted(rec.sent) == sorted(db.devices)
    with db.session() as s:
        events = [e.message for e in s.exec(select(RolloutEvent).where(RolloutEvent.rollout_id == rid)).all()]
    assert any(f"asked {N} device(s) quiet for half the device timeout to report again" in m for m in events)
    rec.sent.clear()
    db.reconciler.run_once(t0 + 32)
    assert db.reconciler.run_once(t0 + 40).skipped == 1 and rec.sent == []  # once per quiet spell

    _healthy_on_candidate(db, "cam-00")  # its answer: it had been healthy all along
    db.reconciler.run_once(t0 + 62)
    with db.session() as s:
        members = {m.device_id: m for m in s.exec(select(RolloutMember).where(RolloutMember.rollout_id == rid)).all()}
    assert members["cam-00"].timed_out_at is None
    stuck = [d for d in db.devices if d != "cam-00"]
    assert all(members[d].timed_out_at == t0 + 62 for d in stuck)  # really stuck: timed out as before


def test_no_publisher_no_nudge_and_no_extra_wake(db: Db) -> None:
    with db.session() as s:
        start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1s",
                                       device_timeout="60s"), time.time())
    t0 = time.time()
    db.reconciler.run_once(t0)
    for k in range(1, 4):
        db.reconciler.run_once(t0 + k)
    assert db.reconciler.run_once(t0 + 40).skipped == 1
