"""Scoped policies over the real HTTP API: bad input is a 400 naming the field and changes
nothing; a change bumps exactly the devices the scope matches; ``/devices/{id}/policy``
says which scope each field came from."""

from __future__ import annotations

import pytest

from edgefleet.cloud.client import ApiError
from edgefleet.cloud.tables import Device

from ..conftest import Stack

WINDOW = {"days": ["mon-fri"], "start": "02:00", "duration": "2h", "timezone": "Europe/Berlin"}


def _generations(stack: Stack) -> dict[str, int]:
    with stack.controller.session() as s:
        return {d.id: d.desired_generation for d in s.query(Device).all()}  # type: ignore[attr-defined]


def _enrol(stack: Stack) -> None:
    stack.client.enrol_device("nano-1", "jetson-orin-nano", {"site": "a"})
    stack.client.enrol_device("nano-2", "jetson-orin-nano", {"site": "b"})
    stack.client.enrol_device("x86-1", "cpu-x86_64", {"site": "a"})


BAD = [
    ({"windows": [{**WINDOW, "timezone": "Mars/Olympus"}]}, "windows[0].timezone"),
    ({"windows": [{**WINDOW, "timezone": "../../etc/passwd"}]}, "windows[0].timezone"),
    ({"windows": [WINDOW, {**WINDOW, "start": "25:00"}]}, "windows[1].start"),
    ({"windows": [{**WINDOW, "duration": "90"}]}, "windows[0].duration"),
    ({"windows": [{**WINDOW, "days": ["funday"]}]}, "windows[0].days"),
    ({"select": "tag:"}, "select"),
    ({"network": {"download": "interfaces"}}, "network"),
]


def test_bad_input_is_a_400_naming_the_field_and_nothing_changes(stack: Stack) -> None:
    _enrol(stack)
    stack.client.put_policy("night", {"select": "hw:jetson-orin", "windows": [WINDOW]})
    before, kept = _generations(stack), stack.client.get_policy("night")
    for change, field in BAD:
        with pytest.raises(ApiError) as exc:
            stack.client.put_policy("night", {"select": "hw:jetson-orin", "windows": [WINDOW], **change})
        assert exc.value.status_code == 400 and field in exc.value.detail, (field, exc.value.detail)
        with pytest.raises(ApiError) as exc:
            stack.client.put_policy("other", {"select": "all", "windows": [WINDOW], **change})
        assert exc.value.status_code == 400
    assert [p["name"] for p in stack.client.policies()["policies"]] == ["night"]
    assert stack.client.get_policy("night") == kept
    assert _generations(stack) == before


def test_a_scope_bumps_exactly_the_devices_it_matches_and_explains_each_field(stack: Stack) -> None:
    _enrol(stack)
    before = _generations(stack)
    res = stack.client.put_policy("new-hw", {"select": "hw:jetson-orin", "capture": {"sample_rate": 0.2},
                                             "windows": [WINDOW]})
    assert res["devices_notified"] == 2 and res["windows"][0]["duration"] == "2h"
    after = _generations(stack)
    assert {d for d in after if after[d] != before[d]} == {"nano-1", "nano-2"}

    stack.client.put_policy("site-a-nano", {"select": "hw:jetson-orin,tag:site=a", "capture": {"sample_rate": 0.5},
                                            "network": {"download": "unmetered"}})
    got = stack.client.device_policy("nano-1")
    assert got["capture"]["sample_rate"] == 0.5 and got["sources"]["capture.sample_rate"] == "site-a-nano"
    assert got["sources"]["windows"] == "new-hw" and got["windows"][0]["timezone"] == "Europe/Berlin"
    assert got["network"]["download"] == "unmetered" and got["sources"]["capture.max_per_day"] == "fleet"
    assert got["scopes"] == ["site-a-nano", "new-hw"]
    assert stack.client.device_policy("x86-1")["sources"]["capture.sample_rate"] == "fleet"

    before = _generations(stack)
    assert stack.client.delete_policy("site-a-nano")["devices_notified"] == 1
    after = _generations(stack)
    assert {d for d in after if after[d] != before[d]} == {"nano-1"}
    assert stack.client.device_policy("nano-1")["capture"]["sample_rate"] == 0.2
    sets = stack.client.audit_entries(action="policy.set")  # every change, by whom, audited
    assert len(sets) == 2 and {e["actor"] for e in sets} == {"admin"}
    assert len(stack.client.audit_entries(action="policy.rm")) == 1


def test_fleet_wide_windows_reach_every_device_and_an_empty_list_removes_them(stack: Stack) -> None:
    _enrol(stack)
    res = stack.client.set_fleet_windows([WINDOW])
    assert res["devices_notified"] == 3 and stack.client.fleet_windows()["windows"][0]["start"] == "02:00"
    assert stack.client.device_policy("x86-1")["sources"]["windows"] == "fleet"
    with pytest.raises(ApiError) as exc:
        stack.client.set_fleet_windows([{**WINDOW, "start": "7pm"}])
    assert exc.value.status_code == 400 and "windows[0].start" in exc.value.detail
    assert stack.client.fleet_windows()["windows"][0]["start"] == "02:00"
    assert stack.client.set_fleet_windows([])["windows"] == []
