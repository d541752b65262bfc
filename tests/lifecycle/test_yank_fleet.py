"""Yank and block on a small fleet of real agents (broker, controller, ONNX Runtime agents in
threads): a yank moves every device off the version through gated waves to its own last known
good, lists the device that has none, and stops on a breach when the replacement NaNs; a block
that lands while a wave soaks (written where the API's abort did not run: another replica, an
old controller) keeps the reconciler from dispatching the next wave."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from sqlmodel import select
from typer.testing import CliRunner

from edgefleet.cloud.audit import AuditEntry
from edgefleet.cloud.cli import app
from edgefleet.cloud.tables import ModelVersion

from ..conftest import push, slot_of, wait_until
from ..rollout_e2e import candidates

pytestmark = pytest.mark.slow
REASON = "misreads 7 as 1 at night"


def cli(stack: Any, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--url", stack.url, "--token", stack.token], env={"COLUMNS": "250"})


def on(stack: Any, devices: list[str], label: str, timeout: float = 45.0) -> None:
    def done() -> bool:
        return all(slot_of(stack, d)["installed"] == label and slot_of(stack, d)["phase"] in ("healthy", "idle")
                   for d in devices)
    wait_until(done, timeout=timeout, interval=0.3, message=f"{devices} healthy on {label}")


def wait_rollout(stack: Any, rid: str, *states: str, timeout: float = 45.0) -> dict[str, Any]:
    wait_until(lambda: stack.client.rollout_status(rid, devices=False, events=0)["state"] in states,
               timeout=timeout, interval=0.3, message=f"rollout {rid} in {states}")
    return stack.client.rollout_status(rid, events=100)


def audit_rows(stack: Any) -> list[AuditEntry]:
    with stack.controller.session() as s:
        return list(s.exec(select(AuditEntry).order_by(AuditEntry.seq)).all())


def test_yank_moves_the_fleet_off_through_waves_and_stops_on_a_nan_replacement(stack, agents, digit_models,
                                                                                tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = stack.client
    fleet = [agents(stack, f"cam-{i}", fps=10.0).device_id for i in range(5)]
    old, lkg_less = fleet[:4], fleet[4]
    for version in ("1.0", "1.1", "1.3"):
        push(stack, candidates.retag(digit_models[0], version))
    c.deploy("digits:1.0", "control", old)
    on(stack, old, "digits:1.0")
    c.deploy("digits:1.1", "control", fleet)  # cam-4's first model: it has no last known good
    on(stack, fleet, "digits:1.1")
    assert c.get_model("digits:1.1")["running"] == {"control": 5, "shadow": 0}

    res = cli(stack, "model", "yank", "digits:1.1", "--reason", REASON, "--waves", "50,100", "--soak", "1s",
              "--gate", "failure<=0", "--device-timeout", "40s")
    assert res.exit_code == 0, res.output
    assert "digits:1.1 is now blocked" in res.output and "4 devices → digits:1.0" in res.output
    assert "1 devices need attention" in res.output and "cam-4 (control): no known good version" in res.output
    rid = next(r["id"] for r in c.list_rollouts())
    st = wait_rollout(stack, rid, "completed", "breached", "paused")
    assert st["state"] == "completed", (st["reason"], [e["message"] for e in st["events"]])
    assert [(w["members"], w["outcome"]) for w in st["waves"]] == [(2, "passed"), (2, "passed")]
    on(stack, old, "digits:1.0")
    assert slot_of(stack, lkg_less)["installed"] == "digits:1.1"  # left where it is, and said so

    # still running the blocked version: flagged in `fleet device ls`, on the fleet page, in `model show`
    assert slot_of(stack, lkg_less)["model_status"] == "blocked" and slot_of(stack, "cam-0")["model_status"] is None
    res = cli(stack, "device", "ls")
    line = next(ln for ln in res.output.splitlines() if "cam-4" in ln)
    assert "BLOCKED" in line and all("BLOCKED" not in ln for ln in res.output.splitlines() if "cam-0" in ln)
    page = httpx.get(f"{stack.url}/ui/fleet", headers={"Authorization": f"Bearer {stack.token}"}).text
    row = page.split('data-device="cam-4"', 1)[1].split("</tr>", 1)[0]
    assert "model-blocked" in row and REASON in row and 'id="blocked-tile"' in page
    assert "model-blocked" not in page.split('data-device="cam-0"', 1)[1].split("</tr>", 1)[0]
    shown = json.loads(cli(stack, "model", "show", "digits:1.1", "--json").output)
    assert shown["running"]["control"] == 1 and shown["devices"]["control"] == [lkg_less]
    assert c.get_model("digits:1.0")["running"]["control"] == 4
    actions = [(e.action, e.target) for e in audit_rows(stack)]
    assert ("model.yank", "digits/1.1") in actions and ("rollout.start", rid) in actions
    assert ("model.yank_leftovers", "digits:1.1") in actions

    # a replacement that NaNs: the yank stops at its first wave, the rest never get it
    c.deploy("digits:1.3", "control", old)
    on(stack, old, "digits:1.3")
    push(stack, candidates.nan_after_activation(digit_models[0], tmp_path, "1.4-nan"))
    out = c.yank_model("digits:1.3", reason="wrong calibration", to="digits:1.4-nan", waves="25,100", soak="1s",
                       gates=["failure<=0"], device_timeout="40s")
    assert [(r["target"], len(r["devices"])) for r in out["rollouts"]] == [("digits:1.4-nan", 4)]
    assert out["needs_attention"] == []
    st = wait_rollout(stack, out["rollouts"][0]["id"], "breached", "completed")
    assert st["state"] == "breached" and st["breach"]["wave"] == 0, st["reason"]
    wave0 = [m["device"] for m in st["members"] if m["wave"] == 0]
    assert len(wave0) == 1 and all(w["counts"].get("waiting", 0) == w["members"] for w in st["waves"][1:])
    for d in old:
        assert slot_of(stack, d)["desired"] == ("digits:1.4-nan" if d in wave0 else "digits:1.3"), d
    with stack.controller.session() as s:
        assert s.exec(select(ModelVersion).where(ModelVersion.version == "1.3")).one().status == "blocked"


def test_block_landing_while_a_wave_soaks_stops_the_reconciler_dispatching_the_next(stack, agents,
                                                                                    digit_models) -> None:  # type: ignore[no-untyped-def]
    c = stack.client
    fleet = [agents(stack, f"cam-{i}", fps=10.0).device_id for i in range(3)]
    for version in ("1.0", "1.1"):
        push(stack, candidates.retag(digit_models[0], version))
    c.deploy("digits:1.0", "control", fleet)
    on(stack, fleet, "digits:1.0")
    rid = c.start_rollout("digits:1.1", waves="34,100", soak="4s", gates=["failure<=0"], device_timeout="40s")["id"]
    wait_until(lambda: c.rollout_status(rid, devices=False, events=0)["state"] == "soaking", timeout=45,
               interval=0.2, message="wave 0 soaking")
    st = c.rollout_status(rid)
    wave1 = [m["device"] for m in st["members"] if m["wave"] == 1]
    assert wave1 and st["current_wave"] == 0
    with stack.controller.session() as s:  # the block as another replica wrote it: no abort ran here
        mv = s.exec(select(ModelVersion).where(ModelVersion.version == "1.1")).one()
        mv.status, mv.status_reason, mv.status_by = "blocked", REASON, "other-replica"
        s.add(mv)
        s.commit()
    st = wait_rollout(stack, rid, "aborted", "completed", timeout=20)
    assert st["state"] == "aborted" and REASON in st["reason"]
    assert any("is blocked" in e["message"] for e in st["events"])
    time.sleep(5)  # past the soak: a reconciler without the guard would dispatch wave 1 now
    assert all(slot_of(stack, d)["desired"] == "digits:1.0" for d in wave1)
    assert c.rollout_status(rid, devices=False)["state"] == "aborted"
    assert [(e.action, e.target, e.actor) for e in audit_rows(stack) if e.action == "rollout.abort"] == [
        ("rollout.abort", rid, "reconciler")]

    c.set_model_status("digits:1.1", "unblock", "false alarm")  # unblocked: a new rollout goes through
    rid2 = c.start_rollout("digits:1.1", waves="100", soak="1s", gates=["failure<=0"], device_timeout="40s")["id"]
    assert wait_rollout(stack, rid2, "completed", "breached")["state"] == "completed"
    on(stack, fleet, "digits:1.1")
