"""Database tables (SQLModel) and the public shapes the API returns.

Per entity: the table, and a ``…Public`` model for the wire, so the wire shape is not
the table (token hashes never leave the database).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import Field as PydanticField
from pydantic import StringConstraints, model_validator
from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

# model names and versions: no path separators, no leading dot or dash (they name blobs, TUF targets, files)
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MODEL_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # NAME:VERSION (128/64)
MODEL_REF_MAX = 128 + 1 + 64


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Device(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=128)
    hardware_id: str = Field(default="unknown", max_length=128, index=True)
    tags: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    token_hash: str | None = Field(default=None, max_length=128)
    online: bool = False
    last_seen: datetime | None = None
    agent_version: str = ""
    desired_generation: int = 0
    reported_generation: int | None = None
    reported: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    reported_at: datetime | None = None
    telemetry: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    telemetry_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    director_generation: int = 0  # desired generation the director last signed for
    release_floor: dict[str, int] | None = Field(default=None, sa_column=Column(JSON))  # slot → highest counter signed
    # identity (cloud/devices/identity.py): broker password in mosquitto's $7$ format, client
    # certificate serial, revocation, and a credentials rotation in flight
    mqtt_password_hash: str | None = Field(default=None, max_length=256)
    cert_serial: str | None = Field(default=None, max_length=64)
    revoked_at: datetime | None = None
    credentials_epoch: int = 0  # bumped by `fleet device rotate-credentials`; the device fetches new ones
    pending_token_hash: str | None = Field(default=None, max_length=128)
    pending_mqtt_password_hash: str | None = Field(default=None, max_length=256)
    # signed reports (cloud/devices/report_verify.py): the device's Ed25519 report key, the highest
    # accepted seq per channel, the end of the last counted telemetry period, and a hardware
    # id a signed `reported` claimed that an operator has not approved yet
    report_public_key: str | None = Field(default=None, max_length=64)
    report_key_id: str | None = Field(default=None, max_length=32)
    report_seq: int | None = Field(default=None, sa_type=BigInteger)
    telemetry_seq: int | None = Field(default=None, sa_type=BigInteger)
    report_period_end: datetime | None = None
    # the anti-replay window below each highest seq (cloud/devices/replay_window.py): bit i set
    # when seq highest-1-i was accepted too (a late message, e.g. another replica committed first)
    report_window: int | None = Field(default=None, sa_type=BigInteger)
    telemetry_window: int | None = Field(default=None, sa_type=BigInteger)
    hardware_id_reported: str | None = Field(default=None, max_length=128)
    # freshness (cloud/trust/freshness.py): the director version signed for the device, since when
    # its signed state (reported director version, generation) lags what was signed, and,
    # once that lasted longer than [controller] stale_after_s, why it is stale
    director_version: int = 0
    lagging_since: datetime | None = None
    stale_since: datetime | None = None
    stale_reason: str | None = Field(default=None, max_length=1024)


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, index=True)
    version: str = Field(max_length=64)
    digest: str = Field(max_length=64, index=True)
    size: int
    task: str = "classification"
    manifest: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    release_counter: int = 0
    target_name: str | None = Field(default=None, max_length=256)  # the signed TUF image target
    created_at: datetime = Field(default_factory=utcnow)
    # lifecycle (cloud/lifecycle.py, migration 0012): blocked = never deployed or rolled out
    # again; deprecated = allowed with a warning. Who pushed it, and the sha256 of its ONNX
    # bytes (the same model pushed again under another version is noticed)
    status: str = Field(default="active", max_length=16, index=True)
    status_reason: str | None = Field(default=None, max_length=1024)
    status_by: str | None = Field(default=None, max_length=128)
    status_at: datetime | None = None
    pushed_by: str | None = Field(default=None, max_length=128)
    model_sha256: str | None = Field(default=None, max_length=64, index=True)


class SlotAssignment(SQLModel, table=True):
    __tablename__ = "slot_assignment"

    device_id: str = Field(primary_key=True, foreign_key="device.id", max_length=128)
    slot: str = Field(primary_key=True, max_length=16)
    model_version_id: int = Field(foreign_key="model_version.id")
    rollout_id: str | None = Field(default=None, max_length=64)
    assigned_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    role: str = Field(default="admin", max_length=16)
    token_hash: str = Field(max_length=128, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    expires_at: datetime | None = None


# ----- public shapes -----


ModelStatus = Literal["active", "deprecated", "blocked"]
MODEL_STATUSES: tuple[str, ...] = ("active", "deprecated", "blocked")


class ModelVersionPublic(SQLModel):
    name: str
    version: str
    digest: str
    size: int
    task: str
    labels: list[str] = []
    release_counter: int = 0
    created_at: datetime
    # lifecycle and provenance (cloud/lifecycle.py)
    status: ModelStatus = "active"
    status_reason: str | None = None
    status_by: str | None = None
    status_at: datetime | None = None
    pushed_by: str | None = None  # the API token that pushed it
    model_sha256: str | None = None  # sha256 of the ONNX bytes (digest is the bundle's)
    provenance: dict[str, Any] = {}  # manifest provenance: CLI user / MLflow run id, tracking URI …
    running: dict[str, int] = {}  # slot → devices whose signed report says they run it now
    notes: list[str] = []  # push: e.g. "the same model bytes are blocked as NAME:VERSION"

    @classmethod
    def of(cls, mv: ModelVersion, *, running: dict[str, int] | None = None,
           notes: list[str] | None = None) -> ModelVersionPublic:
        return cls(
            name=mv.name, version=mv.version, digest=mv.digest, size=mv.size, task=mv.task,
            labels=list(mv.manifest.get("labels", [])), release_counter=mv.release_counter,
            created_at=mv.created_at, status=mv.status if mv.status in MODEL_STATUSES else "active",  # type: ignore[arg-type]
            status_reason=mv.status_reason, status_by=mv.status_by, status_at=mv.status_at,
            pushed_by=mv.pushed_by, model_sha256=mv.model_sha256,
            provenance=dict(mv.manifest.get("provenance") or {}), running=running or {}, notes=notes or [],
        )


class SlotPublic(SQLModel):
    desired: str | None = None
    installed: str | None = None
    phase: str | None = None
    error_code: str | None = None
    error: str | None = None
    model_status: ModelStatus | None = None  # of the installed version, when not active (deprecated/blocked)
    model_status_reason: str | None = None
    window_opens_at: datetime | None = None  # phase awaiting_window: its next maintenance window (device's clock)


class DevicePublic(SQLModel):
    id: str
    hardware_id: str
    tags: dict[str, str]
    online: bool
    last_seen: datetime | None
    agent_version: str
    desired_generation: int
    reported_generation: int | None
    slots: dict[str, SlotPublic]
    telemetry: dict[str, Any] | None
    telemetry_at: datetime | None
    revoked_at: datetime | None = None
    credentials_epoch: int = 0
    report_key_id: str | None = None  # the registered report key (signed reports), None: none yet
    hardware_id_reported: str | None = None  # claimed by a signed report, awaiting `fleet device approve-hardware`
    # freshness (cloud/trust/freshness.py): stale = its signed state lagged the desired state
    # longer than [controller] stale_after_s; never counted healthy while stale
    director_version: int = 0  # the director version signed for the device
    reported_director_version: int | None = None  # the director version the device holds (signed report)
    stale: bool = False
    stale_since: datetime | None = None
    stale_reason: str | None = None
    update_blocked: dict[str, Any] | None = None  # the device's own word on why an update did not happen


_DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"  # protocols.topics: what MQTT topics allow
_TAG_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$"
_TAG_VALUE = r"^[A-Za-z0-9_.:@/+\-]{1,128}$"
DeviceIdStr = Annotated[str, StringConstraints(pattern=_DEVICE_ID, max_length=128)]


class DeviceCreate(SQLModel):
    id: DeviceIdStr = Field(description="letters, digits, '.', '_' or '-' (at most 128), starting with a letter or digit")
    hardware_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "unknown"
    tags: Annotated[dict[Annotated[str, StringConstraints(pattern=_TAG_KEY, max_length=63)],
                         Annotated[str, StringConstraints(pattern=_TAG_VALUE, max_length=128)]],
                    PydanticField(max_length=64)] = {}
    certificate: bool = False  # also issue an X.509 client certificate from the fleet CA
    report_public_key: str | None = Field(default=None, max_length=512)  # Ed25519, base64 or PEM (signed reports)


class DeviceCreated(SQLModel):
    """A device's credentials, shown once: HTTP token, broker account, optional certificate."""

    id: str
    token: str
    mqtt_username: str
    mqtt_password: str
    credentials_epoch: int = 0
    cert_pem: str | None = None
    key_pem: str | None = None


class DeploymentCreate(SQLModel):
    """``devices`` (at least one) or ``all: true``."""

    model_config = {"json_schema_extra": {"anyOf": [  # type: ignore[typeddict-unknown-key]
        {"properties": {"all": {"const": True}}, "required": ["all"]},
        {"properties": {"devices": {"minItems": 1}}, "required": ["devices"]}]}}

    model: Annotated[str, StringConstraints(
        pattern=MODEL_REF_PATTERN, max_length=MODEL_REF_MAX)] = Field(description="NAME:VERSION")
    slot: Literal["control", "shadow"] = "control"
    devices: Annotated[list[DeviceIdStr], PydanticField(max_length=10_000)] = []
    all: bool = False

    @model_validator(mode="after")
    def _devices_or_all(self) -> DeploymentCreate:
        if not self.all and not self.devices:
            raise ValueError("name devices or set all=true")
        return self


class DeploymentResult(SQLModel):
    model: str
    slot: str
    devices: list[str]
    warnings: list[str] = []  # e.g. the version is deprecated (allowed, said)
