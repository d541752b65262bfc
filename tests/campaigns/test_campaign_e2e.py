"""Campaigns end to end: a real broker, controller (HTTP + MQTT) and agents on the digits camera.

The standing capture policy captures nothing here, so every event is a campaign's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select
from typer.testing import CliRunner

from edgefleet.cloud.cli import app
from edgefleet.cloud.client import ApiError
from edgefleet.cloud.shadow_index import ShadowEvent
from edgefleet.protocols import CapturePolicy
from tests.conftest import Stack, device_credentials, push, start_stack, wait_until

QUIET = CapturePolicy(low_confidence=False, disagreement=False, max_per_minute=120, max_per_hour=1000,
                      pre_seconds=0.5, post_seconds=0.2)


def _deploy_control(stack: Stack, digit_models: Any, n: int) -> None:
    control, _ = digit_models
    push(stack, control)
    stack.client.deploy(control.manifest.label, "control", None)
    wait_until(lambda: sum(d["slots"]["control"]["installed"] == control.manifest.label
                           for d in stack.client.list_devices()) >= n, 60, message="control model active")


def _campaign_events(stack: Stack, name: str) -> list[ShadowEvent]:
    with stack.controller.session() as s:
        return [e for e in s.exec(select(ShadowEvent)).all() if (e.record or {}).get("campaign") == name]


@pytest.mark.slow
def test_fleet_quota_is_met_across_devices_then_every_device_stops(stack: Stack, agents: Any, digit_models: Any) -> None:
    """Slow (~20-35 s on 2 busy cores): two real agents register, install the control model and
    capture until the controller completes the campaign and both drop it."""
    stack.controller.capture_policy = QUIET
    a, b = agents(stack, "cam-q1"), agents(stack, "cam-q2")
    _deploy_control(stack, digit_models, 2)
    auth = ["--url", stack.url, "--token", stack.token]
    out = CliRunner().invoke(app, ["campaign", "start", "digits-any", "--when", "confidence >= 0", "--quota", "6",
                                   "--per-device", "4", "--frames-only", "--max-per-minute", "600", *auth])
    assert out.exit_code == 0, out.output
    assert "sent to 2 devices" in out.output
    wait_until(lambda: stack.client.campaign("digits-any")["state"] == "completed", 60, message="quota met")
    status = stack.client.campaign("digits-any")
    assert status["captured"] >= 6 and status["finished_by"] == "quota of 6 met"
    assert status["groups"]["cpu-x86_64"]["devices"] == 2
    # the campaign leaves every device's signed settings; each stops
    wait_until(lambda: a.agent.campaigns.names == [] and b.agent.campaigns.names == [], 30, message="devices dropped it")
    for ra in (a, b):  # no device went past its per-device quota: in-flight overshoot is bounded by it
        assert 0 <= ra.agent.capture.counts["campaign_admitted"] <= 4
    wait_until(lambda: len(_campaign_events(stack, "digits-any")) >= 6, 30, message="events stored")
    events = _campaign_events(stack, "digits-any")
    assert len(events) <= 8 and {e.trigger for e in events} == {"campaign"}
    assert all(e.record["control"]["label"] is not None for e in events)
    out = CliRunner().invoke(app, ["campaign", "status", "digits-any", *auth])
    assert out.exit_code == 0 and "completed" in out.output and "cpu-x86_64" in out.output, out.output
    out = CliRunner().invoke(app, ["campaign", "ls", *auth])
    assert out.exit_code == 0 and "digits-any" in out.output
    with pytest.raises(ApiError) as exc:
        stack.client.stop_campaign("digits-any")
    assert exc.value.status_code == 409


@pytest.mark.slow
def test_campaign_survives_controller_and_agent_restarts_and_an_offline_device_joins(
        stack: Stack, agents: Any, digit_models: Any, tmp_path: Path) -> None:
    """Slow (~20 s): a controller restart on the same port and three agent starts, each one
    registering and installing the control model."""
    stack.controller.capture_policy = QUIET
    away = device_credentials(stack, "cam-away")  # enrolled, not running yet
    data = tmp_path / "agents" / "cam-r1"
    first = agents(stack, "cam-r1", data_dir=data)
    _deploy_control(stack, digit_models, 1)
    stack.client.start_campaign({"name": "restarts", "when": "confidence >= 0", "quota": 50, "per_device": 3,
                                 "frames_only": True, "max_per_minute": 600})
    wait_until(lambda: stack.client.campaign("restarts")["devices"].get("cam-r1") == 3, 60, message="cam-r1 at 3")
    assert first.agent.campaigns.counts() == {"restarts": 3}
    first.stop()
    port = int(stack.url.rsplit(":", 1)[1].split("/")[0])
    stack.stop()
    again = start_stack(stack.data_dir, stack.broker, token=stack.token, http_port=port)
    try:
        again.controller.capture_policy = QUIET
        assert again.client.campaign("restarts")["state"] == "running"
        back = agents(again, "cam-r1", data_dir=data)
        wait_until(lambda: back.agent.campaigns.names == ["restarts"], 30, message="campaign after agent restart")
        assert back.agent.campaigns.counts() == {"restarts": 3}  # its count survived: it captures no more
        joined = agents(again, "cam-away", token=away["token"], mqtt_password=away["mqtt_password"])
        wait_until(lambda: again.client.campaign("restarts")["devices"].get("cam-away") == 3, 90,
                   message="the device that was offline joins the campaign")
        assert joined.agent.campaigns.counts() == {"restarts": 3}
        assert again.client.campaign("restarts")["devices"]["cam-r1"] == 3
        done = again.client.stop_campaign("restarts")
        assert done["state"] == "stopped" and done["captured"] == 6
        wait_until(lambda: joined.agent.campaigns.names == [], 30, message="stop reaches the device")
    finally:
        again.stop()


def test_bad_conditions_are_refused_with_a_caret_and_nothing_is_stored(stack: Stack) -> None:
    with pytest.raises(ApiError) as exc:
        stack.client.start_campaign({"name": "bad", "when": "confidence < 0.5 and", "quota": 5})
    assert exc.value.status_code == 400 and "ends too early" in exc.value.detail and "^" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        stack.client.start_campaign({"name": "bad", "when": "confidance < 0.5", "quota": 5})
    assert "unknown field 'confidance'" in exc.value.detail and "\n  ^" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        stack.client.start_campaign({"name": "bad", "when": "label < 3", "quota": 5})
    assert "cannot compare a text with a number" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        stack.client.start_campaign({"name": "bad", "select": "tag:", "when": "disagree", "quota": 5})
    assert "--select" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        stack.client.start_campaign({"name": "bad", "quota": 5})
    assert "--when" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        stack.client.start_campaign({"name": "bad", "when": "disagree", "quota": 5, "per_device": 9})
    assert "cannot exceed" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        stack.client.start_campaign({"name": "bad", "like_event": "nope", "threshold": 0.1, "quota": 5})
    assert exc.value.status_code == 404
    with pytest.raises(ApiError) as exc:
        stack.client.start_campaign({"name": "Bad Name", "when": "disagree", "quota": 5})
    assert exc.value.status_code == 422
    assert stack.client.campaigns() == []
    out = CliRunner().invoke(app, ["campaign", "start", "bad", "--when", "label = '3'", "--url", stack.url,
                                   "--token", stack.token])
    assert out.exit_code == 1 and "use '==' to compare" in out.output


def test_viewers_read_operators_start_and_stop(stack: Stack) -> None:
    tokens = {role: stack.client.create_token(f"t-{role}", role)["token"] for role in ("viewer", "reviewer", "operator")}
    body = {"name": "roles", "when": "disagree", "quota": 5}
    for role in ("viewer", "reviewer"):
        h = {"Authorization": f"Bearer {tokens[role]}"}
        assert httpx.get(f"{stack.url}/api/v1/campaigns", headers=h).status_code == 200
        r = httpx.post(f"{stack.url}/api/v1/campaigns", headers=h, json=body)
        assert r.status_code == 403 and "operator" in r.json()["detail"]
        assert httpx.post(f"{stack.url}/api/v1/campaigns/roles/stop", headers=h).status_code == 403
    assert httpx.post(f"{stack.url}/api/v1/campaigns", json=body).status_code == 401
    h = {"Authorization": f"Bearer {tokens['operator']}"}
    assert httpx.post(f"{stack.url}/api/v1/campaigns", headers=h, json=body).status_code == 201
    assert httpx.post(f"{stack.url}/api/v1/campaigns/roles/stop", headers=h).json()["state"] == "stopped"


def test_context_from_the_application_socket_selects_the_frames(stack: Stack, agents: Any, digit_models: Any,
                                                                 tmp_path: Path) -> None:
    """The application on the device writes its context on the prediction socket; only frames
    in a left turn are captured, and the context is stored with each capture."""
    import socket
    import threading

    from edgefleet.edge_agent.app_output import context_line

    stack.controller.capture_policy = QUIET
    data = tmp_path / "agents" / "cam-app"
    agents(stack, "cam-app", data_dir=data)
    _deploy_control(stack, digit_models, 1)
    stack.client.start_campaign({"name": "left-turns", "when": "context.steering_deg < -20 and context.speed_kmh > 5",
                                 "quota": 4, "frames_only": True, "max_per_minute": 600})
    stop = threading.Event()

    def application() -> None:  # alternates: straight ahead, then a left turn
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as app_sock:
            app_sock.connect(str(data / "predictions.sock"))
            k = 0
            while not stop.is_set():
                turning = (k // 5) % 2 == 1
                app_sock.sendall(context_line({"steering_deg": -25 if turning else 2, "speed_kmh": 12}))
                k += 1
                stop.wait(0.1)

    wait_until(lambda: (data / "predictions.sock").exists(), 30, message="prediction socket")
    t = threading.Thread(target=application, daemon=True)
    t.start()
    try:
        wait_until(lambda: stack.client.campaign("left-turns")["state"] == "completed", 60, message="quota met")
    finally:
        stop.set()
        t.join(5)
    events = _campaign_events(stack, "left-turns")
    assert len(events) >= 4
    assert all(e.record["context"]["steering_deg"] == -25 for e in events)
