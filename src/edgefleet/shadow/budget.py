"""How much may leave the device: sliding-window counts, bytes, cool-downs, dedupe.

``CaptureBudget.admit(now, label, signature)`` answers one capture request and, when
it says yes, charges the budget; ``charge_bytes(now, n)`` adds the clip's size once it
is encoded. Every method takes ``now`` (seconds, any monotonic origin) explicitly; the
budget never reads a clock. Windows slide: the per-minute limit counts admissions in
``(now - 60, now]``, likewise hour (3600 s) and day (86400 s) and bytes per day.

Refusals, in the order they are checked:

* ``duplicate``: the frame looks like the last admitted one (``frame_signature``
  distance <= ``dedupe_threshold``) and that one is younger than ``dedupe_window_s``.
* ``cooldown``: the same label was admitted less than ``cooldown_s`` ago.
* ``per_minute`` / ``per_hour`` / ``per_day``: the count limit is reached.
* ``bytes_per_day``: the bytes charged in the last day reach the cap (or would pass it
  with ``expected_bytes``).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from ..protocols import CapturePolicy

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
SIGNATURE_SIDE = 16


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str = "ok"

    def __bool__(self) -> bool:
        return self.admitted


def frame_signature(frame: np.ndarray) -> np.ndarray:
    """A cheap, lighting-tolerant signature: a 16x16 grey thumbnail minus its mean (float32).

    Costs one ``cv2.resize`` (INTER_AREA) of the frame; 1 KB per signature.
    """
    import cv2

    img = frame
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif img.ndim == 3:
        img = img[:, :, 0]
    thumb = cv2.resize(img, (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA)
    thumb = thumb.astype(np.float32)
    thumb -= thumb.mean()
    return thumb


def signature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two signatures, in grey levels / 255 (0 = identical)."""
    return float(np.abs(a - b).mean() / 255.0)


class _Window:
    """Timestamps (and amounts) inside a sliding window of ``span`` seconds."""

    def __init__(self, span: float):
        self.span = span
        self._items: deque[tuple[float, int]] = deque()
        self.total = 0

    def _expire(self, now: float) -> None:
        while self._items and self._items[0][0] <= now - self.span:
            self.total -= self._items.popleft()[1]

    def sum(self, now: float) -> int:
        self._expire(now)
        return self.total

    def add(self, now: float, amount: int = 1) -> None:
        self._expire(now)
        self._items.append((now, amount))
        self.total += amount


class CaptureBudget:
    """Bounds on captures: counts per minute/hour/day, bytes per day, cool-down, dedupe."""

    def __init__(
        self,
        *,
        max_per_minute: int = 6,
        max_per_hour: int = 60,
        max_per_day: int = 500,
        max_bytes_per_day: int = 200 * 1024 * 1024,
        cooldown_s: float = 10.0,
        dedupe_threshold: float = 0.02,
        dedupe_window_s: float = 60.0,
    ):
        self.limits = {"per_minute": max_per_minute, "per_hour": max_per_hour, "per_day": max_per_day}
        self.max_bytes_per_day = max_bytes_per_day
        self.cooldown_s = cooldown_s
        self.dedupe_threshold = dedupe_threshold
        self.dedupe_window_s = dedupe_window_s
        self._counts = {"per_minute": _Window(MINUTE), "per_hour": _Window(HOUR), "per_day": _Window(DAY)}
        self._bytes = _Window(DAY)
        self._last_by_label: dict[str, float] = {}
        self._last_signature: np.ndarray | None = None
        self._last_signature_ts = float("-inf")
        self.refused: Counter[str] = Counter()
        self.admitted = 0

    @classmethod
    def from_capture_policy(
        cls,
        policy: CapturePolicy,
        *,
        cooldown_s: float = 10.0,
        dedupe_threshold: float = 0.02,
        dedupe_window_s: float = 60.0,
    ) -> CaptureBudget:
        budget = cls(dedupe_window_s=dedupe_window_s)
        budget.apply_policy(policy, cooldown_s=cooldown_s, dedupe_threshold=dedupe_threshold)
        return budget

    def apply_policy(self, policy: CapturePolicy, *, cooldown_s: float, dedupe_threshold: float) -> None:
        """New limits from the controller; what was already counted stays counted.

        ``cooldown_s`` and ``dedupe_threshold`` are the device's own values, used where
        the policy leaves them unset.
        """
        self.limits = {
            "per_minute": policy.max_per_minute,
            "per_hour": policy.max_per_hour,
            "per_day": policy.max_per_day,
        }
        self.max_bytes_per_day = policy.max_bytes_per_day
        self.cooldown_s = cooldown_s if policy.cooldown_s is None else policy.cooldown_s
        self.dedupe_threshold = dedupe_threshold if policy.dedupe_threshold is None else policy.dedupe_threshold

    def check(
        self,
        now: float,
        label: str | None = None,
        signature: np.ndarray | None = None,
        *,
        expected_bytes: int = 0,
    ) -> Admission:
        """Would a capture be admitted now? Charges nothing."""
        if (
            signature is not None
            and self._last_signature is not None
            and now - self._last_signature_ts < self.dedupe_window_s
            and signature_distance(signature, self._last_signature) <= self.dedupe_threshold
        ):
            return Admission(False, "duplicate")
        if label is not None and self.cooldown_s > 0:
            last = self._last_by_label.get(label)
            if last is not None and now - last < self.cooldown_s:
                return Admission(False, "cooldown")
        for name, window in self._counts.items():
            if window.sum(now) >= self.limits[name]:
                return Admission(False, name)
        used = self._bytes.sum(now)
        if used >= self.max_bytes_per_day or used + expected_bytes > self.max_bytes_per_day:
            return Admission(False, "bytes_per_day")
        return Admission(True)

    def admit(
        self,
        now: float,
        label: str | None = None,
        signature: np.ndarray | None = None,
        *,
        expected_bytes: int = 0,
    ) -> Admission:
        """Check, and on success charge one capture (counts, cool-down, dedupe reference)."""
        verdict = self.check(now, label, signature, expected_bytes=expected_bytes)
        if not verdict:
            self.refused[verdict.reason] += 1
            return verdict
        for window in self._counts.values():
            window.add(now)
        if label is not None:
            self._last_by_label[label] = now
        if signature is not None:
            self._last_signature, self._last_signature_ts = signature, now
        self.admitted += 1
        return verdict

    def charge_bytes(self, now: float, nbytes: int) -> None:
        """Add an encoded clip's size (clip + keyframe + record) to the day's bytes."""
        self._bytes.add(now, int(nbytes))

    def bytes_used(self, now: float) -> int:
        return self._bytes.sum(now)

    def used(self, now: float) -> dict[str, int]:
        """Admissions inside each window, and bytes in the last day."""
        out = {name: w.sum(now) for name, w in self._counts.items()}
        out["bytes_per_day"] = self._bytes.sum(now)
        return out
