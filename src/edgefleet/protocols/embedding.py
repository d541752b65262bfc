"""A compact embedding on the wire: ``dim`` little-endian floats (float16 or float32), base64.

Two messages carry one: a capture record (``Event.embedding``: the control model's output the
manifest names, so a reviewed capture can seed ``find more like this``) and a campaign's
``Like`` (the vector devices compare their frames with). ``pack`` builds one from plain
floats; ``values()`` reads it back. The schema refuses what does not hold together: data whose
length is not ``dim`` values of ``dtype``, a NaN or ±inf value, a dim above ``MAX_DIM``.

``model_digest`` is the bundle digest of the model that produced the vector: vectors of
another model live in another space, so a device whose control model differs does not
compare them (``edge_agent/campaigns.py``). ``output`` names the tensor (empty: the model's
class scores / output vector rather than a named embedding).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_DIM = 4096  # as a manifest's ``embedding.dim``
DType = Literal["float16", "float32"]
_FORMAT = {"float16": "e", "float32": "f"}
_SIZE = {"float16": 2, "float32": 4}
MAX_DATA_CHARS = 4 * math.ceil(MAX_DIM * 4 / 3)  # base64 of MAX_DIM float32 values
FLOAT16_MAX = 65504.0
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Embedding(BaseModel):
    """``dim`` floats of ``dtype``, little-endian, base64 (standard alphabet, padded)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    dim: int = Field(ge=1, le=MAX_DIM)
    dtype: DType = "float16"
    data: str = Field(min_length=4, max_length=MAX_DATA_CHARS)
    output: str = Field(default="", max_length=128, description="tensor name; empty: the output vector")
    model_digest: Digest | None = None

    @model_validator(mode="after")
    def _holds_together(self) -> Embedding:
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("data is not base64") from None
        if len(raw) != self.dim * _SIZE[self.dtype]:
            raise ValueError(f"data holds {len(raw)} bytes; {self.dim} {self.dtype} values need "
                             f"{self.dim * _SIZE[self.dtype]}")
        if not all(math.isfinite(v) for v in _unpack(raw, self.dim, self.dtype)):
            raise ValueError("embedding values must be finite (no NaN or inf)")
        return self

    def values(self) -> list[float]:
        return _unpack(base64.b64decode(self.data), self.dim, self.dtype)

    @property
    def nbytes(self) -> int:
        return self.dim * _SIZE[self.dtype]


def _unpack(raw: bytes, dim: int, dtype: str) -> list[float]:
    return list(struct.unpack(f"<{dim}{_FORMAT[dtype]}", raw))


def pack(values: Iterable[float], *, dtype: DType = "float16", output: str = "",
         model_digest: str | None = None) -> Embedding:
    """An ``Embedding`` of ``values`` (float16 falls back to float32 where a value is beyond
    float16's range, so nothing becomes inf).

    Raises:
        ValueError: no values, more than ``MAX_DIM``, or a NaN/inf among them.
    """
    vals = [float(v) for v in values]
    if not vals or len(vals) > MAX_DIM:
        raise ValueError(f"an embedding has 1 to {MAX_DIM} values, not {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError("embedding values must be finite (no NaN or inf)")
    if dtype == "float16" and any(abs(v) > FLOAT16_MAX for v in vals):
        dtype = "float32"
    raw = struct.pack(f"<{len(vals)}{_FORMAT[dtype]}", *vals)
    return Embedding(dim=len(vals), dtype=dtype, data=base64.b64encode(raw).decode("ascii"), output=output,
                     model_digest=model_digest)
