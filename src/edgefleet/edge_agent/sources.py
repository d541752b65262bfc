"""Frame sources: the synthetic digits camera, a video file, or a camera index/URL (OpenCV).

Every source yields ``(timestamp, frame)`` with ``frame`` a uint8 BGR array (H, W, 3), at
most at the configured rate. The synthetic camera shows scikit-learn's handwritten digits
(bundled as ``data/digits.npz``, 1,797 8×8 images) scaled up to 64×64 with a little
sensor noise, each digit held for a few frames like a real scene; ``labels`` of the last
frame is the ground truth, which the demo uses to report per-class figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import SourceError

DIGITS_FILE = Path(__file__).with_name("data") / "digits.npz"


class FrameSource(Protocol):
    def frames(self) -> Iterator[tuple[float, np.ndarray]]: ...

    def close(self) -> None: ...


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS_FILE) as data:
        return data["images"], data["labels"]


class SyntheticDigits:
    """A camera that films handwritten digits. Deterministic for a given seed."""

    def __init__(self, seed: int = 0, size: int = 64, hold_frames: int = 3, noise: float = 6.0):
        self.images, self.labels = load_digits()
        self.rng = np.random.default_rng(seed)
        self.size = size
        self.hold_frames = hold_frames
        self.noise = noise
        self.current_label: int = -1

    def render(self, index: int) -> np.ndarray:
        img = np.asarray(self.images[index], dtype=np.float32) * (255.0 / 16.0)
        scale = self.size // img.shape[0]
        big = np.kron(img, np.ones((scale, scale), dtype=np.float32))
        if self.noise:
            big += np.asarray(self.rng.normal(0.0, self.noise, big.shape), dtype=np.float32)
        gray = np.clip(big, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        while True:
            index = int(self.rng.integers(len(self.images)))
            self.current_label = int(self.labels[index])
            for _ in range(self.hold_frames):
                yield time.time(), self.render(index)

    def close(self) -> None:
        pass


class OpenCVSource:
    """A video file, a camera index (``"0"``) or a stream URL, read with OpenCV."""

    def __init__(self, uri: str, *, loop: bool = False):
        import cv2

        self._cv2 = cv2
        self.uri = uri
        self.loop = loop
        target: int | str = int(uri) if uri.isdigit() else uri
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            raise SourceError(f"cannot open video source {uri!r}")

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        while True:
            ok, frame = self.cap.read()
            if not ok:
                if self.loop and not self.uri.isdigit():
                    self.cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, frame = self.cap.read()
                if not ok:
                    return
            if frame.ndim == 2:
                frame = self._cv2.cvtColor(frame, self._cv2.COLOR_GRAY2BGR)
            yield time.time(), frame

    def close(self) -> None:
        self.cap.release()


def open_source(kind: str, uri: str = "", *, seed: int = 0, loop: bool = True) -> FrameSource:
    if kind == "synthetic-digits":
        return SyntheticDigits(seed=seed)
    if kind in ("video", "camera"):
        if not uri:
            raise SourceError(f"source kind {kind!r} needs a uri (file path, camera index or URL)")
        return OpenCVSource(uri, loop=loop and kind == "video")
    raise SourceError(f"unknown source kind {kind!r}")


def paced(frames: Iterator[tuple[float, np.ndarray]], fps: float, stop: object | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield at most ``fps`` frames per second (sleeping between them)."""
    period = 1.0 / fps
    next_t = time.monotonic()
    for item in frames:
        now = time.monotonic()
        if next_t > now:
            time.sleep(next_t - now)
        next_t = max(next_t + period, time.monotonic() - period)
        yield item
