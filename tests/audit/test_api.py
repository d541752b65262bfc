"""Control-plane calls over real HTTP land in the audit log: who, which role, what, on
what, a summary without secrets; refusals as ``denied``; device calls and failures not."""

from __future__ import annotations

import httpx
import pytest

from edgefleet.cloud.auth import ROLES

from ..conftest import push


def _entries(stack, **params) -> list[dict]:  # type: ignore[no-untyped-def]
    return list(reversed(stack.client.request("GET", "/audit", params={"limit": 1000, **params})))


def test_control_plane_calls_are_recorded_with_actor_role_action_target_and_no_secrets(stack, digit_models) -> None:  # type: ignore[no-untyped-def]
    control, candidate = digit_models
    push(stack, control)
    push(stack, candidate)
    device = stack.client.enrol_device("cam-1", "cpu-x86_64", {"site": "lab", "wifi_password": "hunter2"})
    token = stack.client.create_token("ci-bot", "operator")
    stack.client.revoke_token(token["id"])
    stack.client.change_capture_settings({"max_per_minute": 7})
    stack.client.reset_capture_settings()
    stack.client.deploy("digits:1.0", "control", ["cam-1"])
    rollout = stack.client.start_rollout("digits:2.0", waves="100", soak="1h")["id"]
    for command in ("pause", "resume", "abort"):
        stack.client.request("POST", f"/rollouts/{rollout}/{command}", json={"reason": f"test {command}"})
    stack.client.request("POST", "/trust/rotate/timestamp", params={"repo": "both"})
    stack.client.request("DELETE", "/devices/cam-1")

    entries = _entries(stack)
    assert [e["action"] for e in entries] == [
        "model.push", "model.push", "device.enrol", "token.create", "token.revoke", "capture.set",
        "capture.reset", "deploy", "rollout.start", "rollout.pause", "rollout.resume", "rollout.abort",
        "keys.rotate", "device.revoke"]
    assert {(e["actor"], e["role"]) for e in entries} == {("admin", "admin")}
    by_action = {e["action"]: e for e in entries}
    assert [e["target"] for e in entries[:2]] == ["digits:1.0", "digits:2.0"]
    assert by_action["device.enrol"]["target"] == "cam-1"
    assert by_action["token.revoke"]["target"] == str(token["id"])
    assert by_action["rollout.pause"]["target"] == rollout
    assert by_action["rollout.pause"]["summary"]["body"] == {"reason": "test pause"}
    assert by_action["keys.rotate"]["target"] == "timestamp"
    assert by_action["keys.rotate"]["summary"]["query"] == {"repo": "both"}
    assert by_action["capture.set"]["summary"]["body"] == {"max_per_minute": 7}
    assert by_action["token.create"]["summary"]["body"] == {"name": "ci-bot", "role": "operator"}
    pushed = entries[0]["summary"]["body"]
    assert pushed["name"] == "digits" and pushed["model"]["bytes"] == control.path.stat().st_size
    enrol = by_action["device.enrol"]["summary"]["body"]
    assert enrol["tags"] == {"site": "lab", "wifi_password": "[redacted]"}
    assert entries == sorted(entries, key=lambda e: e["seq"]) and [e["seq"] for e in entries] == list(range(1, 15))

    exported = httpx.get(stack.url + "/api/v1/audit/export", headers={"Authorization": f"Bearer {stack.token}"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/x-ndjson")
    assert len(exported.text.splitlines()) == 14
    for secret in (stack.token, token["token"], device["token"], device.get("mqtt_password"), "hunter2"):
        if secret:
            assert secret not in exported.text
    assert stack.client.request("GET", "/audit/verify")["ok"] is True

    assert [e["action"] for e in _entries(stack, action="rollout.")] == [
        "rollout.start", "rollout.pause", "rollout.resume", "rollout.abort"]
    assert _entries(stack, actor="nobody") == []


def test_refusals_are_recorded_as_denied_and_failures_and_device_calls_not(stack, digit_models) -> None:  # type: ignore[no-untyped-def]
    viewer = stack.client.create_token("view-only", "viewer")["token"]
    device = stack.client.enrol_device("cam-2", "cpu-x86_64")
    before = len(_entries(stack))
    r = httpx.post(stack.url + "/api/v1/tokens", json={"name": "sneaky", "role": "admin"},
                   headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403
    r = httpx.post(stack.url + "/api/v1/rollouts", json={"model": "nope:0", "waves": "100"},
                   headers={"Authorization": f"Bearer {stack.token}"})
    assert 400 <= r.status_code < 500 and r.status_code != 403  # failed: changed nothing, not recorded
    r = httpx.get(stack.url + "/tuf/director/cam-2/1.root.json", headers={"Authorization": f"Bearer {device['token']}"})
    assert r.status_code < 500  # a device read: not a control-plane action
    r = httpx.post(stack.url + "/api/v1/deployments", json={"model": "digits:1.0", "devices": ["cam-2"]},
                   headers={"Authorization": f"Bearer {device['token']}"})
    assert r.status_code == 403
    new = _entries(stack)[before:]
    assert [(e["actor"], e["role"], e["action"], e["summary"]["attempted"]) for e in new] == [
        ("view-only", "viewer", "denied", "token.create"), ("cam-2", "device", "denied", "deploy")]
    assert "admin" in new[0]["summary"]["reason"]  # the role that was needed
    assert new[0]["summary"]["body"] == {"name": "sneaky", "role": "admin"}


@pytest.mark.parametrize("path", ["/api/v1/audit", "/api/v1/audit/export", "/api/v1/audit/verify"])
def test_only_admins_read_the_audit_log(stack, path) -> None:  # type: ignore[no-untyped-def]
    tokens = {role: stack.client.create_token(f"{role}-user", role)["token"] for role in ROLES if role != "admin"}
    tokens["admin"] = stack.token
    for role, token in tokens.items():
        r = httpx.get(stack.url + path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == (200 if role == "admin" else 403), (role, r.status_code, r.text)
    assert httpx.get(stack.url + path).status_code == 401
    denied = _entries(stack, action="denied")
    assert sorted(e["role"] for e in denied) == ["operator", "reviewer", "viewer"]
