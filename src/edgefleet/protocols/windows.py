"""Maintenance windows: when a device may *switch* to a model it has already downloaded.

The controller sends a ``MaintenancePolicy`` inside the director-signed device settings
(``DeviceSettings.maintenance``); the agent evaluates it on the device, in its own clock,
so a device that was offline across a window start still switches only inside a window.
No windows (the default) means a device switches as soon as a model is ready.

A window is: days of the week (``mon`` … ``sun``), a local start time ``HH:MM``, a
duration in seconds, and a time zone — an IANA name (``Europe/Berlin``) or ``device`` (the
device's own zone). The start is local wall time on each listed day; the duration is real
elapsed time from that instant (a 2 h window on the night clocks go back is still 2 h).
A start that falls in the hour a spring-forward skips opens at the same offset after the
jump (``zoneinfo``'s ``fold=0``). Windows may overlap; a device is inside the policy when
it is inside any of them.

``is_open`` and ``next_open`` are pure: they take ``now`` (an aware datetime) and the
device's zone, and never read a clock.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DEVICE_ZONE = "device"
START_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
MAX_WINDOW_S = 7 * 86400
MAX_WINDOWS = 32
ZoneName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$")]


class MaintenanceWindow(BaseModel):
    """One recurring window: ``days`` at ``start`` (local ``HH:MM``) for ``duration_s``."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    days: list[Day] = Field(min_length=1, max_length=7)
    start: str = Field(pattern=START_PATTERN)
    duration_s: int = Field(ge=60, le=MAX_WINDOW_S)
    timezone: ZoneName = DEVICE_ZONE

    @field_validator("days")
    @classmethod
    def _canonical_days(cls, days: list[str]) -> list[str]:
        return sorted(set(days), key=DAYS.index)

    def describe(self) -> str:
        return f"{','.join(self.days)} {self.start} for {format_duration(self.duration_s)} ({self.timezone})"


class MaintenancePolicy(BaseModel):
    """The windows a device switches in; empty: any time."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    windows: list[MaintenanceWindow] = Field(default_factory=list, max_length=MAX_WINDOWS)


class UnknownZone(ValueError):
    """A window names a time zone this machine's tz database does not have."""


def zone_of(name: str, device_zone: tzinfo) -> tzinfo:
    """The ``tzinfo`` of a window's zone name (``device``: the device's own).

    Raises:
        UnknownZone: not an IANA name known here.
    """
    if name == DEVICE_ZONE:
        return device_zone
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UnknownZone(f"unknown time zone {name!r}") from None


def _start_at(day: date, start: str, zone: tzinfo) -> datetime:
    hh, mm = (int(x) for x in start.split(":"))
    return datetime.combine(day, time(hh, mm), tzinfo=zone).astimezone(timezone.utc)


def _starts(window: MaintenanceWindow, now: datetime, device_zone: tzinfo, back: int, ahead: int) -> list[datetime]:
    """UTC start instants of ``window`` on local days ``-back .. +ahead`` around ``now``."""
    zone = zone_of(window.timezone, device_zone)
    today = now.astimezone(zone).date()
    out = []
    for offset in range(-back, ahead + 1):
        day = today + timedelta(days=offset)
        if DAYS[day.weekday()] in window.days:
            out.append(_start_at(day, window.start, zone))
    return out


def open_window(policy: MaintenancePolicy, now: datetime, device_zone: tzinfo) -> tuple[datetime, datetime] | None:
    """The (start, end) in UTC of a window open at ``now``, the one ending last; None if none.

    Raises:
        UnknownZone: a window names a zone unknown here.
    """
    best: tuple[datetime, datetime] | None = None
    for w in policy.windows:
        for start in _starts(w, now, device_zone, back=8, ahead=0):
            end = start + timedelta(seconds=w.duration_s)
            if start <= now < end and (best is None or end > best[1]):
                best = (start, end)
    return best


def is_open(policy: MaintenancePolicy, now: datetime, device_zone: tzinfo) -> bool:
    """May the device switch at ``now``? True when there are no windows."""
    return not policy.windows or open_window(policy, now, device_zone) is not None


def next_open(policy: MaintenancePolicy, now: datetime, device_zone: tzinfo) -> datetime | None:
    """The first window start (UTC) after ``now``; None when there are no windows.

    Raises:
        UnknownZone: a window names a zone unknown here.
    """
    starts = [s for w in policy.windows for s in _starts(w, now, device_zone, back=0, ahead=8) if s > now]
    return min(starts) if starts else None


# -- durations with units, as operators type them ----------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90m``, ``2h``, ``1h30m``, ``1d`` → seconds. A bare number is refused (which unit?).

    Raises:
        ValueError: the message says what is wrong.
    """
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration; write it with a unit, e.g. 2h or 90m")
    total, number = 0, ""
    for ch in s:
        if ch.isdigit():
            number += ch
        elif ch in _UNITS and number:
            total += int(number) * _UNITS[ch]
            number = ""
        else:
            raise ValueError(f"invalid duration {text!r}; write it with units s, m, h, d, e.g. 2h or 1h30m")
    if number:
        raise ValueError(f"duration {text!r} has no unit; write e.g. {number}m or {number}h")
    return total


def format_duration(seconds: int) -> str:
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def parse_days(text: str) -> list[str]:
    """``mon-fri``, ``sat,sun``, ``daily`` / ``all`` → day names.

    Raises:
        ValueError: an unknown day name.
    """
    out: list[str] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if part in ("daily", "all", "every"):
            out.extend(DAYS)
        elif "-" in part:
            a, _, b = part.partition("-")
            if a not in DAYS or b not in DAYS:
                raise ValueError(f"unknown day in {part!r}; days are {', '.join(DAYS)}")
            i, j = DAYS.index(a), DAYS.index(b)
            out.extend(DAYS[i:j + 1] if i <= j else DAYS[i:] + DAYS[:j + 1])
        elif part in DAYS:
            out.append(part)
        else:
            raise ValueError(f"unknown day {part!r}; days are {', '.join(DAYS)} (or ranges like mon-fri)")
    return sorted(set(out), key=DAYS.index)


__all__ = ["DAYS", "DEVICE_ZONE", "MaintenancePolicy", "MaintenanceWindow", "UnknownZone", "format_duration",
           "is_open", "next_open", "open_window", "parse_days", "parse_duration", "zone_of"]
