"""Fault injection on a real fleet: each bad candidate stops at wave 1 and is rolled back.

For each: the set of devices whose control path ever produced an output with the
candidate is no larger than wave 1 (a subset of its members), and when the rollout has
rolled back no device runs it any more — every affected device is on its last known good
model again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from . import candidates
from .conftest import Fleet, wait_state

WAVES = "10,50,100"
LKG = "digits:1.0"
#: Frames the latency gate waits for before judging wave 0 (one device at 5 fps: ~50 s). At
#: the default 100, a 1.9x slowdown on one device under the load of a full test run was at
#: times not significant (99% interval reaching under 1.2), so wave 0 passed and wave 1 broke.
LATENCY_FRAMES = 250

pytestmark = [pytest.mark.slow, pytest.mark.flaky(reruns=1)]  # 10 agents on 2 shared cores: one rerun under load


def _start(fleet: Fleet, model: str, *gates: str, select: str = "all", soak: str = "2s") -> str:
    with fleet.lock:  # what ran before this rollout (an earlier attempt of a rerun test) is not its doing
        fleet.ran.clear()
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


def test_three_times_slower_candidate_breaks_the_latency_gate_at_wave_1(fleet: Fleet, digit_models, tmp_path: Path) -> None:
    # Only two profiles carry the heavy models, to keep the shared CPU (and the latency noise
    # of 10 agents on two cores) low: the current model takes ~6 ms, the candidate ~18 ms.
    select = "hw:jetson-orin-agx|jetson-xavier-nx"
    devices = [d for d, hw in fleet.hardware.items() if hw in ("jetson-orin-agx", "jetson-xavier-nx")]
    base = candidates.heavy(digit_models[0], tmp_path, "1.1-base", layers=16)
    slow = candidates.heavy(digit_models[0], tmp_path, "1.1-slow", layers=48)
    ratio = candidates.latency_ratio(slow, base)
    assert ratio > 2.0, f"calibration: the slow candidate is only {ratio:.2f}x slower here (the gate allows 1.2)"
    try:
        fleet.push(base)
        mv = fleet.push(slow)
        fleet.client.deploy("digits:1.1-base", "control", devices)
        fleet.all_on("digits:1.1-base", devices=devices)
        time.sleep(4.0)  # telemetry periods of the current model under steady load: the baseline
        rid = _start(fleet, "digits:1.1-slow", "failure<=0.02", f"latency_p99_ratio<=1.2;min={LATENCY_FRAMES}",
                     select=select, soak="3s")
        wait_state(fleet, rid, "rolled_back", "rolling_back", timeout=150)
        full = fleet.client.rollout_status(rid, events=100)
        assert full["breach"] is not None and full["breach"]["wave"] == 0, (
            [(w["index"], [(g["metric"], g["value"]) for g in w["gates"]]) for w in full["waves"]],
            [(m["device"], m["wave"], m["p99_ms"], m["baseline_p99_ms"]) for m in full["members"] if m["wave"] == 0])
        gate = {g["metric"]: g for g in full["breach"]["gates"]}["latency_p99_ratio"]
        assert gate["status"] == "failed" and gate["value"] > 1.2, gate
        assert "latency_p99_ratio" in full["reason"] and "worst profile" in full["reason"]
        st = wait_state(fleet, rid, "rolled_back", timeout=60)
        wave0 = {m["device"] for m in full["members"] if m["wave"] == 0}
        ran = fleet.ever_ran(mv["digest"])
        assert ran and ran <= wave0
        fleet.all_on("digits:1.1-base", devices=devices)
        assert st["state"] == "rolled_back"
    finally:  # the next test starts from every device on digits:1.0, whatever happened here
        fleet.reset()


def test_nan_candidate_in_the_shadow_slot_breaks_its_nan_rate_gate_at_wave_1(fleet: Fleet, digit_models,
                                                                                tmp_path: Path) -> None:
    """Shadow rollouts are judged on the candidate's own NaN outputs (``shadow.nan_outputs``
    in telemetry), and the agents drop the candidate from the shadow slot themselves."""
    bad = candidates.nan_after_activation(digit_models[0], tmp_path, "1.1-nan-shadow")
    mv = fleet.push(bad)
    rid = fleet.client.start_rollout("digits:1.1-nan-shadow", slot="shadow", select="all", waves=WAVES, soak="2s",
                                     gates=["nan_rate<=0"], on_breach="rollback", device_timeout="60s")["id"]
    wait_state(fleet, rid, "rolled_back", timeout=90)
    full = fleet.client.rollout_status(rid, events=100)
    assert full["breach"] is not None and full["breach"]["wave"] == 0, full["reason"]
    gate = {g["metric"]: g for g in full["breach"]["gates"]}["nan_rate"]
    assert gate["status"] == "failed" and gate["value"] > 0, gate
    assert all(w["counts"].get("waiting", 0) == w["members"] for w in full["waves"][1:]), full["waves"]
    assert not [d for d in fleet.agents if fleet.installed(d, "shadow") == mv["digest"]]
    fleet.all_on(LKG)  # the control path never changed
