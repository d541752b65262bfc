"""Shadow hot paths, each as a ratio against a baseline measured in the same run."""

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edgefleet.protocols import CapturePolicy, Manifest
from edgefleet.shadow import ShadowMonitor, decode, encode_clip, frame_signature, make_preprocessor


def bench(fn, n):
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e3


rng = np.random.default_rng(0)
frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
m = Manifest.model_validate(
    dict(
        name="r",
        version="1",
        input={"name": "x", "shape": [1, 3, 224, 224]},
        labels=[str(i) for i in range(1000)],
        preprocessing=dict(
            resize=[224, 224], color="rgb", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]
        ),
    )
)
pre = make_preprocessor(m)
mean = np.array([0.485, 0.456, 0.406], np.float32)
std = np.array([0.229, 0.224, 0.225], np.float32)


def naive():
    img = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_AREA)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    img = (img - mean) / std
    return np.ascontiguousarray(img.transpose(2, 0, 1))[None]


assert np.allclose(naive(), pre(frame), atol=1e-5)
out = np.empty((1, 3, 224, 224), np.float32)
t_naive = bench(naive, 300)
t_pre = bench(lambda: pre(frame), 300)
t_out = bench(lambda: pre(frame, out=out), 300)
img224 = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_AREA)
t_resize = bench(lambda: cv2.resize(frame, (224, 224), interpolation=cv2.INTER_AREA), 300)
print(
    f"preprocess 1280x720 -> 1x3x224x224 float32: naive numpy {t_naive:.3f} ms, ours {t_pre:.3f} ms "
    f"(x{t_naive / t_pre:.2f} faster), ours with out= {t_out:.3f} ms (x{t_naive / t_out:.2f}); resize alone {t_resize:.3f} ms"
)

cand = m.model_copy(update={"version": "2"})
mon = ShadowMonitor(m, cand, CapturePolicy(), seed=0)
logits = [rng.normal(size=(1, 1000)).astype(np.float32)]
logits2 = [rng.normal(size=(1, 1000)).astype(np.float32)]
t_obs = bench(lambda: mon.observe(0.0, logits, logits2), 2000)
t_dec = bench(lambda: decode(logits, m), 2000)
print(
    f"ShadowMonitor.observe (1000 classes, decode x2 + compare + triggers + stats): {t_obs:.3f} ms/frame "
    f"= {t_obs / t_pre:.2f}x one preprocess; decode alone {t_dec:.3f} ms"
)
t_sig = bench(lambda: frame_signature(frame), 300)
print(
    f"frame_signature 1280x720: {t_sig:.3f} ms = {t_sig / t_pre:.2f}x one preprocess (only paid when a trigger fires)"
)
frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(90)]
with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    info = encode_clip(frames, 30.0, Path(d) / "c")
    t_clip = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    info2 = encode_clip(frames, 30.0, Path(d) / "s", max_side=320)
    t_small = (time.perf_counter() - t) * 1e3
print(
    f"encode_clip 90 frames 640x480 (3 s at 30 fps, noise = worst case) {info.fourcc}: {t_clip:.0f} ms "
    f"({t_clip / 3000:.2f}x real time), {info.size_bytes / 1e6:.2f} MB; max_side=320: {t_small:.0f} ms ({t_small / t_clip:.2f}x), {info2.size_bytes / 1e6:.2f} MB"
)
yy, xx = np.mgrid[0:480, 0:640]
scene = [
    np.dstack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, ((xx + yy) // 2) % 256]).astype(np.uint8)
    for i in range(90)
]
with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    info = encode_clip(scene, 30.0, Path(d) / "c")
    t_scene = (time.perf_counter() - t) * 1e3
print(
    f"encode_clip 90 frames 640x480 moving gradient: {t_scene:.0f} ms ({t_scene / 3000:.2f}x real time; {t_scene / t_clip:.2f}x the noise clip), {info.size_bytes / 1e6:.2f} MB"
)
