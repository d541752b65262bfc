"""The last few seconds of frames, by timestamp, for clips that start before a trigger.

``FrameRing.push(ts, frame)`` keeps a reference (no copy): the caller must hand over a
frame it will not overwrite (copy camera buffers that get reused). Frames older than
``capacity_seconds`` behind the newest are dropped, and a hard frame cap
(``capacity_seconds * fps_hint * 2``, at least 8) bounds memory if the camera runs
faster than announced. Memory is roughly ``capacity_seconds * fps * frame bytes``:
5 s of 640x480 BGR at 30 fps is about 140 MB, so size ``pre + post + shadow lag``.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

import numpy as np


class FrameRing:
    def __init__(self, capacity_seconds: float, fps_hint: float = 30.0, *, max_frames: int | None = None):
        if capacity_seconds <= 0 or fps_hint <= 0:
            raise ValueError("capacity_seconds and fps_hint must be > 0")
        self.capacity_seconds = capacity_seconds
        self.max_frames = max_frames or max(8, math.ceil(capacity_seconds * fps_hint * 2))
        self._ts: deque[float] = deque()
        self._frames: deque[np.ndarray] = deque()
        self.pushed = 0

    def push(self, ts: float, frame: np.ndarray) -> None:
        """Append a frame; timestamps must not go backwards (an older one is ignored)."""
        if self._ts and ts < self._ts[-1]:
            return
        self._ts.append(ts)
        self._frames.append(frame)
        self.pushed += 1
        horizon = ts - self.capacity_seconds
        while self._ts and (self._ts[0] < horizon or len(self._ts) > self.max_frames):
            self._ts.popleft()
            self._frames.popleft()

    def __len__(self) -> int:
        return len(self._ts)

    @property
    def newest_ts(self) -> float | None:
        return self._ts[-1] if self._ts else None

    @property
    def oldest_ts(self) -> float | None:
        return self._ts[0] if self._ts else None

    def latest(self) -> tuple[float, np.ndarray] | None:
        return (self._ts[-1], self._frames[-1]) if self._ts else None

    def window(self, start_ts: float, end_ts: float) -> list[tuple[float, np.ndarray]]:
        """Frames with ``start_ts <= ts <= end_ts``, oldest first."""
        ts = list(self._ts)
        lo = bisect.bisect_left(ts, start_ts)
        hi = bisect.bisect_right(ts, end_ts)
        return [(ts[i], self._frames[i]) for i in range(lo, hi)]

    def nearest(self, ts: float) -> tuple[float, np.ndarray] | None:
        """The frame whose timestamp is closest to ``ts``."""
        if not self._ts:
            return None
        stamps = list(self._ts)
        i = bisect.bisect_left(stamps, ts)
        best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - ts))
        return stamps[best], self._frames[best]
