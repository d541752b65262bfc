"""Finished rollouts leave the hot tables (issue 14): their member rows move to an archive.

A rollout that was aborted or superseded is never planned again and collects no telemetry,
yet its ``rollout_member`` rows would stay beside the live ones for ever: every telemetry
period reads a device's member rows of *all* its rollouts, and the table grows with history.
``archive_finished`` (the reconciler's lease holder, after each pass) moves them, a bounded
batch per pass, to ``rollout_member_archive`` and stamps the rollout's ``archived_at`` once
none is left, so a later pass finds nothing to do in one indexed read. ``archived_members``
reads them back (``store.members_of`` falls back to it), so ``fleet rollout status``, the API
and history show an archived rollout as before.

Completed and rolled-back rollouts stay hot: a completed one still adopts late joiners and
can still be rolled back; a rolled-back one keeps its devices off the model.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select, tuple_, update
from sqlmodel import Session, col

from .tables import Rollout, RolloutMember, rollout_member_archive

#: Rollout states whose member rows are archived.
ARCHIVED_STATES = ("aborted", "superseded")
_HOT = RolloutMember.__table__  # type: ignore[attr-defined]
_COLUMNS = [c.name for c in _HOT.columns]


def archive_finished(session: Session, now: float, *, batch: int = 2000) -> int:
    """Move at most ``batch`` member rows of finished rollouts to the archive; returns how many.
    Commits (one transaction: copied and deleted together)."""
    rollouts = session.execute(select(col(Rollout.id)).where(col(Rollout.state).in_(ARCHIVED_STATES))
                               .where(col(Rollout.archived_at).is_(None)).order_by(col(Rollout.id))).scalars().all()
    moved = 0
    for rollout_id in rollouts:
        left = batch - moved
        if left <= 0:
            break
        keys = session.execute(select(_HOT.c.rollout_id, _HOT.c.device_id).where(_HOT.c.rollout_id == rollout_id)
                               .order_by(_HOT.c.device_id).limit(left)).all()
        if not keys:
            session.execute(update(Rollout).where(col(Rollout.id) == rollout_id).values(archived_at=now))
            continue
        pairs = [tuple(k) for k in keys]
        which = tuple_(_HOT.c.rollout_id, _HOT.c.device_id).in_(pairs)
        rows = [dict(r._mapping, archived_at=now) for r in session.execute(select(_HOT).where(which)).all()]
        session.execute(delete(rollout_member_archive).where(
            tuple_(rollout_member_archive.c.rollout_id, rollout_member_archive.c.device_id).in_(pairs)))
        session.execute(insert(rollout_member_archive), rows)  # a row archived before and back: replaced
        session.execute(delete(_HOT).where(which))
        moved += len(rows)
        if len(rows) < left:  # all of this rollout's rows moved
            session.execute(update(Rollout).where(col(Rollout.id) == rollout_id).values(archived_at=now))
    session.commit()
    return moved


def archived_members(session: Session, rollout_id: str) -> dict[str, RolloutMember]:
    """A finished rollout's archived member rows, as (detached, read-only) ``RolloutMember``."""
    rows = session.execute(select(rollout_member_archive).where(rollout_member_archive.c.rollout_id == rollout_id)).all()
    return {r.device_id: RolloutMember(**{k: r._mapping[k] for k in _COLUMNS}) for r in rows}
