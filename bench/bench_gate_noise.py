"""False breaches of ``latency_p99_ratio<=1.2`` between two identical models: the old point
comparison against the statistically sound gate, over N simulated rollouts, in one run.

    python bench/bench_gate_noise.py [--runs 500] [--periods 6] [--frames 50] [--devices 1]

Each run is one wave of two hardware profiles: per device ``--periods`` telemetry periods of
``--frames`` frames on the current model, then as many on the candidate. Per-frame latency
is log-normal around the model's median (sigma 0.25) plus scheduler/GC stalls (2 % of
frames, exponential, mean 2 ms) — a busy edge CPU; a period's p99 is folded exactly as the
agent folds it (``LatencyRecorder``). The *old* method is what the gate compared before:
per profile Σ running mean of the candidate's period p99s / Σ median of the previous
model's, worst profile, against 1.2. The *new* one is ``gates.evaluate_gates`` on the same
series (2 ms floor, 99 % bootstrap interval, 100-frame minimum). Also printed: how often each
method catches a candidate 3x slower (power), so a lower false-breach rate is not bought by
never breaching.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgefleet.cloud.rollout.gates import LatencyEvidence, evaluate_gates, parse_gate
from edgefleet.cloud.rollout.stats import DeviceLatency
from edgefleet.shadow.stats import LatencyRecorder

GATE = parse_gate("latency_p99_ratio<=1.2")


def period_p99(values: np.ndarray) -> float:
    rec = LatencyRecorder()
    for v in values:
        rec.add(float(v))
    return rec.percentile(0.99)


def periods(rng: np.random.Generator, median_ms: float, n: int, frames: int) -> tuple[float, ...]:
    out = []
    for _ in range(n):
        lat = median_ms * rng.lognormal(0.0, 0.25, frames)
        lat += (rng.random(frames) < 0.02) * rng.exponential(2.0, frames)
        out.append(period_p99(lat))
    return tuple(out)


class Wave:
    def __init__(self, profiles: dict[str, tuple[DeviceLatency, ...]]):
        self.profiles = profiles

    def value(self, metric: str) -> float | None:
        return None

    def describe(self, metric: str) -> str:
        return ""

    def evidence(self, metric: str) -> LatencyEvidence:
        return LatencyEvidence(self.profiles)

    def old_breach(self) -> bool:
        worst = max(sum(float(np.mean(d.new[-10:])) for d in devs) / sum(float(np.median(d.old[-10:])) for d in devs)
                    for devs in self.profiles.values())
        return worst > GATE.limit

    def new_breach(self) -> bool:
        return evaluate_gates([GATE], self)[0].status == "failed"


def wave(rng: np.random.Generator, median_ms: float, slowdown: float, args: argparse.Namespace) -> Wave:
    profiles = {}
    for p in range(2):
        profiles[f"profile-{p}"] = tuple(
            DeviceLatency(f"p{p}-d{d}", periods(rng, median_ms * slowdown, args.periods, args.frames),
                          periods(rng, median_ms, args.periods, args.frames), args.periods * args.frames)
            for d in range(args.devices))
    return Wave(profiles)


def main() -> None:
    global GATE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--periods", type=int, default=6)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--devices", type=int, default=1, help="devices per profile")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gate", default="latency_p99_ratio<=1.2", help="the latency gate to judge with (options allowed)")
    args = ap.parse_args()
    GATE = parse_gate(args.gate)
    print(f"{args.runs} runs per row; 2 profiles x {args.devices} device(s), {args.periods} periods x "
          f"{args.frames} frames per model; gate {GATE}")
    print(f"{'median ms':>9} {'false: old':>11} {'false: new':>11} {'old/new':>8} {'3x caught: old':>15} "
          f"{'3x caught: new':>15} {'ms/eval':>8}")
    for median_ms in (0.3, 1.0, 2.0, 6.0, 20.0):
        rng = np.random.default_rng(args.seed)
        old = new = old_slow = new_slow = 0
        t_eval = 0.0
        for _ in range(args.runs):
            w = wave(rng, median_ms, 1.0, args)
            t0 = time.perf_counter()
            new += w.new_breach()
            t_eval += time.perf_counter() - t0
            old += w.old_breach()
            s = wave(rng, median_ms, 3.0, args)
            old_slow += s.old_breach()
            new_slow += s.new_breach()
        n = args.runs
        ratio = f"{(old / n) / (new / n):.1f}x" if new else ("inf" if old else "-")
        print(f"{median_ms:>9g} {old / n:>11.1%} {new / n:>11.1%} {ratio:>8} {old_slow / n:>15.1%} "
              f"{new_slow / n:>15.1%} {1000 * t_eval / n:>8.2f}")
    print("3x caught: a candidate 3x slower than the current model breaches (sub-ms: under the 2 ms floor, "
          "not judged by design)")


if __name__ == "__main__":
    main()
