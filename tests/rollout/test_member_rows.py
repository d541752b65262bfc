"""The reconciler's plain member rows (``rollout/member_rows.py``) read and write what the ORM does."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, select

from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.rollout import member_rows
from edgefleet.cloud.rollout.tables import Rollout, RolloutMember
from edgefleet.cloud.tables import ModelVersion

PREV = {"name": "digits", "version": "1.0", "digest": "a" * 64}


def _engine(tmp_path: Path) -> object:
    eng = make_engine(f"sqlite:///{tmp_path / 'members.db'}")
    migrate(eng)
    with Session(eng) as s:
        s.add(ModelVersion(name="digits", version="2.0", digest="b" * 64, size=1, manifest={}))
        s.commit()
        mv = s.exec(select(ModelVersion)).one()
        s.add(Rollout(id="r-1", model_version_id=mv.id or 0, model_name="digits", model_version="2.0", digest="b" * 64,
                      slot="control", select="all", waves="100", soak="0s", gates=[], on_breach="rollback",
                      device_timeout="5m", state="running", state_json="{}", created_at=1.0, updated_at=1.0))
        for i in range(3):
            s.add(RolloutMember(rollout_id="r-1", device_id=f"cam-{i}", wave=0, assigned_at=10.0 + i,
                                dispatched_at=20.0, previous=PREV if i else None, frames=i, agreement=0.5))
        s.commit()
    return eng


def test_plain_rows_hold_every_column_as_the_orm_reads_it(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    assert set(member_rows.FIELDS) == {c.name for c in RolloutMember.__table__.columns}  # type: ignore[attr-defined]
    with Session(eng) as s:  # type: ignore[arg-type]
        plain = member_rows.read(s, "r-1")
        orm = {m.device_id: m for m in s.exec(select(RolloutMember)).all()}
    assert sorted(plain) == ["cam-0", "cam-1", "cam-2"]
    for device_id, m in orm.items():
        for name in member_rows.FIELDS:
            assert getattr(plain[device_id], name) == getattr(m, name), (device_id, name)
    assert plain["cam-1"].previous == PREV and plain["cam-0"].previous is None


def test_phase_writes_change_only_the_phase_columns_of_those_rows(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    with Session(eng) as s:  # type: ignore[arg-type]
        plain = member_rows.read(s, "r-1")
        m = plain["cam-2"]
        m.seen_phase, m.seen_target, m.phase_since = "healthy", "b" * 64, 99.0
        m.frames = 1234  # not a phase column: not written
        assert member_rows.write_phases(s, [m]) == 1
        assert member_rows.write_phases(s, []) == 0
        s.commit()
    with Session(eng) as s:  # type: ignore[arg-type]
        again = member_rows.read(s, "r-1")
        orm = member_rows.orm_rows(s, "r-1", ["cam-2", "cam-9"])
    assert (again["cam-2"].seen_phase, again["cam-2"].seen_target, again["cam-2"].phase_since) == ("healthy", "b" * 64, 99.0)
    assert again["cam-2"].frames == 2 and again["cam-1"].seen_phase is None
    assert list(orm) == ["cam-2"] and orm["cam-2"].phase_since == 99.0


def test_an_action_writes_only_the_columns_it_changed_and_never_the_keys(tmp_path: Path) -> None:
    import pytest

    eng = _engine(tmp_path)
    with Session(eng) as s:  # type: ignore[arg-type]
        plain = member_rows.read(s, "r-1")
    with Session(eng) as s:  # type: ignore[arg-type]  # meanwhile ingest folds a telemetry period in
        m = s.get(RolloutMember, ("r-1", "cam-1"))
        assert m is not None
        m.frames = 500
        s.add(m)
        s.commit()
    a, b = plain["cam-1"], plain["cam-2"]
    a.reverted_at, a.frames = 30.0, 1  # the pass's copy still says frames=1 …
    b.previous, b.timed_out_at = {**PREV, "version": "0.9"}, 31.0
    with Session(eng) as s:  # type: ignore[arg-type]
        assert member_rows.write(s, [(a, ["reverted_at"]), (b, ["previous", "timed_out_at"]), (plain["cam-0"], [])]) == 2
        with pytest.raises(ValueError, match="device_id"):
            member_rows.write(s, [(a, ["device_id"])])
        s.commit()
    with Session(eng) as s:  # type: ignore[arg-type]
        again = member_rows.read(s, "r-1")
    assert again["cam-1"].reverted_at == 30.0 and again["cam-1"].frames == 500  # … which is not written back
    assert again["cam-2"].previous == {**PREV, "version": "0.9"} and again["cam-2"].timed_out_at == 31.0
    assert again["cam-0"] == plain["cam-0"]
