"""Fault injection on a real fleet: each bad candidate stops at wave 1 and is rolled back.

For each: the set of devices whose control path ever produced an output with the
candidate is no larger than wave 1 (a subset of its members), and when the rollout has
rolled back no device runs it any more — every affected device is on its last known good
model again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import candidates
from .conftest import Fleet, wait_state

WAVES = "10,50,100"
LKG = "digits:1.0"


def _start(fleet: Fleet, model: str, *gates: str, select: str = "all", soak: str = "2s") -> str:
    res = fleet.client.start_rollout(model, slot="control", select=select, waves=WAVES, soak=soak,
                                     gates=list(gates) or None, on_breach="rollback", device_timeout="60s")
    return res["id"]


def _assert_contained(fleet: Fleet, rollout_id: str, digest: str) -> dict:
    st = wait_state(fleet, rollout_id, "rolled_back", timeout=90)
    full = fleet.client.rollout_status(rollout_id, events=100)
    wave0 = {m["device"] for m in full["members"] if m["wave"] == 0}
    assert full["breach"] is not None and full["breach"]["wave"] == 0, full["reason"]
    assert all(w["counts"].get("waiting", 0) == w["members"] for w in full["waves"][1:]), full["waves"]
    ran = fleet.ever_ran(digest)
    assert ran <= wave0, f"devices outside wave 1 ran the candidate: {sorted(ran - wave0)}"
    fleet.all_on(LKG)
    assert not [d for d in fleet.agents if fleet.installed(d) == digest]
    return full | {"ran": ran, "wave0": wave0, "state": st["state"]}


def test_selftest_failure_on_one_profile_stops_at_wave_1(fleet: Fleet, digit_models, tmp_path: Path) -> None:
    bad = candidates.wrong_vectors(digit_models[0], "1.1-st")
    mv = fleet.push(bad)
    rid = _start(fleet, "digits:1.1-st", "failure<=0.02", select="hw:jetson-xavier-nx")
    out = _assert_contained(fleet, rid, mv["digest"])
    assert out["ran"] == set()  # refused before activation
    assert "failure" in out["breach"]["summary"]
    assert any("E_SELFTEST" in e["message"] for e in out["events"])
    members = {m["device"] for m in out["members"]}
    assert all(fleet.hardware[d] == "jetson-xavier-nx" for d in members)


def test_nan_after_activation_stops_at_wave_1_and_rolls_back(fleet: Fleet, digit_models, tmp_path: Path) -> None:
    bad = candidates.nan_after_activation(digit_models[0], tmp_path, "1.1-nan")
    mv = fleet.push(bad)
    rid = _start(fleet, "digits:1.1-nan", "failure<=0.02", "nan_rate<=0")
    out = _assert_contained(fleet, rid, mv["digest"])
    assert out["ran"], "the NaN candidate never ran: the test proves nothing"
    assert any("E_HEALTH_NAN" in e["message"] for e in out["events"])
