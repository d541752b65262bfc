"""Keep each device's director metadata in step with its slot assignments.

``sign_device`` is called before desired state is published. It signs again only when
the device's desired generation moved since the last signature (level-triggered: a lost
signature or a restart re-signs on the next pass). A model that goes back to a device
with a release counter at or below what that slot already had signed (a rollback) is
re-released under a new counter first, so the device's "never lower" check holds.
"""

from __future__ import annotations

import logging

from sqlmodel import Session

from ..protocols import SLOTS
from . import fleet
from .models import Device
from .trust import Trust

log = logging.getLogger(__name__)


def sign_device(session: Session, trust: Trust, device: Device) -> int:
    """Sign (if needed) and return the device's current director version."""
    current = trust.director.version(device.id)
    if device.director_generation == device.desired_generation and current > 0:
        return current
    assignments = fleet.assignments_of(session, device.id)
    floor = dict(device.release_floor or {})
    slots: dict[str, str | None] = {}
    for slot in SLOTS:
        if slot not in assignments:
            slots[slot] = None
            continue
        _a, mv = assignments[slot]
        already = trust.director.assignment(device.id).get(slot)
        if mv.target_name is None or (mv.release_counter < floor.get(slot, 0) and already != mv.target_name):
            target = trust.release(mv.digest, mv.manifest)
            log.info("re-released %s:%s as %s (counter %d > floor %d of device %s)", mv.name, mv.version,
                     target.name, target.release_counter, floor.get(slot, 0), device.id)
            mv.target_name, mv.release_counter = target.name, target.release_counter
            session.add(mv)
        floor[slot] = max(floor.get(slot, 0), mv.release_counter)
        slots[slot] = mv.target_name
    version = trust.assign(device.id, device.hardware_id, slots)
    device.director_generation = device.desired_generation
    device.release_floor = floor
    session.add(device)
    session.commit()
    return version
