"""A realistic small fleet, put into a controller through its real ingest path.

Six devices on four hardware profiles at four sites, the demo's two digit classifiers
(control ``digits:1.0`` everywhere, candidate ``digits:2.0`` in shadow on five), and
``periods`` telemetry periods per device built as real ``fleet.telemetry/1`` messages and
handed to ``Controller._on_telemetry`` (what the MQTT bridge calls). The candidate
disagrees on class 8; from ``shift_at`` on, the two ``dock`` cameras see many more 8s at
lower confidence (a new product line), which the drift report picks up.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from edgefleet.cloud import catalog
from edgefleet.cloud.devices import fleet, ingest
from edgefleet.cloud.runtime import Controller
from edgefleet.protocols import (
    LatencyStats,
    ModelRef,
    Phase,
    Reported,
    ShadowStats,
    SlotReport,
    Status,
    Telemetry,
)

from ..signed_reports.keys import feed_telemetry

DEVICES = [  # id, hardware profile, tags, base p99 ms, online
    ("cam-dock-01", "jetson-orin-nano", {"site": "dock", "line": "a"}, 2.4, True),
    ("cam-dock-02", "jetson-orin-nano", {"site": "dock", "line": "b"}, 2.6, True),
    ("cam-gate-01", "jetson-agx-orin", {"site": "gate"}, 1.1, True),
    ("cam-gate-02", "jetson-agx-orin", {"site": "gate"}, 1.2, True),
    ("cam-lab-01", "cpu-x86_64", {"site": "lab"}, 0.7, True),
    ("cam-yard-01", "jetson-orin-nx", {"site": "yard"}, 1.7, False),
]
LABELS = [str(i) for i in range(10)]


@dataclass
class SeededFleet:
    control: ModelRef
    candidate: ModelRef
    device_ids: list[str]
    now: datetime


def _ref(mv) -> ModelRef:  # type: ignore[no-untyped-def]
    return ModelRef(name=mv.name, version=mv.version, digest=mv.digest)


def _hist(rng: random.Random, n: int, low_conf: float) -> list[int]:
    """Confidence histogram of n frames: mostly confident, ``low_conf`` share spread lower."""
    hist = [0] * 10
    for _ in range(n):
        if rng.random() < low_conf:
            hist[rng.randint(3, 7)] += 1
        else:
            hist[9 if rng.random() < 0.8 else 8] += 1
    return hist


def seed_fleet(controller: Controller, control_path, candidate_path, control_manifest, candidate_manifest, *,  # type: ignore[no-untyped-def]
               periods: int = 40, period_s: float = 10.0, shift_at: int | None = 25,
               now: datetime | None = None, seed: int = 7) -> SeededFleet:
    now = now or datetime.now(timezone.utc)
    rng = random.Random(seed)
    with controller.session() as s:
        mv1, _ = catalog.push_model(s, controller.store, control_path.read_bytes(), name=control_manifest.name,
                                    version=control_manifest.version,
                                    manifest=control_manifest.model_dump(mode="json", by_alias=True))
        mv2, _ = catalog.push_model(s, controller.store, candidate_path.read_bytes(), name=candidate_manifest.name,
                                    version=candidate_manifest.version,
                                    manifest=candidate_manifest.model_dump(mode="json", by_alias=True))
        for device_id, hw, tags, _p99, _online in DEVICES:
            fleet.enrol_device(s, device_id, hw, tags)
        ids = [d[0] for d in DEVICES]
        fleet.deploy(s, None, mv1, "control", ids)
        fleet.deploy(s, None, mv2, "shadow", ids[:-1])
        control, candidate = _ref(mv1), _ref(mv2)
        for i, (device_id, hw, _tags, _p99, _online) in enumerate(DEVICES):
            ingest.apply_status(s, Status(device_id=device_id, online=True, agent_version="0.1.0", hardware_id=hw))
            device = fleet.get_device(s, device_id)
            shadow_slot = SlotReport(installed=candidate, phase=Phase.HEALTHY)
            if device_id == "cam-lab-01":
                shadow_slot = SlotReport(target=candidate, phase=Phase.DOWNLOADING, progress=0.4)
            slots = {"control": SlotReport(installed=control, phase=Phase.HEALTHY)}
            if i < len(DEVICES) - 1:
                slots["shadow"] = shadow_slot
            ingest.apply_reported(s, Reported(device_id=device_id, generation=device.desired_generation,
                                              hardware_id=hw, agent_version="0.1.0", slots=slots))
    for k in range(periods):
        end = now - timedelta(seconds=period_s * (periods - 1 - k))
        for device_id, _hw, tags, p99, online in DEVICES:
            if not online and k > periods - 6:
                continue
            shifted = shift_at is not None and k >= shift_at and tags.get("site") == "dock"
            fps = 15.0 + rng.uniform(-0.6, 0.4)
            frames = int(fps * period_s)
            weights = [1.0] * 10
            if shifted:
                weights[8] = 6.0
            counts = {label: 0 for label in LABELS}
            for _ in range(frames):
                counts[rng.choices(LABELS, weights)[0]] += 1
            hist = _hist(rng, frames, 0.35 if shifted else 0.06)
            wave = 1.0 + 0.08 * math.sin(k / 4 + len(device_id))
            lat = p99 * wave * (1.15 if shifted else 1.0)
            shadow = None
            if device_id not in ("cam-lab-01", "cam-yard-01"):
                dropped = rng.randint(0, 2)
                compared = frames - dropped
                eights = min(counts["8"], compared)
                disagree = int(eights * 0.9) + rng.randint(0, 1)
                shadow = ShadowStats(
                    candidate=candidate, frames=compared, dropped=dropped, disagreements=disagree,
                    agreement=1 - disagree / compared if compared else None,
                    per_class_disagreements={"8": disagree} if disagree else {},
                    latency_ms=LatencyStats(p50=lat * 0.5, p95=lat * 0.85, p99=lat * 1.05, mean=lat * 0.55, max=lat * 1.3),
                    confusion={"8": {"8": eights - disagree, "3": disagree}} if eights else {},
                )
            msg = Telemetry(
                device_id=device_id, period_start=end - timedelta(seconds=period_s), period_end=end,
                control=control, frames=frames, fps=round(fps, 2), errors=0, nan_outputs=0,
                latency_ms=LatencyStats(p50=lat * 0.45, p95=lat * 0.8, p99=lat, mean=lat * 0.5, max=lat * 1.4),
                class_counts=counts, confidence_histogram=hist, shadow=shadow,
                hardware={"temp_max_c": 48 + rng.uniform(-3, 6), "cpu_percent": 35 + rng.uniform(-5, 10)},
            )
            feed_telemetry(controller, msg)  # signed by the device's key, as the bridge requires
    with controller.session() as s:
        ingest.apply_status(s, Status(device_id="cam-yard-01", online=False))
    return SeededFleet(control=control, candidate=candidate, device_ids=[d[0] for d in DEVICES], now=now)
