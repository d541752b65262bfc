"""Typed request values shared by the routes, so validation happens at the schema.

Each type carries its pattern and bounds into the OpenAPI document, so a client (or a
fuzzer) that follows the document is never refused by a handler for a reason the
document does not state, and anything the document forbids is refused before a handler
runs (422).

* ``Timestamp``: an ISO 8601 date-time (``2026-01-31T12:00:00Z``; a date alone or no
  offset is read as UTC). Numbers are refused: pydantic would read ``until=0.5`` as a
  Unix time, which the schema (``format: date-time``) does not say.
* ``ModelRef`` (``NAME:VERSION``), ``PairRef`` (``CONTROL,CANDIDATE``, ``CONTROL..CANDIDATE``
  or ``N1:V1:N2:V2``), ``DeviceIdValue`` and their path forms.
* ``Limit``/``Offset`` bounds for pagination.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import BeforeValidator, Field, StringConstraints, WithJsonSchema

NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
VERSION = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
MODEL_REF = rf"^{NAME}:{VERSION}$"
MODEL_REF_MAX = 128 + 1 + 64
# what shadow_index.parse_pair reads: ',' first, then '..' (names there without '..'), then 4 parts
_REF = r"[A-Za-z0-9][A-Za-z0-9_.-]*:[A-Za-z0-9][A-Za-z0-9_.-]*"
_NODOTS = r"[A-Za-z0-9](?:\.?[A-Za-z0-9_-])*"
PAIR = rf"^(?:{_REF},{_REF}|{_NODOTS}:{_NODOTS}\.\.{_NODOTS}:{_NODOTS}|{_NODOTS}:{_NODOTS}:{_NODOTS}:{_NODOTS})$"
PAIR_MAX = 2 * MODEL_REF_MAX + 2
DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"  # protocols.topics: what MQTT topics allow

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_only(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO.match(value):
        raise ValueError("expected an ISO 8601 date-time such as 2026-01-31T12:00:00Z")
    return value


def _shape(pattern: str, max_length: int, message: str) -> BeforeValidator:
    """The same check as the pattern, first, with a message that names the accepted shapes."""
    compiled = re.compile(pattern)

    def check(value: Any) -> Any:
        if isinstance(value, str) and (len(value) > max_length or not compiled.match(value)):
            raise ValueError(f"{message}, got {value[:80]!r}")
        return value

    return BeforeValidator(check)


Timestamp = Annotated[datetime, BeforeValidator(_iso_only)]
# the check runs first (its message names the shapes); the schema states the same pattern
ModelRef = Annotated[str, _shape(MODEL_REF, MODEL_REF_MAX, "a model is NAME:VERSION (128/64 letters, digits, . _ -)"),
                     StringConstraints(max_length=MODEL_REF_MAX), WithJsonSchema(
                         {"type": "string", "pattern": MODEL_REF, "maxLength": MODEL_REF_MAX})]
PairRef = Annotated[str, _shape(PAIR, PAIR_MAX, "a pair is CONTROL,CANDIDATE, CONTROL..CANDIDATE or N1:V1:N2:V2 "
                                "(each NAME:VERSION)"), StringConstraints(max_length=PAIR_MAX),
                    WithJsonSchema({"type": "string", "pattern": PAIR, "maxLength": PAIR_MAX})]
DeviceIdValue = Annotated[str, StringConstraints(pattern=DEVICE_ID, max_length=128)]
ModelRefPath = Annotated[str, Path(pattern=MODEL_REF, max_length=MODEL_REF_MAX, description="NAME:VERSION")]
DeviceIdPath = Annotated[str, Path(pattern=DEVICE_ID, max_length=128, description="device id")]
Limit = Annotated[int, Field(ge=1, le=1000)]
Offset = Annotated[int, Field(ge=0, le=2**31 - 1)]

__all__ = ["DEVICE_ID", "MODEL_REF", "PAIR", "DeviceIdPath", "DeviceIdValue", "Limit", "ModelRef", "ModelRefPath",
           "Offset", "PairRef", "Timestamp"]
