"""Benchmark: control-path latency p99 with the shadow model on ÷ off, at 50 % of capacity.

Model: light ShuffleNet as control and (a second session of it) as candidate, ONNX Runtime
CPU, 1 intra-op thread each. First the single-model capacity C is measured (the unpaced
pipeline, control only); then the pipeline is paced at 0.5·C and run alternately
(ABAB rounds) with the shadow path off (control only, capture ring on) and on (candidate
on the bounded queue, comparison, triggers, clip capture). The figure is the p99 of the
control path's per-frame latency (preprocess + inference + decode, the part other
threads can slow down), merged over rounds. Like the agent, the GIL switch interval is
0.5 ms and the shadow thread runs at nice +10. Goal: ratio ≤ 1.05.

    python bench/bench_shadow_latency.py [--rounds 4] [--round-seconds 6]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_pipeline_fps import LoopSource, pipeline_fps, shufflenet_runner  # noqa: E402
from edgefleet.edge_agent.capture import Capture  # noqa: E402
from edgefleet.edge_agent.outbox import Outbox  # noqa: E402
from edgefleet.edge_agent.pipeline import Pipeline  # noqa: E402
from edgefleet.edge_agent.runner import ModelRunner  # noqa: E402
from edgefleet.shadow import LatencyRecorder  # noqa: E402


def run(control: ModelRunner, candidate: ModelRunner | None, fps: float, seconds: float, outbox_dir: Path,
        source: LoopSource) -> tuple[LatencyRecorder, dict[str, int]]:
    outbox = Outbox(outbox_dir, max_bytes=256 * 1024**2, min_free_bytes=0)
    capture = Capture("bench", outbox, None, work_dir=outbox_dir / "work", near_band=0.0)
    pipe = Pipeline(source, fps=fps, capture=capture)
    pipe.control, pipe.shadow = control, candidate
    pipe.start()
    time.sleep(0.5)
    pipe.take_period()  # drop the warm-up
    time.sleep(seconds)
    period = pipe.take_period()
    totals = pipe.totals
    pipe.stop()
    outbox.close()
    return period.latency, totals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--round-seconds", type=float, default=6.0)
    ap.add_argument("--load", type=float, default=0.5, help="fraction of single-model capacity")
    ap.add_argument("--switch-interval-ms", type=float, default=0.5, help="as the agent's [inference] setting")
    args = ap.parse_args()
    if args.switch_interval_ms > 0:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    source = LoopSource(224, 224)
    with tempfile.TemporaryDirectory(prefix="bench-lat-") as tmp:
        control = shufflenet_runner(Path(tmp), "1")
        candidate = shufflenet_runner(Path(tmp), "2")
        capacity = pipeline_fps(control, source, 3.0, Path(tmp) / "cap")
        fps = args.load * capacity
        off, on = LatencyRecorder(), LatencyRecorder()
        shadow_frames = dropped = 0
        for r in range(args.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for side in order:
                lat, totals = run(control, candidate if side == "on" else None, fps, args.round_seconds,
                                  Path(tmp) / f"{side}-{r}", source)
                if side == "on":
                    on = on.merge(lat)
                    shadow_frames += totals.get("shadow_frames", 0)
                    dropped += totals.get("shadow_dropped", 0)
                else:
                    off = off.merge(lat)
        control.close()
        candidate.close()
    p_off, p_on = off.percentile(0.99), on.percentile(0.99)
    print(f"model: light ShuffleNet (control and candidate), ORT CPU, 1 thread each; capacity {capacity:.1f} frames/s")
    print(f"paced at {fps:.1f} frames/s ({args.load:.0%}); {args.rounds} rounds × {args.round_seconds:g} s per side")
    print(f"shadow off: {off.count} frames, p50 {off.percentile(0.5):.2f} ms, p99 {p_off:.2f} ms")
    print(f"shadow on:  {on.count} frames, p50 {on.percentile(0.5):.2f} ms, p99 {p_on:.2f} ms "
          f"({shadow_frames} compared, {dropped} shadow frames dropped)")
    print(f"ratio p99 on ÷ off = {p_on / p_off:.3f} (goal ≤ 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
