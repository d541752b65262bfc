"""Controller settings: defaults, then ``controller.toml`` in the data dir, then ``EDGEFLEET_*`` env.

Read once at the entry point (CLI) and passed down; nothing reads settings at import time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..protocols import CapturePolicy
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_HOME = "~/.edgefleet"
CONFIG_FILE = "controller.toml"


class CloudSettings(BaseModel):
    data_dir: Path
    database_url: str | None = None
    store_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_url: str | None = None
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_protocol: Literal["3.1.1", "5"] = "3.1.1"
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_client_id: str = "edgefleet-controller"
    # broker accounts and ACL written from the device table (cloud/broker_auth.py)
    manage_broker_auth: bool = True
    broker_auth_dir: Path | None = None  # default <data_dir>/broker-auth; point mosquitto's password_file/acl_file here
    broker_reload_command: str | None = None  # e.g. "systemctl reload mosquitto" for an external broker
    # TLS (docs/tls.md): HTTPS when a certificate is configured; the bridge uses TLS when mqtt_tls
    tls_cert_file: Path | None = None  # the API's certificate (PEM); `fleet cloud init` issues one
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None  # the CA that signed tls_cert_file (the fleet CA's ca.pem)
    mqtt_tls: bool = False  # the bridge connects to mqtt_host:mqtt_tls_port over TLS
    mqtt_ca_file: Path | None = None  # CA to verify the broker against (system CAs when None)
    mqtt_cert_file: Path | None = None  # client certificate, for a broker that requires one
    mqtt_key_file: Path | None = None
    mqtt_tls_port: int = 8883
    telemetry_period_s: float = Field(default=10.0, gt=0)
    telemetry_history_days: float = Field(default=30.0, gt=0)
    reconcile_interval_s: float = Field(default=2.0, gt=0)
    # a device whose signed state lags its desired state this long is stale (cloud/freshness.py)
    stale_after_s: float = Field(default=120.0, gt=0)
    max_payload_bytes: int = 256 * 1024
    upload_max_open_sessions: int = Field(default=8, ge=1)  # per device; more → 429
    upload_max_open_bytes: int = Field(default=512 * 1024 * 1024, ge=1)  # declared bytes of open sessions per device
    auth_max_failures: int = Field(default=20, ge=1)  # failed authentications per address / token prefix …
    auth_failure_window_s: float = Field(default=60.0, gt=0)  # … within this window → 429 for the window
    capture: CapturePolicy = Field(default_factory=CapturePolicy)  # [capture]: the devices' default policy

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'controller.db'}"

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_cert_file else "http"
        return self.public_url or f"{scheme}://{self.http_host}:{self.http_port}"

    @property
    def broker_auth_path(self) -> Path:
        return self.broker_auth_dir or self.data_dir / "broker-auth"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"


_ENV = {
    "EDGEFLEET_DATABASE_URL": "database_url",
    "DATABASE_URL": "database_url",
    "EDGEFLEET_STORE_URL": "store_url",
    "EDGEFLEET_HTTP_HOST": "http_host",
    "EDGEFLEET_HTTP_PORT": "http_port",
    "EDGEFLEET_PUBLIC_URL": "public_url",
    "EDGEFLEET_MQTT_HOST": "mqtt_host",
    "EDGEFLEET_MQTT_PORT": "mqtt_port",
    "EDGEFLEET_MQTT_PROTOCOL": "mqtt_protocol",
    "EDGEFLEET_MQTT_USERNAME": "mqtt_username",
    "EDGEFLEET_MQTT_PASSWORD": "mqtt_password",
    "EDGEFLEET_BROKER_AUTH_DIR": "broker_auth_dir",
    "EDGEFLEET_BROKER_RELOAD_COMMAND": "broker_reload_command",
    "EDGEFLEET_TLS_CERT_FILE": "tls_cert_file",
    "EDGEFLEET_TLS_KEY_FILE": "tls_key_file",
    "EDGEFLEET_TLS_CA_FILE": "tls_ca_file",
    "EDGEFLEET_MQTT_TLS": "mqtt_tls",
    "EDGEFLEET_MQTT_CA_FILE": "mqtt_ca_file",
    "EDGEFLEET_MQTT_CERT_FILE": "mqtt_cert_file",
    "EDGEFLEET_MQTT_KEY_FILE": "mqtt_key_file",
    "EDGEFLEET_MQTT_TLS_PORT": "mqtt_tls_port",
}


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    raw = data_dir or os.environ.get("EDGEFLEET_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def load_settings(data_dir: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None, **overrides: Any) -> CloudSettings:
    """Defaults ← ``{data_dir}/controller.toml`` ← environment ← explicit overrides."""
    env = dict(os.environ if env is None else env)
    home = resolve_data_dir(data_dir)
    values: dict[str, Any] = {"data_dir": home}
    cfg = home / CONFIG_FILE
    if cfg.is_file():
        with open(cfg, "rb") as f:
            data = tomllib.load(f)
        values.update(data.get("controller", {}))
        if "capture" in data:
            unknown = sorted(set(data["capture"]) - set(CapturePolicy.model_fields))
            if unknown:
                raise ConfigError(f"{cfg}: unknown key(s) in [capture]: {', '.join(unknown)}; "
                                  f"known: {', '.join(CapturePolicy.model_fields)}")
            values["capture"] = data["capture"]
    for var, key in _ENV.items():
        if env.get(var):
            values[key] = env[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["data_dir"] = home
    return CloudSettings.model_validate(values)
