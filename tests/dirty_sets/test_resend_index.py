"""The resend loop (``Controller.sync_once``) reads only lagging devices: its query is
answered from the partial index of migration 0020, not by scanning the online fleet."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.runtime import lagging_clause
from edgefleet.cloud.tables import Device


def test_the_lagging_devices_query_uses_the_partial_index(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    stmt = select(Device).where(lagging_clause()).order_by(Device.id)  # what sync_once runs
    compiled = stmt.compile(engine)
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), tuple(compiled.params.values())).all()
    engine.dispose()
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX ix_device_dirty_lagging" in details, details


def test_an_assigned_device_not_signed_yet_is_left_to_its_assigner_then_taken_over(tmp_path: Path) -> None:
    """An API deploy commits the assignment, then signs; the sync loop (another thread) that
    saw the device lagging meanwhile signed it too (issue 14: doubled signing, a race). It
    now waits ``UNSIGNED_GRACE`` for the assigner, and takes over only after (a crash
    between the two); a signed device that lags is re-sent as before."""
    from datetime import datetime, timezone

    from edgefleet.cloud import runtime
    from edgefleet.cloud.devices import fleet

    from ..ingest_batch.conftest import controller_on

    c = controller_on(tmp_path)
    with c.session() as s:
        for device_id in ("cam-unsigned", "cam-signed"):
            fleet.enrol_device(s, device_id, "cpu-x86_64")
            d = s.get(Device, device_id)
            assert d is not None
            d.online, d.desired_generation, d.reported_generation = True, 3, 2
            d.director_generation = 3 if device_id == "cam-signed" else 2
            s.add(d)
        s.commit()
    sent: list[list[str]] = []
    c.publish_devices = lambda _s, devices: sent.append([d.id for d in devices]) or len(devices)  # type: ignore[method-assign]
    t0 = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    c.sync_once(t0)
    assert sent[-1] == ["cam-signed"]
    c.sync_once(t0 + runtime.UNSIGNED_GRACE / 2)
    assert "cam-unsigned" not in sent[-1]
    c.sync_once(t0 + runtime.UNSIGNED_GRACE)
    assert "cam-unsigned" in sent[-1]  # nobody signed it: the sync loop does
    with c.session() as s:  # a newer assignment starts the wait again
        d = s.get(Device, "cam-unsigned")
        assert d is not None
        d.desired_generation = 4
        s.add(d)
        s.commit()
    c.sync_once(t0 + runtime.UNSIGNED_GRACE * 1.5)
    assert "cam-unsigned" not in sent[-1]
    c.engine.dispose()


def test_the_resend_pass_waits_for_an_ingest_backlog_but_not_for_ever(tmp_path: Path) -> None:
    """Reports still queued for ingest make devices look behind: no resend while there is a
    backlog, up to ``RESEND_MAX_DEFER``; then it resends all the same."""
    from datetime import datetime, timezone

    from edgefleet.cloud import runtime
    from edgefleet.cloud.bridge import MqttBridge
    from edgefleet.cloud.devices import fleet

    from ..ingest_batch.conftest import controller_on

    c = controller_on(tmp_path)
    with c.session() as s:
        fleet.enrol_device(s, "cam-behind", "cpu-x86_64")
        d = s.get(Device, "cam-behind")
        assert d is not None
        d.online, d.desired_generation, d.director_generation, d.reported_generation = True, 2, 2, 1
        s.add(d)
        s.commit()
    sent: list[list[str]] = []
    c.publish_devices = lambda _s, devices: sent.append([d.id for d in devices]) or len(devices)  # type: ignore[method-assign]
    bridge = MqttBridge("127.0.0.1", 1, handlers={})
    c.bridge = bridge
    bridge._inbox.put_nowait(object())  # a report waiting to be applied
    t0 = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    assert c.sync_once(t0) == 0 and sent == []
    assert c.sync_once(t0 + runtime.RESEND_MAX_DEFER / 2) == 0 and sent == []
    assert c.sync_once(t0 + runtime.RESEND_MAX_DEFER) == 1 and sent == [["cam-behind"]]  # not for ever
    bridge._inbox.get_nowait()
    c._last_sent.clear()
    assert c.sync_once(t0 + runtime.RESEND_MAX_DEFER * 2) == 1  # no backlog: at once
    c.bridge = None
    c.engine.dispose()


def test_a_slow_controller_loop_pass_waits_as_long_as_it_took() -> None:
    from edgefleet.cloud.runtime import loop_delay

    assert loop_delay(0.5, 0.01) == 0.5  # a quick pass: the interval
    assert loop_delay(0.5, 1.8) == 1.8  # a pass over a large fleet: no back-to-back passes
