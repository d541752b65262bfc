"""Brute-force answers the rollout views must equal: every device row loaded, every member
classified in Python (the way the views worked before they read the database by keyset)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlmodel import Session, select

from edgefleet.cloud.devices import fleet
from edgefleet.cloud.rollout.members import member_row, page_members
from edgefleet.cloud.rollout.store import observations, spec_of, state_of
from edgefleet.cloud.rollout.tables import Rollout, RolloutMember


def brute_rows(s: Session, rollout_id: str, now: float) -> list[dict[str, Any]]:
    """Every member row, from the whole-fleet observations (``store.observations``)."""
    row = s.get(Rollout, rollout_id)
    assert row is not None
    spec, starts = spec_of(row), state_of(row).wave_starts()
    rows = [member_row(o, spec, starts, now) for o in observations(s, row) if o.wave is not None]
    return sorted(rows, key=lambda r: r["device"])


def brute_wave_counts(rows: list[dict[str, Any]], waves: int) -> list[dict[str, int]]:
    return [dict(Counter(r["status"] for r in rows if r["wave"] == i)) for i in range(waves)]


def brute_members(s: Session, rollout_id: str) -> int:
    return len(s.exec(select(RolloutMember).where(RolloutMember.rollout_id == rollout_id)).all())


def brute_placement(s: Session) -> dict[str, dict[str, int]]:
    """label → slot → devices, from each device's public view (what the models page did)."""
    out: dict[str, dict[str, int]] = {}
    for d in fleet.list_devices(s):
        for slot, sp in fleet.device_public(s, d).slots.items():
            label = sp.installed or sp.desired
            if label:
                out.setdefault(label, {}).setdefault(slot, 0)
                out[label][slot] += 1
    return out


def brute_running(s: Session) -> dict[str, dict[str, list[str]]]:
    """digest → slot → ids of enrolled devices whose report says they run it (what the model API walked)."""
    from edgefleet.protocols import SLOTS

    out: dict[str, dict[str, list[str]]] = {}
    for d in fleet.list_devices(s, include_revoked=False):
        for slot, rep in ((d.reported or {}).get("slots") or {}).items():
            inst = rep.get("installed") if isinstance(rep, dict) else None
            if slot in SLOTS and isinstance(inst, dict) and isinstance(inst.get("digest"), str):
                out.setdefault(inst["digest"], {}).setdefault(slot, []).append(d.id)
    return out


def walk(s: Session, rollout_id: str, now: float, *, limit: int, status: str | None = None,
         wave: int | None = None, backwards: bool = False) -> list[str]:
    """Every device id the pages give, first page to last (or last to first, following prev_cursor)."""
    row = s.get(Rollout, rollout_id)
    assert row is not None
    spec, state = spec_of(row), state_of(row)
    seen: list[str] = []
    page = page_members(s, row, spec, state, now, limit=limit, cursor=None, status=status, wave=wave)
    pages = [page]
    while page.next_cursor:
        page = page_members(s, row, spec, state, now, limit=limit, cursor=page.next_cursor, status=status, wave=wave)
        pages.append(page)
    if not backwards:
        for p in pages:
            assert len(p.items) <= limit
            seen += [m["device"] for m in p.items]
        return seen
    back = []
    while True:
        back = [m["device"] for m in page.items] + back
        if not page.prev_cursor:
            return back
        page = page_members(s, row, spec, state, now, limit=limit, cursor=page.prev_cursor, status=status, wave=wave)
