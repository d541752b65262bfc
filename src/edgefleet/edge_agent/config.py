"""Agent configuration: a TOML file, overridden by ``EDGEFLEET_AGENT_<SECTION>_<KEY>`` variables.

Example::

    [agent]
    device_id = "truck-017"
    data_dir = "/var/lib/edgefleet"
    controller_url = "https://fleet.example.org"
    token = "efd_..."

    [mqtt]
    host = "broker.example.org"
    port = 8883

    [source]
    kind = "camera"      # synthetic-digits | video | camera
    uri = "0"            # file path, camera index or rtsp:// URL
    fps = 15

    [capture]            # clips of disagreements / low confidence (docs/capture.md)
    outbox_dir = "/var/lib/edgefleet/outbox"
    max_bytes = 2147483648

    [output]             # control predictions for local applications
    socket = "unix:/run/edgefleet/predictions.sock"   # or tcp:127.0.0.1:7070, or "" (off)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on JetPack 6
    import tomli as tomllib

ENV_PREFIX = "EDGEFLEET_AGENT_"


class AgentSection(BaseModel):
    device_id: str = Field(min_length=1, max_length=128)
    data_dir: Path = Path("/var/lib/edgefleet")
    controller_url: str = "http://127.0.0.1:8080"
    token: str = ""
    hardware_id: str = "auto"
    health_window_s: float = Field(default=10.0, ge=0)
    trust_roots: Path | None = Field(default=None, description="directory with director-root.json and image-root.json (provisioning)")
    download_gap_timeout_s: float = Field(default=30.0, gt=0)
    download_deadline_s: float = Field(default=3600.0, gt=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="serve Prometheus counters on 127.0.0.1:PORT (0 = any free port)")
    ca_file: Path | None = Field(default=None, description="CA certificate (PEM) the https:// controller must chain to (the fleet CA); system CAs when unset")
    log_level: str = "INFO"


class MqttSection(BaseModel):
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    username: str | None = None
    password: str | None = None
    keepalive: int = Field(default=30, ge=5)
    # TLS (docs/tls.md): the broker's certificate is verified (chain and host name) unless tls_insecure
    tls: bool = False  # implied by ca_file / cert_file
    ca_file: Path | None = None  # CA the broker's certificate must chain to (system CAs when unset)
    cert_file: Path | None = None  # this device's client certificate from the fleet CA (CN = device id)
    key_file: Path | None = None
    tls_insecure: bool = False  # skip the host-name check (never the chain); for a broker reached by a bare IP

    @model_validator(mode="after")
    def _tls_files(self) -> MqttSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.ca_file is not None or self.cert_file is not None:
            self.tls = True  # naming a CA or a client certificate and then talking in clear would be a trap
        if self.tls_insecure and not self.tls:
            raise ValueError("tls_insecure without tls")
        return self


class SourceSection(BaseModel):
    kind: Literal["synthetic-digits", "video", "camera"] = "synthetic-digits"
    uri: str = ""
    fps: float = Field(default=15.0, gt=0, le=1000)
    loop: bool = True
    seed: int | None = None


class InferenceSection(BaseModel):
    threads: int = Field(default=1, ge=1, le=64)
    # Python's GIL switch interval: short, so the control thread never waits long behind the
    # shadow thread's Python code (5 ms by default in CPython; 0 = leave it alone).
    switch_interval_ms: float = Field(default=0.5, ge=0, le=100)


class CaptureSection(BaseModel):
    """Device-side capture limits; what to capture comes from ``Desired.settings.capture``."""

    enabled: bool = True
    outbox_dir: Path | None = None  # default: <data_dir>/outbox
    max_bytes: int = Field(default=1024**3, gt=256 * 1024)
    min_free_bytes: int = Field(default=256 * 1024**2, ge=0)
    max_side: int = Field(default=640, ge=16)
    cooldown_s: float = Field(default=10.0, ge=0)
    dedupe_threshold: float = Field(default=0.02, ge=0)
    near_band: float = Field(default=0.05, ge=0, le=1)
    shadow_queue: int = Field(default=8, ge=1, le=1024)
    upload: bool = True
    upload_poll_s: float = Field(default=2.0, gt=0)
    upload_chunk_bytes: int = Field(default=256 * 1024, ge=4096)
    backoff_max_s: float = Field(default=300.0, gt=0)


class OutputSection(BaseModel):
    """Where local applications read control predictions (see ``app_output.py``)."""

    socket: str = "unix:predictions.sock"  # relative paths are under data_dir; "" = off
    client_queue: int = Field(default=64, ge=1)


class AgentConfig(BaseModel):
    agent: AgentSection
    mqtt: MqttSection = Field(default_factory=MqttSection)
    source: SourceSection = Field(default_factory=SourceSection)
    inference: InferenceSection = Field(default_factory=InferenceSection)
    capture: CaptureSection = Field(default_factory=CaptureSection)
    output: OutputSection = Field(default_factory=OutputSection)

    @property
    def device_id(self) -> str:
        return self.agent.device_id


def _apply_env(raw: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    sections = set(AgentConfig.model_fields)
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX):].lower()
        section, _, key = rest.partition("_")
        if section in sections and key:
            raw.setdefault(section, {})[key] = value
    return raw


def load_config(path: str | os.PathLike[str] | None, env: dict[str, str] | None = None) -> AgentConfig:
    """Read the TOML file (if any) and apply environment overrides.

    Raises:
        ConfigError: unreadable file or invalid values, naming the field.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read agent config {path}: {exc}") from None
    raw = _apply_env(raw, dict(os.environ if env is None else env))
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"agent config: {field}: {err['msg']}") from None


def write_config(config: AgentConfig, path: str | os.PathLike[str]) -> None:
    """Write a config as TOML (used by the demo and ``fleet device add --write-config``)."""
    lines: list[str] = []
    for section, model in config:
        lines.append(f"[{section}]")
        for key, value in model.model_dump(mode="json").items():
            if value is None:
                continue
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                lines.append(f"{key} = {value}")
            else:
                escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'{key} = "{escaped}"')
        lines.append("")
    Path(path).write_text("\n".join(lines))
