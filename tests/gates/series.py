"""Latency series for the gate tests and the bench: generated (seeded) and measured.

``jittery_periods`` makes per-period p99s the way an agent does (``LatencyRecorder`` over
one period's frames) from per-frame latencies that look like a sub-millisecond model on a
busy CPU: log-normal around the median, plus rare scheduler/GC stalls of a few ms. That is
what made ``latency_p99_ratio`` read 1.21 and 2.58 for two identical graphs: a period's p99
over ~50 frames is about its worst frame or two.

``measure_periods`` runs a real model bundle through the agent's own ``ModelRunner`` (ONNX
Runtime, CPU) on the synthetic camera and records period p99s with ``LatencyRecorder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefleet.cloud.demo.train import TrainedModel
from edgefleet.cloud.rollout.gates import LatencyEvidence, RateEvidence, evaluate_gates, parse_gate
from edgefleet.cloud.rollout.stats import DeviceLatency
from edgefleet.shadow.stats import LatencyRecorder


def period_p99(latencies_ms: Sequence[float]) -> float:
    rec = LatencyRecorder()
    for v in latencies_ms:
        rec.add(float(v))
    return rec.percentile(0.99)


def frame_latencies(rng: np.random.Generator, median_ms: float, n: int, *, sigma: float = 0.25,
                    stall_p: float = 0.02, stall_ms: float = 2.0) -> np.ndarray:
    base = median_ms * rng.lognormal(0.0, sigma, n)
    stalls = rng.random(n) < stall_p
    return base + stalls * rng.exponential(stall_ms, n)


def jittery_periods(rng: np.random.Generator, median_ms: float, periods: int, frames: int,
                    **kw: float) -> tuple[float, ...]:
    return tuple(period_p99(frame_latencies(rng, median_ms, frames, **kw)) for _ in range(periods))


@dataclass(frozen=True)
class Wave:
    """One simulated wave: devices per hardware profile with p99 periods of both models."""

    profiles: dict[str, tuple[DeviceLatency, ...]]

    def evidence(self) -> LatencyEvidence:
        return LatencyEvidence(self.profiles)

    def old_method_ratio(self) -> float:
        """What the gate used to compare: per profile Σ running mean of the new model's
        p99 / Σ median of the previous model's periods, worst profile."""
        worst = 0.0
        for devices in self.profiles.values():
            new = sum(float(np.mean(d.new[-10:])) for d in devices)
            old = sum(float(np.median(d.old[-10:])) for d in devices)
            worst = max(worst, new / old)
        return worst


def simulated_wave(rng: np.random.Generator, *, median_ms: float, slowdown: float = 1.0,
                   profiles: int = 2, devices: int = 1, periods: int = 6, frames: int = 50) -> Wave:
    """A wave's latency as the controller sees it: per device ``periods`` telemetry periods
    of ``frames`` frames on the previous model, then as many on the new one."""
    out: dict[str, tuple[DeviceLatency, ...]] = {}
    for p in range(profiles):
        devs = []
        for d in range(devices):
            old = jittery_periods(rng, median_ms, periods, frames)
            new = jittery_periods(rng, median_ms * slowdown, periods, frames)
            devs.append(DeviceLatency(f"p{p}-d{d}", new, old, frames * periods))
        out[f"profile-{p}"] = tuple(devs)
    return Wave(out)


def breaches(gate_text: str, evidence: LatencyEvidence | RateEvidence) -> bool:
    class Source:
        def value(self, metric: str) -> float | None:
            return None

        def describe(self, metric: str) -> str:
            return ""

        def evidence(self, metric: str) -> LatencyEvidence | RateEvidence:
            return evidence

    [r] = evaluate_gates([parse_gate(gate_text)], Source())
    return r.status == "failed"


def measure_periods(models: Sequence[TrainedModel], workdir: Path, periods: int, frames: int, *,
                    seed: int = 0) -> list[tuple[tuple[float, ...], int]]:
    """Real per-period p99s (ms) of each model and how many of its outputs were NaN,
    measured as the agent measures them (``ModelRunner.predict`` on synthetic camera
    frames). The models take turns frame by frame — like control and shadow on one device:
    the same frames in the same period, so the load of the machine falls on both alike."""
    import shutil

    from edgefleet.edge_agent.runner import ModelRunner
    from edgefleet.edge_agent.sources import SyntheticDigits
    from edgefleet.protocols import ModelRef

    runners = []
    for k, model in enumerate(models):
        bundle = workdir / f"bundle-{k}-{model.manifest.version}"  # laid out as the agent unpacks it
        bundle.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model.path, bundle / model.manifest.model_file)
        ref = ModelRef(name=model.manifest.name, version=model.manifest.version, digest="0" * 64)
        runners.append(ModelRunner.load(ref, model.manifest, bundle, allow=["ort-cpu"],
                                        cache_dir=workdir / "engines"))
    camera = SyntheticDigits(seed=seed)
    nans = [0] * len(runners)
    out: list[list[float]] = [[] for _ in runners]
    try:
        for r in runners:
            for _ in range(3):
                r.predict(camera.render(0))  # warm up, as an agent does before it reports
        for p in range(periods):
            lat: list[list[float]] = [[] for _ in runners]
            for i in range(frames):
                frame = camera.render((p * frames + i) % len(camera.images))
                for k, r in enumerate(runners):
                    inf = r.predict(frame)
                    lat[k].append(inf.latency_ms)
                    nans[k] += 0 if inf.prediction.finite else 1
            for k in range(len(runners)):
                out[k].append(period_p99(lat[k]))
    finally:
        for r in runners:
            r.close()
    return [(tuple(o), n) for o, n in zip(out, nans)]
