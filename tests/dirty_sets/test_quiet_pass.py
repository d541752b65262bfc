"""A reconcile pass does work for what changed, not for the fleet (issue 14).

The pass's SQL is counted with an engine event listener (no timings): a rollout whose last
pass planned nothing, with no device marked dirty and no deadline due, costs its own row and
nothing of its devices. A report makes exactly that device dirty and brings its rollout back;
a deadline alone does too. A pass that loses a race counts nothing it rolled back.
"""

from __future__ import annotations

import time

from sqlalchemy import event, text
from sqlmodel import Session, select

from edgefleet.cloud.devices import ingest
from edgefleet.cloud.rollout.service import RolloutCreate, start_rollout
from edgefleet.cloud.rollout.tables import RolloutMember
from edgefleet.protocols import Status

from .conftest import Db, N


def _start(db: Db, timeout: str = "10m") -> str:
    with db.session() as s:
        return start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1s",
                                              device_timeout=timeout), time.time()).id


def _settle(db: Db, t0: float) -> float:
    """Passes until one skips the rollout; returns the time of that pass."""
    first = db.reconciler.run_once(t0)
    assert first.set_desired == N  # one wave: every device sent the model
    for k in range(1, 6):
        if db.reconciler.run_once(t0 + k).skipped == 1:
            return t0 + k
    raise AssertionError("the rollout never became quiet")


def test_a_pass_with_nothing_dirty_touches_no_device_rows(db: Db) -> None:
    _start(db)
    t = _settle(db, time.time())
    assert db.marks() == set()
    with db.counting() as sql:
        r = db.reconciler.run_once(t + 1)
    assert (r.leader, r.skipped, r.rollouts, r.actions) == (True, 1, 0, 0)
    assert any("rollout" in s for s in sql.seen)  # it looked at the rollout …
    assert sql.touching_devices() == []  # … and at none of its devices


def test_a_report_makes_exactly_that_device_dirty_and_its_rollout_looks_again(db: Db) -> None:
    _start(db)
    t = _settle(db, time.time())
    with db.session() as s:
        ingest.apply_status(s, Status(device_id="cam-03", online=False, hardware_id="cpu-x86_64"))
    assert db.marks() == {"cam-03"}
    with db.counting() as sql:
        r = db.reconciler.run_once(t + 1)
    assert (r.skipped, r.rollouts, r.dirty) == (0, 1, 1)
    assert sql.touching_devices()  # a full pass over the rollout
    assert db.marks() == set()  # seen by every rollout: cleared
    assert db.reconciler.run_once(t + 2).skipped == 1  # quiet again


def test_what_the_planner_does_not_read_and_what_rolls_back_marks_nothing(db: Db) -> None:
    from edgefleet.cloud.tables import Device

    _start(db)
    _settle(db, time.time())
    with db.session() as s:
        d = s.get(Device, "cam-01")
        assert d is not None
        d.agent_version = "9.9.9"  # not read by the planner
        s.add(d)
        s.commit()
    assert db.marks() == set()
    with db.session() as s:
        d = s.get(Device, "cam-02")
        assert d is not None
        d.online = False
        s.add(d)
        s.flush()
        s.rollback()  # the change and its mark go together
    assert db.marks() == set()


def test_a_mark_made_again_while_a_pass_runs_survives_the_pass(db: Db) -> None:
    _start(db)
    t = _settle(db, time.time())
    with db.session() as s:
        ingest.apply_status(s, Status(device_id="cam-04", online=False, hardware_id="cpu-x86_64"))
    marked_again = []

    def remark(conn, _cursor, statement, _params, _ctx, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT RECONCILE_DIRTY") and not marked_again:
            marked_again.append(True)  # after the pass read the marks: the device changes again
            with db.engine.begin() as other:
                other.execute(text("UPDATE reconcile_dirty SET version = version + 1 WHERE device_id = 'cam-04'"))

    event.listen(db.engine, "after_cursor_execute", remark)
    try:
        db.reconciler.run_once(t + 1)
    finally:
        event.remove(db.engine, "after_cursor_execute", remark)
    assert marked_again and db.marks() == {"cam-04"}  # kept for the next pass
    assert db.reconciler.run_once(t + 2).skipped == 0


def test_a_deadline_alone_brings_the_rollout_back(db: Db) -> None:
    _start(db, timeout="60s")
    t0 = time.time()
    _settle(db, t0)
    assert db.reconciler.run_once(t0 + 50).skipped == 1  # nothing due yet
    late = db.reconciler.run_once(t0 + 70)  # nobody made progress: every device timed out
    assert late.skipped == 0 and late.actions > 0
    with db.session() as s:
        members = s.exec(select(RolloutMember)).all()
    assert len(members) == N and all(m.timed_out_at == t0 + 70 for m in members)


def test_a_pass_that_loses_a_race_counts_nothing_it_rolled_back(db: Db) -> None:
    rid = _start(db)
    raced = []

    def race(conn, _cursor, statement, _params, _ctx, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE ROLLOUT SET") and not raced:
            raced.append(True)  # another writer (an operator command) gets in first
            with db.engine.begin() as other:
                other.execute(text("UPDATE rollout SET revision = revision + 1 WHERE id = :id"), {"id": rid})

    event.listen(db.engine, "before_cursor_execute", race)
    try:
        lost = db.reconciler.run_once(time.time())
    finally:
        event.remove(db.engine, "before_cursor_execute", race)
    assert raced and (lost.conflicts, lost.set_desired, lost.actions) == (1, 0, 0)
    again = db.reconciler.run_once(time.time())
    assert again.set_desired == N
    assert db.reconciler.totals.set_desired == N  # each device counted once, as sent once


def test_another_process_writing_the_database_directly_marks_too(db: Db) -> None:
    from edgefleet.cloud.db import make_engine
    from edgefleet.cloud.tables import Device

    db.clear_marks()  # those of the enrolment
    other = make_engine(db.engine.url.render_as_string(hide_password=False))  # as a CLI command's own engine
    try:
        with Session(other) as s:
            d = s.get(Device, "cam-07")
            assert d is not None
            d.tags = {**d.tags, "site": "elsewhere"}  # the selection may change
            s.add(d)
            s.commit()
    finally:
        other.dispose()
    assert db.marks() == {"cam-07"}


def test_a_json_column_changed_in_place_or_replaced_marks_its_device(db: Db) -> None:
    from sqlalchemy.orm.attributes import flag_modified

    from edgefleet.cloud.tables import Device

    _start(db)
    _settle(db, time.time())
    with db.session() as s:
        d = s.get(Device, "cam-03")
        assert d is not None
        d.reported = d.reported if d.reported is not None else {}
        s.commit()
        assert db.marks() <= {"cam-03"}
        db.clear_marks()
        d.reported["note"] = "changed in place"  # a mutated dict: the writer flags it
        flag_modified(d, "reported")
        e = s.get(Device, "cam-04")
        assert e is not None
        e.tags = {**(e.tags or {}), "site": "elsewhere"}  # a new value for a planner column
        s.commit()
    assert db.marks() == {"cam-03", "cam-04"}
