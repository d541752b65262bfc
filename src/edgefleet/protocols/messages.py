"""Versioned pydantic schemas for every MQTT payload, and their encoding.

Every payload is a JSON object with a ``schema`` field (``"fleet.reported/1"``).
``decode`` turns bytes into the matching model or raises ``InvalidPayload`` naming
the offending field; it never raises anything else, so a bad payload can be counted
and dropped without harming the process that received it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from enum import Enum
from itertools import accumulate
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from . import fast_json
from .campaigns import (
    MAX_CAMPAIGNS,
    MAX_SETTINGS_EMBEDDING_BYTES,
    CampaignName,
    CampaignSpec,
    Context,
)
from .canonical import SignedReport
from .embedding import Embedding
from .errors import InvalidPayload, PayloadTooLarge
from .windows import MaintenancePolicy

DIGEST_PATTERN = r"^[0-9a-f]{64}$"
Digest = Annotated[str, Field(pattern=DIGEST_PATTERN)]
SlotName = Literal["control", "shadow"]
SLOTS: tuple[SlotName, ...] = ("control", "shadow")

# Maps whose keys a device chooses (class labels, hardware probes): bounded in number and
# key length, so one message cannot put an unbounded blob into the database.
MAX_OPEN_KEYS = 1024
MAX_HARDWARE_KEYS = 256
MAX_KEY_LENGTH = 128
OpenKey = Annotated[str, StringConstraints(max_length=MAX_KEY_LENGTH)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
OpenCounts = Annotated[dict[OpenKey, Count], Field(max_length=MAX_OPEN_KEYS)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _finite_tree(value: Any, depth: int = 0) -> Any:
    """Free-form values (hardware probes) carry no NaN/±inf either, however nested."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("Input should be a finite number")
    if depth < 8 and isinstance(value, dict):
        for v in value.values():
            _finite_tree(v, depth + 1)
    elif depth < 8 and isinstance(value, list):
        for v in value:
            _finite_tree(v, depth + 1)
    return value


FiniteAny = Annotated[Any, AfterValidator(_finite_tree)]


class _Message(BaseModel):
    # NaN and ±inf are refused in every float field of every message (subclasses' configs merge
    # with this): a non-finite latency is an invalid message, counted, never a row PostgreSQL refuses.
    # NaN *counts* (nan_outputs) are ints.
    model_config = ConfigDict(extra="ignore", frozen=False, allow_inf_nan=False)


class ModelRef(_Message):
    """One model version, identified by the sha256 of its bundle."""

    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    digest: Digest

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


class Phase(str, Enum):
    """Deployment phase of one slot on one device (DESIGN: lifecycle)."""

    IDLE = "idle"
    NOTIFIED = "notified"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    PREPARING = "preparing"
    WAITING_FOR_WINDOW = "awaiting_window"  # downloaded and verified; switches in a maintenance window
    ACTIVE = "active"
    HEALTHY = "healthy"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


class SlotTarget(ModelRef):
    """What the controller wants in one slot. ``path`` is relative to the controller URL."""

    size: int = Field(ge=0)
    path: str = Field(max_length=512)
    release_counter: int = Field(default=0, ge=0)


class CapturePolicy(_Message):
    """What a device captures, sent by the controller in ``Desired.settings.capture``.

    ``cooldown_s``, ``dedupe_threshold`` and ``near_band`` left at ``None`` keep the
    device's own values (its ``[capture]`` config section).
    """

    low_confidence: bool = True
    disagreement: bool = True
    sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    max_per_minute: int = Field(default=6, ge=0)
    max_per_hour: int = Field(default=60, ge=0)
    max_per_day: int = Field(default=500, ge=0)
    max_bytes_per_day: int = Field(default=200 * 1024 * 1024, ge=0)
    pre_seconds: float = Field(default=2.0, ge=0)
    post_seconds: float = Field(default=1.0, ge=0)
    cooldown_s: float | None = Field(default=None, ge=0)
    dedupe_threshold: float | None = Field(default=None, ge=0)
    near_band: float | None = Field(default=None, ge=0, le=1)


InterfaceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@-]{1,32}$")]
LinkKind = Literal["metered", "unmetered", "unknown"]


class NetworkPolicy(_Message):
    """When and how fast a device moves bundles and clips (signed with the device's settings).

    ``download``: ``any`` link; ``unmetered`` links only (a metered or unknown link defers
    bundle downloads and clip uploads; events, metadata and reports still go); or
    ``interfaces``: only over one of ``interfaces``. Caps are bytes/s (None: no cap); the
    device uses the lower of these and its own ``[network]`` config.
    """

    download: Literal["any", "unmetered", "interfaces"] = "any"
    interfaces: list[InterfaceName] = Field(default_factory=list, max_length=32)
    max_download_bps: int | None = Field(default=None, ge=1024)
    max_upload_bps: int | None = Field(default=None, ge=1024)

    @model_validator(mode="after")
    def _interfaces_named(self) -> NetworkPolicy:
        if self.download == "interfaces" and not self.interfaces:
            raise ValueError("download = 'interfaces' needs at least one interface name")
        return self


class DeviceSettings(_Message):
    telemetry_period_s: float = Field(default=10.0, gt=0, le=3600)
    capture: CapturePolicy = Field(default_factory=CapturePolicy)
    network_policy: NetworkPolicy = Field(default_factory=NetworkPolicy)
    campaigns: list[CampaignSpec] = Field(default_factory=list, max_length=MAX_CAMPAIGNS)  # running, this device's
    maintenance: MaintenancePolicy = Field(default_factory=MaintenancePolicy)  # when the device may switch

    @model_validator(mode="after")
    def _like_vectors_bounded(self) -> DeviceSettings:
        total = sum(c.like.nbytes for c in self.campaigns if c.like is not None)
        if total > MAX_SETTINGS_EMBEDDING_BYTES:
            raise ValueError(f"the campaigns' like vectors take {total} bytes; at most "
                             f"{MAX_SETTINGS_EMBEDDING_BYTES} per device")
        return self


class LinkReport(_Message):
    """The device's network link as it sees it, in telemetry: kind, interface, and how it knows."""

    kind: LinkKind = "unknown"
    interface: InterfaceName | None = None
    source: Literal["config", "command", "networkmanager", "none"] = "none"


class Desired(_Message):
    """cloud → device, retained. A hint: what to install per slot, and settings."""

    schema_: Literal["fleet.desired/1"] = Field(default="fleet.desired/1", alias="schema")
    device_id: str
    generation: int = Field(ge=0)
    director_version: int | None = Field(default=None, ge=0)
    credentials_epoch: int = Field(default=0, ge=0)  # higher than the device's: fetch new credentials
    slots: dict[SlotName, SlotTarget | None] = Field(default_factory=dict)
    settings: DeviceSettings = Field(default_factory=DeviceSettings)
    issued_at: datetime = Field(default_factory=utcnow)

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class SlotReport(_Message):
    installed: ModelRef | None = None
    target: ModelRef | None = None
    last_known_good: ModelRef | None = None
    phase: Phase = Phase.IDLE
    error_code: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, max_length=2000)
    release_counter: int = Field(default=0, ge=0)
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    # with error_code E_DISK_FULL: bytes the deployment step needs, and bytes free there
    bytes_needed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    bytes_free: int | None = Field(default=None, ge=0, le=2**63 - 1)
    window_opens_at: datetime | None = None  # with phase waiting_for_window: the next window start


class DiskShortage(_Message):
    """A device-wide write that failed for lack of space (``E_DISK_FULL``): what could not be
    written (``state``, ``outbox``, ``report-seq`` …), where, and the bytes it needs and has."""

    code: Literal["E_DISK_FULL"] = "E_DISK_FULL"
    what: str = Field(max_length=64)
    path: str = Field(default="", max_length=512)
    bytes_needed: int = Field(default=0, ge=0, le=2**63 - 1)
    bytes_free: int = Field(default=0, ge=0, le=2**63 - 1)
    reason: str = Field(default="", max_length=2000)
    since: datetime | None = None


InventoryText = Annotated[str, StringConstraints(max_length=256)]


class Inventory(_Message):
    """What the device is (optional in ``reported``; older agents leave it out, older
    controllers ignore it): agent, OS and JetPack/L4T, Python, inference runtimes and
    providers, disk (of the agent's data directory) and memory. Device-supplied text: shown
    escaped, never trusted."""

    agent_version: InventoryText = ""
    os: InventoryText = ""
    kernel: InventoryText = ""
    l4t: InventoryText | None = None
    jetpack: InventoryText | None = None
    python: InventoryText = ""
    tensorrt: InventoryText | None = None
    onnxruntime: InventoryText | None = None
    providers: list[InventoryText] = Field(default_factory=list, max_length=32)
    disk_total_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1)
    disk_free_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1)
    memory_total_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1)
    memory_available_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1)


class HeldMetadata(_Message):
    """The verified TUF metadata a device holds for one repository (director or image)."""

    version: int = Field(ge=0)  # top-level targets version (director: the director version)
    timestamp_version: int | None = Field(default=None, ge=0)
    expires: datetime | None = None  # the earliest expiry of the timestamp, snapshot and targets held


class UpdateBlocked(_Message):
    """Why the device did not do what the last hint asked: hint unconfirmed by signed
    metadata, metadata refused (stale, expired, …) or a deployment refused, with its code."""

    code: str = Field(max_length=64)
    reason: str = Field(default="", max_length=2000)
    since: datetime | None = None


class Reported(SignedReport, _Message):
    """device → cloud. What is installed per slot and how far each deployment got.

    ``generation`` is the generation the director's *signed* metadata names (never the
    hint's); ``director``/``image`` say which signed metadata the device holds, and
    ``update_blocked`` why an update did not happen. All covered by the report signature.
    """

    schema_: Literal["fleet.reported/1"] = Field(default="fleet.reported/1", alias="schema")
    device_id: str
    generation: int = Field(ge=0)
    hardware_id: str = "cpu-generic"
    agent_version: str = ""
    slots: dict[SlotName, SlotReport] = Field(default_factory=dict)
    ts: datetime = Field(default_factory=utcnow)
    director: HeldMetadata | None = None
    image: HeldMetadata | None = None
    update_blocked: UpdateBlocked | None = None
    disk: DiskShortage | None = None  # a write the device cannot do for lack of space, if any
    inventory: Inventory | None = None  # what the device is (agent, OS/JetPack, runtimes, disk, memory)

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class LatencyStats(_Message):
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    mean: float = 0.0
    max: float = 0.0


class ShadowStats(_Message):
    candidate: ModelRef | None = None
    frames: int = Field(default=0, ge=0)
    dropped: int = Field(default=0, ge=0)
    disagreements: int = Field(default=0, ge=0)
    agreement: float | None = Field(default=None, ge=0.0, le=1.0)
    per_class_disagreements: OpenCounts = Field(default_factory=dict)
    latency_ms: LatencyStats = Field(default_factory=LatencyStats)
    confusion: dict[OpenKey, OpenCounts] = Field(default_factory=dict, max_length=MAX_OPEN_KEYS)
    nan_outputs: int = Field(default=0, ge=0)  # compared frames where the candidate's output was not finite
    errors: int = Field(default=0, ge=0)  # frames the candidate failed on (inference or output decoding)


class Telemetry(SignedReport, _Message):
    """device → cloud, QoS 0. Aggregates over one period."""

    schema_: Literal["fleet.telemetry/1"] = Field(default="fleet.telemetry/1", alias="schema")
    device_id: str
    period_start: datetime
    period_end: datetime
    control: ModelRef | None = None
    frames: int = Field(default=0, ge=0)
    fps: float = Field(default=0.0, ge=0.0)
    errors: int = Field(default=0, ge=0)
    nan_outputs: int = Field(default=0, ge=0)
    latency_ms: LatencyStats = Field(default_factory=LatencyStats)
    class_counts: OpenCounts = Field(default_factory=dict)
    confidence_histogram: list[int] = Field(default_factory=list, max_length=100)
    shadow: ShadowStats | None = None
    hardware: dict[OpenKey, FiniteAny] = Field(default_factory=dict, max_length=MAX_HARDWARE_KEYS)
    link: LinkReport | None = None  # metered / unmetered (network policy)

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class ModelOutput(_Message):
    model: ModelRef | None = None
    label: str | None = None
    score: float | None = None
    scores: list[float] = Field(default_factory=list, max_length=1000)


class Event(_Message):
    """device → cloud, one small record per capture."""

    schema_: Literal["fleet.event/1"] = Field(default="fleet.event/1", alias="schema")
    device_id: str
    event_id: str = Field(min_length=1, max_length=64)
    ts: datetime = Field(default_factory=utcnow)
    trigger: str = Field(max_length=32)
    priority: int = 0
    control: ModelOutput = Field(default_factory=ModelOutput)
    candidate: ModelOutput | None = None
    clip_id: str | None = Field(default=None, max_length=64)
    frame_index: int | None = None
    campaign: CampaignName | None = None  # the capture campaign this capture counts for
    context: Context | None = None  # the application's per-frame context (device-supplied)
    # the control model's manifest-named embedding of the captured frame (protocols/embedding.py)
    embedding: Embedding | None = None

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class Status(_Message):
    """device → cloud, retained; also the last will (``online=false``)."""

    schema_: Literal["fleet.status/1"] = Field(default="fleet.status/1", alias="schema")
    device_id: str
    online: bool
    ts: datetime = Field(default_factory=utcnow)
    agent_version: str = ""
    hardware_id: str = ""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


Message = Union[Desired, Reported, Telemetry, Event, Status]
M = TypeVar("M", Desired, Reported, Telemetry, Event, Status)

SCHEMAS: dict[str, type[BaseModel]] = {
    "fleet.desired/1": Desired,
    "fleet.reported/1": Reported,
    "fleet.telemetry/1": Telemetry,
    "fleet.event/1": Event,
    "fleet.status/1": Status,
}

DEFAULT_MAX_BYTES = 256 * 1024
MAX_DEPTH = 32  # arrays and objects nested deeper than this are refused before parsing

# In UTF-8 the bytes '"', '\\' and the brackets never occur inside a multi-byte character,
# so a byte-level scan is exact on valid text.
_ESCAPE = re.compile(rb"\\.", re.S)  # one escape sequence's first two bytes (\" and \\ matter)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SIGNED_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


def encode(message: BaseModel) -> bytes:
    """Serialize a message to compact JSON bytes, ``schema`` field included."""
    return message.model_dump_json(by_alias=True, exclude_none=False).encode()


def _first_error_field(exc: ValidationError) -> tuple[str | None, str]:
    errors = exc.errors()
    if not errors:
        return None, str(exc)
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    return (loc or None), first.get("msg", "invalid")


def nesting_depth(data: bytes) -> int:
    """How deep arrays and objects nest in ``data`` (UTF-8 JSON), counted without parsing.

    Linear in the payload: escapes are cut out, then everything between quotes, then the
    brackets left are summed. Exact on valid JSON; on invalid JSON it may over- or
    under-count after the first error, which the parser reports anyway before it could
    nest any deeper.
    """
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    outside = b"".join(data.split(b'"')[::2])  # even pieces lie outside string literals
    brackets = outside.translate(None, _NOT_BRACKETS)
    return max(accumulate(memoryview(brackets.translate(_SIGNED_STEPS)).cast("b"), initial=0))


def _parse_json(data: bytes | bytearray | memoryview | str, max_bytes: int) -> Any:
    """Bytes → JSON value, refusing oversized, non-UTF-8 and too deeply nested input first."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPayload("not valid UTF-8 text (lone surrogate)") from None
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise InvalidPayload(f"payload must be bytes or text, not {type(data).__name__}")
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"payload of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"not valid UTF-8 (byte {exc.start})") from None
    depth = 0 if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH else nesting_depth(raw)  # few openers: shallow
    if depth > MAX_DEPTH:
        raise InvalidPayload(f"nested deeper than {MAX_DEPTH} levels ({depth})")
    try:
        return fast_json.loads(text)  # json.loads's value, by orjson where that is the same
    except ValueError as exc:
        raise InvalidPayload(f"not valid JSON: {exc}") from None
    except Exception as exc:  # RecursionError, MemoryError: never past this boundary
        raise InvalidPayload(f"JSON could not be parsed ({type(exc).__name__})") from None


def decode(data: bytes | str, expected: type[M] | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse and validate one payload.

    Size, UTF-8 and nesting depth (``MAX_DEPTH``) are checked before the JSON parser
    runs; maps whose keys a device chooses are bounded by the schemas (``MAX_OPEN_KEYS``,
    ``MAX_KEY_LENGTH``).

    Args:
        data: the raw payload.
        expected: the message class the caller wants; another schema is refused.
        max_bytes: payloads longer than this are refused before parsing.

    Raises:
        InvalidPayload: too large, not UTF-8 JSON, nested too deep, unknown or unexpected
            schema, or a field fails validation. Nothing else escapes.
    """
    obj = _parse_json(data, max_bytes)
    if not isinstance(obj, dict):
        raise InvalidPayload("payload must be a JSON object")
    schema = obj.get("schema")
    if not isinstance(schema, str):
        raise InvalidPayload("missing or non-string", field="schema")
    cls = SCHEMAS.get(schema)
    if cls is None:
        raise InvalidPayload(f"unknown schema {schema[:64]!r}", field="schema")
    if expected is not None and cls is not expected:
        raise InvalidPayload(
            f"expected {expected.model_fields['schema_'].default!r}, got {schema!r}", field="schema"
        )
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        field, msg = _first_error_field(exc)
        raise InvalidPayload(msg, field=field, schema=schema) from None
    except Exception as exc:  # a validator that broke on odd input is still bad input
        raise InvalidPayload(f"could not be validated ({type(exc).__name__})", schema=schema) from None
