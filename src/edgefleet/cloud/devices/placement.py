"""Where each model version runs, as counts (issue 14): no page walks the fleet to say so.

``placement_counts`` answers "on how many devices does NAME:VERSION sit in each slot" the way
the device view shows a slot (``fleet.public_of``): the version the device's verified report
says is installed there, else the one the controller assigned. One ``GROUP BY`` per slot
over the device table joined with its assignment for that slot; the groups (a few versions
per slot) are folded here. Revoked devices count, as the device list shows them.
``running_counts`` / ``running_on`` answer the model API's "which devices run this digest"
(enrolled devices only, as ``lifecycle`` always did) the same way.
"""

from __future__ import annotations

from sqlalchemy import and_, func, select
from sqlmodel import Session, col

from ...protocols import SLOTS
from ..tables import Device, ModelVersion, SlotAssignment


def _installed(slot: str, field: str):  # type: ignore[no-untyped-def]
    return col(Device.reported)[("slots", slot, "installed", field)].as_string()


def placement_counts(session: Session) -> dict[str, dict[str, int]]:
    """``NAME:VERSION`` → slot → devices where it is installed (or, with nothing installed, assigned)."""
    out: dict[str, dict[str, int]] = {}
    for slot in SLOTS:
        name, version = _installed(slot, "name"), _installed(slot, "version")
        q = (select(name, version, col(ModelVersion.name), col(ModelVersion.version), func.count())
             .select_from(Device)
             .outerjoin(SlotAssignment, and_(col(SlotAssignment.device_id) == col(Device.id),
                                             col(SlotAssignment.slot) == slot))
             .outerjoin(ModelVersion, col(ModelVersion.id) == col(SlotAssignment.model_version_id))
             .group_by(name, version, col(ModelVersion.name), col(ModelVersion.version)))
        for inst_name, inst_version, mv_name, mv_version, n in session.execute(q).all():
            if inst_name is not None:
                label = f"{inst_name}:{inst_version}"
            elif mv_name is not None:
                label = f"{mv_name}:{mv_version}"
            else:
                continue
            per = out.setdefault(label, {})
            per[slot] = per.get(slot, 0) + int(n)
    return out


def running_counts(session: Session) -> dict[str, dict[str, int]]:
    """digest → slot → enrolled (not revoked) devices whose report says they run it: one
    ``GROUP BY`` per slot, without loading a device."""
    out: dict[str, dict[str, int]] = {}
    for slot in SLOTS:
        digest = _installed(slot, "digest")
        q = (select(digest, func.count()).select_from(Device).where(col(Device.revoked_at).is_(None))
             .where(digest.is_not(None)).group_by(digest))
        for d, n in session.execute(q).all():
            out.setdefault(str(d), {})[slot] = int(n)
    return out


def running_on(session: Session, digest: str, *, limit: int | None = None) -> dict[str, list[str]]:
    """slot → ids (in id order, the first ``limit``) of the enrolled devices whose report says
    they run ``digest`` (``lifecycle.devices_running``); only ids are read."""
    out: dict[str, list[str]] = {}
    for slot in SLOTS:
        ids = session.execute(select(col(Device.id)).where(col(Device.revoked_at).is_(None))
                              .where(_installed(slot, "digest") == digest).order_by(col(Device.id))
                              .limit(limit)).scalars().all()
        if ids:
            out[slot] = list(ids)
    return out


def device_count(session: Session) -> int:
    """Every device row (revoked ones too, as ``fleet.list_devices``)."""
    return int(session.execute(select(func.count()).select_from(Device)).scalar_one())


__all__ = ["device_count", "placement_counts", "running_counts", "running_on"]
