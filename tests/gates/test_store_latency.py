"""The latency gate's inputs from the telemetry history (real SQLite, migrated schema):
per-period p99s of the rollout's model and of the one it replaced, per device."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlmodel import Session

from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.devices.telemetry_store import TelemetryPeriod
from edgefleet.cloud.rollout import DeviceObservation, RolloutState
from edgefleet.cloud.rollout.store import with_latency
from edgefleet.cloud.rollout.tables import Rollout
from edgefleet.protocols.messages import ModelRef

V1 = ModelRef(name="det", version="1", digest="1" * 64)
V2 = ModelRef(name="det", version="2", digest="2" * 64)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
DISPATCH = T0 + timedelta(seconds=100)


@pytest.fixture
def session(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()


def _period(device: str, end: datetime, control: ModelRef, p99: float, *, frames: int = 50,
            candidate: ModelRef | None = None, cand_p99: float | None = None) -> TelemetryPeriod:
    return TelemetryPeriod(device_id=device, period_start=end - timedelta(seconds=10), period_end=end,
                           control_name=control.name, control_version=control.version,
                           candidate_name=candidate.name if candidate else None,
                           candidate_version=candidate.version if candidate else None,
                           frames=frames, latency_p99=p99, shadow_frames=frames if candidate else 0,
                           candidate_p99=cand_p99)


def _rollout(slot: str) -> Rollout:
    return Rollout(id="r", model_version_id=1, model_name=V2.name, model_version=V2.version, digest=V2.digest,
                   slot=slot, select="all", waves="100", soak="1m", gates=["latency_p99_ratio<=1.2"],
                   on_breach="rollback", device_timeout="10m",
                   state_json=RolloutState(rollout_id="r", state="soaking").model_dump_json())


def _obs(device: str = "d1", **kw) -> DeviceObservation:
    base: dict = dict(device_id=device, wave=0, dispatched_at=DISPATCH.timestamp(), previous=V1,
                      candidate_p99_ms=9.0, baseline_p99_ms=3.0)
    return DeviceObservation(**{**base, **kw})


def test_control_rollout_reads_the_previous_models_periods_before_dispatch_and_the_new_ones_after(session):
    for i in range(5):  # the previous model, before dispatch
        session.add(_period("d1", T0 + timedelta(seconds=10 * (i + 1)), V1, 3.0 + i / 10))
    session.add(_period("d1", DISPATCH + timedelta(seconds=10), V2, 50.0))  # first period: mixed, left out
    for i in range(3):
        session.add(_period("d1", DISPATCH + timedelta(seconds=20 + 10 * i), V2, 9.0 + i / 10))
    session.add(_period("d2", DISPATCH + timedelta(seconds=30), V2, 99.0))  # another device
    session.commit()
    [o] = with_latency(session, _rollout("control"), [_obs()])
    assert sorted(o.candidate_p99_periods) == pytest.approx([9.0, 9.1, 9.2])
    assert sorted(o.baseline_p99_periods) == pytest.approx([3.0, 3.1, 3.2, 3.3, 3.4])


def test_shadow_rollout_pairs_candidate_and_control_of_the_same_periods(session):
    session.add(_period("d1", DISPATCH - timedelta(seconds=5), V1, 3.0, candidate=V2, cand_p99=99.0))  # before
    for i in range(4):
        session.add(_period("d1", DISPATCH + timedelta(seconds=10 * (i + 1)), V1, 3.0 + i, candidate=V2,
                            cand_p99=6.0 + i))
    session.commit()
    [o] = with_latency(session, _rollout("shadow"), [_obs()])
    pairs = sorted(zip(o.candidate_p99_periods, o.baseline_p99_periods))
    assert pairs == [(6.0, 3.0), (7.0, 4.0), (8.0, 5.0), (9.0, 6.0)]


def test_devices_without_history_or_outside_the_current_wave_keep_their_running_figures(session):
    session.add(_period("d3", DISPATCH + timedelta(seconds=30), V2, 9.0))
    session.commit()
    later = _obs("d3", wave=1)
    [a, b] = with_latency(session, _rollout("control"), [_obs("d9"), later])
    assert a.candidate_p99_periods == () and a.candidate_p99_ms == 9.0
    assert b == later


def test_baseline_at_dispatch_is_the_median_of_the_last_periods_on_the_previous_model_for_many_devices(session):
    from edgefleet.cloud.rollout.store import baseline_p99_many
    from edgefleet.cloud.tables import Device

    other = ModelRef(name="det", version="0", digest="0" * 64)
    for i in range(15):  # d1: 15 periods on V1, the last 10 count (p99 = 5.0 … 14.0 → median 10.0)
        session.add(_period("d1", T0 + timedelta(seconds=10 * i), V1, float(i)))
    session.add(_period("d1", T0 + timedelta(seconds=500), other, 99.0))  # another model: not counted
    session.add(_period("d1", T0 + timedelta(seconds=510), V1, 50.0, frames=0))  # no frames: not counted
    for i in range(3):  # d2: three periods → their median
        session.add(_period("d2", T0 + timedelta(seconds=10 * i), V1, [7.0, 1.0, 4.0][i]))
    latest = {"control": {"digest": V1.digest}, "frames": 40, "latency_ms": {"p99": 6.5}}
    session.add(Device(id="d3", hardware_id="x", telemetry=latest))  # no history: its latest period
    session.add(Device(id="d4", hardware_id="x", telemetry={**latest, "control": {"digest": V2.digest}}))
    session.add(Device(id="d5", hardware_id="x"))
    session.commit()
    got = baseline_p99_many(session, {"d1": V1, "d2": V1, "d3": V1, "d4": V1, "d5": None, "gone": V1}, V2.digest)
    assert got["d1"] == (10.0, 10)
    assert got["d2"] == (4.0, 3)
    assert got["d3"] == (6.5, 1)
    assert got["d4"] == (None, 0)  # its latest period ran the rollout's own model
    assert got["d5"] == (None, 0) and got["gone"] == (None, 0)
