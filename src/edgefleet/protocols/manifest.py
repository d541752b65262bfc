"""The model-bundle manifest: everything an agent needs to run a model correctly.

A bundle is a tar archive holding ``manifest.json`` and the ONNX file it names
(``model.onnx``). The manifest says what the model expects (input tensor, layout,
preprocessing), what its outputs mean (task, labels), how to judge it (low-confidence
threshold, latency budget) and how to self-test it (test vectors with expected outputs).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .errors import InvalidPayload

MANIFEST_SCHEMA: Literal["fleet.manifest/1"] = "fleet.manifest/1"
MANIFEST_SCHEMA_V2: Literal["fleet.manifest/2"] = "fleet.manifest/2"  # adds ``embedding``
MAX_EMBEDDING_DIM = 4096
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"

Task = Literal["classification", "detection", "regression"]
DType = Literal["float32", "float16", "uint8", "int8", "int32", "int64"]


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1)
    shape: list[int | None] = Field(min_length=1, max_length=8)
    dtype: DType = "float32"
    layout: Literal["NCHW", "NHWC", "NC", "other"] = "NCHW"


class Preprocessing(BaseModel):
    """How a camera frame (uint8 BGR, HxWx3) becomes the input tensor."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    resize: tuple[int, int] | None = Field(default=None, description="(height, width)")
    color: Literal["gray", "rgb", "bgr"] = "rgb"
    scale: float = Field(default=1.0 / 255.0, gt=0)
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError("std values must be > 0")
        return v


class TestVector(BaseModel):
    """One self-test: a flattened input of the manifest's input shape, and the expected output."""

    __test__ = False  # not a pytest class
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    input: list[float] = Field(min_length=1)
    expected: list[float] = Field(min_length=1)
    atol: float = Field(default=1e-3, ge=0)


class EmbeddingSpec(BaseModel):
    """The model output that holds the frame's embedding (``find more like this``).

    ``output`` names a graph output other than the primary one; ``dim`` is its size
    without the batch dimension. Checked against the ONNX graph at push time.
    """

    model_config = ConfigDict(extra="forbid")

    output: str = Field(min_length=1, max_length=128)
    dim: int = Field(ge=1, le=MAX_EMBEDDING_DIM)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    schema_: Literal["fleet.manifest/1", "fleet.manifest/2"] = Field(default=MANIFEST_SCHEMA, alias="schema")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")
    task: Task = "classification"
    input: TensorSpec
    output: TensorSpec | None = None
    output_kind: Literal["probabilities", "logits"] = "probabilities"
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    labels: list[str] = Field(default_factory=list)
    low_confidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    latency_budget_ms: float = Field(default=100.0, gt=0)
    test_vectors: list[TestVector] = Field(default_factory=list, max_length=64)
    hardware_ids: list[str] = Field(default_factory=list)
    model_file: str = MODEL_FILE
    provenance: dict[str, Any] = Field(default_factory=dict)
    embedding: EmbeddingSpec | None = None  # fleet.manifest/2

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        if self.embedding is not None and self.schema_ == MANIFEST_SCHEMA:
            if "schema_" in self.model_fields_set:
                raise ValueError("embedding needs schema fleet.manifest/2 (agents reading /1 refuse the field)")
            self.schema_ = MANIFEST_SCHEMA_V2  # built in code without a schema: the version that has the field
        if self.embedding is not None and self.output is not None and self.embedding.output == self.output.name:
            raise ValueError("embedding.output must be another output than the model's primary output")
        if self.task == "classification" and not self.labels:
            raise ValueError("a classification model needs labels")
        if "/" in self.model_file or self.model_file.startswith("."):
            raise ValueError("model_file must be a plain file name")
        return self

    @model_serializer(mode="wrap")
    def _drop_absent_embedding(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a manifest without an embedding serialises exactly as fleet.manifest/1 did (bundle digests hold)
        out: dict[str, Any] = handler(self)
        if out.get("embedding", 0) is None:
            del out["embedding"]
        return out

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    def to_json(self) -> bytes:
        return json.dumps(
            self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True
        ).encode()


def parse_manifest(data: bytes | str | dict[str, Any]) -> Manifest:
    """Validate a manifest.

    Raises:
        InvalidPayload: naming the first offending field.
    """
    try:
        obj = json.loads(data) if isinstance(data, (bytes, str)) else data
    except ValueError as exc:
        raise InvalidPayload(f"manifest is not valid JSON: {exc}", schema=MANIFEST_SCHEMA) from None
    try:
        return Manifest.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or None
        raise InvalidPayload(err.get("msg", "invalid"), field=field, schema=MANIFEST_SCHEMA) from None
