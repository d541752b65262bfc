"""Captures put into a running controller through the real ingest paths.

Each capture is a real VP8 clip of the synthetic digits camera (``shadow.encode_clip``) and
a JPEG keyframe. Its event goes through the controller's MQTT event handler
(``Controller._on_event``, what the bridge calls), and the clip through the device-side
``Outbox`` and ``Uploader`` to the controller's real ``/api/v1/uploads`` endpoint.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from edgefleet.cloud.devices import fleet
from edgefleet.cloud.runtime import Controller
from edgefleet.edge_agent.outbox import Outbox
from edgefleet.edge_agent.sources import SyntheticDigits
from edgefleet.edge_agent.uploader import Uploader
from edgefleet.protocols import Event, ModelOutput, ModelRef
from edgefleet.shadow import encode_clip, encode_keyframe


@dataclass(frozen=True)
class Capture:
    """What to capture: the digit shown, both labels and scores, the trigger."""

    device_id: str
    digit: int
    control_label: str
    candidate_label: str | None
    trigger: str = "disagreement"
    control_score: float = 0.91
    candidate_score: float = 0.62
    age_s: float = 0.0


def _frames(digit: int, n: int, seed: int) -> list[np.ndarray]:
    cam = SyntheticDigits(seed=seed, size=96, noise=4.0)
    idx = [i for i, lab in enumerate(cam.labels) if int(lab) == digit]
    return [cam.render(idx[(k // 4) % len(idx)]) for k in range(n)]


def _scores(label: str | None, score: float) -> list[float]:
    if label is None or not label.isdigit():
        return []
    rest = (1.0 - score) / 9
    return [round(score if str(i) == label else rest, 4) for i in range(10)]


def seed_captures(controller: Controller, url: str, control: ModelRef, candidate: ModelRef,
                  captures: list[Capture], work: Path, *, now: datetime | None = None) -> list[str]:
    """Record and upload ``captures``; returns their event ids (in order)."""
    now = now or datetime.now(timezone.utc)
    ids: list[str] = []
    by_device: dict[str, list[tuple[Event, Path, bytes]]] = {}
    (work / "clips").mkdir(parents=True, exist_ok=True)
    for k, cap in enumerate(captures):
        eid = uuid.uuid4().hex
        frames = _frames(cap.digit, 24, seed=k)
        info = encode_clip(frames, 12.0, work / "clips" / eid)
        event = Event(
            device_id=cap.device_id, event_id=eid, ts=now - timedelta(seconds=cap.age_s), trigger=cap.trigger,
            priority=40 if cap.trigger == "disagreement" else 30,
            control=ModelOutput(model=control, label=cap.control_label, score=cap.control_score,
                                scores=_scores(cap.control_label, cap.control_score)),
            candidate=None if cap.candidate_label is None else ModelOutput(
                model=candidate, label=cap.candidate_label, score=cap.candidate_score,
                scores=_scores(cap.candidate_label, cap.candidate_score)),
            clip_id=eid, frame_index=12,
        )
        controller._on_event(event)  # the MQTT events path
        by_device.setdefault(cap.device_id, []).append((event, Path(info.path), encode_keyframe(frames[12])))
        ids.append(eid)
    for device_id, items in by_device.items():
        with controller.session() as s:
            token = fleet.enrol_device(s, device_id, fleet.get_device(s, device_id).hardware_id,
                                       fleet.get_device(s, device_id).tags)
        outbox = Outbox(work / "outbox" / device_id, 256 * 1024 * 1024, min_free_bytes=0)
        for event, path, jpeg in items:
            outbox.put(event, path, jpeg, event.priority)
        uploader = Uploader(url, device_id, token, outbox, max_bytes_per_day=1 << 30)
        try:
            for _ in range(5):
                report = uploader.run_once(datetime.now(timezone.utc))
                assert not report.error and not report.offline, report
                if not outbox.pending(1):
                    break
            assert not outbox.pending(1), "uploads did not finish"
        finally:
            uploader.close()
            outbox.close()
    return ids
