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

    [signals]            # sidecar signals (CAN, ROS, GPS) as per-frame context (signal_source.py)
    socket = "unix:signals.sock"   # datagrams, mode 0600; or udp:127.0.0.1:7071, or "" (off)
    max_age_s = 0.5      # a signal older than this at a frame is left out of its context
    max_rate_hz = 2000   # samples parsed a second; past it the reader pauses (a flooding writer)

    [network]            # link kind and bandwidth caps (docs: network policy)
    link = "metered"     # auto | metered | unmetered; or link_command = "/usr/local/bin/link-kind"
    max_download_bps = 500000
"""

from __future__ import annotations

import difflib
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .isolation import parse_cpus

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on JetPack 6
    import tomli as tomllib

ENV_PREFIX = "EDGEFLEET_AGENT_"


class _Section(BaseModel):
    """A table of agent.toml: a key it does not know is an error (a typo must not fall back to a default)."""

    model_config = ConfigDict(extra="forbid")


class AgentSection(_Section):
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
    cache_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$",
                                  description="depot cache (`fleet-agent cache serve`) tried first for image metadata and "
                                              "bundles; untrusted: everything is verified, and the controller is asked "
                                              "when it is absent or serves bad bytes")
    log_level: str = "INFO"


class MqttSection(_Section):
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


class SourceSection(_Section):
    kind: Literal["synthetic-digits", "video", "camera"] = "synthetic-digits"
    uri: str = ""
    fps: float = Field(default=15.0, gt=0, le=1000)
    loop: bool = True
    seed: int | None = None


class InferenceSection(_Section):
    threads: int = Field(default=1, ge=1, le=64)
    # Python's GIL switch interval: short, so the control thread never waits long behind the
    # shadow thread's Python code (5 ms by default in CPython; 0 = leave it alone).
    switch_interval_ms: float = Field(default=0.5, ge=0, le=100)


class PipelineSection(_Section):
    """How the control path is kept apart from the shadow and capture threads (``isolation.py``)."""

    # CPUs of the shadow and clip-encoder threads: "auto" = every allowed CPU but the first
    # (kept for the control thread) where at least 2 remain; "off"; or a list like "2,3" / "2-5"
    shadow_cpus: str = "auto"
    control_cpus: str = ""  # pin the control thread here ("" = the scheduler moves it freely)
    shadow_sched_idle: bool = True  # SCHED_IDLE for the background threads (nice 19 where refused)
    shadow_nice: int = Field(default=19, ge=0, le=19)
    ort_allow_spinning: bool = False  # the shadow ONNX Runtime session's threads spin while idle

    @field_validator("shadow_cpus", "control_cpus")
    @classmethod
    def _cpus(cls, value: str) -> str:
        parse_cpus(value)  # ValueError names the part that is wrong
        return value


class CaptureSection(_Section):
    """Device-side capture limits; what to capture comes from ``Desired.settings.capture``."""

    enabled: bool = True
    outbox_dir: Path | None = None  # default: <data_dir>/outbox
    max_bytes: int = Field(default=1024**3, gt=256 * 1024)
    min_free_bytes: int = Field(default=256 * 1024**2, ge=0)
    max_side: int = Field(default=640, ge=16)
    cooldown_s: float = Field(default=10.0, ge=0)
    dedupe_threshold: float = Field(default=0.02, ge=0)
    near_band: float = Field(default=0.05, ge=0, le=1)
    shadow_queue: int = Field(default=1, ge=1, le=1024)  # frames waiting for the shadow path; the oldest is shed
    upload: bool = True
    upload_poll_s: float = Field(default=2.0, gt=0)
    upload_chunk_bytes: int = Field(default=256 * 1024, ge=4096)
    backoff_max_s: float = Field(default=300.0, gt=0)


class OutputSection(_Section):
    """Where local applications read control predictions (see ``app_output.py``)."""

    socket: str = "unix:predictions.sock"  # relative paths are under data_dir; "" = off
    client_queue: int = Field(default=64, ge=1)


class SignalsSection(_Section):
    """Where another process writes sidecar signal samples (see ``signal_source.py``)."""

    socket: str = "unix:signals.sock"  # relative paths are under data_dir; "" = off
    max_age_s: float = Field(default=0.5, gt=0, le=3600)
    max_keys: int = Field(default=32, ge=1, le=32)
    max_rate_hz: float = Field(default=2000.0, gt=0, le=100000)  # samples parsed a second; more are dropped


class NetworkSection(_Section):
    """The device's link and its own bandwidth caps (``network.py``; the signed policy may lower them)."""

    link: Literal["auto", "metered", "unmetered"] = "auto"  # auto: NetworkManager's flag where nmcli exists
    link_command: str = Field(default="", max_length=1024,
                              description="command (no shell) printing 'metered' or 'unmetered' [interface]")
    interface: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@-]{1,32}$")
    probe_interval_s: float = Field(default=10.0, gt=0, le=3600)
    max_download_bps: int | None = Field(default=None, ge=1024)
    max_upload_bps: int | None = Field(default=None, ge=1024)

    @model_validator(mode="after")
    def _one_source(self) -> NetworkSection:
        if self.link_command and self.link != "auto":
            raise ValueError("set link or link_command, not both")
        return self


class AgentConfig(_Section):
    agent: AgentSection
    mqtt: MqttSection = Field(default_factory=MqttSection)
    source: SourceSection = Field(default_factory=SourceSection)
    inference: InferenceSection = Field(default_factory=InferenceSection)
    capture: CaptureSection = Field(default_factory=CaptureSection)
    pipeline: PipelineSection = Field(default_factory=PipelineSection)
    output: OutputSection = Field(default_factory=OutputSection)
    signals: SignalsSection = Field(default_factory=SignalsSection)
    network: NetworkSection = Field(default_factory=NetworkSection)

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


def _section_model(section: str) -> type[BaseModel] | None:
    field = AgentConfig.model_fields.get(section)
    ann = field.annotation if field is not None else None
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _is_path(annotation: Any) -> bool:
    if annotation is Path:
        return True
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and Path in typing.get_args(annotation)


def _resolve_relative(raw: dict[str, Any], base: Path) -> None:
    """Relative paths in the file are relative to the file's directory (a bundle works wherever it lies)."""
    for section, values in raw.items():
        model = _section_model(section)
        if model is None or not isinstance(values, dict):
            continue
        for key, value in values.items():
            field = model.model_fields.get(key)
            if field is not None and _is_path(field.annotation) and isinstance(value, str) and value \
                    and not Path(value).expanduser().is_absolute():
                values[key] = str(base / value)


def _refuse_unknown(raw: dict[str, Any], source: str) -> None:
    def refuse(key: str, known: list[str], where: str, kind: str) -> None:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
        raise ConfigError(f"{source}: unknown {kind} {where}{key!r}{hint}")

    for section, values in raw.items():
        model = _section_model(section)
        if model is None:
            refuse(section, list(AgentConfig.model_fields), "", "table")
        assert model is not None
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table, got {values!r}")
        for key in values:
            if key not in model.model_fields:
                refuse(key, list(model.model_fields), f"in [{section}]: ", "key")


def _type_name(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            Path: "a path (string)"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def load_config(path: str | os.PathLike[str] | None, env: dict[str, str] | None = None) -> AgentConfig:
    """Read the TOML file (if any) and apply environment overrides.

    Relative paths in the file are taken relative to the file's directory.

    Raises:
        ConfigError: unreadable file, an unknown table or key (named, with the file and the closest
            known key), or an invalid value (naming key, file and the expected type).
    """
    raw: dict[str, Any] = {}
    source = "agent config (environment)"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read agent config {path}: {exc}") from None
        _refuse_unknown(raw, source)
        _resolve_relative(raw, Path(path).resolve().parent)
    file_values = {k: dict(v) for k, v in raw.items() if isinstance(v, dict)}
    raw = _apply_env(raw, dict(os.environ if env is None else env))
    _refuse_unknown(raw, f"{source} + {ENV_PREFIX}* environment" if path is not None else f"{ENV_PREFIX}* environment")
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc)  # section.key
        expected = ""
        model = _section_model(loc[0]) if loc else None
        if model is not None and len(loc) == 2 and loc[1] in model.model_fields and \
                err["type"].endswith(("_type", "_parsing", "literal_error")):
            expected = f"; expected {_type_name(model.model_fields[loc[1]].annotation)}"
        got = ""
        if len(loc) == 2 and loc[1] in raw.get(loc[0], {}):
            origin = "" if loc[1] in file_values.get(loc[0], {}) else " (from the environment)"
            got = f", got {raw[loc[0]][loc[1]]!r}{origin}"
        raise ConfigError(f"{source}: {where}: {err['msg']}{expected}{got}") from None


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
