"""Benchmark: the agent's pipeline frames/s ÷ a bare ``InferenceSession.run`` loop, same model.

Model: the onnx package's light ShuffleNet (1×3×224×224 → 1000 classes), ONNX Runtime CPU,
1 intra-op thread on both sides. The pipeline runs the whole control path — preprocess
(manifest: RGB, /255, ImageNet mean/std, NCHW), inference, decode, statistics, the
application output, the capture ring — unpaced, with no shadow model; the bare loop calls
``session.run`` on one prepared tensor. Rounds alternate (ABAB) so drift hits both.
Camera frames are 224×224 BGR (the model's size: no resize) unless ``--frame 640x480``.
Goal: ratio ≥ 0.9.

    python bench/bench_pipeline_fps.py [--rounds 4] [--round-seconds 4] [--frame 224x224]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.edge_agent.capture import Capture  # noqa: E402
from edgefleet.edge_agent.outbox import Outbox  # noqa: E402
from edgefleet.edge_agent.pipeline import Pipeline  # noqa: E402
from edgefleet.edge_agent.runner import ModelRunner  # noqa: E402
from edgefleet.protocols import Manifest, ModelRef, Preprocessing, TensorSpec  # noqa: E402


def light_model_path(name: str = "shufflenet") -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


def shufflenet_runner(workdir: Path, version: str = "1", threads: int = 1, **backend_options: Any) -> ModelRunner:
    """A ``ModelRunner`` for ShuffleNet with an ImageNet manifest, unpacked under ``workdir``
    (``backend_options`` as ``ModelRunner.load``'s, e.g. ``background=True`` for a candidate)."""
    src = light_model_path()
    manifest = Manifest(
        name="shufflenet", version=version, task="classification",
        input=TensorSpec(name="gpu_0/data_0", shape=[1, 3, 224, 224], dtype="float32", layout="NCHW"),
        output=TensorSpec(name="gpu_0/softmax_1", shape=[1, 1000], dtype="float32", layout="NC"),
        output_kind="probabilities",
        preprocessing=Preprocessing(resize=(224, 224), color="rgb", scale=1 / 255,
                                    mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        labels=[f"c{i}" for i in range(1000)], low_confidence_threshold=0.0,
    )
    d = workdir / f"shufflenet-{version}"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, d / manifest.model_file)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    return ModelRunner.load(ModelRef(name="shufflenet", version=version, digest=digest), manifest, d, threads=threads,
                            **backend_options)


class LoopSource:
    """Pre-rendered frames, handed out in a loop with fresh timestamps (a fast camera)."""

    def __init__(self, width: int, height: int, n: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(n)]

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        i = 0
        while True:
            yield time.time(), self.images[i % len(self.images)]
            i += 1

    def close(self) -> None:
        pass


def bare_fps(session: ort.InferenceSession, x: np.ndarray, seconds: float) -> float:
    name = session.get_inputs()[0].name
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, {name: x})
        n += 1
    return n / (time.perf_counter() - t0)


def pipeline_fps(runner: ModelRunner, source: LoopSource, seconds: float, outbox_dir: Path) -> float:
    outbox = Outbox(outbox_dir, max_bytes=64 * 1024**2, min_free_bytes=0)
    capture = Capture("bench", outbox, None, work_dir=outbox_dir / "work", near_band=0.0)
    pipe = Pipeline(source, fps=1e6, capture=capture)
    pipe.control = runner
    pipe.start()
    time.sleep(0.5)  # warm-up
    f0, t0 = pipe.totals.get("frames", 0), time.perf_counter()
    time.sleep(seconds)
    f1, t1 = pipe.totals.get("frames", 0), time.perf_counter()
    pipe.stop()
    outbox.close()
    return (f1 - f0) / (t1 - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--round-seconds", type=float, default=4.0)
    ap.add_argument("--frame", default="224x224", help="camera frame WxH")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    w, h = (int(v) for v in args.frame.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-fps-") as tmp:
        runner = shufflenet_runner(Path(tmp), threads=args.threads)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = args.threads, 1, 3
        session = ort.InferenceSession(str(light_model_path()), opts, providers=["CPUExecutionProvider"])
        source = LoopSource(w, h)
        x = runner.preprocess(source.images[0])
        bare_fps(session, x, 0.5)
        bare, ours = [], []
        for r in range(args.rounds):
            order = ("bare", "ours") if r % 2 == 0 else ("ours", "bare")
            for side in order:
                if side == "bare":
                    bare.append(bare_fps(session, x, args.round_seconds))
                else:
                    ours.append(pipeline_fps(runner, source, args.round_seconds, Path(tmp) / f"outbox-{r}"))
        runner.close()
    b, o = float(np.mean(bare)), float(np.mean(ours))
    print(f"model: light ShuffleNet, ORT CPU, {args.threads} thread(s); camera {w}x{h}; {args.rounds} rounds × {args.round_seconds:g} s")
    print(f"bare InferenceSession.run: {b:.1f} frames/s")
    print(f"pipeline (preprocess+infer+decode+stats+ring): {o:.1f} frames/s")
    print(f"ratio pipeline ÷ bare = {o / b:.3f} (goal ≥ 0.9)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
