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
