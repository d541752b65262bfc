"""Benchmark: bytes uploaded ÷ bytes of the raw stream, one hour of synthetic camera at 1 % disagreement.

A simulated hour (timestamps advance by 1/fps per frame; nothing sleeps) of a 640×480
camera at 10 frames/s goes through the device's capture path: the capture ring, the
``ShadowMonitor`` with the default ``CapturePolicy`` (6 clips/min, 60/h, 2 s before to
1 s after) and the agent's default 10 s cool-down per class, VP8 clips at ``max_side``
640, JPEG keyframes and ~1 KB event records into the ``Outbox``. A candidate disagrees
with the control on 1 % of frames. Then the real ``Uploader`` sends the outbox to a real
controller (uvicorn on loopback, SQLite, local blob store) and counts every request body;
the MQTT event records are added. The raw stream is frames × 640·480·3 bytes.
Goal: ratio ≤ 0.001.

    python bench/bench_upload_ratio.py [--hours 1] [--fps 10] [--rate 0.01] [--max-side 640]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.cloud.api import create_app  # noqa: E402
from edgefleet.cloud.broker import free_port  # noqa: E402
from edgefleet.cloud.demo.orchestrator import UvicornThread  # noqa: E402
from edgefleet.cloud.runtime import Controller  # noqa: E402
from edgefleet.cloud.settings import load_settings  # noqa: E402
from edgefleet.cloud.shadow_index import clips_per_device  # noqa: E402
from edgefleet.edge_agent.capture import Capture  # noqa: E402
from edgefleet.edge_agent.outbox import Outbox  # noqa: E402
from edgefleet.edge_agent.sources import load_digits  # noqa: E402
from edgefleet.edge_agent.uploader import Uploader  # noqa: E402
from edgefleet.protocols import CapturePolicy, Manifest, ModelRef, Preprocessing, TensorSpec, encode  # noqa: E402
from edgefleet.shadow import Prediction  # noqa: E402

LABELS = [str(i) for i in range(10)]


def manifest(version: str) -> Manifest:
    return Manifest(name="digits", version=version, task="classification",
                    input=TensorSpec(name="input", shape=[1, 1, 8, 8], dtype="float32", layout="NCHW"),
                    output=TensorSpec(name="probabilities", shape=[1, 10], dtype="float32", layout="NC"),
                    output_kind="probabilities", preprocessing=Preprocessing(resize=(8, 8), color="gray"),
                    labels=LABELS, low_confidence_threshold=0.6)


class Model:
    def __init__(self, version: str):
        self.manifest = manifest(version)
        self.ref = ModelRef(name="digits", version=version, digest=version * 64)


def prediction(label: int) -> Prediction:
    probs = np.full(10, 0.02)
    probs[label] = 0.82
    return Prediction("classification", label=str(label), score=0.82, labels=tuple(LABELS), probs=probs)


def frames_pool(width: int, height: int, n: int = 60, seed: int = 0) -> list[tuple[int, np.ndarray]]:
    """Digits scaled onto a grey 640×480 scene with mild sensor noise."""
    import cv2

    images, labels = load_digits()
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(images), n, replace=False):
        digit = cv2.resize((images[i] * 15).astype(np.uint8), (height // 2, height // 2), interpolation=cv2.INTER_NEAREST)
        scene = np.full((height, width), 90, np.uint8)
        y, x = height // 4, (width - height // 2) // 2
        scene[y:y + digit.shape[0], x:x + digit.shape[1]] = digit
        noisy = np.clip(scene + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8)
        out.append((int(labels[i]), np.repeat(noisy[:, :, None], 3, axis=2)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=0.01, help="fraction of frames where the candidate disagrees")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--max-side", type=int, default=640)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    pool = frames_pool(w, h)
    control, candidate = Model("1"), Model("2")
    rng = random.Random(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        root = Path(tmp)
        outbox = Outbox(root / "outbox", max_bytes=2 * 1024**3, min_free_bytes=0)
        events: list[bytes] = []
        capture = Capture("bench-cam", outbox, lambda e: events.append(encode(e)), policy=CapturePolicy(),
                          work_dir=root / "work", max_side=args.max_side, fps_hint=args.fps, seed=0)
        n = int(args.hours * 3600 * args.fps)
        t0 = 1_700_000_000.0
        for i in range(n):
            ts = t0 + i / args.fps
            label, frame = pool[(i // 5) % len(pool)]  # each digit held for 0.5 s
            capture.push(ts, frame)
            ctl = prediction(label)
            cand = prediction((label + 1) % 10) if rng.random() < args.rate else ctl
            capture.observe(ts, frame, control, ctl, candidate, cand)
            capture.encode_pending()
        simulated_s = time.perf_counter() - started

        settings = load_settings(root / "controller", env={}, http_port=free_port())
        controller = Controller(settings)
        controller.start(mqtt=False)
        http = UvicornThread(create_app(controller), settings.http_host, settings.http_port)
        http.start()
        from edgefleet.cloud.devices.fleet import enrol_device

        with controller.session() as s:
            token = enrol_device(s, "bench-cam")
        uploader = Uploader(settings.base_url, "bench-cam", token, outbox, max_bytes_per_day=10**12,
                            chunk_size=1024 * 1024)
        sent = 0
        while outbox.pending(1):
            report = uploader.run_once(datetime.now(timezone.utc))
            sent += report.bytes_sent
            if report.offline:
                raise SystemExit(f"upload failed: {report.error}")
        uploader.close()
        with controller.session() as s:
            stored = sum(clips_per_device(s).values())
        http.stop()
        controller.stop()
        outbox.close()
    raw = n * w * h * 3
    mqtt = sum(len(e) for e in events)
    total = sent + mqtt
    print(f"simulated {args.hours:g} h of {w}x{h} at {args.fps:g} frames/s ({n} frames) in {simulated_s:.1f} s; "
          f"{args.rate:.1%} disagreement")
    print(f"captures: {capture.counts['events']} events, {capture.counts['clips']} clips "
          f"(budget refusals: {dict((k, v) for k, v in capture.counts.items() if k.startswith('refused_'))})")
    print(f"controller stored {stored} clips")
    print(f"uploaded: HTTP {sent:,} bytes + MQTT events {mqtt:,} bytes = {total:,} bytes; raw stream {raw:,} bytes")
    print(f"ratio uploaded ÷ raw = {total / raw:.6f} (goal ≤ 0.001)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
