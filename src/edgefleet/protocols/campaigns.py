"""Capture campaigns on the wire: what a device is told in its signed settings.

A campaign asks the devices a selector picks to capture the frames a condition matches
(``conditions.py``; the AST travels, never text to evaluate), or the frames near a
reference embedding (``like``), up to a quota, under its own budget. The controller puts
every *running* campaign that selects a device into ``DeviceSettings.campaigns``; a campaign
the device no longer finds there is over for it (stopped, ended, or the fleet quota met).

Per-frame context (``Context``) is what the application on the device attaches to frames
(``{"steering_deg": -25}``): a small flat map, bounded here, stored with the capture and
shown escaped in review.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from .conditions import ConditionError, load_condition
from .embedding import MAX_DIM, Embedding

CAMPAIGN_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
CampaignName = Annotated[str, Field(pattern=CAMPAIGN_NAME_PATTERN)]
MAX_CAMPAIGNS = 16
MAX_EMBEDDING = MAX_DIM  # values in a like vector (as a manifest's embedding.dim)
MAX_L2_THRESHOLD = 1e6
MAX_LEGACY_VECTOR = 1024  # ``Like.vector`` as plain floats (the old wire form; new vectors go compact)
LEGACY_VECTOR_DIM = 32  # up to this many values the controller also sends ``vector``, for older agents
# the like vectors of all campaigns one device carries, in bytes before base64: bounds the signed settings
MAX_SETTINGS_EMBEDDING_BYTES = 128 * 1024
Metric = Literal["cosine", "l2"]

# context: at most 32 keys of <= 64 characters; values are numbers, booleans or short text
MAX_CONTEXT_KEYS = 32
ContextKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
ContextValue = Union[bool, int, float, Annotated[str, StringConstraints(max_length=128)]]
Context = Annotated[dict[ContextKey, ContextValue], Field(max_length=MAX_CONTEXT_KEYS)]


def check_context(value: Any) -> dict[str, Any]:
    """A context map from an application, checked like the schema does (ValueError if not)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        ctx = TypeAdapter(Context).validate_python(value, strict=False)
    except ValidationError as exc:
        raise ValueError(str(exc.errors()[0].get("msg", "invalid context"))) from None
    for v in ctx.values():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("context numbers must be finite")
    return ctx


class Like(BaseModel):
    """Find more like this: frames whose embedding lies within ``threshold`` of the reference.

    The reference travels compactly as ``embedding`` (base64 float16/float32, with its dim, the
    tensor it came from and the control model's digest); ``vector`` (plain floats) is what
    controllers before fleet.manifest/2 embeddings sent and is still read. ``metric``:
    ``cosine`` distance (0 = same direction, 2 = opposite; threshold at most 2) or ``l2``
    (Euclidean distance in the embedding's units; threshold at most 1e6).
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    vector: list[float] | None = Field(default=None, min_length=1, max_length=MAX_LEGACY_VECTOR)
    embedding: Embedding | None = None
    metric: Metric = "cosine"
    threshold: float = Field(gt=0.0, le=MAX_L2_THRESHOLD)
    source_event: str = Field(default="", max_length=64)

    @model_validator(mode="after")
    def _one_reference(self) -> Like:
        if self.vector is None and self.embedding is None:
            raise ValueError("like needs an embedding (or a vector)")
        if self.vector is not None and self.embedding is not None and len(self.vector) != self.embedding.dim:
            raise ValueError("like: vector and embedding differ in length")
        if self.metric == "cosine" and self.threshold > 2.0:
            raise ValueError("a cosine distance threshold is at most 2")
        return self

    def values(self) -> list[float]:
        """The reference vector (the compact embedding where both are given)."""
        if self.embedding is not None:
            return self.embedding.values()
        assert self.vector is not None
        return list(self.vector)

    @property
    def dim(self) -> int:
        return self.embedding.dim if self.embedding is not None else len(self.vector or ())

    @property
    def nbytes(self) -> int:
        return self.embedding.nbytes if self.embedding is not None else 8 * len(self.vector or ())


class CampaignSpec(BaseModel):
    """One running campaign as a device sees it (in ``DeviceSettings.campaigns``)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    name: CampaignName
    condition: dict[str, Any] | None = None  # the AST (conditions.py); None: every frame (with ``like``)
    condition_text: str = Field(default="", max_length=1000)
    like: Like | None = None
    priority: int = Field(default=25, ge=0, le=100)  # against the standing triggers (10..40)
    per_device_quota: int = Field(ge=1, le=1_000_000)
    max_per_minute: int = Field(default=30, ge=1, le=6000)
    pre_seconds: float = Field(default=1.0, ge=0.0, le=30.0)
    post_seconds: float = Field(default=0.5, ge=0.0, le=30.0)
    frames_only: bool = False
    ends_at: datetime | None = None

    @field_validator("condition")
    @classmethod
    def _condition_checks(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return None
        try:
            load_condition(v)
        except ConditionError as exc:
            raise ValueError(f"condition: {exc.message}") from None
        return v
