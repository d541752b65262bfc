"""Apply what devices send (status, reported, telemetry) to the database.

Pure over a session and an already-validated message; the MQTT bridge does the parsing,
the topic/device-id check and the counting. Unknown devices are created on first contact
(their broker credentials already vouched for them) and show up in ``fleet device ls``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlmodel import Session

from ..protocols import Reported, Status, Telemetry
from .models import Device

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        device = Device(id=device_id)
        log.info("device %s seen for the first time", device_id)
    return device


def _hardware_changed(device: Device, hardware_id: str) -> None:
    """The director signs the hardware id: a new one means new signed metadata (new generation)."""
    log.info("device %s reports hardware %s (was %s)", device.id, hardware_id, device.hardware_id)
    device.hardware_id = hardware_id
    device.desired_generation += 1


def apply_status(session: Session, msg: Status, now: datetime | None = None) -> Device:
    device = _device(session, msg.device_id)
    if device.online != msg.online:
        log.info("device %s is %s", msg.device_id, "online" if msg.online else "offline")
    device.online = msg.online
    device.last_seen = now or _now()
    if msg.agent_version:
        device.agent_version = msg.agent_version
    if msg.hardware_id and msg.hardware_id != device.hardware_id:
        _hardware_changed(device, msg.hardware_id)
    session.add(device)
    session.commit()
    return device


def apply_reported(session: Session, msg: Reported, now: datetime | None = None) -> Device:
    device = _device(session, msg.device_id)
    previous = (device.reported or {}).get("slots", {})
    for slot, rep in msg.slots.items():
        before = (previous.get(slot) or {}).get("phase")
        if before != rep.phase.value:
            log.info(
                "device %s slot %s: %s → %s%s", msg.device_id, slot, before or "-", rep.phase.value,
                f" ({rep.error_code}: {rep.error})" if rep.error_code else "",
            )
    device.reported = msg.model_dump(mode="json", by_alias=True)
    device.reported_generation = msg.generation
    device.reported_at = now or _now()
    device.last_seen = device.reported_at
    device.online = True
    if msg.hardware_id and msg.hardware_id != device.hardware_id:
        _hardware_changed(device, msg.hardware_id)
    device.agent_version = msg.agent_version or device.agent_version
    session.add(device)
    session.commit()
    return device


def apply_telemetry(session: Session, msg: Telemetry, now: datetime | None = None) -> Device:
    device = _device(session, msg.device_id)
    device.telemetry = msg.model_dump(mode="json", by_alias=True)
    device.telemetry_at = now or _now()
    device.last_seen = device.telemetry_at
    device.online = True
    session.add(device)
    session.commit()
    return device
