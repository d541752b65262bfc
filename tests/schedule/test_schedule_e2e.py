"""Schedules and rate caps on real components: broker, controller (HTTP + reconciler),
SQLite in the data dir, agents in threads, the CLI against the HTTP API."""

from __future__ import annotations

import json
import time

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from edgefleet.cloud import audit
from edgefleet.cloud.cli import app
from edgefleet.cloud.client import ApiError
from edgefleet.cloud.rollout.tables import RolloutMember

from ..conftest import push, slot_of, start_stack, wait_until

MODEL = "digits:1.0"


def _cli(stack, *args: str):
    return CliRunner().invoke(app, [*args, "--url", stack.url, "--token", stack.token])


def _actions(stack, prefix: str) -> list[audit.AuditEntry]:
    with Session(stack.controller.engine) as s:
        return audit.list_entries(s, action=prefix)


def _on_model(stack, devices: list[str]) -> bool:
    return all(slot_of(stack, d)["installed"] == MODEL for d in devices)


@pytest.mark.slow
def test_scheduled_rollout_starts_on_time_after_a_controller_restart(tmp_path, broker, agents, digit_models):
    stack = start_stack(tmp_path / "controller", broker)
    try:
        devices = [agents(stack, f"sch-{i}", fps=5.0).device_id for i in range(2)]
        wait_until(lambda: all(stack.client.get_device(d)["online"] for d in devices), message="agents online")
        push(stack, digit_models[0])
        res = stack.client.start_rollout(MODEL, waves="100", soak="0", gates=[], start_at="+10s")  # lead: a restart on a loaded CI machine
        rid, start_at = res["id"], res["start_at"]
        assert res["state"] == "scheduled" and res["devices"] == 0
        assert [r["id"] for r in stack.client.list_rollouts("scheduled")] == [rid]
        port, token = int(stack.url.rsplit(":", 1)[1]), stack.token
        stack.stop()  # the schedule lives in the database only
        assert time.time() < start_at, "the controller restart took longer than the schedule's lead"
        stack = start_stack(tmp_path / "controller", broker, token=token, http_port=port)
        assert stack.client.rollout_status(rid, devices=False)["state"] == "scheduled"
        st = wait_until(lambda: (s := stack.client.rollout_status(rid, devices=False))["state"] != "scheduled" and s,
                        timeout=30, message="scheduled rollout started")
        assert st["started_at"] >= start_at  # never early
        assert st["started_at"] - start_at < 3.0  # and on time: within a few reconcile passes (0.5 s)
        wait_until(lambda: stack.client.rollout_status(rid, devices=False)["state"] == "completed", timeout=60,
                   message="rollout completed")
        wait_until(lambda: _on_model(stack, devices), timeout=30, message="devices on the model")
        [entry] = _actions(stack, "rollout.scheduled_start")
        assert entry.target == rid and entry.actor == "reconciler" and entry.summary["scheduled_for"] == start_at
    finally:
        stack.stop()


def test_rollout_capped_at_60_per_minute_dispatches_at_least_a_second_apart(stack, agents, digit_models):
    devices = [agents(stack, f"rate-{i}", fps=5.0).device_id for i in range(3)]
    wait_until(lambda: all(stack.client.get_device(d)["online"] for d in devices), message="agents online")
    push(stack, digit_models[0])
    rid = stack.client.start_rollout(MODEL, waves="100", soak="0", gates=[], rate="60/min")["id"]
    wait_until(lambda: stack.client.rollout_status(rid, devices=False)["state"] == "completed", timeout=60,
               message="rollout completed")
    with Session(stack.controller.engine) as s:
        times = sorted(m.dispatched_at for m in s.exec(select(RolloutMember)
                                                       .where(RolloutMember.rollout_id == rid)).all())
    assert len(times) == 3 and all(t is not None for t in times)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 1.0, gaps  # 60/min: one device per second at most
    st = stack.client.rollout_status(rid, devices=False)
    assert st["rate_spec"] == "60/min" and st["rate_per_min"] == 60
    assert "rate 60/min now" in _cli(stack, "rollout", "status", rid).output


def test_schedule_edit_cancel_and_validation_errors_are_clear(stack, digit_models):
    stack.client.enrol_device("sched-a", "cpu-x86_64", {"test": "yes"})
    push(stack, digit_models[0])
    for body, message in (
        (dict(rate="60"), "a rate reads like 60/min"),
        (dict(rate="5000/min"), "outside 1..1000"),
        (dict(ramp="10/min,x9,every=5"), "factor 9 is outside 1.1..5"),
        (dict(ramp="10/min,x2,every=0"), "every=0 must be between 1"),
        (dict(rate="5/min", ramp="5/min,x2,every=1"), "not both"),
        (dict(start_at="2020-01-01T00:00:00Z"), "in the past"),
        (dict(start_at="2030-01-01T00:00:00"), "needs an offset"),
    ):
        with pytest.raises(ApiError) as err:
            stack.client.start_rollout(MODEL, **body)
        assert err.value.status_code in (400, 422) and message in err.value.detail, (body, err.value.detail)
    res = _cli(stack, "rollout", "start", "--model", MODEL, "--ramp", "10/min,x1,every=5")
    assert res.exit_code != 0 and "factor 1 is outside 1.1..5" in res.output
    res = _cli(stack, "rollout", "start", "--model", MODEL, "--start-at", "2001-01-01T00:00:00+00:00")
    assert res.exit_code != 0 and "in the past" in res.output

    res = _cli(stack, "deploy", "--model", MODEL, "--device", "sched-a", "--at", "+1h")
    assert res.exit_code == 0, res.output
    assert "scheduled for the control slot" in res.output
    [row] = stack.client.list_rollouts("scheduled")
    rid, first = row["id"], row["start_at"]
    assert row["select"] == "device:sched-a" and row["waves"] == "100"
    res = _cli(stack, "rollout", "ls", "--scheduled")
    assert res.exit_code == 0 and "starts at" in res.output
    res = _cli(stack, "rollout", "ls", "--scheduled", "--json")
    assert [r["id"] for r in json.loads(res.output)] == [rid]
    res = _cli(stack, "rollout", "reschedule", rid, "+2h")
    assert res.exit_code == 0, res.output
    st = stack.client.rollout_status(rid, devices=False)
    assert st["state"] == "scheduled" and 3000 < st["start_at"] - first < 4200
    with pytest.raises(ApiError) as err:
        stack.client.reschedule_rollout(rid, "2020-01-01T00:00:00Z")
    assert err.value.status_code == 400 and "in the past" in err.value.detail
    with pytest.raises(ApiError) as err:
        stack.client.rollout_command(rid, "pause")
    assert err.value.status_code == 409 and "has not started" in err.value.detail
    res = _cli(stack, "rollout", "cancel", rid)
    assert res.exit_code == 0 and "aborted" in res.output
    with pytest.raises(ApiError) as err:
        stack.client.reschedule_rollout(rid, "+1h")
    assert err.value.status_code == 409 and "only a scheduled rollout" in err.value.detail
    time.sleep(1.5)  # several reconcile passes: a cancelled rollout never starts
    st = stack.client.rollout_status(rid, devices=False)
    assert st["state"] == "aborted" and st["started_at"] is None and st["devices"] == 0
    assert {e.action for e in _actions(stack, "rollout.")} >= {"rollout.start", "rollout.reschedule",
                                                               "rollout.cancel"}
    assert not _actions(stack, "rollout.scheduled_start")
