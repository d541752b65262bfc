"""Schedules and dispatch rates of a rollout, the pure part: parsing and pacing.

* ``parse_start_at(text, now)``: ``--start-at`` / ``--at`` — ISO 8601 with an offset
  (``2026-05-01T22:00:00+02:00``, ``…Z``) or relative to ``now`` (``+10m``, ``+1h30m``) —
  as seconds since the epoch. A naive time, a time in the past or more than a year ahead is
  refused with the reason.
* ``parse_pace(rate=..., ramp=...)``: ``--rate N/min`` (a fixed cap) or
  ``--ramp START/min,xFACTOR,every=K`` (AWS IoT Jobs' exponential rollout rate: the rate
  grows by FACTOR after every K successful devices) → a ``Pace``.
* ``Pace.rate_at(successes)``: the rate now, devices per minute.
* ``take(rate, next_at, now, wanted)``: how many devices may be dispatched now and the new
  ``next_at`` (a GCRA / virtual-scheduling token bucket: one device per ``60/rate``
  seconds, a burst of at most one second's worth, so a 60/min rollout sends its devices at
  least 1 s apart and a 600/min one up to 10 per pass of a 1 s reconciler).

The planner keeps ``next_at`` in the rollout's state, so pacing survives a controller
restart; nothing here reads a clock.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

from .errors import DurationSyntaxError, RateSyntaxError, ScheduleError

MIN_RATE, MAX_RATE = 1.0, 1000.0  # devices per minute (AWS IoT Jobs' bounds)
MIN_FACTOR, MAX_FACTOR = 1.1, 5.0
MAX_EVERY = 1_000_000
MAX_AHEAD_S = 366 * 86400.0
_EPS = 1e-9

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(?:min|m)\s*$")
_FACTOR = re.compile(r"^\s*[x\*]\s*(\d+(?:\.\d+)?)\s*$")
_EVERY = re.compile(r"^\s*every\s*=\s*(\d+)\s*$")


@dataclass(frozen=True)
class Pace:
    """A dispatch rate: ``start`` devices/min, times ``factor`` after every ``every``
    successes (``every == 0``: a fixed rate), never above ``MAX_RATE``."""

    start: float
    factor: float = 1.0
    every: int = 0

    def rate_at(self, successes: int) -> float:
        """Devices per minute after ``successes`` devices succeeded."""
        if self.every <= 0 or successes <= 0:
            return self.start
        steps = successes // self.every
        return min(MAX_RATE, self.start * self.factor ** min(steps, 10_000))

    def __str__(self) -> str:
        if self.every <= 0:
            return f"{self.start:g}/min"
        return f"{self.start:g}/min,x{self.factor:g},every={self.every}"


def _rate(text: str, option: str) -> float:
    m = _RATE.match(text)
    if m is None:
        raise RateSyntaxError(f"{option}: a rate reads like 60/min (devices per minute)", text=text)
    value = float(m.group(1))
    if not MIN_RATE <= value <= MAX_RATE:
        raise RateSyntaxError(f"{option}: {value:g}/min is outside {MIN_RATE:g}..{MAX_RATE:g} devices "
                              "per minute", text=text)
    return value


def parse_pace(*, rate: str | None = None, ramp: str | None = None) -> Pace | None:
    """``--rate`` or ``--ramp`` text → a ``Pace`` (None: no cap, as before).

    Raises:
        RateSyntaxError: bad syntax, a bound broken (rate 1..1000/min, factor 1.1..5,
            every >= 1), or both options given.
    """
    if rate is not None and ramp is not None:
        raise RateSyntaxError("give --rate or --ramp, not both (a ramp's START is its first rate)")
    if rate is not None:
        return Pace(_rate(rate, "--rate"))
    if ramp is None:
        return None
    parts = ramp.split(",")
    if len(parts) != 3:
        raise RateSyntaxError("--ramp reads START/min,xFACTOR,every=K, e.g. 10/min,x2,every=5",
                              text=ramp)
    start = _rate(parts[0], "--ramp")
    fm, em = _FACTOR.match(parts[1]), _EVERY.match(parts[2])
    if fm is None:
        raise RateSyntaxError("--ramp: the factor reads x2 or x1.5", text=ramp)
    if em is None:
        raise RateSyntaxError("--ramp: the step reads every=K (K successful devices)", text=ramp)
    factor, every = float(fm.group(1)), int(em.group(1))
    if not MIN_FACTOR - _EPS <= factor <= MAX_FACTOR + _EPS:
        raise RateSyntaxError(f"--ramp: factor {factor:g} is outside {MIN_FACTOR:g}..{MAX_FACTOR:g}",
                              text=ramp)
    if not 1 <= every <= MAX_EVERY:
        raise RateSyntaxError(f"--ramp: every={every} must be between 1 and {MAX_EVERY}", text=ramp)
    return Pace(start, factor, every)


def take(rate_per_min: float, next_at: float | None, now: float, wanted: int) -> tuple[int, float | None]:
    """How many of ``wanted`` devices may be dispatched at ``now``, and the next ``next_at``.

    ``next_at`` is the theoretical time of the next dispatch (None: nothing sent yet). A
    dispatch is allowed while ``next_at`` is at most one second's worth of devices ahead of
    ``now`` (at least one device): the rate is never exceeded over any window, only
    rounded to the reconciler's pass.
    """
    if wanted <= 0:
        return 0, next_at
    interval = 60.0 / rate_per_min
    tolerance = (max(1, math.ceil(rate_per_min / 60.0)) - 1) * interval
    tat = now if next_at is None else max(next_at, now)
    n = 0
    while n < wanted and tat - now <= tolerance + _EPS:
        tat += interval
        n += 1
    return n, (tat if n else next_at)


def parse_start_at(text: str, now: float) -> float:
    """``--start-at`` text → seconds since the epoch. See the module docstring.

    Raises:
        ScheduleError: it does not parse, has no offset, is in the past or too far ahead.
    """
    from .model import parse_duration

    s = (text or "").strip()
    if not s:
        raise ScheduleError("an empty start time; give e.g. +10m or 2026-05-01T22:00:00+02:00")
    if s.startswith("+"):
        try:
            at = now + parse_duration(s[1:], require_unit=True)
        except DurationSyntaxError as exc:
            raise ScheduleError(f"a relative start time reads like +10m or +1h30m: {exc.message}",
                                text=text) from None
    else:
        try:
            dt = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
        except ValueError:
            raise ScheduleError("a start time is ISO 8601 with an offset (2026-05-01T22:00:00+02:00, "
                                "…Z) or relative (+10m)", text=text) from None
        if dt.tzinfo is None:
            raise ScheduleError("a start time needs an offset (Z, +02:00): whose local time is it?",
                                text=text)
        at = dt.timestamp()
    if not math.isfinite(at) or at <= now:
        raise ScheduleError("the start time is in the past", text=text)
    if at - now > MAX_AHEAD_S:
        raise ScheduleError("the start time is more than a year ahead", text=text)
    return at


__all__ = ["MAX_FACTOR", "MAX_RATE", "MIN_FACTOR", "MIN_RATE", "Pace", "parse_pace", "parse_start_at", "take"]
