"""Wave membership: deterministic, stratified by hardware, rounded up, stable for joiners."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from edgefleet.cloud.rollout import (
    DeviceInfo,
    WavesSyntaxError,
    assign_late_joiners,
    assign_waves,
    parse_waves,
)


def fleet(profiles: dict[str, int]) -> list[DeviceInfo]:
    return [DeviceInfo(f"{hw}-{i}", hw) for hw, n in profiles.items() for i in range(n)]


def sizes(assignment: dict[str, int], n_waves: int) -> list[int]:
    c = Counter(assignment.values())
    return [c[i] for i in range(n_waves)]


@pytest.mark.parametrize("profiles,percents,expected", [
    ({"a": 100}, (1, 10, 50, 100), [1, 9, 40, 50]),
    ({"a": 1000}, (1, 10, 50, 100), [10, 90, 400, 500]),
    ({"a": 30}, (10, 100), [3, 27]),  # 10% of 30 is 3, not 4 (no float rounding up)
    ({"a": 3}, (1, 10, 50, 100), [1, 0, 1, 1]),  # ceil: 1, 1, 2, 3
    ({"a": 1}, (1, 10, 50, 100), [1, 0, 0, 0]),  # wave 0 is never empty
    ({"a": 7}, (100,), [7]),
    ({"a": 10}, (0.5, 100), [1, 9]),
    ({"a": 40, "b": 40, "c": 20}, (1, 10, 50, 100), [3, 7, 40, 50]),
    ({"a": 99, "b": 1}, (1, 10, 50, 100), [2, 9, 40, 49]),  # b's only device is in wave 0
    ({}, (1, 10, 50, 100), [0, 0, 0, 0]),
])
def test_wave_sizes_round_up_per_profile(profiles, percents, expected):
    assert sizes(assign_waves("r1", fleet(profiles), percents), len(percents)) == expected


@pytest.mark.parametrize("profiles", [
    {"a": 100, "b": 1, "c": 2},
    {"jetson-orin-nano": 500, "jetson-orin-agx": 20, "jetson-xavier-nx": 3, "cpu": 1},
    {f"hw{i}": i + 1 for i in range(12)},
])
@pytest.mark.parametrize("rollout_id", ["r1", "r2", "2026-11-22-det-v2"])
def test_every_profile_is_in_the_first_wave(profiles, rollout_id):
    devices = fleet(profiles)
    waves = assign_waves(rollout_id, devices, (1, 10, 50, 100))
    assert {d.hardware_id for d in devices if waves[d.device_id] == 0} == set(profiles)
    assert set(waves) == {d.device_id for d in devices}


def test_assignment_ignores_input_order_and_duplicates():
    devices = fleet({"a": 50, "b": 30, "c": 5})
    want = assign_waves("r1", devices, (1, 10, 50, 100))
    for seed in range(5):
        shuffled = devices[:] + devices[:10]
        random.Random(seed).shuffle(shuffled)
        assert assign_waves("r1", shuffled, (1, 10, 50, 100)) == want


def test_assignment_depends_on_the_rollout_id():
    devices = fleet({"a": 200})
    firsts = {rid: {d for d, w in assign_waves(rid, devices, (1, 100)).items() if w == 0}
              for rid in ("r1", "r2", "r3", "r4")}
    assert len({frozenset(v) for v in firsts.values()}) > 1


_SCRIPT = """
import json
from edgefleet.cloud.rollout import DeviceInfo, assign_waves
devs = [DeviceInfo(f"d{i}", "hw" + str(i % 3)) for i in range(300)]
print(json.dumps(assign_waves("roll-7", devs, (1, 10, 50, 100)), sort_keys=True))
"""


def test_assignment_is_the_same_in_another_process_with_another_hash_seed():
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, check=True,
                             capture_output=True, text=True).stdout
        outs.add(out)
    assert len(outs) == 1
    here = {f"d{i}": None for i in range(300)}
    assert set(json.loads(outs.pop())) == set(here)


def test_late_joiners_join_the_current_wave_and_nobody_moves():
    devices = fleet({"a": 50, "b": 10})
    existing = assign_waves("r1", devices, (1, 10, 50, 100))
    newcomers = [DeviceInfo("a-new", "a"), DeviceInfo("c-new", "c")]
    added = assign_late_joiners(existing, devices + newcomers, current_wave=2)
    assert added == {"a-new": 2, "c-new": 2}
    assert assign_late_joiners(existing, devices, current_wave=2) == {}


@pytest.mark.parametrize("text,expected", [
    ("1,10,50,100", (1.0, 10.0, 50.0, 100.0)),
    ("5%, 100%", (5.0, 100.0)),
    ("100", (100.0,)),
    ("0.5,100", (0.5, 100.0)),
    ([1, 100], (1.0, 100.0)),
])
def test_waves_parse(text, expected):
    assert parse_waves(text) == expected


@pytest.mark.parametrize("text,message", [
    ("", "comma-separated"),
    ("1,x,100", "comma-separated"),
    ("0,100", "outside (0, 100]"),
    ("1,150", "outside (0, 100]"),
    ("10,5,100", "must increase"),
    ("10,10,100", "must increase"),
    ("1,10,50", "last wave must be 100"),
    ([], "at least one wave"),
])
def test_bad_waves_are_refused(text, message):
    with pytest.raises(WavesSyntaxError, match=None) as info:
        parse_waves(text)
    assert message in str(info.value)
