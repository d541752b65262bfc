"""Keep each device's director metadata in step with its slot assignments and settings.

``sign_device`` is called before desired state is published. It signs again only when
what the director signed for the device differs from what it should now say: the desired
generation moved since the last signature, or the signed binding carries other settings
(capture policy, telemetry period) or another credentials epoch than the device should
get (level-triggered: a lost signature, a restart or metadata signed by an older
controller re-signs on the next pass). A model that goes back to a device with a release
counter at or below what that slot already had signed (a rollback) is re-released under
a new counter first, so the device's "never lower" check holds.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session

from ...protocols import SLOTS, DeviceSettings
from ..devices import fleet, history
from ..tables import Device
from .repository import Trust

log = logging.getLogger(__name__)


def signed_binding(device: Device, settings: DeviceSettings | None) -> dict[str, Any]:
    """The fields of the director's device binding that the controller decides."""
    out: dict[str, Any] = {"generation": device.desired_generation, "credentials_epoch": device.credentials_epoch}
    if settings is not None:
        out["settings"] = settings.model_dump(mode="json")
    return out


def _binding_current(trust: Trust, device: Device, wanted: dict[str, Any]) -> bool:
    binding = trust.director.binding(device.id)
    return all(binding.get(k) == v for k, v in wanted.items())


def sign_device(session: Session, trust: Trust, device: Device, settings: DeviceSettings | None = None) -> int:
    """Sign (if needed) and return the device's current director version.

    Args:
        settings: the settings the device must apply (``Controller.device_settings``); they
            travel inside the signed binding. None leaves settings out (the device keeps its own).
    """
    current = trust.director.version(device.id)
    wanted = signed_binding(device, settings)
    if device.director_generation == device.desired_generation and current > 0 and _binding_current(trust, device, wanted):
        if device.director_version != current:
            device.director_version = current
            session.add(device)
            session.commit()
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
    version = trust.assign(device.id, device.hardware_id, slots, **wanted)
    device.director_generation = device.desired_generation
    device.director_version = version
    device.release_floor = floor
    session.add(device)
    history.record(session, device.id, "signed", f"director metadata v{version} signed: generation "
                   f"{device.desired_generation}, " + ", ".join(f"{k}={v or '-'}" for k, v in slots.items()),
                   data={"director_version": version, "generation": device.desired_generation, "slots": slots,
                         "settings": settings.model_dump(mode="json") if settings is not None else None})
    session.commit()
    return version
