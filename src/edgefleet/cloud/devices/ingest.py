"""Apply what devices send (status, reported, telemetry) to the database.

Pure over a session and an already-validated message; the MQTT bridge does the parsing,
the topic/device-id check and the counting. Enrolment is explicit: a message from an id
that is not enrolled, or from a revoked device, raises ``Refused`` (the bridge counts it
under ``unknown_device`` / ``revoked`` and logs it) and never creates a device.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from sqlmodel import Session

from ...protocols import Reported, Status, Telemetry
from ..errors import Conflict, NotFound
from ..tables import Device
from . import history

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Refused(Exception):
    """A message that must not be applied; ``outcome`` is the counter it is counted under."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome


def admitted(device: Device | None, device_id: str) -> Device:
    """``device`` (the row of ``device_id``, or None) when it may send messages (pure).

    Raises:
        Refused: ``unknown_device`` (never enrolled) or ``revoked``.
    """
    if device is None:
        raise Refused("unknown_device", f"device {device_id} is not enrolled (fleet device add); message dropped")
    if device.revoked_at is not None:
        raise Refused("revoked", f"device {device_id} is revoked; message dropped")
    return device


def admit(session: Session, device_id: str) -> Device:
    """The enrolled, unrevoked device a message claims to come from.

    Raises:
        Refused: ``unknown_device`` (never enrolled) or ``revoked``.
    """
    return admitted(session.get(Device, device_id), device_id)


_device = admit


def _hardware_changed(device: Device, hardware_id: str) -> None:
    """The director signs the hardware id: a new one means new signed metadata (new generation)."""
    log.info("device %s reports hardware %s (was %s)", device.id, hardware_id, device.hardware_id)
    device.hardware_id = hardware_id
    device.hardware_id_reported = None
    device.desired_generation += 1


def _hardware_claimed(device: Device, hardware_id: str) -> None:
    """A *signed* ``reported`` names the device's hardware. The enrolled id stands: a device
    enrolled without one ("unknown") takes its first claim; any other change waits for an
    operator (``fleet device approve-hardware``) as ``hardware_id_reported``."""
    if hardware_id == device.hardware_id:
        device.hardware_id_reported = None
    elif device.hardware_id == "unknown":
        _hardware_changed(device, hardware_id)
    elif hardware_id != device.hardware_id_reported:
        log.warning("device %s reports hardware %s but is enrolled as %s: not applied until an operator runs "
                    "`fleet device approve-hardware %s`", device.id, hardware_id, device.hardware_id, device.id)
        device.hardware_id_reported = hardware_id


def approve_hardware(session: Session, device_id: str) -> Device:
    """Make the hardware id the device reported its enrolled one (operator); the caller
    publishes the device (the director re-signs for the new hardware).

    Raises:
        NotFound: no such device.  Conflict: nothing is pending.
    """
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    if not device.hardware_id_reported:
        raise Conflict(f"device {device_id} has no reported hardware id waiting for approval")
    _hardware_changed(device, device.hardware_id_reported)
    session.add(device)
    session.commit()
    return device


def status_onto(device: Device, msg: Status, now: datetime) -> None:
    """What a ``status`` changes on the device row (pure: no session; the per-message and
    the batched path, ``devices.batch``, share it)."""
    if device.online != msg.online:
        log.info("device %s is %s", msg.device_id, "online" if msg.online else "offline")
    device.online = msg.online
    device.last_seen = now
    if msg.agent_version:
        device.agent_version = msg.agent_version
    # status is unsigned: its hardware_id is never applied (a signed `reported` may claim one)


def reported_onto(device: Device, msg: Reported, now: datetime) -> dict[str, Any]:
    """What a verified ``reported`` changes on the device row (pure); returns the previous
    report's slots, against which ``history.reported_rows`` finds the phase transitions."""
    previous: dict[str, Any] = (device.reported or {}).get("slots", {})
    for slot, rep in msg.slots.items():
        before = (previous.get(slot) or {}).get("phase")
        if before != rep.phase.value:
            log.info(
                "device %s slot %s: %s → %s%s", msg.device_id, slot, before or "-", rep.phase.value,
                f" ({rep.error_code}: {rep.error})" if rep.error_code else "",
            )
    device.reported = msg.model_dump(mode="json", by_alias=True)
    device.reported_generation = msg.generation
    device.reported_at = now
    device.last_seen = now
    device.online = True
    if msg.hardware_id:
        _hardware_claimed(device, msg.hardware_id)
    device.agent_version = msg.agent_version or device.agent_version
    return previous


def telemetry_onto(device: Device, msg: Telemetry, now: datetime) -> None:
    """What a verified ``telemetry`` changes on the device row (pure): the latest period."""
    device.telemetry = msg.model_dump(mode="json", by_alias=True)
    device.telemetry_at = now
    device.last_seen = now
    device.online = True


def apply_status(session: Session, msg: Status, now: datetime | None = None) -> Device:
    device = _device(session, msg.device_id)
    status_onto(device, msg, now or _now())
    session.add(device)
    session.commit()
    return device


def apply_reported(session: Session, msg: Reported, now: datetime | None = None) -> Device:
    device = _device(session, msg.device_id)
    at = now or _now()
    previous = reported_onto(device, msg, at)
    history.record_reported(session, device.id, previous, msg.slots, at=at)  # one row per transition
    session.add(device)
    session.commit()
    return device


def late_reported_rows(device: Any, msg: Reported, seq: int, now: datetime) -> list[dict[str, Any]]:
    """What a *late* verified ``reported`` (its seq below the highest accepted,
    ``report_verify``) adds (pure): history rows for its slots whose phase differs from the
    current report's, nothing on the device row — the newest seq's state stands."""
    current: dict[str, Any] = (device.reported or {}).get("slots", {})
    return history.reported_rows(device.id, current, msg.slots, at=now, late_seq=seq)


def apply_late_reported(session: Session, device: Device, msg: Reported, seq: int, now: datetime | None = None) -> int:
    rows = late_reported_rows(device, msg, seq, now or _now())
    for row in rows:
        session.add(history.DeviceHistory(**row))
    if rows:
        log.info("device %s: late reported seq %d (a newer one was applied first): %d phase(s) recorded in history",
                 device.id, seq, len(rows))
    return len(rows)


def apply_telemetry(session: Session, msg: Telemetry, now: datetime | None = None) -> Device:
    device = _device(session, msg.device_id)
    telemetry_onto(device, msg, now or _now())
    session.add(device)
    session.commit()
    return device
