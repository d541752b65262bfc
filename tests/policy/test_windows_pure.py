"""Maintenance windows on the device's clock (pure): days, start, duration, zones, DST."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from edgefleet.protocols.windows import (
    MaintenancePolicy,
    MaintenanceWindow,
    UnknownZone,
    is_open,
    next_open,
    parse_days,
    parse_duration,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def _policy(*windows: MaintenanceWindow) -> MaintenancePolicy:
    return MaintenancePolicy(windows=list(windows))


def test_no_windows_means_any_time() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert is_open(MaintenancePolicy(), now, UTC) and next_open(MaintenancePolicy(), now, UTC) is None


def test_inside_and_outside_a_weekday_window_in_another_zone() -> None:
    # 2026-12-02 is a Wednesday; Berlin is UTC+1 in December
    p = _policy(MaintenanceWindow(days=["wed"], start="02:00", duration_s=7200, timezone="Europe/Berlin"))
    assert not is_open(p, datetime(2026, 12, 2, 0, 59, tzinfo=UTC), UTC)
    assert is_open(p, datetime(2026, 12, 2, 1, 0, tzinfo=UTC), UTC)
    assert not is_open(p, datetime(2026, 12, 2, 3, 0, tzinfo=UTC), UTC)
    assert next_open(p, datetime(2026, 12, 2, 3, 0, tzinfo=UTC), UTC) == datetime(2026, 12, 9, 1, 0, tzinfo=UTC)


def test_device_zone_is_the_devices_own() -> None:
    p = _policy(MaintenanceWindow(days=["wed"], start="02:00", duration_s=3600, timezone="device"))
    at = datetime(2026, 12, 2, 7, 30, tzinfo=UTC)  # 02:30 in New York
    assert is_open(p, at, NEW_YORK) and not is_open(p, at, BERLIN)


def test_a_window_crosses_midnight_and_is_open_on_the_next_day() -> None:
    p = _policy(MaintenanceWindow(days=["sun"], start="23:00", duration_s=3 * 3600, timezone="UTC"))
    assert is_open(p, datetime(2026, 12, 7, 1, 0, tzinfo=UTC), UTC)  # Monday 01:00


def test_dst_spring_forward_keeps_local_start_and_real_duration() -> None:
    # New York jumps 02:00 → 03:00 on 2026-03-08 (Sunday); a 01:30 window of 2 h ends at 04:30 local
    p = _policy(MaintenanceWindow(days=["sun"], start="01:30", duration_s=7200, timezone="America/New_York"))
    start = next_open(p, datetime(2026, 3, 7, 12, 0, tzinfo=UTC), UTC)
    assert start == datetime(2026, 3, 8, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert is_open(p, start + timedelta(minutes=119), UTC) and not is_open(p, start + timedelta(minutes=120), UTC)
    # the week after, 01:30 is EDT: one hour earlier in UTC
    assert next_open(p, start + timedelta(hours=3), UTC) == datetime(2026, 3, 15, 5, 30, tzinfo=UTC)


def test_dst_fall_back_and_a_start_in_the_skipped_hour() -> None:
    p = _policy(MaintenanceWindow(days=["sun"], start="02:30", duration_s=3600, timezone="America/New_York"))
    # 2026-03-08 02:30 does not exist in New York: it opens at 03:30 EDT (07:30 UTC)
    assert next_open(p, datetime(2026, 3, 8, 0, 0, tzinfo=UTC), UTC) == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    # 2026-11-01 (fall back): 02:30 EST = 07:30 UTC
    assert next_open(p, datetime(2026, 11, 1, 0, 0, tzinfo=UTC), UTC) == datetime(2026, 11, 1, 7, 30, tzinfo=UTC)


def test_overlapping_windows_are_fine() -> None:
    a = MaintenanceWindow(days=["mon"], start="01:00", duration_s=7200, timezone="UTC")
    b = MaintenanceWindow(days=["mon"], start="02:00", duration_s=7200, timezone="UTC")
    p = _policy(a, b)
    assert is_open(p, datetime(2026, 12, 7, 3, 30, tzinfo=UTC), UTC)
    assert next_open(p, datetime(2026, 12, 7, 0, 0, tzinfo=UTC), UTC) == datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


def test_an_unknown_zone_is_an_error_the_device_can_report() -> None:
    p = _policy(MaintenanceWindow(days=["mon"], start="01:00", duration_s=600, timezone="Mars/Olympus"))
    with pytest.raises(UnknownZone):
        is_open(p, datetime(2026, 12, 7, tzinfo=UTC), UTC)


@pytest.mark.parametrize(("text", "seconds"), [("90m", 5400), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("45s", 45)])
def test_durations_need_units(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["90", "", "2x", "h", "1.5h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_day_ranges() -> None:
    assert parse_days("mon-fri") == ["mon", "tue", "wed", "thu", "fri"]
    assert parse_days("fri-mon") == ["mon", "fri", "sat", "sun"]
    assert parse_days("daily") == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    with pytest.raises(ValueError):
        parse_days("funday")
