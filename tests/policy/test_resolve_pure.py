"""Most specific wins (pure): priority, then selector terms, then name; rollouts above all;
per field, with the scope each field came from."""

from __future__ import annotations

import pytest

from edgefleet.cloud.policy import FLEET, Scope, resolve
from edgefleet.cloud.rollout.selector import DeviceInfo, parse_selector
from edgefleet.protocols import CapturePolicy
from edgefleet.protocols.messages import NetworkPolicy
from edgefleet.protocols.windows import MaintenanceWindow

NANO = DeviceInfo("cam-1", "jetson-orin-nano", {"site": "a"})
X86 = DeviceInfo("cam-2", "cpu-x86_64", {"site": "b"})
NIGHT = MaintenanceWindow(days=["mon", "tue"], start="02:00", duration_s=7200, timezone="UTC")
NOON = MaintenanceWindow(days=["sat"], start="12:00", duration_s=3600, timezone="Europe/Berlin")


def _scope(name: str, select: str, **kw: object) -> Scope:
    return Scope(name=name, selector=parse_selector(select), **kw)  # type: ignore[arg-type]


def _resolve(scopes: list[Scope], device: DeviceInfo = NANO, **kw: object):  # type: ignore[no-untyped-def]
    return resolve(scopes, device, capture=CapturePolicy(sample_rate=0.01), network=NetworkPolicy(), **kw)  # type: ignore[arg-type]


def test_no_scope_gives_the_fleet_wide_values_and_says_so() -> None:
    got = _resolve([], windows=[NIGHT])
    assert got.capture.sample_rate == 0.01 and got.network.download == "any"
    assert got.maintenance.windows == [NIGHT]
    assert set(got.sources.values()) == {FLEET} and got.scopes == ()


def test_more_terms_beat_fewer_and_each_field_names_its_scope() -> None:
    hw = _scope("new-hw", "hw:jetson-orin", capture={"sample_rate": 0.2, "max_per_minute": 9})
    site = _scope("site-a-nano", "hw:jetson-orin,tag:site=a", capture={"sample_rate": 0.5})
    got = _resolve([hw, site])
    assert got.capture.sample_rate == 0.5 and got.capture.max_per_minute == 9
    assert got.sources["capture.sample_rate"] == "site-a-nano"
    assert got.sources["capture.max_per_minute"] == "new-hw"
    assert got.sources["capture.max_per_hour"] == FLEET
    assert got.scopes == ("site-a-nano", "new-hw")


@pytest.mark.parametrize(("order"), [0, 1])
def test_priority_beats_terms_and_the_name_breaks_ties_whatever_the_order(order: int) -> None:
    broad = _scope("broad", "all", priority=10, capture={"sample_rate": 0.9})
    narrow = _scope("narrow", "hw:jetson-orin,tag:site=a", capture={"sample_rate": 0.1})
    tie_b = _scope("b-tie", "tag:site", network={"download": "unmetered"})
    tie_a = _scope("a-tie", "tag:site=a", network={"download": "interfaces", "interfaces": ["eth0"]})
    scopes = [broad, narrow, tie_b, tie_a] if order == 0 else [tie_a, tie_b, narrow, broad]
    got = _resolve(scopes)
    assert got.capture.sample_rate == 0.9 and got.sources["capture.sample_rate"] == "broad"
    assert got.network.download == "interfaces" and got.network.interfaces == ["eth0"]
    assert got.sources["network.interfaces"] == "a-tie"


def test_download_and_interfaces_resolve_together() -> None:
    low = _scope("low", "all", network={"download": "interfaces", "interfaces": ["eth0"], "max_upload_bps": 4096})
    high = _scope("high", "hw:jetson-orin", network={"download": "unmetered"})
    got = _resolve([low, high])
    assert got.network.download == "unmetered" and got.network.interfaces == []  # not low's interfaces
    assert got.network.max_upload_bps == 4096 and got.sources["network.max_upload_bps"] == "low"


def test_a_running_rollouts_policy_beats_every_selector_for_its_members_only() -> None:
    pinned = _scope("pinned", "device:cam-1|cam-2", priority=1000, windows=(NIGHT,))
    rollout = Scope(name="rollout:r1", selector=parse_selector("all"), windows=(NOON,), rollout="r1",
                    members=frozenset({"cam-1"}))
    assert _resolve([pinned, rollout], NANO).maintenance.windows == [NOON]
    assert _resolve([pinned, rollout], NANO).sources["windows"] == "rollout:r1"
    assert _resolve([pinned, rollout], X86).maintenance.windows == [NIGHT]


def test_an_empty_window_list_in_a_scope_means_any_time_there() -> None:
    fleet_night = [NIGHT]
    anytime = _scope("lab", "tag:site=a", windows=())
    assert _resolve([anytime], NANO, windows=fleet_night).maintenance.windows == []
    assert _resolve([anytime], X86, windows=fleet_night).maintenance.windows == [NIGHT]


def test_a_scope_that_does_not_match_changes_nothing() -> None:
    other = _scope("x86", "hw:cpu", capture={"sample_rate": 1.0})
    assert _resolve([other], NANO).capture.sample_rate == 0.01
    assert _resolve([other], X86).capture.sample_rate == 1.0
