"""The ~1 KB event record sent on ``fleet/v1/devices/{id}/events`` for each capture.

``build_event`` puts the trigger, both models' decoded outputs and references
(name, version, bundle digest), the time, the device and the clip id into a
``protocols.Event``, and shrinks the score lists until the encoded record fits
``max_bytes`` (labels are cut last, to 48 characters). The control model's manifest-named
embedding (``embedding``, compact float16 base64, at most 4096 values) comes on top of that
budget: it is what ``fleet campaign start --like`` sends back to devices.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..protocols import Embedding, Event, ModelOutput, ModelRef, encode
from .prediction import Prediction
from .triggers import Trigger

EVENT_MAX_BYTES = 1024


def _cut_label(out: ModelOutput, n: int) -> ModelOutput:
    if out.label is not None and len(out.label) > n:
        return out.model_copy(update={"label": out.label[:n]})
    return out


def build_event(
    *,
    device_id: str,
    event_id: str,
    trigger: Trigger,
    control: Prediction,
    ts: datetime,
    candidate: Prediction | None = None,
    control_model: ModelRef | None = None,
    candidate_model: ModelRef | None = None,
    clip_id: str | None = None,
    frame_index: int | None = None,
    campaign: str | None = None,
    context: dict[str, Any] | None = None,
    embedding: Embedding | None = None,
    max_bytes: int = EVENT_MAX_BYTES,
) -> Event:
    """One event record, encoded size <= ``max_bytes`` (plus the embedding's own size) where
    the fixed fields allow."""
    max_scores = 32
    if embedding is not None:
        max_bytes += len(embedding.model_dump_json()) + len('"embedding":,')
    while True:
        ctl = control.to_model_output(control_model, max_scores=max_scores)
        cand = candidate.to_model_output(candidate_model, max_scores=max_scores) if candidate else None
        if max_scores == 0:
            ctl = _cut_label(ctl, 48)
            cand = _cut_label(cand, 48) if cand else None
        event = Event(
            device_id=device_id, event_id=event_id, ts=ts, trigger=trigger.kind,
            priority=trigger.priority, control=ctl, candidate=cand, clip_id=clip_id,
            frame_index=frame_index, campaign=campaign, context=context, embedding=embedding,
        )
        if max_scores == 0 or len(encode(event)) <= max_bytes:
            return event
        max_scores //= 2
