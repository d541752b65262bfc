"""Trigger → clip: collect frames from N s before to M s after, then encode them.

Flow on a device::

    recorder = ClipRecorder(pre_seconds=2, post_seconds=1, fps_hint=30)
    for ts, frame in camera:
        for ready in recorder.push(ts, frame):   # clips whose post-trigger frames arrived
            worker.submit(encode, ready)          # off the critical path
        ...
        if capture_admitted:
            recorder.request(trigger_ts, clip_id)

``push``/``request``/``poll`` are cheap bookkeeping; ``encode_clip`` (OpenCV
``VideoWriter``) and ``encode_keyframe`` (``cv2.imencode``) do the work and belong on a
worker thread. A clip whose post-trigger frames never come (camera stopped) finishes
at ``trigger_ts + post_seconds + timeout_s`` with what the ring holds (``complete=False``).

Codec: the first of ``CODECS`` that writes a clip OpenCV can read back, probed once
per process. VP8 in WebM comes first: Chromium plays it and the pip wheels of
``opencv-python-headless`` ship its encoder; their H.264 ('avc1') needs a hardware
encoder that is usually absent. ``ClipInfo.browser_playable`` says whether the chosen
codec plays in Chromium.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ClipEncodeError
from .ringbuffer import FrameRing


@dataclass(frozen=True)
class Codec:
    fourcc: str
    suffix: str
    mime: str
    browser_playable: bool


CODECS: tuple[Codec, ...] = (
    Codec("VP80", ".webm", "video/webm", True),
    Codec("VP90", ".webm", "video/webm", True),
    Codec("avc1", ".mp4", "video/mp4", True),
    Codec("mp4v", ".mp4", "video/mp4", False),
    Codec("MJPG", ".avi", "video/x-msvideo", False),
)

_EPS = 1e-6  # timestamps are floats: 0.4 + 0.2 > 0.6

_probed: dict[Codec, bool] = {}


@dataclass
class ClipRequest:
    clip_id: str
    trigger_ts: float
    start_ts: float
    end_ts: float
    deadline: float
    payload: Any = None


@dataclass
class ReadyClip:
    """Frames of one finished clip, oldest first, sharing arrays with the ring (read-only)."""

    clip_id: str
    trigger_ts: float
    frames: list[tuple[float, np.ndarray]]
    complete: bool
    payload: Any = None

    @property
    def keyframe(self) -> np.ndarray | None:
        """The frame nearest the trigger."""
        if not self.frames:
            return None
        return min(self.frames, key=lambda f: abs(f[0] - self.trigger_ts))[1]

    @property
    def keyframe_index(self) -> int | None:
        if not self.frames:
            return None
        return min(range(len(self.frames)), key=lambda i: abs(self.frames[i][0] - self.trigger_ts))

    def fps(self, default: float = 15.0) -> float:
        """Frame rate measured from the timestamps (``default`` for fewer than 2 frames)."""
        if len(self.frames) < 2 or self.frames[-1][0] <= self.frames[0][0]:
            return default
        return (len(self.frames) - 1) / (self.frames[-1][0] - self.frames[0][0])


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    mime: str
    fourcc: str
    frames: int
    width: int
    height: int
    fps: float
    size_bytes: int
    sha256: str
    browser_playable: bool


class ClipRecorder:
    """Pending clip requests over a ``FrameRing`` sized ``pre + post + lag_margin_s``."""

    def __init__(
        self,
        pre_seconds: float,
        post_seconds: float,
        fps_hint: float = 30.0,
        *,
        timeout_s: float = 2.0,
        lag_margin_s: float = 2.0,
        max_pending: int = 8,
        ring: FrameRing | None = None,
    ):
        self.pre_seconds = pre_seconds
        self.post_seconds = post_seconds
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.ring = ring or FrameRing(pre_seconds + post_seconds + lag_margin_s, fps_hint)
        self._pending: list[ClipRequest] = []
        self.refused = 0

    @property
    def pending(self) -> list[ClipRequest]:
        return list(self._pending)

    def request(self, trigger_ts: float, clip_id: str, payload: Any = None, *,
                pre_seconds: float | None = None, post_seconds: float | None = None) -> bool:
        """Ask for a clip around ``trigger_ts``; False (and counted) when too many are pending.

        ``pre_seconds``/``post_seconds`` override the recorder's for this clip (a campaign's
        ``--clip``); frames older than the ring holds are not there to include.
        """
        if len(self._pending) >= self.max_pending:
            self.refused += 1
            return False
        pre = self.pre_seconds if pre_seconds is None else pre_seconds
        post = self.post_seconds if post_seconds is None else post_seconds
        self._pending.append(
            ClipRequest(
                clip_id=clip_id,
                trigger_ts=trigger_ts,
                start_ts=trigger_ts - pre,
                end_ts=trigger_ts + post,
                deadline=trigger_ts + post + self.timeout_s,
                payload=payload,
            )
        )
        return True

    def push(self, ts: float, frame: np.ndarray) -> list[ReadyClip]:
        """Add a frame; returns the clips it completes (and any past their deadline)."""
        self.ring.push(ts, frame)
        return self.poll(ts)

    def poll(self, now: float) -> list[ReadyClip]:
        """Clips whose last frame has arrived, or whose deadline ``now`` has passed."""
        newest = self.ring.newest_ts
        ready: list[ReadyClip] = []
        keep: list[ClipRequest] = []
        for req in self._pending:
            complete = newest is not None and newest >= req.end_ts - _EPS
            if complete or now >= req.deadline:
                frames = self.ring.window(req.start_ts - _EPS, req.end_ts + _EPS)
                ready.append(ReadyClip(req.clip_id, req.trigger_ts, frames, complete, req.payload))
            else:
                keep.append(req)
        self._pending = keep
        return ready


def _fit(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side and max(width, height) > max_side:
        s = max_side / max(width, height)
        width, height = round(width * s), round(height * s)
    return max(2, width - width % 2), max(2, height - height % 2)


def _as_bgr(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    img = frame if frame.dtype == np.uint8 else np.clip(frame, 0, 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if (img.shape[1], img.shape[0]) != size:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img


def _write(frames: Sequence[np.ndarray], fps: float, path: Path, codec: Codec, size: tuple[int, int]) -> bool:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec.fourcc), float(fps), size, True)
    try:
        if not writer.isOpened():
            return False
        for f in frames:
            writer.write(_as_bgr(f, size))
    finally:
        writer.release()
    return path.exists() and path.stat().st_size > 0


def codec_works(codec: Codec) -> bool:
    """Whether ``codec`` round-trips a tiny clip here (written, then read back); probed once."""
    if codec not in _probed:
        import cv2

        frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(4)]
        ok = False
        with tempfile.TemporaryDirectory(prefix="edgefleet-codec-") as tmp:
            p = Path(tmp) / f"probe-{codec.fourcc}{codec.suffix}"
            try:
                if _write(frames, 10.0, p, codec, (32, 32)):
                    cap = cv2.VideoCapture(str(p))
                    ok, _ = cap.read()
                    cap.release()
            except cv2.error:
                ok = False
        _probed[codec] = bool(ok)
    return _probed[codec]


def available_codecs(codecs: Sequence[Codec] = CODECS) -> list[Codec]:
    """Every codec of ``codecs`` (in preference order) that works here. Probes them all,
    which makes OpenCV log errors for absent encoders; ``encode_clip`` stops at the first."""
    return [c for c in codecs if codec_works(c)]


def encode_clip(
    frames: Sequence[np.ndarray],
    fps: float,
    path: str | os.PathLike[str],
    *,
    max_side: int | None = None,
    codecs: Sequence[Codec] = CODECS,
) -> ClipInfo:
    """Write ``frames`` (uint8 BGR or grey) as a video next to ``path``.

    The suffix of ``path`` is replaced by the codec's (``.webm`` for VP8); the file is
    written under a temporary name and renamed into place. Frames are resized to the
    first frame's size, scaled so the longer side is at most ``max_side``, even sides.

    Raises:
        ClipEncodeError: no frames, or no codec could write them.
    """
    if not frames:
        raise ClipEncodeError("a clip needs at least one frame")
    if not fps or fps <= 0:
        raise ClipEncodeError(f"invalid frame rate {fps!r}")
    first = frames[0]
    size = _fit(first.shape[1], first.shape[0], max_side)
    target = Path(path)
    tried: list[str] = []
    for codec in codecs:
        if not codec_works(codec):
            tried.append(f"{codec.fourcc} (unavailable)")
            continue
        final = target.with_suffix(codec.suffix)
        tmp = final.with_name(f".{final.stem}.partial{codec.suffix}")
        try:
            ok = _write(frames, fps, tmp, codec, size)
        except Exception as exc:  # cv2.error, OSError
            ok = False
            tried.append(f"{codec.fourcc}: {exc}")
        if not ok:
            tmp.unlink(missing_ok=True)
            tried.append(codec.fourcc)
            continue
        os.replace(tmp, final)
        data = final.read_bytes()
        return ClipInfo(
            path=final, mime=codec.mime, fourcc=codec.fourcc, frames=len(frames),
            width=size[0], height=size[1], fps=float(fps), size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(), browser_playable=codec.browser_playable,
        )
    raise ClipEncodeError(f"no video codec could write the clip (tried: {', '.join(tried) or 'none'})")


def encode_keyframe(frame: np.ndarray, *, quality: int = 85, max_side: int | None = None) -> bytes:
    """JPEG bytes of one frame (uint8 BGR or grey).

    Raises:
        ClipEncodeError: OpenCV refused to encode it.
    """
    import cv2

    img = frame if frame.dtype == np.uint8 else np.clip(frame, 0, 255).astype(np.uint8)
    if max_side and max(img.shape[:2]) > max_side:
        s = max_side / max(img.shape[:2])
        img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ClipEncodeError("JPEG encoding failed")
    return buf.tobytes()
