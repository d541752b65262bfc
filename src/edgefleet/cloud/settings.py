"""Controller settings: defaults, then ``controller.toml`` in the data dir, then ``EDGEFLEET_*`` env.

Read once at the entry point (CLI) and passed down; nothing reads settings at import time.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..protocols import CapturePolicy
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_HOME = "~/.edgefleet"
CONFIG_FILE = "controller.toml"
#: top-level tables of controller.toml; any other is refused
SECTIONS = ("controller", "capture")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class CloudSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in controller.toml is an error, not a silent default

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
    mqtt_password_file: Path | None = None  # read at start (keeps the secret out of controller.toml)
    # the broker as devices reach it (written into `fleet device add --out` bundles); default: mqtt_host,
    # or public_url's host when mqtt_host is a loopback address, and mqtt_tls_port when mqtt_tls
    device_mqtt_host: str | None = None
    device_mqtt_port: int | None = Field(default=None, ge=1, le=65535)
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
    # a device whose signed state lags its desired state this long is stale (cloud/trust/freshness.py)
    stale_after_s: float = Field(default=120.0, gt=0)
    # signed reports (cloud/devices/replay_window.py): a seq up to this far below a channel's
    # highest, not accepted yet, still counts (replicas may commit out of order); 1: strict order
    replay_window: int = Field(default=64, ge=1, le=64)
    # outages (docs/outages.md): nothing acknowledged before it is stored; gates do not punish the infrastructure
    replica_id: str = Field(default="0", pattern=r"^[A-Za-z0-9_.-]{1,32}$")  # distinct per controller replica
    mqtt_session_expiry_s: float = Field(default=86400.0, ge=0, le=4294967295)  # the broker queues for us this long
    mqtt_receive_maximum: int = Field(default=64, ge=1, le=65535)  # unacknowledged QoS 1 messages in flight
    ingest_retry_max_s: float = Field(default=30.0, gt=0)  # backoff cap while the database is down
    republish_rate_per_s: float = Field(default=500.0, ge=0)  # desired re-publish after a broker lost state (0: unpaced)
    # group commit (cloud/devices/batch.py): up to this many messages in one transaction, waiting at
    # most this long after the first for more; 1 applies each message in its own transaction
    ingest_batch_max: int = Field(default=256, ge=1, le=10000)
    ingest_batch_wait_s: float = Field(default=0.02, ge=0, le=1.0)
    # the serving process's garbage collector (cloud/interpreter.py): the young generation every
    # this many allocations, start-up's objects frozen; 0 keeps Python's own (700)
    gc_gen0_threshold: int = Field(default=20_000, ge=0, le=10_000_000)
    offline_after_periods: float = Field(default=3.0, gt=0)  # not heard for k telemetry periods: offline
    offline_after_min_s: float = Field(default=30.0, ge=0)  # ... and at least this long
    ingest_hold_grace_s: float | None = Field(default=None, ge=0)  # after ingest recovers; None: 2x device timeout
    max_payload_bytes: int = 256 * 1024
    upload_max_open_sessions: int = Field(default=8, ge=1)  # per device; more → 429
    upload_max_open_bytes: int = Field(default=512 * 1024 * 1024, ge=1)  # declared bytes of open sessions per device
    auth_max_failures: int = Field(default=20, ge=1)  # failed authentications per address / token prefix …
    auth_failure_window_s: float = Field(default=60.0, gt=0)  # … within this window → 429 for the window
    capture: CapturePolicy = Field(default_factory=CapturePolicy)  # [capture]: the devices' default policy
    # signed webhooks (cloud/webhooks): SSRF guard (link-local/metadata always refused),
    # delivery timeouts, retries with exponential backoff, and the watchers' thresholds
    webhook_allow_loopback: bool = False  # allow http://127.0.0.1/… receivers (tests, a local relay)
    webhook_allow_private: bool = False  # allow 10/8, 172.16/12, 192.168/16, fc00::/7 receivers
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)
    webhook_max_attempts: int = Field(default=15, ge=1, le=100)
    webhook_retry_base_s: float = Field(default=2.0, gt=0)
    webhook_retry_max_s: float = Field(default=900.0, gt=0)
    webhook_workers: int = Field(default=4, ge=1, le=64)  # receivers delivered to at once
    webhook_poll_s: float = Field(default=1.0, gt=0)
    webhook_offline_after_s: float = Field(default=600.0, gt=0)  # device.offline after this long offline
    webhook_drift_threshold: float = Field(default=0.1, gt=0)  # drift.breach at this drift score
    webhook_drift_interval_s: float = Field(default=300.0, gt=0)
    webhook_capture_batch_s: float = Field(default=60.0, gt=0)  # capture.new: one per pair per batch

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'controller.db'}"

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_cert_file else "http"
        return self.public_url or f"{scheme}://{self.http_host}:{self.http_port}"

    @property
    def device_mqtt(self) -> dict[str, Any]:
        """Host, port, protocol and TLS of the broker as a device reaches it (provisioning bundles)."""
        host = self.device_mqtt_host or self.mqtt_host
        if self.device_mqtt_host is None and self.public_url and host in _LOOPBACK:
            host = urlsplit(self.public_url).hostname or host
        port = self.device_mqtt_port or (self.mqtt_tls_port if self.mqtt_tls else self.mqtt_port)
        return {"host": host, "port": port, "protocol": self.mqtt_protocol, "tls": self.mqtt_tls}

    @property
    def controller_client_id(self) -> str:
        """The bridge's MQTT client id: ``mqtt_client_id`` as set, or by default
        ``edgefleet-controller-<hostname>-<replica_id>`` — distinct per replica, stable across
        its restarts (so its persistent session resumes)."""
        if self.mqtt_client_id != "edgefleet-controller":
            return self.mqtt_client_id
        import re
        import socket

        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"
        return f"{self.mqtt_client_id}-{host}-{self.replica_id}"

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
    "EDGEFLEET_MQTT_PASSWORD_FILE": "mqtt_password_file",
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
    "EDGEFLEET_REPLICA_ID": "replica_id",
    "EDGEFLEET_GC_GEN0_THRESHOLD": "gc_gen0_threshold",
}


def data_dir_candidates(data_dir: str | os.PathLike[str] | None = None,
                        env: dict[str, str] | None = None, cwd: Path | None = None) -> list[tuple[str, Path]]:
    """Where the controller's data directory may be, in order: ``--data-dir``, ``EDGEFLEET_HOME``,
    the current directory (when it holds a controller.toml), ``~/.edgefleet``."""
    home_var = (os.environ if env is None else env).get("EDGEFLEET_HOME")
    if data_dir:
        return [("--data-dir", Path(data_dir).expanduser().resolve())]
    if home_var:
        return [("EDGEFLEET_HOME", Path(home_var).expanduser().resolve())]
    here = (cwd or Path.cwd()).resolve()
    return [("current directory", here), ("default", Path(DEFAULT_HOME).expanduser().resolve())]


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
                     cwd: Path | None = None) -> Path:
    """``--data-dir``, else ``EDGEFLEET_HOME``, else the current directory if it holds a
    controller.toml, else ``~/.edgefleet``."""
    candidates = data_dir_candidates(data_dir, env, cwd)
    if len(candidates) > 1 and (candidates[0][1] / CONFIG_FILE).is_file():
        return candidates[0][1]
    return candidates[-1][1]


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    text = text or str(annotation).replace("typing.", "").replace("pathlib.", "")
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
            "Path": "a path (string)"}.get(text, text)


def _refuse_unknown(keys: Any, known: Any, where: str, kind: str = "key") -> None:
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
            raise ConfigError(f"{where}: unknown {kind} {key!r}{hint}")


def _validation_message(exc: ValidationError, source: str, values: dict[str, Any]) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = loc[0] if loc else "?"
    section = "capture" if key == "capture" else "controller"
    name = ".".join(loc[1:]) if key == "capture" else key
    field = CloudSettings.model_fields.get(key)
    expected = ""
    if field is not None and key != "capture" and err["type"].endswith(("_type", "_parsing")):
        expected = f"; expected {_type_name(field.annotation)}"
    got = f", got {values.get(key)!r}" if key in values and key != "capture" else ""
    return f"{source}: [{section}] {name}: {err['msg']}{expected}{got}"


def load_settings(data_dir: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None, **overrides: Any) -> CloudSettings:
    """Defaults ← ``{data_dir}/controller.toml`` ← environment ← explicit overrides.

    Raises:
        ConfigError: an unknown key or table (naming it, the file and the closest known key), a value
            of the wrong type (naming key, file and the expected type), an unreadable password file.
    """
    env = dict(os.environ if env is None else env)
    home = resolve_data_dir(data_dir, env)
    values: dict[str, Any] = {"data_dir": home}
    cfg = home / CONFIG_FILE
    source = "environment"
    if cfg.is_file():
        source = str(cfg)
        try:
            with open(cfg, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{cfg}: not valid TOML: {exc}") from None
        _refuse_unknown(data, SECTIONS, str(cfg), "table")
        section = data.get("controller", {})
        _refuse_unknown(section, set(CloudSettings.model_fields) - {"data_dir", "capture"}, f"{cfg}: [controller]")
        values.update(section)
        if "capture" in data:
            _refuse_unknown(data["capture"], CapturePolicy.model_fields, f"{cfg}: [capture]")
            values["capture"] = data["capture"]
    for var, key in _ENV.items():
        if env.get(var):
            values[key] = env[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["data_dir"] = home
    try:
        settings = CloudSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, source, values)) from None
    if settings.mqtt_password_file is not None and settings.mqtt_password is None:
        try:
            password = settings.mqtt_password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{source}: [controller] mqtt_password_file {settings.mqtt_password_file}: {exc}") from None
        settings = settings.model_copy(update={"mqtt_password": password})
    return settings
