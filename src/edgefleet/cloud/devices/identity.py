"""Device identity: credentials issued at enrolment, rotation, revocation, the broker's accounts.

Every enrolled device has an HTTP token (``efd_…``), a broker account (username = device
id, a random password stored only as mosquitto's ``$7$`` hash) and optionally an X.509
client certificate from the fleet CA. ``broker_accounts`` turns the device table into the
broker's password file and ACL (``broker_auth``); a revoked device is simply absent from
both, so the broker refuses it.

Rotation without losing the device: ``fleet device rotate-credentials ID`` bumps
``credentials_epoch`` (the device sees it in its ``desired`` hint); the device then asks
for new credentials with its current token (``POST /api/v1/devices/self/credentials``),
stores them, and confirms with the *new* token (``…/confirm``). Only then do the new
ones replace the old, so a reply lost on the way never locks a device out.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlmodel import Session, select

from ...atomicio import atomic_write
from ..auth import hash_token, new_token
from ..broker_auth import Account, hash_password, new_password
from ..errors import Conflict, NotFound
from ..tables import Device

log = logging.getLogger(__name__)

CONTROLLER_USERNAME = "edgefleet-controller"
CONTROLLER_SECRET = "mqtt-controller.json"


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Credentials:
    """Secrets shown once: the device stores them (``fleet-agent provision``), we keep hashes."""

    device_id: str
    token: str
    mqtt_username: str
    mqtt_password: str
    credentials_epoch: int
    cert_pem: str | None = None
    key_pem: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.device_id, "token": self.token, "mqtt_username": self.mqtt_username,
            "mqtt_password": self.mqtt_password, "credentials_epoch": self.credentials_epoch,
            "cert_pem": self.cert_pem, "key_pem": self.key_pem,
        }


def issue(device: Device, *, cert: tuple[str, str, str] | None = None) -> Credentials:
    """New token and broker password for ``device`` (the caller commits). Replaces old ones."""
    token, password = new_token("efd"), new_password()
    device.token_hash = hash_token(token)
    device.mqtt_password_hash = hash_password(password)
    device.pending_token_hash = device.pending_mqtt_password_hash = None
    device.revoked_at = None
    cert_pem = key_pem = None
    if cert is not None:
        cert_pem, key_pem, device.cert_serial = cert
    return Credentials(device.id, token, device.id, password, device.credentials_epoch, cert_pem, key_pem)


def revoke(session: Session, device_id: str) -> Device:
    """Cut a device off: token, broker account and pending credentials gone (the caller commits)."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    if device.revoked_at is not None:
        return device
    device.revoked_at = _now()
    device.token_hash = device.mqtt_password_hash = None
    device.pending_token_hash = device.pending_mqtt_password_hash = None
    device.online = False
    session.add(device)
    log.warning("device %s revoked: token, broker account and certificate no longer accepted", device_id)
    return device


def request_rotation(session: Session, device_id: str) -> Device:
    """Ask the device to fetch new credentials (it sees the new epoch in its desired hint)."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    if device.revoked_at is not None:
        raise Conflict(f"device {device_id} is revoked; enrol it again (fleet device add) to give it credentials")
    device.credentials_epoch += 1
    device.desired_generation += 1
    session.add(device)
    log.info("device %s: credentials rotation %d requested", device_id, device.credentials_epoch)
    return device


def start_rotation(device: Device) -> Credentials:
    """The device asks (with its current token): new credentials, pending until it confirms."""
    token, password = new_token("efd"), new_password()
    device.pending_token_hash = hash_token(token)
    device.pending_mqtt_password_hash = hash_password(password)
    return Credentials(device.id, token, device.id, password, device.credentials_epoch)


def confirm_rotation(device: Device) -> None:
    """The device proved it holds the new token: the new credentials replace the old ones."""
    if device.pending_token_hash is None or device.pending_mqtt_password_hash is None:
        raise Conflict(f"device {device.id} has no credentials rotation in flight")
    device.token_hash, device.mqtt_password_hash = device.pending_token_hash, device.pending_mqtt_password_hash
    device.pending_token_hash = device.pending_mqtt_password_hash = None
    log.info("device %s: credentials rotated (epoch %d)", device.id, device.credentials_epoch)


# ----- the controller's own broker account -----


@dataclass(frozen=True)
class ControllerAccount:
    username: str
    password: str
    password_hash: str


def controller_account(data_dir: Path, username: str | None = None, password: str | None = None) -> ControllerAccount:
    """The controller's broker account: from settings when given, else a secret kept 0600 in
    ``<data_dir>/secrets/`` (made on first use, shared by replicas with the same data dir)."""
    if username and password:
        return ControllerAccount(username, password, hash_password(password, salt=hash_token(username).encode()[:12]))
    path = data_dir / "secrets" / CONTROLLER_SECRET
    try:
        data = json.loads(path.read_text())
        return ControllerAccount(data["username"], data["password"], data["password_hash"])
    except (OSError, ValueError, KeyError):
        pass
    secret = new_password()
    account = ControllerAccount(username or CONTROLLER_USERNAME, secret, hash_password(secret))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    atomic_write(path, json.dumps(account.__dict__).encode(), mode=0o600)
    return account


def broker_accounts(session: Session, controller: ControllerAccount) -> list[Account]:
    """Every account the broker should accept: the controller's and each live device's.

    A device in the middle of a rotation keeps its current password until it confirms.
    """
    rows = session.exec(
        select(Device.id, Device.mqtt_password_hash)
        .where(Device.revoked_at == None)  # noqa: E711
        .where(Device.mqtt_password_hash != None)  # noqa: E711
    ).all()
    accounts = [Account(controller.username, controller.password_hash, "controller")]
    accounts += [Account(device_id, h) for device_id, h in rows if h and device_id != controller.username]
    return accounts
