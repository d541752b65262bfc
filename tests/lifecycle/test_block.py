"""Deprecate, block and unblock on a real controller (uvicorn on loopback, SQLite, the real
broker): a blocked version is refused on every path with 409 ``E_MODEL_BLOCKED`` naming the
reason, its live rollouts are aborted (event and audit entry), deprecated warns but allows.

No agents here (enrolled devices stay offline): what is pinned is the controller's answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from edgefleet.cloud.audit import AuditEntry
from edgefleet.cloud.cli import app
from edgefleet.cloud.client import ApiError

from ..conftest import push, wait_until

REASON = "NaN on low-light frames (ticket 4711)"


@pytest.fixture
def ready(stack, digit_models):  # type: ignore[no-untyped-def]
    for i in range(3):
        stack.client.enrol_device(f"cam-{i}", "cpu-x86_64", {"site": "a"})
    push(stack, digit_models[0])  # digits:1.0
    push(stack, digit_models[1])  # digits:2.0
    return stack


def cli(stack: Any, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--url", stack.url, "--token", stack.token], env={"COLUMNS": "250"})


def refused(fn: Any, *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as exc:
        fn(*args, **kwargs)
    return exc.value


def audit_actions(stack: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    with stack.controller.session() as s:
        rows = s.exec(select(AuditEntry).order_by(AuditEntry.seq)).all()
        return [(e.action, e.target, e.actor) for e in rows if e.action.startswith(prefix)]


def test_blocked_version_is_refused_on_cli_api_and_rollout_start_until_unblocked(ready) -> None:  # type: ignore[no-untyped-def]
    c = ready.client
    res = cli(ready, "model", "block", "digits:2.0", "--reason", REASON)
    assert res.exit_code == 0, res.output
    assert "active → blocked" in res.output

    err = refused(c.deploy, "digits:2.0", "control", ["cam-0"])
    assert (err.status_code, err.code) == (409, "E_MODEL_BLOCKED")
    assert "digits:2.0 is blocked" in err.detail and REASON in err.detail
    err = refused(c.start_rollout, "digits:2.0", waves="50,100")
    assert (err.status_code, err.code) == (409, "E_MODEL_BLOCKED") and REASON in err.detail
    res = cli(ready, "deploy", "--model", "digits:2.0", "--device", "cam-0")
    assert res.exit_code == 1 and "blocked" in res.output and "4711" in res.output and "HTTP 409" in res.output
    res = cli(ready, "rollout", "start", "--model", "digits:2.0", "--waves", "100")
    assert res.exit_code == 1 and "E_MODEL_BLOCKED" not in res.output and "blocked" in res.output
    assert c.get_device("cam-0")["slots"]["control"]["desired"] is None  # nothing was assigned
    assert c.list_rollouts() == []
    c.deploy("digits:1.0", "control", ["cam-0"])  # other versions are untouched

    mv = c.get_model("digits:2.0")
    assert (mv["status"], mv["status_reason"], mv["status_by"]) == ("blocked", REASON, "admin")

    res = cli(ready, "model", "unblock", "digits:2.0", "--reason", "fixed upstream")
    assert res.exit_code == 0 and "blocked → active" in res.output, res.output
    assert c.deploy("digits:2.0", "control", ["cam-1"])["warnings"] == []
    assert c.get_device("cam-1")["slots"]["control"]["desired"] == "digits:2.0"
    started = c.start_rollout("digits:2.0", select="device:cam-2", waves="100")
    assert started["state"] == "pending" and started["warnings"] == []

    actions = [(a, t) for a, t, _ in audit_actions(ready, "model.")]
    assert ("model.block", "digits/2.0") in actions and ("model.unblock", "digits/2.0") in actions


def test_block_aborts_live_rollouts_and_resume_is_refused(ready) -> None:  # type: ignore[no-untyped-def]
    c = ready.client
    live = c.start_rollout("digits:2.0", select="device:cam-0|cam-1", waves="50,100")["id"]
    paused = c.start_rollout("digits:2.0", select="device:cam-2", waves="100")["id"]
    wait_until(lambda: c.rollout_status(paused, devices=False)["state"] == "running", message="picked up")
    c.rollout_command(paused, "pause", "holding")
    other = c.start_rollout("digits:1.0", slot="shadow", select="device:cam-2", waves="100")["id"]

    out = c.set_model_status("digits:2.0", "block", REASON)
    assert sorted(out["aborted_rollouts"]) == sorted([live, paused])
    assert out["model"]["status"] == "blocked" and out["previous_status"] == "active"
    for rid in (live, paused):
        st = c.rollout_status(rid, events=50)
        assert st["state"] == "aborted" and REASON in st["reason"]
        assert any("aborted: model digits:2.0 blocked by admin" in e["message"] for e in st["events"])
    assert c.rollout_status(other, devices=False)["state"] in ("pending", "running")  # another model: untouched

    err = refused(c.rollout_command, paused, "resume")
    assert (err.status_code, err.code) == (409, "E_MODEL_BLOCKED") and REASON in err.detail
    aborts = [(t, a) for a, t, a in audit_actions(ready, "rollout.abort")]
    assert sorted(t for t, _ in aborts) == sorted([live, paused]) and all(who == "admin" for _, who in aborts)
    assert ("model.block", "digits/2.0", "admin") in audit_actions(ready, "model.block")


def test_deprecated_version_warns_but_deploys_and_rolls_out(ready) -> None:  # type: ignore[no-untyped-def]
    c = ready.client
    res = cli(ready, "model", "deprecate", "digits:1.0", "--reason", "superseded by 2.0")
    assert res.exit_code == 0 and "active → deprecated" in res.output, res.output
    out = c.deploy("digits:1.0", "control", ["cam-0"])
    assert out["devices"] == ["cam-0"] and out["warnings"] == ["digits:1.0 is deprecated: superseded by 2.0"]
    res = cli(ready, "deploy", "--model", "digits:1.0", "--device", "cam-1")
    assert res.exit_code == 0 and "warning" in res.output and "superseded by 2.0" in res.output
    started = c.start_rollout("digits:1.0", select="device:cam-2", waves="100")
    assert started["warnings"] == ["digits:1.0 is deprecated: superseded by 2.0"]
    events = c.rollout_status(started["id"], events=20)["events"]
    assert any(e["level"] == "warning" and "deprecated" in e["message"] for e in events)
    assert ("model.deprecate", "digits/1.0", "admin") in audit_actions(ready, "model.deprecate")


def test_bad_lifecycle_requests_change_nothing(ready) -> None:  # type: ignore[no-untyped-def]
    c = ready.client
    err = refused(c.request, "POST", "/models/digits/2.0/block", json={"reason": ""})
    assert err.status_code == 422
    err = refused(c.request, "POST", "/models/digits/2.0/block", json={"reason": "   "})
    assert err.status_code == 400 and "reason" in err.detail
    err = refused(c.set_model_status, "digits:9.9", "block", REASON)
    assert err.status_code == 404
    err = refused(c.request, "POST", "/models/dig%20its/2.0/block", json={"reason": REASON})
    assert err.status_code == 422  # the path pattern is checked before the handler
    err = refused(c.yank_model, "digits:2.0", reason=REASON, to="digits:2.0")
    assert err.status_code == 400 and "being yanked" in err.detail
    err = refused(c.yank_model, "digits:2.0", reason=REASON, waves="50,10")
    assert err.status_code in (400, 422)  # not increasing: refused at the schema or by the spec check
    err = refused(c.yank_model, "digits:2.0", reason=REASON, to="digits:9.9")
    assert err.status_code == 404
    assert c.get_model("digits:2.0")["status"] == "active"  # none of these blocked it
    res = cli(ready, "model", "block", "digits", "--reason", REASON)
    assert res.exit_code == 1 and "NAME:VERSION" in res.output

    viewer = c.create_token("watcher", "viewer")["token"]
    from edgefleet.cloud.client import ApiClient

    v = ApiClient(ready.url, viewer)
    try:
        err = refused(v.set_model_status, "digits:2.0", "block", REASON)
        assert err.status_code == 403
        assert v.get_model("digits:2.0")["status"] == "active"
    finally:
        v.close()
    assert ("denied", "digits/2.0", "watcher") in audit_actions(ready, "denied")


def test_ls_and_show_give_status_pusher_provenance_and_placement(ready) -> None:  # type: ignore[no-untyped-def]
    c = ready.client
    c.set_model_status("digits:2.0", "block", REASON)
    rows = {f"{m['name']}:{m['version']}": m for m in c.list_models()}
    assert rows["digits:2.0"]["status"] == "blocked" and rows["digits:1.0"]["status"] == "active"
    assert rows["digits:1.0"]["pushed_by"] == "admin" and len(rows["digits:1.0"]["model_sha256"]) == 64
    assert rows["digits:1.0"]["running"] == {"control": 0, "shadow": 0}  # no device has reported it
    res = cli(ready, "model", "ls")
    assert res.exit_code == 0 and "blocked" in res.output and "push by admin" in res.output, res.output
    assert REASON in res.output
    res = cli(ready, "model", "ls", "--json")
    assert {m["version"]: m["status"] for m in json.loads(res.output)} == {"1.0": "active", "2.0": "blocked"}
    res = cli(ready, "model", "show", "digits:2.0")
    assert res.exit_code == 0, res.output
    for text in ("blocked", REASON, "pushed", "by admin", "sha256:", "control     0 devices"):
        assert text in res.output, (text, res.output)
    shown = json.loads(cli(ready, "model", "show", "digits:2.0", "--json").output)
    assert shown["digest"] == rows["digits:2.0"]["digest"] and shown["devices"] == {}
    res = cli(ready, "model", "show", "digits:3.0")
    assert res.exit_code == 1 and "no model digits:3.0" in res.output
