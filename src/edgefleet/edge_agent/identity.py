"""The device's own credentials, kept 0600 in ``<data_dir>/identity/`` and rotated on request.

``fleet device add ID --out DIR`` writes ``credentials.json`` (HTTP token, broker username
and password, optionally a client certificate and key); ``fleet-agent provision
--credentials DIR/credentials.json`` stores it here. When present, these credentials win
over the token and broker account in ``agent.toml``, because a rotation rewrites them.

Rotation (cloud/devices/identity.py): the controller raises ``credentials_epoch`` in the desired
hint; the agent asks for new credentials with its current token, saves them as
``credentials.next.json``, switches its broker client to them and confirms with the new
token; only then does the new file replace the old one. A confirmation whose reply was
lost is finished on the next attempt (the new token then already works).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import httpx
from pydantic import BaseModel, Field, ValidationError

from ..atomicio import atomic_write
from .config import AgentConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

CURRENT = "credentials.json"
NEXT = "credentials.next.json"


class Identity(BaseModel):
    device_id: str = Field(alias="id", min_length=1, max_length=128)
    token: str = Field(min_length=1)
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    credentials_epoch: int = Field(default=0, ge=0)
    cert_pem: str | None = None
    key_pem: str | None = None

    model_config = {"populate_by_name": True, "extra": "ignore"}


class IdentityStore:
    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir) / "identity"

    def _path(self, name: str) -> Path:
        return self.dir / name

    def load(self, name: str = CURRENT) -> Identity | None:
        path = self._path(name)
        try:
            return Identity.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError, ValueError) as exc:
            raise ConfigError(f"unreadable device credentials {path}: {exc}") from None

    def save(self, identity: Identity, name: str = CURRENT) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        atomic_write(self._path(name), identity.model_dump_json(by_alias=True).encode(), mode=0o600, fsync_dir=True)
        if identity.cert_pem and identity.key_pem and name == CURRENT:
            atomic_write(self.dir / "client.crt", identity.cert_pem.encode(), mode=0o600)
            atomic_write(self.dir / "client.key", identity.key_pem.encode(), mode=0o600)

    def promote_next(self) -> Identity:
        nxt = self.load(NEXT)
        if nxt is None:
            raise ConfigError("no pending credentials to promote")
        current = self.load()
        if current is not None and current.cert_pem and not nxt.cert_pem:
            nxt = nxt.model_copy(update={"cert_pem": current.cert_pem, "key_pem": current.key_pem})
        self.save(nxt)
        self.discard_next()
        return nxt

    def discard_next(self) -> None:
        try:
            self._path(NEXT).unlink()
        except FileNotFoundError:
            pass

    def apply(self, config: AgentConfig) -> AgentConfig:
        """The config with the stored credentials filled in (they win over agent.toml's)."""
        identity = self.load()
        if identity is None:
            return config
        if identity.device_id != config.agent.device_id:
            raise ConfigError(f"credentials in {self.dir} are for device {identity.device_id!r}, "
                              f"not {config.agent.device_id!r}")
        agent = config.agent.model_copy(update={"token": identity.token})
        mqtt_update: dict[str, object] = {}
        if identity.mqtt_username:
            mqtt_update.update(username=identity.mqtt_username, password=identity.mqtt_password)
        crt, key = self.dir / "client.crt", self.dir / "client.key"
        if crt.exists() and key.exists() and "cert_file" in type(config.mqtt).model_fields and not getattr(config.mqtt, "cert_file", None):
            mqtt_update.update(cert_file=crt, key_file=key)
        return config.model_copy(update={"agent": agent, "mqtt": config.mqtt.model_copy(update=mqtt_update)})

    def epoch(self) -> int:
        identity = self.load()
        return identity.credentials_epoch if identity is not None else 0


def provision_credentials(data_dir: Path, credentials_file: Path, *, device_id: str, overwrite: bool = False) -> Identity:
    """Store the credentials ``fleet device add --out`` wrote (0600), for ``fleet-agent provision``."""
    try:
        identity = Identity.model_validate(json.loads(credentials_file.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise ConfigError(f"cannot read credentials {credentials_file}: {exc}") from None
    if identity.device_id != device_id:
        raise ConfigError(f"{credentials_file} holds credentials for {identity.device_id!r}, this device is {device_id!r}")
    store = IdentityStore(data_dir)
    if store.load() is not None and not overwrite:
        raise ConfigError(f"device {device_id} already has credentials in {store.dir}; use --force to replace them")
    store.save(identity)
    return identity


class RotationError(Exception):
    """A credentials rotation step failed; the old credentials stay in use."""


def fetch_new_credentials(http: httpx.Client, epoch: int) -> Identity:
    """Ask the controller (with the current token) for the rotation's new credentials."""
    try:
        resp = http.post("/api/v1/devices/self/credentials")
    except httpx.HTTPError as exc:
        raise RotationError(f"controller unreachable: {exc}") from None
    if resp.status_code != 200:
        raise RotationError(f"controller refused new credentials: HTTP {resp.status_code} {resp.text[:200]}")
    try:
        identity = Identity.model_validate(resp.json())
    except (ValueError, ValidationError) as exc:
        raise RotationError(f"controller sent unreadable credentials: {exc}") from None
    return identity.model_copy(update={"credentials_epoch": max(epoch, identity.credentials_epoch)})


def confirm_credentials(http: httpx.Client, new_token: str) -> bool:
    """Confirm with the new token. True: the new credentials are now the device's (also when an
    earlier confirmation went through but its reply was lost); False: they were superseded."""
    try:
        resp = http.post("/api/v1/devices/self/credentials/confirm",
                         headers={"Authorization": f"Bearer {new_token}"})
    except httpx.HTTPError as exc:
        raise RotationError(f"controller unreachable: {exc}") from None
    if resp.status_code == 200:
        return True
    if resp.status_code == 403:  # the new token is already the current one
        return True
    if resp.status_code == 401:
        return False
    raise RotationError(f"confirmation refused: HTTP {resp.status_code} {resp.text[:200]}")
