"""Device selection expressions: what they match, what they refuse, and how they print."""

from __future__ import annotations

import pytest

from edgefleet.cloud.rollout import DeviceInfo, SelectorSyntaxError, parse_selector

NANO = DeviceInfo("cam-001", "jetson-orin-nano", {"depot": "7", "lane": "2"})
AGX = DeviceInfo("cam-002", "jetson-orin-agx", {"depot": "8"})
XAVIER = DeviceInfo("test-003", "jetson-xavier-nx", {})
CPU = DeviceInfo("lab-1", "cpu-generic", {"depot": "7", "canary": ""})
FLEET = [NANO, AGX, XAVIER, CPU]


@pytest.mark.parametrize("expr,expected", [
    ("all", {"cam-001", "cam-002", "test-003", "lab-1"}),
    ("tag:depot=7", {"cam-001", "lab-1"}),
    ("tag:depot=7|8", {"cam-001", "cam-002", "lab-1"}),
    ("tag:depot", {"cam-001", "cam-002", "lab-1"}),
    ("tag:canary", {"lab-1"}),
    ("tag:depot=7,hw:jetson-orin-nano", {"cam-001"}),
    ("tag:depot=7,hw:orin-agx", set()),  # prefix, not substring
    ("hw:jetson-orin", {"cam-001", "cam-002"}),  # prefix at a '-' boundary
    ("hw:jetson-ori", set()),
    ("hw:jetson-orin-agx|jetson-xavier", {"cam-002", "test-003"}),
    ("hw:*-nx", {"test-003"}),
    ("device:cam-002", {"cam-002"}),
    ("device:cam-002|lab-1", {"cam-002", "lab-1"}),
    ("id:cam-*", {"cam-001", "cam-002"}),
    ("id:cam-00[12]|lab-?", {"cam-001", "cam-002", "lab-1"}),
    ("!id:test-*", {"cam-001", "cam-002", "lab-1"}),
    ("tag:depot, !tag:depot=8", {"cam-001", "lab-1"}),
    ("  hw:jetson-orin ,  tag:lane=2 ", {"cam-001"}),
    ("ID:cam-*".lower(), {"cam-001", "cam-002"}),
])
def test_selector_matches(expr, expected):
    sel = parse_selector(expr)
    assert {d.device_id for d in FLEET if sel.matches(d)} == expected
    again = parse_selector(str(sel))
    assert again == sel


@pytest.mark.parametrize("expr,message,position", [
    ("", "empty selector", None),
    ("   ", "empty selector", None),
    ("tag:", "missing tag key", 4),
    ("tag:a=", "missing tag value", 6),
    ("tag:a=1|", "missing tag value", 8),
    ("depot=7", "is not KIND:VALUE", 0),
    ("site:eu", "unknown selector kind 'site'", 0),
    ("hw:orin,,tag:x", "empty term", 8),
    ("hw:orin,", "empty term", 8),
    ("hw:orin agx", "invalid character in hardware profile", 7),
    ("device:-bad", "invalid character in device id", 7),
    ("device:cam/1", "invalid character in device id", 10),
    ("tag:de pot=1", "invalid character in tag key", 6),
])
def test_bad_selector_is_refused_with_a_pointer(expr, message, position):
    with pytest.raises(SelectorSyntaxError) as info:
        parse_selector(expr)
    assert message in str(info.value)
    assert info.value.position == position


def test_selector_select_keeps_order():
    assert parse_selector("tag:depot").select(FLEET) == [NANO, AGX, CPU]
