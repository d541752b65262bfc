"""Scoped policies in the database, and what each device gets from them.

``ScopedPolicy`` rows (migration 0017_scoped_policies) hold what an operator set for a
selector: capture fields, network fields, maintenance windows, a priority. A rollout's own
window or network policy is a row too (``rollout_id`` set, named ``rollout:<id>``): it applies
to the rollout's member devices while the rollout runs. Fleet-wide values stay where they were
(``devices/fleet_settings.py``; fleet-wide windows under the key ``maintenance_windows``).

``put``/``remove`` change a row and bump the desired generation of exactly the devices the
old or the new scope matches, then ask the publisher to sign and send each one (an offline
device gets it when it returns). ``resolve_for(session, device, capture_default)`` is what
``Controller.device_settings`` calls per device.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlalchemy import delete as sql_delete
from sqlmodel import Field, Session, SQLModel, col, select

from ...protocols import CapturePolicy
from ...protocols.messages import NetworkPolicy
from ...protocols.windows import MaintenanceWindow
from ..devices import fleet_settings
from ..devices.fleet import DesiredPublisher
from ..devices.fleet_settings import FleetSetting
from ..errors import NotFound
from ..rollout.selector import DeviceInfo, parse_selector
from ..tables import Device, utcnow
from .resolve import Resolved, Scope, resolve

log = logging.getLogger(__name__)

WINDOWS_KEY = "maintenance_windows"
RUNNING_ROLLOUT = ("pending", "running", "soaking", "paused", "breached")  # a rollout's own policy applies


class ScopedPolicy(SQLModel, table=True):
    __tablename__ = "scoped_policy"

    name: str = Field(primary_key=True, max_length=80)
    selector: str = Field(max_length=1000)
    priority: int = 0
    capture: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    network: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    windows: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    rollout_id: str | None = Field(default=None, max_length=64, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = Field(default="", max_length=128)


def info(device: Device) -> DeviceInfo:
    return DeviceInfo(device_id=device.id, hardware_id=device.hardware_id, tags=dict(device.tags or {}))


def _members(session: Session, rollout_id: str) -> frozenset[str]:
    from ..rollout.tables import Rollout, RolloutMember

    row = session.get(Rollout, rollout_id)
    if row is None or row.state not in RUNNING_ROLLOUT:
        return frozenset()
    return frozenset(session.exec(select(RolloutMember.device_id).where(RolloutMember.rollout_id == rollout_id)).all())


def scope_of(session: Session, row: ScopedPolicy) -> Scope:
    windows = tuple(MaintenanceWindow.model_validate(w) for w in row.windows) if row.windows is not None else None
    selector = parse_selector(row.selector or "all")
    members = _members(session, row.rollout_id) if row.rollout_id else frozenset()
    return Scope(name=row.name, selector=selector, priority=row.priority, capture=dict(row.capture or {}),
                 network=dict(row.network or {}), windows=windows, rollout=row.rollout_id, members=members)


def list_rows(session: Session) -> list[ScopedPolicy]:
    return list(session.exec(select(ScopedPolicy).order_by(col(ScopedPolicy.name))).all())


def scopes(session: Session) -> list[Scope]:
    out = []
    for row in list_rows(session):
        try:
            out.append(scope_of(session, row))
        except ValueError as exc:  # edited by hand or written by a newer controller: skipped, said loudly
            log.error("scoped policy %s is unreadable and is skipped: %s", row.name, exc)
    return out


def fleet_windows(session: Session) -> list[MaintenanceWindow]:
    row = session.get(FleetSetting, WINDOWS_KEY)
    if row is None:
        return []
    try:
        return [MaintenanceWindow.model_validate(w) for w in json.loads(row.value)]
    except ValueError as exc:
        log.error("stored fleet-wide maintenance windows are unreadable, sending none: %s", exc)
        return []


@dataclass(frozen=True)
class Policies:
    """Everything resolution reads, loaded once for a batch of devices (``load``): the scopes
    and the fleet-wide capture policy, network policy and windows. Resolving a device from it
    is pure (``resolve``), so a batch of N devices costs a handful of queries, not N times them.
    Never kept across batches: each publish loads it afresh, so a changed policy reaches the
    next publish."""

    scopes: tuple[Scope, ...]
    capture: CapturePolicy
    network: NetworkPolicy
    windows: tuple[MaintenanceWindow, ...]

    def resolve(self, device: Device) -> Resolved:
        return resolve(self.scopes, info(device), capture=self.capture, network=self.network, windows=self.windows)


def load(session: Session, capture_default: CapturePolicy) -> Policies:
    """The policies as they stand now (one read of each table)."""
    return Policies(scopes=tuple(scopes(session)),
                    capture=fleet_settings.capture_policy(session, default=capture_default),
                    network=fleet_settings.network_policy(session), windows=tuple(fleet_windows(session)))


def resolve_for(session: Session, device: Device, capture_default: CapturePolicy,
                all_scopes: list[Scope] | None = None) -> Resolved:
    """What ``device`` gets, with the scope of each field (``resolve.py``)."""
    return resolve(scopes(session) if all_scopes is None else all_scopes, info(device),
                   capture=fleet_settings.capture_policy(session, default=capture_default),
                   network=fleet_settings.network_policy(session), windows=fleet_windows(session))


# -- changes -------------------------------------------------------------------------------

def _affected(session: Session, before: Scope | None, after: Scope | None) -> list[Device]:
    devices = fleet_settings_devices(session)
    return [d for d in devices if any(s is not None and s.matches(info(d)) for s in (before, after))]


def fleet_settings_devices(session: Session) -> list[Device]:
    return list(session.exec(select(Device).where(Device.revoked_at == None).order_by(col(Device.id))).all())  # noqa: E711


def bump(session: Session, publisher: DesiredPublisher | None, devices: Iterable[Device], why: str) -> int:
    """Bump each device's desired generation, commit, then sign and send each (publisher)."""
    changed = list(devices)
    for device in changed:
        device.desired_generation += 1
        session.add(device)
    session.commit()
    if publisher is not None:
        for device in changed:
            publisher.publish_device(session, device)
    if changed:
        log.info("%s: desired settings sent to %d devices (%s)", why, len(changed),
                 ", ".join(d.id for d in changed[:20]) + (" …" if len(changed) > 20 else ""))
    return len(changed)


def get_row(session: Session, name: str) -> ScopedPolicy:
    row = session.get(ScopedPolicy, name)
    if row is None:
        raise NotFound(f"no policy {name!r} (fleet policy ls lists them)")
    return row


def put(session: Session, publisher: DesiredPublisher | None, row: ScopedPolicy, by: str) -> int:
    """Create or replace the scope ``row.name``; returns how many devices were told."""
    old = session.get(ScopedPolicy, row.name)
    before = scope_of(session, old) if old is not None else None
    if old is not None:
        for key in ("selector", "priority", "capture", "network", "windows", "rollout_id"):
            setattr(old, key, getattr(row, key))
        row = old
    row.updated_at, row.updated_by = utcnow(), by
    session.add(row)
    session.commit()
    session.refresh(row)
    after = scope_of(session, row)
    n = bump(session, publisher, _affected(session, before, after), f"policy {row.name} set by {by}")
    log.info("policy %s (select %s, priority %d) set by %s: capture %s, network %s, windows %s; %d devices told",
             row.name, row.selector, row.priority, by, row.capture, row.network, row.windows, n)
    return n


def remove(session: Session, publisher: DesiredPublisher | None, name: str, by: str) -> int:
    row = get_row(session, name)
    before = scope_of(session, row)
    session.delete(row)
    session.commit()
    n = bump(session, publisher, _affected(session, before, None), f"policy {name} removed by {by}")
    log.info("policy %s removed by %s; %d devices told", name, by, n)
    return n


def set_fleet_windows(session: Session, publisher: DesiredPublisher | None, windows: list[MaintenanceWindow],
                      by: str) -> int:
    """The fleet-wide windows (scope ``fleet``); an empty list removes them."""
    row = session.get(FleetSetting, WINDOWS_KEY)
    if not windows:
        if row is None:
            return 0
        session.delete(row)
    else:
        row = row or FleetSetting(key=WINDOWS_KEY, value="")
        row.value = json.dumps([w.model_dump(mode="json") for w in windows], sort_keys=True)
        row.updated_at, row.updated_by = utcnow(), by
        session.add(row)
    session.commit()
    return bump(session, publisher, fleet_settings_devices(session), f"fleet-wide maintenance windows set by {by}")


def rollout_scope_name(rollout_id: str) -> str:
    return f"rollout:{rollout_id}"


def put_rollout_policy(session: Session, rollout_id: str, *, windows: list[MaintenanceWindow] | None,
                       network: dict[str, Any] | None, by: str) -> ScopedPolicy:
    """Store a rollout's own windows / network fields, before the rollout exists (it has no
    members yet, so no device is told now: each gets it with the rollout's model)."""
    row = ScopedPolicy(name=rollout_scope_name(rollout_id), selector="all", priority=0, rollout_id=rollout_id,
                       network=network or None, updated_by=by,
                       windows=None if windows is None else [w.model_dump(mode="json") for w in windows])
    session.add(row)
    session.commit()
    return row


def drop_rollout_policy(session: Session, rollout_id: str) -> None:
    """The rollout did not start after all: forget its policy (no device had it)."""
    row = session.get(ScopedPolicy, rollout_scope_name(rollout_id))
    if row is not None:
        session.delete(row)
        session.commit()


def release_finished(session: Session, publisher: DesiredPublisher | None) -> int:
    """Rollouts that no longer run (completed, aborted, rolled back, superseded): their own
    policy ends — the row goes and its members get their settings again. Returns devices told."""
    from ..rollout.tables import Rollout, RolloutMember

    told = 0
    for row in session.exec(select(ScopedPolicy).where(ScopedPolicy.rollout_id != None)).all():  # noqa: E711
        rollout = session.get(Rollout, row.rollout_id)
        if rollout is not None and rollout.state in (*RUNNING_ROLLOUT, "scheduled"):
            continue
        name, rollout_id = row.name, row.rollout_id
        members = select(RolloutMember.device_id).where(RolloutMember.rollout_id == rollout_id)
        # A statement, not session.delete: a concurrent pass (another thread or replica) may
        # have released this policy since the SELECT; then it has told the members already.
        gone = session.execute(sql_delete(ScopedPolicy).where(col(ScopedPolicy.name) == name)).rowcount  # type: ignore[attr-defined]
        session.commit()
        if not gone:
            continue
        devices = list(session.exec(select(Device).where(Device.revoked_at == None)  # noqa: E711  # its members, not the fleet
                                    .where(col(Device.id).in_(members)).order_by(col(Device.id))).all())
        told += bump(session, publisher, devices, f"rollout {rollout_id} ended ({rollout.state if rollout else 'gone'}): "
                                                  "its own window/network policy no longer applies")
    return told
