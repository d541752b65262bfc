"""A rollout's life on a real fleet: completion and rollback after it, pause and resume,
abort, a controller restarted mid-rollout, a device offline during its wave, supersession.

Each test starts from every device on digits:1.0 and returns the fleet there.
"""

from __future__ import annotations

import time

import pytest

from ..conftest import wait_until
from . import candidates
from .conftest import BASE, PROFILES, Fleet, wait_state

WAVES = "10,50,100"

pytestmark = pytest.mark.slow


def _good(fleet: Fleet, digit_models, version: str) -> str:
    fleet.push(candidates.retag(digit_models[0], version))
    return f"digits:{version}"


def _start(fleet: Fleet, model: str, *, soak: str = "1s", timeout: str = "60s", select: str = "all") -> str:
    return fleet.client.start_rollout(model, slot="control", select=select, waves=WAVES, soak=soak,
                                      gates=["failure<=0.02"], on_breach="rollback", device_timeout=timeout)["id"]


def _generations(fleet: Fleet) -> dict[str, int]:
    return {d["id"]: d["desired_generation"] for d in fleet.client.list_devices()}


def test_good_rollout_completes_then_rollback_returns_every_device(fleet: Fleet, digit_models) -> None:
    model = _good(fleet, digit_models, "1.2")
    rid = _start(fleet, model)
    st = wait_state(fleet, rid, "completed", timeout=90)
    full = fleet.client.rollout_status(rid)
    assert [w["outcome"] for w in full["waves"]] == ["passed", "passed", "passed"]
    assert [w["members"] for w in full["waves"]] == [3, 2, 5]  # one per profile first, then up to 50 %, then all
    assert full["progress"] == 1.0 and full["on_model"] == sum(PROFILES.values())
    assert all(g["status"] == "passed" for w in full["waves"] for g in w["gates"])
    fleet.all_on(model)
    assert st["state"] == "completed"
    assert any(r["id"] == rid and r["state"] == "completed" for r in fleet.client.list_rollouts())

    fleet.client.rollout_command(rid, "rollback", "operator changed their mind")
    wait_state(fleet, rid, "rolled_back", timeout=60)
    fleet.all_on(BASE)


def test_pause_holds_the_next_wave_and_resume_finishes(fleet: Fleet, digit_models) -> None:
    model = _good(fleet, digit_models, "1.3")
    rid = _start(fleet, model, soak="2s")
    wait_state(fleet, rid, "soaking", timeout=60)
    paused = fleet.client.rollout_command(rid, "pause")
    assert paused["state"] == "paused"
    assert fleet.client.rollout_command(rid, "pause")["state"] == "paused"  # idempotent
    time.sleep(3.0)  # longer than the soak: a running rollout would have moved on
    full = fleet.client.rollout_status(rid)
    assert full["state"] == "paused"
    later = [m for m in full["members"] if m["wave"] > 0]
    assert all(m["status"] == "waiting" for m in later), later
    assert fleet.client.rollout_command(rid, "resume")["state"] in ("soaking", "running")
    wait_state(fleet, rid, "completed", timeout=90)
    fleet.all_on(model)
    fleet.reset()


def test_abort_leaves_devices_where_they_are(fleet: Fleet, digit_models) -> None:
    model = _good(fleet, digit_models, "1.4")
    rid = _start(fleet, model, soak="60s")
    wait_state(fleet, rid, "soaking", timeout=60)
    assert fleet.client.rollout_command(rid, "abort")["state"] == "aborted"
    before = _generations(fleet)
    time.sleep(2.0)  # several reconcile passes
    full = fleet.client.rollout_status(rid)
    assert full["state"] == "aborted"
    wave0 = {m["device"] for m in full["members"] if m["wave"] == 0}
    for d in fleet.agents:
        assert fleet.agents[d].agent.state.slot("control").installed.label == (model if d in wave0 else BASE)
    assert _generations(fleet) == before  # nothing was sent after the abort
    fleet.reset()


def test_controller_restarted_mid_rollout_reaches_the_same_outcome(fleet: Fleet, digit_models) -> None:
    model = _good(fleet, digit_models, "1.5")
    before = _generations(fleet)
    rid = _start(fleet, model, soak="1s")
    wait_until(lambda: fleet.client.rollout_status(rid, devices=False, events=0)["current_wave"] >= 1,
               timeout=60, message="wave 2 started")
    fleet.restart_controller()  # a new process on the same database: no memory survives
    wait_state(fleet, rid, "completed", timeout=90)
    fleet.all_on(model)
    after = _generations(fleet)
    assert {d: after[d] - before[d] for d in after} == {d: 1 for d in after}  # each device sent the model once
    fleet.reset()


def test_offline_device_is_pending_until_it_returns_then_updated(fleet: Fleet, digit_models) -> None:
    model = _good(fleet, digit_models, "1.6")
    rid = _start(fleet, model, soak="1s", timeout="120s")
    full = wait_until(lambda: fleet.client.rollout_status(rid)["members"] or None, timeout=30, message="members")
    late = sorted(m["device"] for m in full if m["wave"] == 2)[0]
    fleet.stop_agent(late)
    wait_until(lambda: not fleet.client.get_device(late)["online"], timeout=20, message=f"{late} offline")

    def last_wave_waiting_for(device: str) -> bool:
        st = fleet.client.rollout_status(rid)
        row = next(m for m in st["members"] if m["device"] == device)
        others = [m for m in st["members"] if m["wave"] == 2 and m["device"] != device]
        return st["current_wave"] == 2 and all(m["status"] in ("active", "healthy") for m in others) \
            and row["status"] == "pending"

    wait_until(lambda: last_wave_waiting_for(late), timeout=90, message=f"last wave done but {late}")
    time.sleep(1.5)
    st = fleet.client.rollout_status(rid)
    assert st["state"] == "running", st["reason"]  # not completed without it, not breached
    assert next(m for m in st["members"] if m["device"] == late)["status"] == "pending"
    assert st["waves"][2]["counts"].get("failed", 0) == 0 and st["waves"][2]["counts"].get("timed_out", 0) == 0
    fleet.start_agent(late)
    wait_state(fleet, rid, "completed", timeout=60)
    fleet.all_on(model)
    fleet.reset()


def test_new_rollout_for_the_same_slot_supersedes_the_old_one(fleet: Fleet, digit_models) -> None:
    old_model = _good(fleet, digit_models, "1.7")
    new_model = _good(fleet, digit_models, "1.8")
    old = _start(fleet, old_model, soak="60s")
    wait_state(fleet, old, "soaking", timeout=60)
    new = _start(fleet, new_model, soak="1s")
    st = fleet.client.rollout_status(old)
    assert st["state"] == "superseded" and st["superseded_by"] == new
    assert any(f"supersedes rollout {old}" in e["message"] for e in fleet.client.rollout_status(new)["events"])
    wait_state(fleet, new, "completed", timeout=90)
    fleet.all_on(new_model)
    assert fleet.client.rollout_status(old)["state"] == "superseded"
    fleet.reset()


def test_download_outage_is_retried_not_counted_failed(fleet: Fleet, digit_models) -> None:
    from edgefleet.cloud.api import create_app
    from edgefleet.cloud.demo.orchestrator import UvicornThread
    from edgefleet.cloud.rollout import service

    model = _good(fleet, digit_models, "1.9")
    host, port = "127.0.0.1", int(fleet.stack.url.rsplit(":", 1)[1])
    fleet.stack.http.stop()  # bundles and signed metadata unreachable: every download fails
    try:
        with fleet.stack.controller.session() as s:
            rid = service.start_rollout(s, service.RolloutCreate(
                model=model, select="all", waves=WAVES, soak="1s", gates=["failure<=0.02"],
                device_timeout="60s"), time.time()).id

        def retrying() -> bool:
            with fleet.stack.controller.session() as s:
                st = service.status(s, rid, time.time())
            wave0 = [m for m in st["members"] if m["wave"] == 0]
            assert st["state"] in ("pending", "running"), st["reason"]
            return bool(wave0) and all(m["error_code"] in ("E_DOWNLOAD", "E_DOWNLOAD_TIMEOUT")
                                       and m["status"] == "installing" for m in wave0)

        wait_until(retrying, timeout=30, message="wave 1 retrying its downloads")
        time.sleep(3.0)  # still within the device timeout: pending, not failed
        assert retrying()
    finally:
        fleet.stack.http = UvicornThread(create_app(fleet.stack.controller), host, port)
        fleet.stack.http.start()
    wait_state(fleet, rid, "completed", timeout=120)
    fleet.all_on(model)
    fleet.reset()
