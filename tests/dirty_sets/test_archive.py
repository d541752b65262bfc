"""Finished rollouts leave the hot member table, and status still shows them (issue 14)."""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlmodel import col

from edgefleet.cloud.rollout.archive import archive_finished
from edgefleet.cloud.rollout.service import RolloutCreate, run_command, start_rollout, status
from edgefleet.cloud.rollout.tables import Rollout, RolloutMember, rollout_member_archive

from .conftest import Db, N


def _count(db: Db, table: object, rollout_id: str) -> int:
    with db.session() as s:
        return int(s.execute(select(func.count()).select_from(table)  # type: ignore[arg-type]
                             .where(table.c.rollout_id == rollout_id)).scalar_one())  # type: ignore[attr-defined]


def test_an_aborted_rollouts_members_are_archived_and_its_status_still_lists_them(db: Db) -> None:
    with db.session() as s:
        rid = start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1s"),
                            time.time()).id
    t = time.time()
    db.reconciler.run_once(t)  # members assigned and sent the model
    with db.session() as s:
        before = status(s, rid, t + 1)
        run_command(s, rid, "abort", t + 1, reason="test", actor="tester")
    done = db.reconciler.run_once(t + 2)
    assert done.archived == N
    assert _count(db, RolloutMember.__table__, rid) == 0  # out of the hot table
    assert _count(db, rollout_member_archive, rid) == N
    with db.session() as s:
        after = status(s, rid, t + 3)
        assert s.get(Rollout, rid).archived_at == t + 2  # type: ignore[union-attr]
    assert after["state"] == "aborted"
    assert after["devices"] == before["devices"]
    assert [(m["device"], m["wave"]) for m in after["members"]] == [(m["device"], m["wave"]) for m in before["members"]]
    assert len(after["members"]) == N
    assert db.reconciler.run_once(t + 4).archived == 0  # nothing left: one indexed read


def test_archiving_is_bounded_per_pass_and_live_rollouts_stay_hot(db: Db) -> None:
    with db.session() as s:
        old = start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1s"),
                            time.time()).id
    t = time.time()
    db.reconciler.archive_batch = 10**6
    db.reconciler.run_once(t)
    with db.session() as s:
        run_command(s, old, "abort", t + 1, actor="tester")
        live = start_rollout(s, RolloutCreate(model="digits:1.0", slot="shadow", waves="100", soak="1h"), t + 1).id
    db.reconciler.run_once(t + 2)  # the live one gets its members; the aborted one is archived
    with db.session() as s:
        assert archive_finished(s, t + 3, batch=5) == 0  # already done
        live_members = s.exec(select(col(RolloutMember.device_id)).where(RolloutMember.rollout_id == live)).all()
    assert len(live_members) == N and _count(db, rollout_member_archive, live) == 0
