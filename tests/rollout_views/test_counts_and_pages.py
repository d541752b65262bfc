"""The rollout views read the database, not the fleet (issue 14), and say what they said
before: counts, member pages and model placement equal a brute-force fold over every
device row, on SQLite and PostgreSQL; pages stay exact while members change state."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session

from edgefleet.cloud import db
from edgefleet.cloud.devices.cursor import BadCursor
from edgefleet.cloud.devices.placement import placement_counts, running_counts, running_on
from edgefleet.cloud.rollout import service
from edgefleet.cloud.rollout.archive import archive_finished
from edgefleet.cloud.rollout.members import page_members
from edgefleet.cloud.rollout.store import spec_of, state_of
from edgefleet.cloud.rollout.tables import Rollout, RolloutMember
from edgefleet.cloud.tables import Device

from .checks import (
    brute_members,
    brute_placement,
    brute_rows,
    brute_running,
    brute_wave_counts,
    walk,
)
from .seed import NEW, ROLLOUT, seed_rollout

MEMBERS = 300  # a fleet of 600 (every second device a member), every status crossed with online/offline


def check_everything(engine: object, now: float) -> None:
    with Session(engine) as s:  # type: ignore[arg-type]
        rows = brute_rows(s, ROLLOUT, now)
        assert len(rows) == MEMBERS == brute_members(s, ROLLOUT)
        st = service.status(s, ROLLOUT, now)
        assert st["devices"] == MEMBERS and st["members"] == sorted(rows, key=lambda r: (r["wave"], r["device"]))
        assert [w["counts"] for w in st["waves"]] == brute_wave_counts(rows, 3)
        row = s.get(Rollout, ROLLOUT)
        assert row is not None and service.summary(s, row).devices == MEMBERS
        assert placement_counts(s) == brute_placement(s)
        running = brute_running(s)
        assert len(running) >= 2 and running_counts(s) == {
            dg: {slot: len(ids) for slot, ids in per.items()} for dg, per in running.items()}
        for dg, per in running.items():
            assert running_on(s, dg) == per and running_on(s, dg, limit=3) == {k: v[:3] for k, v in per.items()}
        assert running_on(s, "f" * 64) == {}
        statuses = sorted({r["status"] for r in rows})
        assert {"waiting", "queued", "pending", "skipped", "installing", "healthy", "active", "failed", "reverted",
                "timed_out", "silent"} <= set(statuses)  # the seed covers what the filters must tell apart
        assert walk(s, ROLLOUT, now, limit=17) == [r["device"] for r in rows]
        assert walk(s, ROLLOUT, now, limit=17, backwards=True) == [r["device"] for r in rows]
        spec, state = spec_of(row), state_of(row)
        for status in [*statuses, "rolled_back", "bogus"]:
            for wave in (None, 0, 1, 2):
                want = [r["device"] for r in rows if r["status"] == status and (wave is None or r["wave"] == wave)]
                assert walk(s, ROLLOUT, now, limit=7, status=status, wave=wave) == want, (status, wave)
                first = page_members(s, row, spec, state, now, limit=7, cursor=None, status=status, wave=wave)
                assert first.total == len(want) and first.prev_cursor is None
        assert page_members(s, row, spec, state, now, limit=5, cursor=None, wave=1).total == sum(
            1 for r in rows if r["wave"] == 1)
        assert walk(s, ROLLOUT, now, limit=1000, status="healthy") == [r["device"] for r in rows if r["status"] == "healthy"]


def test_counts_pages_and_placement_equal_a_brute_force_fold_on_sqlite(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'views.db'}")
    db.migrate(engine)
    now = time.time()
    seed_rollout(engine, MEMBERS, now=now)
    check_everything(engine, now)


def test_counts_pages_and_placement_equal_a_brute_force_fold_on_postgresql(postgres: str) -> None:
    engine = db.make_engine(postgres)
    try:
        db.migrate(engine)
        now = time.time()
        seed_rollout(engine, MEMBERS, now=now)
        check_everything(engine, now)
    finally:
        engine.dispose()


def test_each_member_is_paged_once_in_order_while_members_change_state(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'change.db'}")
    db.migrate(engine)
    now = time.time()
    ids = seed_rollout(engine, MEMBERS, now=now)
    with Session(engine) as s:
        row = s.get(Rollout, ROLLOUT)
        assert row is not None
        spec, state = spec_of(row), state_of(row)
        seen: list[str] = []
        page = page_members(s, row, spec, state, now, limit=23, cursor=None)
        statuses_seen = set()
        n = 0
        while True:
            seen += [m["device"] for m in page.items]
            statuses_seen |= {m["status"] for m in page.items}
            if not page.next_cursor:
                break
            n += 1  # between pages: devices behind and ahead of the cursor install, fail, go offline
            for d in (ids[(len(seen) + 5 * n) % MEMBERS], ids[(len(seen) - 3) % MEMBERS], ids[(len(seen) + 1) % MEMBERS]):
                s.execute(update(RolloutMember).where(RolloutMember.rollout_id == ROLLOUT, RolloutMember.device_id == d)
                          .values(dispatched_at=now - 10, reverted_at=None, timed_out_at=None))
                s.execute(update(Device).where(Device.id == d).values(  # type: ignore[arg-type]
                    online=n % 2 == 0, reported={"slots": {"control": {"installed": NEW, "phase": "healthy"}}}))
            s.commit()
            page = page_members(s, row, spec, state, now, limit=23, cursor=page.next_cursor)
        assert seen == sorted(ids) and len(set(seen)) == MEMBERS
        assert "healthy" in statuses_seen


def test_a_forged_or_foreign_cursor_is_refused(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cursor.db'}")
    db.migrate(engine)
    now = time.time()
    seed_rollout(engine, 40, now=now)
    with Session(engine) as s:
        row = s.get(Rollout, ROLLOUT)
        assert row is not None
        spec, state = spec_of(row), state_of(row)
        good = page_members(s, row, spec, state, now, limit=5, cursor=None).next_cursor
        assert good
        payload, _, check = good.partition(".")
        for bad in ("garbage", payload + ".0000000000000000", payload[:-2] + "AA." + check, good + "x"):
            with pytest.raises(BadCursor):
                page_members(s, row, spec, state, now, limit=5, cursor=bad)
        with pytest.raises(BadCursor):  # another filter's position
            page_members(s, row, spec, state, now, limit=5, cursor=good, status="healthy")


def test_an_archived_rollout_counts_and_pages_from_the_archive(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'archive.db'}")
    db.migrate(engine)
    now = time.time()
    ids = seed_rollout(engine, 60, now=now)
    with Session(engine) as s:
        before = brute_rows(s, ROLLOUT, now)
        s.execute(update(Rollout).where(Rollout.id == ROLLOUT).values(state="aborted"))  # type: ignore[arg-type]
        s.commit()
        while archive_finished(s, now, batch=25):
            pass
        assert brute_members(s, ROLLOUT) == 0  # the hot table holds none of them now
        row = s.get(Rollout, ROLLOUT)
        assert row is not None and service.summary(s, row).devices == 60
        assert walk(s, ROLLOUT, now, limit=11) == sorted(ids) == [r["device"] for r in before]
