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
