"""Sidecar signals: vehicle or robot signals (CAN bus, ROS topics, GPS) as per-frame context.

Pure logic, no I/O (the socket lives in ``signal_source.py``). Another process on the device
writes samples at its own rate, one JSON object per line::

    {"t": 1732412345.12, "signals": {"steering_deg": -25.0, "speed_kmh": 12, "gear": "D"}}

``parse_sample`` checks a line (``t`` optional: unix seconds, the time of arrival when absent;
the same bounds as the application's context: keys ``[A-Za-z0-9_.-]{1,64}``, values finite
numbers, booleans or text of at most 128 characters, at most 32 signals) and raises
``SampleError`` with a reason (``malformed``, ``oversize``, ``non_finite``) on a bad one: the
whole sample is dropped. ``SignalTable`` keeps each signal's recent values with their times
(bounded: at most ``max_keys`` signals, a new one past that takes the place of a stale one or is
refused; two seconds of thinned history each). ``at(frame_ts)`` gives each signal's value at the
frame's time, if its sample is not older than ``max_age_s`` then; stale ones are left out,
never used. ``merge`` lays the application's per-frame context over them (the
per-frame one wins on a clash) within the 32 keys of the capture schema. All O(keys).
"""

from __future__ import annotations

import bisect
import json
import math
import re
import threading
from typing import Any

from ..protocols.campaigns import MAX_CONTEXT_KEYS

SCHEMA = "fleet.signals/1"
MAX_LINE = 4096  # bytes in one sample line, as for context lines on the prediction socket
MAX_TEXT = 128
FUTURE_SLACK_S = 0.05  # a sample stamped later than its arrival is taken as arrived now
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_TOP = frozenset({"t", "signals", "schema"})

Value = bool | int | float | str


class SampleError(ValueError):
    """A sample that is dropped; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _value(key: str, value: Any) -> Value:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise SampleError("malformed", f"signal {key!r}: integer out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SampleError("non_finite", f"signal {key!r}: not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise SampleError("oversize", f"signal {key!r}: text longer than {MAX_TEXT} characters")
        return value
    raise SampleError("malformed", f"signal {key!r}: a number, boolean or short text, got {type(value).__name__}")


def _finite_constant(name: str) -> float:
    raise SampleError("non_finite", f"{name} is not a finite number")


def parse_sample(line: bytes, arrived: float) -> tuple[float, dict[str, Value]]:
    """One sample line: its time and its signals.

    Args:
        line: the bytes of one line (without the newline).
        arrived: when it arrived (unix seconds); the sample's time when it carries no ``t``,
            and the latest time it may claim (plus a little slack).

    Raises:
        SampleError: the sample is dropped; ``reason`` says why.
    """
    if len(line) > MAX_LINE:
        raise SampleError("oversize", f"sample line longer than {MAX_LINE} bytes")
    try:
        obj = json.loads(line, parse_constant=_finite_constant)
    except SampleError:
        raise
    except (ValueError, RecursionError) as exc:
        raise SampleError("malformed", f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("signals"), dict):
        raise SampleError("malformed", 'a sample is an object {"t": <unix seconds>, "signals": {...}}')
    extra = set(obj) - _TOP
    if extra:
        raise SampleError("malformed", f"unknown field {sorted(extra)[0]!r}")
    if "schema" in obj and obj["schema"] != SCHEMA:
        raise SampleError("malformed", f"schema must be {SCHEMA!r}")
    signals = obj["signals"]
    if len(signals) > MAX_CONTEXT_KEYS:
        raise SampleError("oversize", f"more than {MAX_CONTEXT_KEYS} signals in one sample")
    t = obj.get("t")
    if t is None:
        t = arrived
    elif isinstance(t, bool) or not isinstance(t, (int, float)):
        raise SampleError("malformed", '"t" must be unix seconds')
    elif not math.isfinite(t):
        raise SampleError("non_finite", '"t" is not a finite number')
    t = min(float(t), arrived + FUTURE_SLACK_S)  # a clock ahead must not keep a value fresh forever
    out: dict[str, Value] = {}
    for key, value in signals.items():
        if not _KEY.match(key):
            raise SampleError("malformed", f"signal name {key[:70]!r}: use letters, digits, '_', '.', '-' (1-64)")
        out[key] = _value(key, value)
    return t, out


class _Series:
    """One signal's recent samples, oldest first (times ascending)."""

    __slots__ = ("ts", "vs")

    def __init__(self, t: float, value: Value):
        self.ts = [t]
        self.vs = [value]


class SignalTable:
    """Recent values of each sidecar signal, with their times; safe across threads.

    A frame is judged on the shadow path, a little after it was taken; by then a newer sample
    may have arrived. ``at(frame_ts)`` therefore gives each signal's value *at the frame's
    time*: its latest sample not after the frame, if not older than ``max_age_s``. Each signal
    keeps ``HISTORY_S`` of samples for that (thinned to at most two per ``max_age_s / 16``, at
    most ``MAX_POINTS``); a frame judged later than that gets no sidecar context.

    Args:
        max_age_s: a signal older than this at a frame is not that frame's context.
        max_keys: at most this many signals are kept (at most the schema's 32).
    """

    HISTORY_S = 2.0
    MAX_POINTS = 128

    def __init__(self, max_age_s: float = 0.5, max_keys: int = MAX_CONTEXT_KEYS):
        self.max_age_s = max_age_s
        self.max_keys = min(max_keys, MAX_CONTEXT_KEYS)
        self._grain = max_age_s / 16
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()
        self.refused_keys = 0  # signals refused because the table was full of fresh ones

    def update(self, t: float, signals: dict[str, Value], now: float) -> int:
        """Add these values at time ``t`` (a sample older than a signal's newest is ignored for
        that signal). Returns how many new signals were refused for want of room."""
        refused = 0
        keep_from = t - self.max_age_s - self.HISTORY_S
        with self._lock:
            series = self._series
            for key, value in signals.items():
                s = series.get(key)
                if s is None:
                    if len(series) >= self.max_keys and not self._evict_stale(now):
                        refused += 1
                        continue
                    series[key] = _Series(t, value)
                    continue
                if t < s.ts[-1]:
                    continue
                if len(s.ts) > 1 and t - s.ts[-2] < self._grain:
                    s.ts[-1], s.vs[-1] = t, value  # thinned: at most two points a grain
                else:
                    s.ts.append(t)
                    s.vs.append(value)
                drop = bisect.bisect_left(s.ts, keep_from, 0, len(s.ts) - 1)
                drop = max(drop, len(s.ts) - self.MAX_POINTS)
                if drop > 0:
                    del s.ts[:drop], s.vs[:drop]
            self.refused_keys += refused
        return refused

    def _evict_stale(self, now: float) -> bool:
        oldest = min(self._series, key=lambda k: self._series[k].ts[-1])
        if now - self._series[oldest].ts[-1] <= self.max_age_s:
            return False
        del self._series[oldest]
        return True

    def at(self, ts: float) -> dict[str, Value]:
        """Each signal's value at a frame taken at ``ts``: its latest sample not after ``ts`` and
        not older than ``max_age_s`` (a signal without one is left out). O(keys · log points)."""
        horizon = ts - self.max_age_s
        out: dict[str, Value] = {}
        with self._lock:
            for key, s in self._series.items():
                i = bisect.bisect_right(s.ts, ts) - 1
                if i >= 0 and s.ts[i] >= horizon:
                    out[key] = s.vs[i]
        return out

    def snapshot(self) -> dict[str, tuple[float, Value]]:
        """The newest sample of each signal."""
        with self._lock:
            return {k: (s.ts[-1], s.vs[-1]) for k, s in self._series.items()}


def merge(signals: dict[str, Value], frame: dict[str, Any] | None) -> dict[str, Any] | None:
    """The frame's context: sidecar signals under the application's per-frame context.

    The per-frame context wins on a key clash; the result keeps within the schema's 32 keys
    (per-frame keys first, then signals by name). None when both are empty.
    """
    if not signals:
        return frame or None
    if not frame:
        return dict(signals)
    merged = dict(frame)
    room = MAX_CONTEXT_KEYS - len(merged)
    for key in (sorted(signals) if len(signals) + len(frame) > MAX_CONTEXT_KEYS else signals):
        if room <= 0:
            break
        if key not in merged:
            merged[key] = signals[key]
            room -= 1
    return merged
