"""The reconciler's cached view of the fleet (``rollout/device_view.py``) never serves a stale value.

It decodes a device again whenever any column it reads differs from what it saw last pass,
so every change — a new report, presence, tags, freshness, ``last_seen`` alone, a device
added or removed — is what the next ``load`` returns, on SQLite and PostgreSQL alike; and
what it returns is what ``store.device_fields`` makes of the ORM ``Device``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.rollout.device_view import DeviceViews
from edgefleet.cloud.rollout.store import device_fields
from edgefleet.cloud.tables import Device

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
REF = {"name": "digits", "version": "2.0", "digest": "d2" * 32}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'views.db'}")
    else:
        url: str = request.getfixturevalue("postgres")
        admin = make_engine(url)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("DROP DATABASE IF EXISTS device_views"))
            conn.execute(text("CREATE DATABASE device_views"))
        admin.dispose()
        eng = make_engine(url.rsplit("/", 1)[0] + "/device_views")
    migrate(eng)
    yield eng
    eng.dispose()


def _add(s: Session, device_id: str, **kw: object) -> None:
    s.add(Device(id=device_id, hardware_id="jetson-orin-nano", tags={"site": "a"}, online=True, last_seen=T0,
                 reported={"slots": {"control": {"installed": REF, "target": REF, "phase": "healthy"}}}, **kw))


def _same_as_orm(engine: object, views: DeviceViews) -> None:
    with Session(engine) as s:  # type: ignore[arg-type]
        loaded = views.load(s)
        orm = s.exec(select(Device).order_by(Device.id)).all()
    assert [v.id for v in loaded] == [d.id for d in orm]
    for d in orm:
        assert views.fields(d.id, "control") == device_fields(d, "control")
        assert views.fields(d.id, "shadow") == device_fields(d, "shadow")


def test_every_change_is_seen_on_the_next_load(engine: object) -> None:
    views = DeviceViews()
    with Session(engine) as s:  # type: ignore[arg-type]
        for i in range(5):
            _add(s, f"cam-{i}")
        s.commit()
    _same_as_orm(engine, views)
    first = views.fields("cam-0", "control")
    assert first["phase"].value == "healthy" and first["installed"].digest == REF["digest"]

    with Session(engine) as s:  # type: ignore[arg-type]
        d = s.get(Device, "cam-0")
        assert d is not None
        d.reported = {"slots": {"control": {"installed": REF, "target": REF, "phase": "failed",
                                            "error_code": "E_CORRUPT_MODEL"}}}
        d2 = s.get(Device, "cam-1")
        assert d2 is not None
        d2.online, d2.tags = False, {"site": "b"}
        d3 = s.get(Device, "cam-2")
        assert d3 is not None
        d3.last_seen = T0 + timedelta(minutes=5)  # only last_seen
        d4 = s.get(Device, "cam-3")
        assert d4 is not None
        d4.stale_since = d4.lagging_since = T0
        s.delete(s.get(Device, "cam-4"))
        _add(s, "cam-5")
        s.commit()
    _same_as_orm(engine, views)
    assert views.fields("cam-0", "control")["phase"].value == "failed"
    assert views.fields("cam-0", "control")["error_code"] == "E_CORRUPT_MODEL"
    assert views.fields("cam-1", "control")["online"] is False
    assert views.fields("cam-1", "control")["tags"] == {"site": "b"}
    assert views.fields("cam-2", "control")["last_seen"] == (T0 + timedelta(minutes=5)).timestamp()
    assert views.fields("cam-3", "control")["stale_since"] == T0.timestamp()
    with pytest.raises(KeyError):
        views.fields("cam-4", "control")  # removed devices are forgotten


def test_a_device_with_malformed_report_fields_reads_as_the_orm_path_does(engine: object) -> None:
    views = DeviceViews()
    with Session(engine) as s:  # type: ignore[arg-type]
        _add(s, "cam-odd")
        d = s.get(Device, "cam-odd")
        assert d is not None
        d.reported = {"slots": {"control": {"installed": {"name": "x"}, "phase": "no-such-phase",
                                            "window_opens_at": "not a time"}}}
        _add(s, "cam-empty")
        e = s.get(Device, "cam-empty")
        assert e is not None
        e.reported, e.tags, e.last_seen = None, None, None
        s.commit()
    _same_as_orm(engine, views)
    odd = views.fields("cam-odd", "control")
    assert odd["installed"] is None and odd["phase"].value == "idle" and odd["window_opens_at"] is None


def test_views_of_a_subset_sees_every_change_and_keeps_the_other_devices(engine: object) -> None:
    """The rollout status path (``members.py``) reads only a rollout's members' rows."""
    from sqlalchemy import select as core_select

    from edgefleet.cloud.rollout.device_view import raw_columns

    views = DeviceViews()
    with Session(engine) as s:  # type: ignore[arg-type]
        for i in range(4):
            _add(s, f"cam-{i}")
        s.commit()

    def some(ids: list[str]) -> list[object]:
        with Session(engine) as s:  # type: ignore[arg-type]
            rows = s.connection().execute(core_select(*raw_columns()).where(Device.id.in_(ids))  # type: ignore[attr-defined]
                                          .order_by(Device.id)).all()
            got = views.views_of(s, rows)
            orm = {d.id: d for d in s.exec(select(Device).where(Device.id.in_(ids))).all()}  # type: ignore[attr-defined]
        for v in got:
            assert views.fields_of(v, "control") == device_fields(orm[v.id], "control")
        return got

    first = some(["cam-0", "cam-1"])
    assert [v.id for v in first] == ["cam-0", "cam-1"]  # type: ignore[attr-defined]
    with Session(engine) as s:  # type: ignore[arg-type]
        d = s.get(Device, "cam-0")
        assert d is not None
        d.reported = {"slots": {"control": {"installed": REF, "target": REF, "phase": "failed"}}}
        d.last_seen = T0 + timedelta(minutes=1)
        s.commit()
    again = some(["cam-0", "cam-2"])
    assert views.fields_of(again[0], "control")["phase"].value == "failed"  # type: ignore[arg-type]
    assert views.fields_of(again[0], "control")["last_seen"] == (T0 + timedelta(minutes=1)).timestamp()  # type: ignore[arg-type]
    assert views.fields("cam-1", "control")["phase"].value == "healthy"  # read before, still cached
    assert views.fields_of(first[1], "control") == views.fields("cam-1", "control")  # type: ignore[arg-type]
