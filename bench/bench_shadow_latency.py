"""Benchmark: control-path latency p99 with the shadow model on ÷ off, at 50 % of capacity.

Model: light ShuffleNet as control and (a second session of it) as candidate, ONNX Runtime
CPU, 1 intra-op thread each. First the single-model capacity C is measured (the unpaced
pipeline, control only, idle machine); then the pipeline is paced at 0.5·C and run
alternately (ABAB rounds) with the shadow path off (control only, capture ring on) and on
(candidate on the shedding queue, comparison, triggers, clip capture). The figure is the
p99 of the control path's per-frame latency (preprocess + inference + decode, the part
other threads can slow down), merged over rounds. As in the agent: GIL switch interval
0.5 ms, the shadow thread and the clip encoder under SCHED_IDLE (nice 19 where refused) with
CPU affinity away from the control thread where there are cores to spare, the candidate's
ONNX Runtime session single-threaded, sequential and not spinning, a shadow queue of one
frame that sheds the oldest. Goal: ratio ≤ 1.05.

``--neighbour`` measures the same ratio a second time, in the same run, with a CPU-burning
neighbour beside the agent: one busy-loop process per allowed CPU, each bounded in time
(it exits by itself even if this benchmark is killed). ``--isolation off`` runs the old
arrangement (nice +10 only, queue of 8, default ORT session) for comparison.

    python bench/bench_shadow_latency.py [--rounds 4] [--round-seconds 6] [--neighbour] [--isolation off]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_pipeline_fps import LoopSource, pipeline_fps, shufflenet_runner  # noqa: E402
from edgefleet.edge_agent.capture import Capture  # noqa: E402
from edgefleet.edge_agent.isolation import ThreadPolicy, allowed_cpus  # noqa: E402
from edgefleet.edge_agent.outbox import Outbox  # noqa: E402
from edgefleet.edge_agent.pipeline import Pipeline  # noqa: E402
from edgefleet.edge_agent.runner import ModelRunner  # noqa: E402
from edgefleet.shadow import LatencyRecorder  # noqa: E402

BURN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def start_neighbour(seconds: float) -> list[subprocess.Popen[bytes]]:
    """One busy-loop process per allowed CPU, each ending by itself after ``seconds``."""
    code = BURN.format(seconds=float(seconds))
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in allowed_cpus()]


def stop_neighbour(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(control: ModelRunner, candidate: ModelRunner | None, fps: float, seconds: float, outbox_dir: Path,
        source: LoopSource, policy: ThreadPolicy, queue_size: int) -> tuple[LatencyRecorder, dict[str, int]]:
    outbox = Outbox(outbox_dir, max_bytes=256 * 1024**2, min_free_bytes=0)
    capture = Capture("bench", outbox, None, work_dir=outbox_dir / "work", near_band=0.0)
    pipe = Pipeline(source, fps=fps, capture=capture, isolation=policy, shadow_queue=queue_size)
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


def measure(control: ModelRunner, candidate: ModelRunner, fps: float, args: argparse.Namespace, tmp: Path,
            source: LoopSource, policy: ThreadPolicy, queue_size: int, label: str) -> dict[str, float]:
    off, on = LatencyRecorder(), LatencyRecorder()
    shadow_frames = dropped = 0
    for r in range(args.rounds):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        for side in order:
            lat, totals = run(control, candidate if side == "on" else None, fps, args.round_seconds,
                              tmp / f"{label}-{side}-{r}", source, policy, queue_size)
            if side == "on":
                on = on.merge(lat)
                shadow_frames += totals.get("shadow_frames", 0)
                dropped += totals.get("shadow_dropped", 0)
            else:
                off = off.merge(lat)
    p_off, p_on = off.percentile(0.99), on.percentile(0.99)
    print(f"[{label}] shadow off: {off.count} frames, p50 {off.percentile(0.5):.2f} ms, p99 {p_off:.2f} ms")
    print(f"[{label}] shadow on:  {on.count} frames, p50 {on.percentile(0.5):.2f} ms, p99 {p_on:.2f} ms "
          f"({shadow_frames} compared, {dropped} candidate frames shed)")
    print(f"[{label}] ratio p99 on ÷ off = {p_on / p_off:.3f} (goal ≤ 1.05)", flush=True)
    return {"ratio": p_on / p_off, "compared": shadow_frames, "shed": dropped}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--round-seconds", type=float, default=6.0)
    ap.add_argument("--load", type=float, default=0.5, help="fraction of single-model capacity")
    ap.add_argument("--switch-interval-ms", type=float, default=0.5, help="as the agent's [inference] setting")
    ap.add_argument("--neighbour", action="store_true",
                    help="also measure with a CPU-burning process per core beside the pipeline")
    ap.add_argument("--isolation", choices=("on", "off"), default="on",
                    help="off: the old arrangement (nice +10, queue of 8, default ORT session)")
    args = ap.parse_args()
    if args.switch_interval_ms > 0:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    isolated = args.isolation == "on"
    policy = ThreadPolicy.from_settings() if isolated else ThreadPolicy(sched_idle=False, nice=10)
    queue_size = 1 if isolated else 8
    source = LoopSource(224, 224)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lat-") as tmp_s:
        tmp = Path(tmp_s)
        control = shufflenet_runner(tmp, "1")
        candidate = shufflenet_runner(tmp, "2", background=isolated)
        capacity = pipeline_fps(control, source, 3.0, tmp / "cap")
        fps = args.load * capacity
        print(f"model: light ShuffleNet (control and candidate), ORT CPU, 1 thread each; capacity {capacity:.1f} frames/s")
        print(f"paced at {fps:.1f} frames/s ({args.load:.0%}); {args.rounds} rounds × {args.round_seconds:g} s per side; "
              f"isolation {args.isolation}; {len(allowed_cpus())} CPUs allowed; "
              f"background CPUs {sorted(policy.cpus) if policy.cpus else 'any'}", flush=True)
        results["idle"] = measure(control, candidate, fps, args, tmp, source, policy, queue_size, "idle")
        if args.neighbour:
            bound = args.rounds * 2 * (args.round_seconds + 1.5) + 30
            procs = start_neighbour(bound)
            try:
                time.sleep(1.0)
                results["neighbour"] = measure(control, candidate, fps, args, tmp, source, policy, queue_size,
                                               f"neighbour ×{len(procs)}")
            finally:
                stop_neighbour(procs)
        control.close()
        candidate.close()
    applied = policy.applied.get("shadow-path")
    if applied is not None:
        print(f"shadow thread: SCHED_IDLE {applied.sched_idle}, nice {applied.nice}, "
              f"CPUs {sorted(applied.cpus) if applied.cpus else 'any'}")
    line = f"ratio p99 on ÷ off: idle {results['idle']['ratio']:.3f}"
    if "neighbour" in results:
        line += f", with neighbour {results['neighbour']['ratio']:.3f}"
    print(line + f" (goal ≤ 1.05; pid {os.getpid()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
