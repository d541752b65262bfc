"""Decommission and rotation on a real controller and broker.

A revoked device can neither publish (the broker refuses it and the controller drops what
still arrives), download (director metadata and bundles answer 401) nor upload; a running
agent picks up rotated credentials without losing its state; an expired API token is
refused; a message from an id that was never enrolled creates nothing.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from edgefleet.cloud.client import ApiError
from edgefleet.cloud.tables import ApiToken, Device
from edgefleet.protocols import Status, encode, status_topic, telemetry_topic

from ..conftest import device_credentials, mqtt_client, push, wait_until


def _device(stack, device_id: str) -> Device | None:  # type: ignore[no-untyped-def]
    with stack.controller.session() as s:
        return s.get(Device, device_id)


def test_message_from_an_unenrolled_id_creates_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    bridge = stack.controller.bridge
    assert bridge.handle(status_topic("ghost-1"), encode(Status(device_id="ghost-1", online=True))) == "unknown_device"
    assert _device(stack, "ghost-1") is None
    assert bridge.counters[("status", "unknown_device")] == 1


def test_enrolment_returns_broker_credentials_that_the_broker_accepts(stack, broker) -> None:  # type: ignore[no-untyped-def]
    creds = device_credentials(stack, "cam-e")
    assert creds["mqtt_username"] == "cam-e" and len(creds["mqtt_password"]) >= 32
    passwd = (broker.auth_dir / "passwd").read_text()
    assert "cam-e:$7$" in passwd and creds["mqtt_password"] not in passwd
    assert oct((broker.auth_dir / "passwd").stat().st_mode & 0o777) == "0o600"
    c = mqtt_client(broker, "cam-e", creds["mqtt_password"], client_id="cam-e")
    c.publish(status_topic("cam-e"), encode(Status(device_id="cam-e", online=True)), qos=1).wait_for_publish(5)
    wait_until(lambda: (_device(stack, "cam-e") or Device(id="x")).online, message="status applied")
    c.loop_stop()
    c.disconnect()
    with pytest.raises(ApiError) as err:
        stack.client.enrol_device("edgefleet-controller")
    assert err.value.status_code == 400  # the controller's own broker account is not a device id


def test_revoked_device_can_neither_publish_download_nor_upload(stack, broker, digit_models) -> None:  # type: ignore[no-untyped-def]
    creds = device_credentials(stack, "cam-x")
    push(stack, digit_models[0])
    stack.client.deploy("digits:1.0", "control", ["cam-x"])
    digest = stack.client.list_models()[0]["digest"]
    auth = {"Authorization": f"Bearer {creds['token']}"}
    assert httpx.get(f"{stack.url}/api/v1/bundles/{digest}", headers=auth).status_code == 200
    assert httpx.get(f"{stack.url}/tuf/director/cam-x/timestamp.json", headers=auth).status_code == 200
    c = mqtt_client(broker, "cam-x", creds["mqtt_password"], client_id="cam-x")
    c.publish(status_topic("cam-x"), encode(Status(device_id="cam-x", online=True)), qos=1).wait_for_publish(5)
    wait_until(lambda: _device(stack, "cam-x").online, message="online")

    res = stack.client.revoke_device("cam-x")
    assert res["revoked_at"] and not res["online"]
    assert "cam-x:" not in (broker.auth_dir / "passwd").read_text()
    assert "user cam-x" not in (broker.auth_dir / "acl").read_text()
    before = stack.controller.bridge.counters.copy()
    c.publish(telemetry_topic("cam-x"), b'{"schema":"fleet.status/1"}', qos=1)
    c.publish(status_topic("cam-x"), encode(Status(device_id="cam-x", online=True)), qos=1)
    time.sleep(1.0)
    assert not _device(stack, "cam-x").online  # nothing it sends is applied
    after = stack.controller.bridge.counters
    assert after[("status", "ok")] == before[("status", "ok")]
    # the controller drops it even if a broker let it through
    assert stack.controller.bridge.handle(status_topic("cam-x"), encode(Status(device_id="cam-x", online=True))) == "revoked"
    c.loop_stop()
    c.disconnect()
    again = mqtt_client(broker, "cam-x", creds["mqtt_password"], client_id="cam-x-2")
    time.sleep(0.5)
    assert not again.is_connected()
    again.loop_stop()
    assert httpx.get(f"{stack.url}/api/v1/bundles/{digest}", headers=auth).status_code == 401
    assert httpx.get(f"{stack.url}/tuf/director/cam-x/timestamp.json", headers=auth).status_code == 401
    upload = {"event": {"schema": "fleet.event/1", "device_id": "cam-x", "event_id": "e1", "trigger": "sample"},
              "clip": {"size": 4, "sha256": "0" * 64, "content_type": "video/webm"}}
    assert httpx.post(f"{stack.url}/api/v1/uploads", json=upload, headers=auth).status_code == 401
    with pytest.raises(ApiError) as err:
        stack.client.deploy("digits:1.0", "control", ["cam-x"])
    assert err.value.status_code == 409
    # enrolling it again is the operator's way back in: new credentials, the old stay dead
    fresh = device_credentials(stack, "cam-x")
    assert fresh["token"] != creds["token"] and not _device(stack, "cam-x").revoked_at
    assert httpx.get(f"{stack.url}/api/v1/bundles/{digest}", headers=auth).status_code == 401


def test_revoke_needs_admin_and_unknown_is_404(stack) -> None:  # type: ignore[no-untyped-def]
    device_credentials(stack, "cam-r1")
    with stack.controller.session() as s:
        from edgefleet.cloud.api.routes.tokens import create_token

        _row, operator = create_token(s, "op", "operator")
    r = httpx.delete(f"{stack.url}/api/v1/devices/cam-r1", headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 403
    assert not _device(stack, "cam-r1").revoked_at
    with pytest.raises(ApiError) as err:
        stack.client.revoke_device("no-such-device")
    assert err.value.status_code == 404


def test_expired_api_token_is_refused(stack) -> None:  # type: ignore[no-untyped-def]
    made = stack.client.create_token("short-lived", "viewer", 3600)
    assert made["expires_at"]
    ok = httpx.get(f"{stack.url}/api/v1/devices", headers={"Authorization": f"Bearer {made['token']}"})
    assert ok.status_code == 200
    with stack.controller.session() as s:
        row = s.get(ApiToken, made["id"])
        row.expires_at = datetime.now(timezone.utc) - timedelta(seconds=1)
        s.add(row)
        s.commit()
    r = httpx.get(f"{stack.url}/api/v1/devices", headers={"Authorization": f"Bearer {made['token']}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_running_agent_rotates_its_credentials_and_keeps_its_state(stack, broker, agents, digit_models) -> None:  # type: ignore[no-untyped-def]
    a = agents(stack, "cam-rot")
    push(stack, digit_models[0])
    stack.client.deploy("digits:1.0", "control", ["cam-rot"])
    wait_until(lambda: (stack.client.get_device("cam-rot")["slots"]["control"]["installed"] == "digits:1.0"),
               timeout=60, message="model installed")
    old_token, old_password = a.agent.config.agent.token, a.agent.config.mqtt.password
    res = stack.client.rotate_device_credentials("cam-rot")
    assert res["credentials_epoch"] == 1
    store = a.agent.identity
    wait_until(lambda: store.load() is not None and store.load().credentials_epoch == 1, timeout=30,
               message="agent stored rotated credentials")
    new = store.load()
    assert new.token != old_token and new.mqtt_password != old_password
    assert oct((store.dir / "credentials.json").stat().st_mode & 0o777) == "0o600"
    # old credentials no longer work, new ones do; the agent is still online, inferring the same model
    old_auth = {"Authorization": f"Bearer {old_token}"}
    assert httpx.get(f"{stack.url}/tuf/director/cam-rot/timestamp.json", headers=old_auth).status_code == 401
    assert httpx.get(f"{stack.url}/tuf/director/cam-rot/timestamp.json",
                     headers={"Authorization": f"Bearer {new.token}"}).status_code == 200
    assert "cam-rot:" in (broker.auth_dir / "passwd").read_text()
    frames = a.agent.pipeline.totals.get("frames", 0)
    wait_until(lambda: a.agent.pipeline.totals.get("frames", 0) > frames + 5, message="still inferring")
    push(stack, digit_models[1])
    stack.client.deploy("digits:2.0", "shadow", ["cam-rot"])  # downloads with the new token
    wait_until(lambda: stack.client.get_device("cam-rot")["slots"]["shadow"]["installed"] == "digits:2.0",
               timeout=60, message="deployment after rotation")
    assert stack.client.get_device("cam-rot")["slots"]["control"]["installed"] == "digits:1.0"
