"""Batched ingest (``cloud/devices/batch.py``) stores exactly what the per-message path
stores: the same stream of signed messages, applied one message per transaction to one
database and as one batch to another, leaves equal device rows, device history, telemetry
history and shadow pair statistics, with equal outcomes (replays inside the batch refused).
A bad message costs only itself; another writer advancing a seq meanwhile retries the batch.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, select

from edgefleet.cloud.devices import batch, identity
from edgefleet.cloud.devices.history import DeviceHistory
from edgefleet.cloud.devices.telemetry_store import TelemetryPeriod
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.shadow_index import ShadowPairStats
from edgefleet.cloud.tables import Device
from edgefleet.protocols import (
    LatencyStats,
    ModelRef,
    Phase,
    Reported,
    ShadowStats,
    SlotReport,
    Status,
    Telemetry,
)
from edgefleet.shadow import merge_shadow_stats

from .conftest import Fleet, batched, one_by_one, outcome

OLD = ModelRef(name="digits", version="1.0", digest="a" * 64)
NEW = ModelRef(name="digits", version="2.0", digest="b" * 64)
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)


def _telemetry(device_id: str, n: int, *, agreement: float = 0.9) -> Telemetry:
    start = T0 + timedelta(seconds=10 * n)
    return Telemetry(device_id=device_id, period_start=start, period_end=start + timedelta(seconds=10),
                     control=OLD, frames=100, fps=10.0, errors=n % 2, latency_ms=LatencyStats(p50=1.0, p99=2.0 + n),
                     class_counts={"3": 40, "8": 60}, confidence_histogram=[1, 2, 3],
                     shadow=ShadowStats(candidate=NEW, frames=50, disagreements=int(50 * (1 - agreement)),
                                        agreement=agreement, latency_ms=LatencyStats(p99=3.0),
                                        confusion={"8": {"8": 45, "3": 5}}))


def _reported(device_id: str, generation: int, control: Phase, shadow: Phase | None = None,
              error_code: str | None = None) -> Reported:
    slots = {"control": SlotReport(phase=control, installed=OLD, target=NEW)}
    if shadow is not None:
        slots["shadow"] = SlotReport(phase=shadow, installed=NEW, error_code=error_code,
                                     error="NaN outputs" if error_code else None)
    return Reported(device_id=device_id, generation=generation, hardware_id="cpu-x86_64", agent_version="1.2.3",
                    slots=slots)


def _stream(fleet: Fleet) -> list[Any]:
    """Two devices interleaved: status, reports walking phases, telemetry with shadow stats,
    a duplicate, an out-of-order report and an overlapping period."""
    msgs: list[Any] = [Status(device_id="cam-1", online=True, agent_version="1.2.3"),
                       Status(device_id="cam-2", online=True, agent_version="1.2.3")]
    for gen, phase in enumerate((Phase.DOWNLOADING, Phase.VERIFYING, Phase.ACTIVE), start=1):
        for device_id in ("cam-1", "cam-2"):
            msgs.append(fleet.signed(_reported(device_id, gen, phase)))
            msgs.append(fleet.signed(_telemetry(device_id, gen)))
    msgs.append(msgs[-2])  # cam-2's last report again: a replay inside the batch
    late = fleet.keys["cam-1"].seq - 3
    msgs.append(fleet.signed(_reported("cam-1", 9, Phase.HEALTHY), seq=late))  # signed, but older: out of order
    msgs.append(fleet.signed(_telemetry("cam-1", 3)))  # fresh seq, a period already counted: overlap
    msgs.append(fleet.signed(_reported("cam-1", 4, Phase.HEALTHY, Phase.ROLLED_BACK, "E_NAN")))
    msgs.append(Status(device_id="cam-2", online=False))
    msgs.append(Status(device_id="cam-9", online=True))  # never enrolled
    return msgs


_TIMES = {"last_seen", "reported_at", "telemetry_at", "created_at", "lagging_since", "stale_since", "report_period_end"}
_SECRETS = {"token_hash", "mqtt_password_hash"}  # random per enrolment


def _stored(controller: Controller) -> dict[str, Any]:
    """What ingest stored, without the receive times (they differ between the two runs)."""
    with controller.session() as s:
        devices = {d.id: {k: v for k, v in d.model_dump().items() if k not in _TIMES | _SECRETS}
                   | {k: getattr(d, k) is not None for k in _TIMES}
                   for d in s.exec(select(Device).where(col(Device.id).in_(["cam-1", "cam-2"]))).all()}
        hist = [(h.device_id, h.kind, h.slot, h.message, h.data)
                for h in s.exec(select(DeviceHistory).order_by(col(DeviceHistory.id))).all()]
        periods = [{k: v for k, v in p.model_dump().items() if k not in {"id", "received_at"}}
                   for p in s.exec(select(TelemetryPeriod).order_by(col(TelemetryPeriod.id))).all()]
        pairs = sorted((p.device_id, p.control_version, p.candidate_version, p.frames, p.disagreements, p.periods,
                        json.dumps(p.stats, sort_keys=True))
                       for p in s.exec(select(ShadowPairStats)).all())
    for p in periods:
        for k in ("period_start", "period_end"):
            p[k] = p[k].replace(tzinfo=None)
    return {"devices": devices, "history": hist, "periods": periods, "pairs": pairs}


def test_a_batch_stores_what_one_message_at_a_time_stores(pair: tuple[Controller, Controller],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    one, many = pair
    fleet = Fleet([one, many], {})
    fleet.add("cam-1")
    fleet.add("cam-2")
    msgs = _stream(fleet)
    expected = [one_by_one(one, m) for m in msgs]
    caplog.set_level(logging.WARNING, logger="edgefleet.cloud.devices.batch")
    assert batched(many, msgs) == expected
    assert "one at a time" not in caplog.text  # one transaction: the guards held (executemany rowcounts)
    assert expected.count("replayed") == 2 and expected.count("overlap") == 1
    assert expected[-1] == "unknown_device" and expected.count("ok") == len(msgs) - 4
    a, b = _stored(one), _stored(many)
    assert a["devices"]["cam-1"]["report_seq"] is not None
    assert [h[1] for h in a["history"]].count("rollback") == 1
    assert len(a["periods"]) == 6 and a["pairs"][0][5] == 3
    differing = {d: {k: (v, b["devices"][d].get(k)) for k, v in row.items() if b["devices"][d].get(k) != v}
                 for d, row in a["devices"].items()}
    assert differing == {"cam-1": {}, "cam-2": {}}
    assert b == a


def test_the_folded_pair_stats_are_merge_shadow_stats_of_the_periods(controller: Controller) -> None:
    fleet = Fleet([controller], {})
    fleet.add("cam-1")
    periods = [fleet.signed(_telemetry("cam-1", n, agreement=a)) for n, a in ((1, 0.9), (2, 0.5), (3, 1.0))]
    assert batched(controller, periods[:1]) == ["ok"]
    assert batched(controller, periods[1:]) == ["ok", "ok"]  # folded onto the stored row, then in the batch
    with controller.session() as s:
        row = s.exec(select(ShadowPairStats)).one()
    expected = merge_shadow_stats([p.shadow for p in periods]).model_dump(mode="json")
    assert row.stats == expected and row.periods == 3 and row.frames == 150
    assert row.stats["confusion"] == {"8": {"3": 15, "8": 135}}


def test_telemetry_leaves_the_columns_it_does_not_change_as_stored(controller: Controller) -> None:
    """Columns the batch keeps undecoded (tags, created_at, reported_at) are not written back."""
    fleet = Fleet([controller], {})
    fleet.add("cam-1")
    assert batched(controller, [fleet.signed(_reported("cam-1", 1, Phase.DOWNLOADING))]) == ["ok"]
    with controller.session() as s:
        device = s.get(Device, "cam-1")
        assert device is not None
        device.tags = {"site": "dock-4"}
        s.add(device)
        s.commit()
        before = s.get(Device, "cam-1").model_dump()  # type: ignore[union-attr]
    assert batched(controller, [fleet.signed(_telemetry("cam-1", 1))]) == ["ok"]
    with controller.session() as s:
        after = s.get(Device, "cam-1").model_dump()  # type: ignore[union-attr]
    for column in ("tags", "created_at", "reported_at", "reported"):
        assert after[column] == before[column], column
    assert after["telemetry_at"] is not None and after["last_seen"] >= before["last_seen"]
    assert after["telemetry"]["frames"] == 100


def test_a_replay_inside_one_batch_is_refused_and_counted_once(controller: Controller) -> None:
    fleet = Fleet([controller], {})
    fleet.add("cam-1")
    report = fleet.signed(_reported("cam-1", 1, Phase.DOWNLOADING))
    period = fleet.signed(_telemetry("cam-1", 1))
    assert batched(controller, [report, period, report, period]) == ["ok", "ok", "replayed", "replayed"]
    with controller.session() as s:
        assert len(s.exec(select(TelemetryPeriod)).all()) == 1
        assert len(s.exec(select(DeviceHistory)).all()) == 1
        assert s.get(Device, "cam-1").report_seq == report.seq  # type: ignore[union-attr]
    assert batched(controller, [report]) == ["replayed"]  # and in the next batch


def test_a_revoked_device_in_a_batch_is_refused_and_the_others_applied(controller: Controller) -> None:
    fleet = Fleet([controller], {})
    fleet.add("cam-1")
    fleet.add("cam-2")
    with controller.session() as s:
        identity.revoke(s, "cam-2")
        s.commit()
    msgs = [fleet.signed(_reported("cam-2", 1, Phase.ACTIVE)), fleet.signed(_reported("cam-1", 1, Phase.ACTIVE))]
    assert batched(controller, msgs) == ["revoked", "ok"]
    with controller.session() as s:
        assert s.get(Device, "cam-1").reported_generation == 1  # type: ignore[union-attr]
        assert s.get(Device, "cam-2").reported_generation is None  # type: ignore[union-attr]


def test_a_message_that_breaks_while_staged_is_taken_out_alone(controller: Controller) -> None:
    fleet = Fleet([controller], {})
    fleet.add("cam-1")
    fleet.add("cam-2")
    msgs = [fleet.signed(_telemetry("cam-1", 1)), fleet.signed(_telemetry("cam-2", 1)),
            fleet.signed(_reported("cam-2", 1, Phase.ACTIVE))]

    def labels(msg: Telemetry) -> Telemetry:
        if msg.device_id == "cam-1":
            raise ValueError("label book broke on this one")
        return msg

    results = batch.apply(controller.ingest_session, msgs, check_labels=labels)
    assert [outcome(r) for r in results] == ["error", "ok", "ok"]
    assert isinstance(results[0], ValueError)
    with controller.session() as s:
        assert [p.device_id for p in s.exec(select(TelemetryPeriod)).all()] == ["cam-2"]
        assert s.get(Device, "cam-1").telemetry_seq is None  # type: ignore[union-attr]  # nothing of it stored
        assert s.get(Device, "cam-2").reported_generation == 1  # type: ignore[union-attr]


def test_a_write_the_database_refuses_costs_only_that_message(controller: Controller) -> None:
    """A real refusal by the database (a SQLite trigger aborting one device's history row)
    while the batch is written: the batch is retried one message at a time."""
    fleet = Fleet([controller], {})
    fleet.add("cam-1")
    fleet.add("cam-bad")
    with controller.engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER refuse_bad BEFORE INSERT ON telemetry_period "
                          "WHEN NEW.device_id = 'cam-bad' BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"))
    msgs = [fleet.signed(_telemetry("cam-1", 1)), fleet.signed(_telemetry("cam-bad", 1)),
            fleet.signed(_reported("cam-bad", 1, Phase.ACTIVE)), fleet.signed(_telemetry("cam-1", 2))]
    results = [outcome(r) for r in batch.apply(controller.ingest_session, msgs)]
    assert results == ["ok", "error", "ok", "ok"]
    with controller.session() as s:
        assert [p.device_id for p in s.exec(select(TelemetryPeriod)).all()] == ["cam-1", "cam-1"]
        bad = s.get(Device, "cam-bad")
        assert bad is not None and bad.reported_generation == 1 and bad.telemetry_seq is None


def test_a_seq_another_replica_accepted_meanwhile_retries_the_batch(controller: Controller) -> None:
    """Between the batch's read and its write another writer accepts cam-1's telemetry (as a
    second replica handed the same message would): the guarded UPDATE finds the row moved,
    the batch is staged again and that message is refused as a replay; nothing is doubled."""
    fleet = Fleet([controller], {})
    fleet.add("cam-1")
    fleet.add("cam-2")
    mine = fleet.signed(_telemetry("cam-1", 1))
    msgs = [mine, fleet.signed(_telemetry("cam-2", 1)), fleet.signed(_reported("cam-2", 1, Phase.ACTIVE))]
    raced = []

    def other_replica(msg: Telemetry) -> Telemetry:
        if not raced and msg.device_id == "cam-1":
            raced.append(msg.seq)
            with Session(controller.engine) as s:  # its own connection and transaction
                s.execute(text("UPDATE device SET telemetry_seq = :seq, report_period_end = :end WHERE id = 'cam-1'"),
                          {"seq": msg.seq, "end": msg.period_end.replace(tzinfo=None)})
                s.commit()
        return msg

    results = batch.apply(controller.ingest_session, msgs, check_labels=other_replica)
    assert raced == [mine.seq]
    assert [outcome(r) for r in results] == ["replayed", "ok", "ok"]
    with controller.session() as s:
        assert [p.device_id for p in s.exec(select(TelemetryPeriod)).all()] == ["cam-2"]
        assert len(s.exec(select(DeviceHistory).where(DeviceHistory.device_id == "cam-2")).all()) == 1


def test_a_batch_marks_the_devices_it_moved_dirty_for_the_reconciler(controller: Controller) -> None:
    """Core updates bypass the ORM's after_flush hook: the batch writes the marks itself."""
    from edgefleet.cloud.rollout import dirty

    fleet = Fleet([controller], {})
    fleet.add("cam-1")
    fleet.add("cam-2")
    dirty.enable(controller.engine)
    with controller.session() as s:
        dirty.clear(s, dirty.read(s))
    assert batched(controller, [fleet.signed(_reported("cam-1", 1, Phase.ACTIVE)),
                                Status(device_id="cam-9", online=True)]) == ["ok", "unknown_device"]
    with controller.session() as s:
        assert set(dirty.read(s)) == {"cam-1"}
