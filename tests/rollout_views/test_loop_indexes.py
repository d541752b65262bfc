"""The controller loop's per-pass device queries read only what is due (migration 0021):
``mark_unheard`` and ``mark_stale`` are answered from their indexes, not by scanning the
fleet, and still mark exactly the devices a brute-force pass over every row marks; the
wave-filtered member list reads its index too."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from edgefleet.cloud import db
from edgefleet.cloud.devices.presence import mark_unheard
from edgefleet.cloud.rollout.members import page_members
from edgefleet.cloud.rollout.store import spec_of, state_of
from edgefleet.cloud.rollout.tables import Rollout
from edgefleet.cloud.tables import Device
from edgefleet.cloud.trust.freshness import lag_reason, mark_stale

from .seed import ROLLOUT, seed_rollout

N = 400


def plans_of(engine: Engine, run: Any) -> list[str]:
    """The SQLite query plans of the SELECTs on ``device``/``rollout_member`` that ``run()`` issues."""
    statements: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, _many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT") and re.search(r"FROM (device|rollout_member)\b", sql):
            statements.append((sql, params))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    out = []
    with engine.connect() as conn:
        for sql, params in statements:
            out.append(" ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()))
    return out


def _engine(tmp_path: Path) -> Engine:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'loop.db'}")
    db.migrate(engine)
    assert {"ix_device_unheard", "ix_device_lag_due"} <= {i["name"] for i in inspect(engine).get_indexes("device")}
    assert "ix_rollout_member_wave" in {i["name"] for i in inspect(engine).get_indexes("rollout_member")}
    return engine


def test_mark_unheard_reads_its_index_and_marks_exactly_the_silent_online_devices(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    from tests.device_views.seed import seed

    seed(engine, N)  # last_seen: now - (i % 600) s, never seen for some, revoked every 50th
    now = time.time()
    window = 120.0
    with Session(engine) as s:
        cutoff = datetime.fromtimestamp(now - window, timezone.utc)
        want = sorted(d.id for d in s.exec(select(Device)).all()
                      if d.online and d.revoked_at is None
                      and (d.last_seen is None or d.last_seen.replace(tzinfo=timezone.utc) < cutoff))
        assert want  # the seed has some of each
        got: list[str] = []
        plans = plans_of(engine, lambda: got.extend(mark_unheard(s, now, window, heard_from=now - 3600)))
        assert sorted(got) == want
        assert plans and all("ix_device_unheard" in p for p in plans), plans
        assert all(not d.online for d in s.exec(select(Device).where(Device.id.in_(want))).all())  # type: ignore[attr-defined]


def test_mark_stale_reads_its_index_and_marks_exactly_the_devices_lagging_too_long(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    from tests.device_views.seed import seed

    seed(engine, N)
    now = datetime.now(timezone.utc)
    with Session(engine) as s:
        lagging = {f"dev-{i:06d}": now - timedelta(seconds=30 * i) for i in range(1, N, 9)}
        for device_id, since in lagging.items():  # behind on what was signed for it, for a while
            s.execute(update(Device).where(Device.id == device_id).values(  # type: ignore[arg-type]
                lagging_since=since, desired_generation=5, reported_generation=1, director_version=3))
        s.commit()
        stale_after = 1000.0
        cutoff = now - timedelta(seconds=stale_after)
        want = sorted(d.id for d in s.exec(select(Device)).all()  # every row, judged in Python
                      if d.stale_since is None and d.lagging_since is not None
                      and d.lagging_since.replace(tzinfo=timezone.utc) <= cutoff and lag_reason(d) is not None)
        assert want
        got: list[str] = []
        plans = plans_of(engine, lambda: got.extend(mark_stale(s, now, stale_after)))
        assert plans and "ix_device_lag_due" in plans[0], plans
        assert sorted(got) == want


def test_a_wave_filtered_member_page_reads_the_wave_index(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    now = time.time()
    seed_rollout(engine, 120, now=now)
    with Session(engine) as s:
        row = s.get(Rollout, ROLLOUT)
        assert row is not None
        spec, state = spec_of(row), state_of(row)
        plans = plans_of(engine, lambda: page_members(s, row, spec, state, now, limit=10, cursor=None, wave=1))
        member_plans = [p for p in plans if "rollout_member" in p]
        assert member_plans and all("ix_rollout_member_wave" in p for p in member_plans[1:]), member_plans


def test_the_offline_watcher_reads_what_it_announced_in_batches_not_per_device(tmp_path: Path) -> None:
    from edgefleet.cloud.settings import load_settings
    from edgefleet.cloud.webhooks.watchers import watch_offline
    from tests.device_views.seed import seed

    engine = _engine(tmp_path)
    seed(engine, N)  # offline two devices in three, last seen up to 10 minutes ago
    settings = load_settings(tmp_path / "data", env={})
    now = datetime.now(timezone.utc) + timedelta(seconds=settings.webhook_offline_after_s + 1)
    with Session(engine) as s:
        want = sorted(d.id for d in s.exec(select(Device)).all()
                      if not d.online and d.revoked_at is None and d.last_seen is not None)
        assert len(want) > 100
        assert sorted(watch_offline(s, settings, now)) == want  # each offline spell announced once
        s.commit()
    with Session(engine) as s:  # the next pass: a new session, as the worker opens one per pass
        statements: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        assert watch_offline(s, settings, now) == []  # already announced: nothing again
        assert len(statements) <= 3, statements  # the devices, then their watch rows in one chunk
