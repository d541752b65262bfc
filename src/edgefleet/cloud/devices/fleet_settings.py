"""Fleet-wide settings that operators change while the fleet runs: the capture and network policies.

Every device gets the capture policy in ``Desired.settings.capture``. Its default is the
``[capture]`` section of ``controller.toml``; an operator's change (API or
``fleet capture set``) is stored here, in the database, so every controller replica and
every restart sends the same one. A change bumps each device's desired generation, so a
device that is offline gets it when it returns, like any other desired state.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Text
from sqlmodel import Field, Session, SQLModel, select

from ...protocols import CapturePolicy
from ...protocols.messages import NetworkPolicy
from ..errors import BadRequest
from ..tables import Device, utcnow
from .fleet import DesiredPublisher

log = logging.getLogger(__name__)

CAPTURE_KEY = "capture_policy"


class FleetSetting(SQLModel, table=True):
    __tablename__ = "fleet_setting"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_type=Text)  # JSON
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = Field(default="", max_length=128)


def stored_capture_policy(session: Session) -> FleetSetting | None:
    return session.get(FleetSetting, CAPTURE_KEY)


def capture_policy(session: Session, default: CapturePolicy) -> CapturePolicy:
    """The policy devices get: the operator's, else ``default`` (controller.toml)."""
    row = stored_capture_policy(session)
    if row is None:
        return default
    try:
        return CapturePolicy.model_validate_json(row.value)
    except ValidationError as exc:  # written by a newer controller, or edited by hand
        log.error("stored capture policy is unreadable, sending the default instead: %s", exc)
        return default


def merge_capture_policy(current: CapturePolicy, changes: dict[str, Any]) -> CapturePolicy:
    """``current`` with ``changes`` applied; a bad field is refused with its name."""
    unknown = sorted(set(changes) - set(CapturePolicy.model_fields))
    if unknown:
        raise BadRequest(f"unknown capture setting(s) {', '.join(unknown)}; known: {', '.join(CapturePolicy.model_fields)}")
    try:
        return CapturePolicy.model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise BadRequest(f"invalid capture policy: {problems}") from exc


def _republish(session: Session, publisher: DesiredPublisher | None) -> int:
    devices = list(session.exec(select(Device)).all())
    for device in devices:
        device.desired_generation += 1
        session.add(device)
    session.commit()
    if publisher is not None:
        publisher.publish_devices(session, devices)  # signed in bulk
    return len(devices)


def _store(session: Session, key: str, value: Any, by: str) -> str:
    """Write one setting, race-safe (two operators, or a reset beside a change, at once):
    an UPDATE, else an INSERT, else the UPDATE again when another writer inserted first."""
    from sqlalchemy import insert, update
    from sqlalchemy.exc import IntegrityError

    text = json.dumps(value.model_dump(mode="json"), sort_keys=True)
    fields = {"value": text, "updated_at": utcnow(), "updated_by": by}
    table = FleetSetting.__table__  # type: ignore[attr-defined]
    for _attempt in range(3):
        if session.execute(update(table).where(table.c.key == key).values(**fields)).rowcount:  # type: ignore[attr-defined]
            session.commit()
            return text
        try:
            session.execute(insert(table).values(key=key, **fields))
            session.commit()
            return text
        except IntegrityError:  # inserted by someone else meanwhile: update theirs
            session.rollback()
    raise BadRequest(f"setting {key} is being changed by someone else; try again")


def _forget(session: Session, key: str) -> bool:
    """Delete one setting; False when there was none (also when a concurrent reset won)."""
    from sqlalchemy import delete

    table = FleetSetting.__table__  # type: ignore[attr-defined]
    gone = bool(session.execute(delete(table).where(table.c.key == key)).rowcount)  # type: ignore[attr-defined]
    session.commit()
    return gone


def set_capture_policy(session: Session, publisher: DesiredPublisher | None, policy: CapturePolicy, by: str) -> int:
    """Store ``policy`` for the whole fleet and send it; returns how many devices were told."""
    text = _store(session, CAPTURE_KEY, policy, by)
    n = _republish(session, publisher)
    log.info("capture policy set by %s and sent to %d devices: %s", by, n, text)
    return n


def reset_capture_policy(session: Session, publisher: DesiredPublisher | None, by: str) -> int:
    """Forget the operator's policy: devices get controller.toml's again."""
    if not _forget(session, CAPTURE_KEY):
        return 0
    n = _republish(session, publisher)
    log.info("capture policy reset to the controller's default by %s; sent to %d devices", by, n)
    return n


# -- network policy (issue 15: metered links, bandwidth caps) ------------------------------

NETWORK_KEY = "network_policy"


def stored_network_policy(session: Session) -> FleetSetting | None:
    return session.get(FleetSetting, NETWORK_KEY)


def network_policy(session: Session) -> NetworkPolicy:
    """The network policy devices get (signed with their settings): the operator's, else any link, no cap."""
    row = stored_network_policy(session)
    if row is None:
        return NetworkPolicy()
    try:
        return NetworkPolicy.model_validate_json(row.value)
    except ValidationError as exc:
        log.error("stored network policy is unreadable, sending the default (any link, no cap): %s", exc)
        return NetworkPolicy()


def set_network_policy(session: Session, publisher: DesiredPublisher | None, policy: NetworkPolicy, by: str) -> int:
    """Store ``policy`` for the whole fleet and send it (signed); returns how many devices were told."""
    text = _store(session, NETWORK_KEY, policy, by)
    n = _republish(session, publisher)
    log.info("network policy set by %s and sent to %d devices: %s", by, n, text)
    return n


def reset_network_policy(session: Session, publisher: DesiredPublisher | None, by: str) -> int:
    """Forget the operator's network policy: devices download on any link, uncapped by policy."""
    if not _forget(session, NETWORK_KEY):
        return 0
    n = _republish(session, publisher)
    log.info("network policy reset by %s; sent to %d devices", by, n)
    return n
