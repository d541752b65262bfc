"""Devices and slot assignments: enrol devices, assign models to slots, build desired state.

``desired_for`` is pure over database rows: the same rows always give the same ``Desired``.
Whoever changes an assignment bumps the device's ``desired_generation`` and asks the
publisher to send the new desired state (retained), so a device that reconnects later
still gets it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, bindparam
from sqlalchemy import delete as sa_delete
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from ...protocols import SLOTS, Desired, DeviceSettings, SlotTarget, is_valid_device_id
from ..errors import BadRequest, Conflict, NotFound
from ..rollout import dirty
from ..tables import Device, DevicePublic, ModelVersion, SlotAssignment, SlotPublic, utcnow
from ..trust import freshness
from . import history, identity, report_verify

log = logging.getLogger(__name__)

_ASSIGNMENT: Table = SlotAssignment.__table__  # type: ignore[attr-defined]
_DEVICES: Table = Device.__table__  # type: ignore[attr-defined]


class DesiredPublisher(Protocol):
    def publish_device(self, session: Session, device: Device) -> None: ...

    def publish_devices(self, session: Session, devices: list[Device]) -> int:
        """Sign many devices in bulk, then publish each; returns how many were sent."""
        ...


def bundle_path(digest: str) -> str:
    return f"/api/v1/bundles/{digest}"


def enrol(
    session: Session, device_id: str, hardware_id: str = "unknown", tags: dict[str, str] | None = None,
    *, cert: tuple[str, str, str] | None = None, report_public_key: str | None = None,
) -> identity.Credentials:
    """Create a device (or re-issue its credentials) and return them, shown once.

    Enrolling a revoked device again is the operator's way to readmit it: it gets new
    credentials. ``cert`` is (certificate PEM, key PEM, serial) from the fleet CA.
    """
    if not is_valid_device_id(device_id):
        raise BadRequest(f"invalid device id {device_id!r}: use letters, digits, '.', '_' or '-'")
    if device_id == identity.CONTROLLER_USERNAME:
        raise BadRequest(f"{device_id!r} is the controller's broker account; choose another device id")
    device = session.get(Device, device_id)
    if device is None:
        device = Device(id=device_id, hardware_id=hardware_id, tags=tags or {})
    else:
        if tags:
            device.tags = {**device.tags, **tags}
        if hardware_id != "unknown":
            device.hardware_id = hardware_id
    if report_public_key is not None:  # signed reports: the key the device made at provisioning
        report_verify.set_key(device, report_public_key)
    creds = identity.issue(device, cert=cert)
    session.add(device)
    session.commit()
    log.info("device %s enrolled (hardware %s)", device_id, device.hardware_id)
    return creds


def enrol_device(session: Session, device_id: str, hardware_id: str = "unknown", tags: dict[str, str] | None = None) -> str:
    """``enrol`` returning just the HTTP token (for callers that need nothing else)."""
    return enrol(session, device_id, hardware_id, tags).token


def get_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    return device


def devices_by_id(session: Session, device_ids: Sequence[str], *, strict: bool = True) -> dict[str, Device]:
    """``get_device`` for many ids: one query per 500 (the session's own objects, pending
    changes included, are the ones returned). Raises ``NotFound`` naming the first missing id
    (``strict=False``: a missing id is left out)."""
    wanted = list(dict.fromkeys(device_ids))
    out: dict[str, Device] = {}
    for i in range(0, len(wanted), 500):
        for d in session.exec(select(Device).where(col(Device.id).in_(wanted[i:i + 500]))).all():
            out[d.id] = d
    if strict and len(out) < len(wanted):
        missing = next(d for d in wanted if d not in out)
        raise NotFound(f"no device {missing!r}")
    return out


def list_devices(session: Session, *, include_revoked: bool = True) -> list[Device]:
    query = select(Device).order_by(Device.id)
    if not include_revoked:
        query = query.where(Device.revoked_at == None)  # noqa: E711
    return list(session.exec(query).all())


def assignments_of(session: Session, device_id: str) -> dict[str, tuple[SlotAssignment, ModelVersion]]:
    rows = session.exec(
        select(SlotAssignment, ModelVersion)
        .where(SlotAssignment.device_id == device_id)
        .where(SlotAssignment.model_version_id == ModelVersion.id)
    ).all()
    return {a.slot: (a, mv) for a, mv in rows}


def desired_for(session: Session, device: Device, settings: DeviceSettings | None = None, now: datetime | None = None,
                assigned: dict[str, ModelVersion] | None = None) -> Desired:
    """The device's desired state; ``assigned``: slot → its model version, when read already
    (``devices.assigned.models_assigned``)."""
    slots: dict[str, SlotTarget | None] = {slot: None for slot in SLOTS}
    if assigned is None:
        assigned = {slot: mv for slot, (_a, mv) in assignments_of(session, device.id).items()}
    for slot, mv in assigned.items():
        slots[slot] = SlotTarget(
            name=mv.name, version=mv.version, digest=mv.digest, size=mv.size,
            path=bundle_path(mv.digest), release_counter=mv.release_counter,
        )
    desired = Desired(
        device_id=device.id, generation=device.desired_generation, slots=slots,  # type: ignore[arg-type]
        settings=settings or DeviceSettings(), credentials_epoch=device.credentials_epoch,
    )
    if now:
        desired.issued_at = now
    return desired


def assign(
    session: Session,
    model: ModelVersion | None,
    slot: str,
    device_ids: Iterable[str],
    *,
    rollout_id: str | None = None,
    commit: bool = True,
) -> list[Device]:
    """Put ``model`` (or nothing) into ``slot`` on each device; returns the devices that changed.

    Written with Core statements, not one ORM object per device (issue 14: the unit of work
    of 10,000 assignment and device objects was a fifth of a rollout's reconciler): one read
    of the current assignments per 500 devices, then one executemany each for the
    assignments inserted, changed and removed, the devices' desired generations and their
    history rows, and the reconciler's dirty marks. The ``Device`` objects returned carry the
    new generation as their committed value. ``commit=False`` leaves the transaction open,
    so a caller (the rollout reconciler) can make the assignment part of its own.
    """
    if slot not in SLOTS:
        raise BadRequest(f"slot must be one of {', '.join(SLOTS)}, got {slot!r}")
    ids = list(dict.fromkeys(device_ids))
    devices = devices_by_id(session, ids)  # one query per 500 devices, not two per device
    t = _ASSIGNMENT
    conn = session.connection()
    currents: dict[str, tuple[int, str | None]] = {}  # device -> (model version id, rollout id)
    for i in range(0, len(ids), 500):
        for device_id, model_version_id, owner in conn.execute(
                sa_select(t.c.device_id, t.c.model_version_id, t.c.rollout_id).where(t.c.slot == slot)
                .where(t.c.device_id.in_(ids[i:i + 500]))):
            currents[device_id] = (model_version_id, owner)
    now = utcnow()
    label = f"{model.name}:{model.version}" if model is not None else None
    added: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    bumped: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []  # history
    changed: list[Device] = []
    for device_id in ids:
        device = devices[device_id]
        current = currents.get(device_id)
        if model is None:
            if current is None:
                continue
            removed.append({"b_device": device_id})
        elif current is None:
            added.append({"device_id": device_id, "slot": slot, "model_version_id": model.id or 0,
                          "rollout_id": rollout_id, "assigned_at": now})
        elif current == (model.id, rollout_id):
            continue
        else:
            moved.append({"b_device": device_id, "b_model": model.id or 0, "b_rollout": rollout_id})
        generation = device.desired_generation + 1
        bumped.append({"b_id": device_id, "b_generation": generation})
        changed.append(device)
        rows.append(history.new_row(device_id, "desired", f"{slot}: desired {label or 'nothing'}"
                                    + (f" (rollout {rollout_id})" if rollout_id else ""), slot=slot,
                                    data={"model": label, "rollout": rollout_id, "generation": generation}))
    if added:
        conn.execute(sa_insert(t), added)
    if moved:
        conn.execute(sa_update(t).where(t.c.device_id == bindparam("b_device")).where(t.c.slot == slot)
                     .values(model_version_id=bindparam("b_model"), rollout_id=bindparam("b_rollout")), moved)
    if removed:
        conn.execute(sa_delete(t).where(t.c.device_id == bindparam("b_device")).where(t.c.slot == slot), removed)
    if bumped:
        d = _DEVICES
        conn.execute(sa_update(d).where(d.c.id == bindparam("b_id"))
                     .values(desired_generation=bindparam("b_generation")), bumped)
    for device, bump in zip(changed, bumped):
        set_committed_value(device, "desired_generation", bump["b_generation"])  # what the row now holds
        _forget_assignment(session, device.id, slot)
    history.insert_rows(session, rows)
    dirty.mark(session, [d.id for d in changed])  # what the ORM flush hook marked before
    if commit:
        session.commit()
    else:
        session.flush()
    return changed


def _forget_assignment(session: Session, device_id: str, slot: str) -> None:
    """An assignment object this session loaded before a Core write changed its row: dropped,
    so a later read loads the row as it is."""
    obj = session.identity_map.get(Session.identity_key(SlotAssignment, (device_id, slot)))
    if obj is not None:
        session.expunge(obj)


def check_hardware(session: Session, model: ModelVersion, device_ids: Iterable[str]) -> None:
    """Refuse a model built for other hardware than some of the devices (manifest ``hardware_ids``)."""
    allowed = model.manifest.get("hardware_ids") or []
    if not allowed:
        return
    devices = devices_by_id(session, list(device_ids))
    wrong = [d for d in device_ids if devices[d].hardware_id not in allowed]
    if wrong:
        raise BadRequest(f"{model.name}:{model.version} is built for {allowed}; not for devices {wrong[:10]}")


def deploy(
    session: Session,
    publisher: DesiredPublisher | None,
    model: ModelVersion,
    slot: str,
    device_ids: list[str] | None,
) -> list[str]:
    """Direct assignment (no waves): every named device (or all, when None) gets the model.

    Raises:
        ModelBlocked: the version is blocked (lifecycle.py). Conflict: no or revoked devices.
    """
    from ..lifecycle import check_deployable

    check_deployable(model)
    everyone = list_devices(session, include_revoked=False) if device_ids is None else None
    ids = device_ids if device_ids is not None else [d.id for d in everyone or ()]
    if not ids:
        raise Conflict("no devices to deploy to; enrol devices first (fleet device add)")
    devices = devices_by_id(session, ids)  # held here: the session's identity map keeps them for assign
    revoked = [d for d in ids if devices[d].revoked_at is not None]
    if revoked:
        raise Conflict(f"devices {revoked[:10]} are revoked; enrol them again before deploying to them")
    check_hardware(session, model, ids)
    changed = assign(session, model, slot, ids)
    log.info("deployed %s:%s to slot %s on %d devices (%d changed)", model.name, model.version, slot, len(ids), len(changed))
    if publisher is not None:
        publisher.publish_devices(session, changed)  # signed in bulk (cloud/trust/signing.py)
    return ids


def device_public(session: Session, device: Device) -> DevicePublic:
    desired = {slot: f"{mv.name}:{mv.version}" for slot, (_a, mv) in assignments_of(session, device.id).items()}
    from ..lifecycle import flags

    return public_of(device, desired, flags(session))  # flags: versions not active (deprecated, blocked): few


def public_of(device: Device, desired: dict[str, str], flagged: dict[str, tuple[str, str | None]]) -> DevicePublic:
    """The wire shape of ``device``, given its desired ``slot → NAME:VERSION`` and the
    inactive versions (``lifecycle.flags``); pure, so a page of devices builds from a few
    batched queries (devices/views.py)."""
    slots: dict[str, SlotPublic] = {}
    reported_slots = (device.reported or {}).get("slots", {})
    for slot in SLOTS:
        rep = reported_slots.get(slot) or {}
        inst = rep.get("installed")
        status, status_reason = flagged.get(inst.get("digest", "") if inst else "", (None, None))
        slots[slot] = SlotPublic(
            desired=desired.get(slot),
            installed=f"{inst['name']}:{inst['version']}" if inst else None,
            phase=rep.get("phase"),
            error_code=rep.get("error_code"),
            error=rep.get("error"),
            model_status=status,  # type: ignore[arg-type]
            model_status_reason=status_reason,
            window_opens_at=rep.get("window_opens_at") if rep.get("phase") == "awaiting_window" else None,
        )
    return DevicePublic(
        id=device.id, hardware_id=device.hardware_id, tags=device.tags, online=device.online,
        last_seen=device.last_seen, agent_version=device.agent_version,
        desired_generation=device.desired_generation, reported_generation=device.reported_generation,
        slots=slots, telemetry=device.telemetry, telemetry_at=device.telemetry_at,
        revoked_at=device.revoked_at, credentials_epoch=device.credentials_epoch,
        report_key_id=device.report_key_id, hardware_id_reported=device.hardware_id_reported,
        director_version=device.director_version, reported_director_version=freshness.held_director_version(device),
        stale=freshness.is_stale(device), stale_since=device.stale_since, stale_reason=device.stale_reason,
        update_blocked=freshness.update_blocked(device),
    )
