"""``fleet rollout …`` and ``/api/v1/rollouts`` on a real controller (uvicorn on loopback).

No agents here: enrolled devices stay offline, so a rollout waits with them ``pending``.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.cli import app
from edgefleet.cloud.cli.cloud_cmd import create_admin_token
from edgefleet.cloud.client import ApiClient, ApiError

from ..conftest import push, wait_until


@pytest.fixture
def ready(stack, digit_models):  # type: ignore[no-untyped-def]
    for i, hw in enumerate(("jetson-orin-nano", "jetson-orin-nano", "jetson-orin-agx", "jetson-xavier-nx")):
        stack.client.enrol_device(f"cam-{i}", hw, {"site": "a" if i < 2 else "b"})
    push(stack, digit_models[0])
    push(stack, digit_models[1])
    return stack


def _cli(stack, *args: str):  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(app, ["rollout", *args, "--url", stack.url, "--token", stack.token])
    return res


def test_cli_start_ls_status_and_commands(ready) -> None:  # type: ignore[no-untyped-def]
    res = _cli(ready, "start", "--model", "digits:2.0", "--slot", "shadow", "--select", "tag:site=a|b",
               "--waves", "50,100", "--soak", "10m", "--gate", "agreement>=0.9", "--gate", "failure<=0.1",
               "--on-breach", "pause", "--device-timeout", "1h", "--max-concurrent", "2", "--json")
    assert res.exit_code == 0, res.output
    started = json.loads(res.output)
    rid = started["id"]
    assert started["gates_spec"] == ["agreement>=0.9", "failure<=0.1"] and started["slot"] == "shadow"
    wait_until(lambda: ready.client.rollout_status(rid)["state"] == "running", message="reconciler picked it up")
    st = ready.client.rollout_status(rid)
    assert st["devices"] == 4 and [w["members"] for w in st["waves"]] == [3, 1]
    assert st["waves"][0]["counts"] == {"pending": 3}  # offline: not sent, not failed
    assert {g["metric"]: g["status"] for g in st["waves"][0]["gates"]} == {"agreement": "pending", "failure": "pending"}

    res = _cli(ready, "ls")
    assert res.exit_code == 0 and "shadow" in res.output
    res = _cli(ready, "ls", "--json")
    assert [(r["id"], r["state"]) for r in json.loads(res.output)] == [(rid, "running")]
    res = _cli(ready, "status", rid)
    assert res.exit_code == 0, res.output
    assert "0/4 devices on the model" in res.output and "agreement" in res.output
    res = _cli(ready, "status", rid, "--json")
    assert json.loads(res.output)["members"][0]["status"] == "pending"

    for command, state in (("pause", "paused"), ("pause", "paused"), ("resume", "running"), ("abort", "aborted")):
        res = _cli(ready, command, rid, "--reason", "testing")
        assert res.exit_code == 0 and state in res.output, (command, res.output)
    res = _cli(ready, "resume", rid)
    assert res.exit_code != 0 and "cannot resume a rollout that is aborted" in res.output
    events = [e["message"] for e in ready.client.rollout_status(rid, events=50)["events"]]
    assert any("pause by admin" in e for e in events) and any("abort by admin" in e for e in events)


def test_bad_input_is_refused_with_a_pointer_and_roles_are_enforced(ready) -> None:  # type: ignore[no-untyped-def]
    c = ready.client
    with pytest.raises(ApiError) as exc:
        c.start_rollout("digits:2.0", select="hw:orin agx")
    assert exc.value.status_code == 400 and "^" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        c.start_rollout("digits:2.0", gates=["failure>=0.02"])
    assert exc.value.status_code == 400 and "failure<=0.02" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        c.start_rollout("digits:9.9")
    assert exc.value.status_code == 404
    with pytest.raises(ApiError) as exc:
        c.start_rollout("digits:2.0", select="tag:site=nowhere")
    assert exc.value.status_code == 409
    with pytest.raises(ApiError) as exc:
        c.rollout_status("r-nope")
    assert exc.value.status_code == 404

    viewer = ApiClient(ready.url, create_admin_token(ready.controller, "viewer", "viewer"))
    try:
        with pytest.raises(ApiError) as exc:
            viewer.start_rollout("digits:2.0")
        assert exc.value.status_code == 403
        rid = c.start_rollout("digits:2.0", waves="100", soak="0s")["id"]
        assert viewer.rollout_status(rid)["id"] == rid
        with pytest.raises(ApiError) as exc:
            viewer.rollout_command(rid, "abort")
        assert exc.value.status_code == 403
    finally:
        viewer.close()
    c.rollout_command(rid, "rollback")
    with pytest.raises(ApiError) as exc:
        c.rollout_command(rid, "abort")
    # The reconciler may finish the rollback before the abort arrives: either state is named.
    assert exc.value.status_code == 409
    assert "rolling_back" in exc.value.detail or "rolled_back" in exc.value.detail


def test_commands_racing_reconcile_passes_never_fail(ready) -> None:  # type: ignore[no-untyped-def]
    """SQLite has no row locks: a command that meets a pass's write is retried, not a 500.

    (The interleaving that once gave a 500 — a pass writing between the command's read and
    its write — is rare; this drives many commands against extra passes to catch it.)"""
    import threading

    rid = ready.client.start_rollout("digits:2.0", waves="50,100", soak="0s")["id"]
    stop = threading.Event()

    unexpected: list[BaseException] = []

    def passes() -> None:  # more passes besides the controller's own loop
        while not stop.is_set():
            try:
                ready.controller.reconcile_once()
            except Exception as exc:  # a pass that loses a race rolls back; nothing else may happen
                if type(exc).__name__ not in ("StaleState", "IntegrityError", "OperationalError"):
                    unexpected.append(exc)

    t = threading.Thread(target=passes)
    t.start()
    try:
        for i in range(80):
            st = ready.client.rollout_command(rid, "pause" if i % 2 == 0 else "resume")
            assert st["state"] == ("paused" if i % 2 == 0 else "running") or i % 2 == 1, st["state"]
    finally:
        stop.set()
        t.join(timeout=10)
    assert not unexpected, unexpected
    events = [e for e in ready.client.rollout_status(rid, events=200)["events"] if e["kind"] == "command"]
    assert sum("pause by" in e["message"] for e in events) == 40
