"""Benchmark: edgefleet's backend vs a bare onnxruntime.InferenceSession.run loop.

For each model (the demo digit classifier, the onnx package's light ResNet-50 and
SqueezeNet) both sides run on this machine with the same session settings (CPU provider
here, 1 intra-op and 1 inter-op thread by default), one frame per call, interleaved in
ABBA rounds so that drift (turbo, other load) hits both sides alike. Prints frames/s of
each and the ratio ours ÷ bare; the goal is ≥ 0.95.

    python bench/bench_backend.py [--rounds 16] [--round-seconds 0.25] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hardware.models import build_demo_model, light_model  # noqa: E402

from edgefleet.hardware import detect_profile, open_backend  # noqa: E402


def bare_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def timed(fn, iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return time.perf_counter() - t0


def bench_model(name: str, path: Path, x: np.ndarray, *, threads: int, rounds: int, round_s: float,
                cache_dir: Path) -> dict[str, float]:
    backend = open_backend(path, cache_dir=cache_dir, intra_op_threads=threads, allow=["ort-cpu"])
    backend.prepare()
    sess = bare_session(path, threads)
    input_name = sess.get_inputs()[0].name
    feeds = {input_name: x}
    ours = lambda: backend.infer(feeds)  # noqa: E731
    bare = lambda: sess.run(None, feeds)  # noqa: E731
    for _ in range(3):  # warm-up both
        ours()
        bare()
    per_call = max(1e-6, min(timed(ours, 3), timed(bare, 3)) / 3)
    iters = max(2, int(round_s / per_call))
    t_ours = t_bare = 0.0
    ratios = []
    for r in range(rounds):
        order = (ours, bare) if r % 2 == 0 else (bare, ours)
        results = {}
        for fn in order:
            results[fn] = timed(fn, iters)
        t_ours += results[ours]
        t_bare += results[bare]
        ratios.append(results[bare] / results[ours])
    backend.close()
    n = iters * rounds
    return {"ours_fps": n / t_ours, "bare_fps": n / t_bare, "ratio": (n / t_ours) / (n / t_bare),
            "ratio_median_round": statistics.median(ratios), "frames": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--round-seconds", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    profile = detect_profile()
    print(f"machine: {profile.hardware_id}, {profile.cpu_count} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}, onnxruntime {ort.__version__}, threads {args.threads}")
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demo_path, images, _, _ = build_demo_model(Path(tmp) / "digits.onnx")
        models = [("demo digits (logreg)", demo_path, images[:1])]
        for light in ("resnet50", "squeezenet"):
            path, _ = light_model(light)
            models.append((f"light {light}", path, rng.random((1, 3, 224, 224), dtype=np.float32)))
        t0 = time.perf_counter()
        for name, path, x in models:
            res = bench_model(name, path, x, threads=args.threads, rounds=args.rounds,
                              round_s=args.round_seconds, cache_dir=Path(tmp) / "engines")
            rows.append((name, res))
            print(f"{name:<22} ours {res['ours_fps']:>10.1f} fps   bare {res['bare_fps']:>10.1f} fps   "
                  f"ratio {res['ratio']:.3f} (median round {res['ratio_median_round']:.3f}, {res['frames']} frames each)")
        print(f"elapsed {time.perf_counter() - t0:.1f} s")
    worst = min(r["ratio"] for _, r in rows)
    print(f"worst ratio {worst:.3f} (goal >= 0.95): {'met' if worst >= 0.95 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
