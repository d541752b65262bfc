"""Which model version each device's slots are assigned, for many devices at once.

Signing and publishing a wave read this for every device of it. Loading it as
``(SlotAssignment, ModelVersion)`` ORM pairs built one ModelVersion row per device (its
manifest JSON decoded each time) although a wave names one or two versions (issue 14):
here the assignments are read as plain columns and each version is loaded once.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from ..tables import ModelVersion, SlotAssignment

CHUNK = 500  # ids per IN (…) list


def models_assigned(session: Session, device_ids: Sequence[str]) -> dict[str, dict[str, ModelVersion]]:
    """device id → slot → the ModelVersion assigned there (devices with none: an empty dict)."""
    out: dict[str, dict[str, ModelVersion]] = {d: {} for d in device_ids}
    ids = list(out)
    pairs: list[tuple[str, str, int]] = []
    for i in range(0, len(ids), CHUNK):
        pairs += session.exec(select(SlotAssignment.device_id, SlotAssignment.slot, SlotAssignment.model_version_id)
                              .where(col(SlotAssignment.device_id).in_(ids[i:i + CHUNK]))).all()
    versions: dict[int, ModelVersion] = {}
    wanted = sorted({mv_id for _d, _s, mv_id in pairs})
    for i in range(0, len(wanted), CHUNK):
        for mv in session.exec(select(ModelVersion).where(col(ModelVersion.id).in_(wanted[i:i + CHUNK]))).all():
            versions[mv.id or 0] = mv
    for device_id, slot, mv_id in pairs:
        mv = versions.get(mv_id)
        if mv is not None:  # an assignment to a version deleted meanwhile: none (as the old join)
            out[device_id][slot] = mv
    return out


__all__ = ["models_assigned"]
