"""The fleet-wide capture policy: operators change it at run time; devices follow it.

Real broker, controller (HTTP + MQTT bridge) and agent; the policy travels in the
retained ``desired`` message and changes what the agent captures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.cli import app
from edgefleet.cloud.client import ApiError
from edgefleet.cloud.errors import ConfigError
from edgefleet.cloud.settings import load_settings
from edgefleet.protocols import CapturePolicy
from tests.conftest import Stack, start_stack, wait_until

from .conftest import deploy_pair, events

QUIET = CapturePolicy(low_confidence=False, disagreement=False, max_per_minute=120, max_per_hour=1000,
                      pre_seconds=1.0, post_seconds=0.5)


def _disagreements(stack: Stack, device: str) -> int:
    t = stack.client.get_device(device).get("telemetry") or {}
    return int((t.get("shadow") or {}).get("disagreements", 0))


def test_operator_turns_capture_on_and_the_device_starts_uploading(stack: Stack, agents: Any, digit_models: Any) -> None:
    stack.controller.capture_policy = QUIET  # the controller's default: capture nothing
    ra = agents(stack, "cam-cap")
    deploy_pair(stack, digit_models)
    seen = 0

    def disagreeing() -> bool:
        nonlocal seen
        seen += _disagreements(stack, "cam-cap")
        return seen >= 3

    wait_until(disagreeing, timeout=60, message="the candidate disagrees on some frames")
    assert events(stack) == []  # disagreements happen, but the policy captures none
    assert stack.client.capture_settings()["source"] == "default"

    res = stack.client.change_capture_settings({"disagreement": True, "cooldown_s": 0.5, "max_per_minute": 30})
    assert res["source"] == "operator" and res["devices_notified"] == 1
    assert res["policy"]["disagreement"] is True and res["policy"]["pre_seconds"] == 1.0  # the rest stays
    wait_until(lambda: ra.agent.capture.policy.disagreement, timeout=30, message="the agent has the new policy")
    assert ra.agent.state.settings.capture.cooldown_s == 0.5  # kept in the agent's state file too
    wait_until(lambda: len(events(stack)) > 0, timeout=60, message="disagreement events captured")
    assert all(e.trigger == "disagreement" for e in events(stack))
    monitor = ra.agent.capture._monitor
    assert monitor is not None and monitor.budget.cooldown_s == 0.5 and monitor.budget.limits["per_minute"] == 30


def test_an_offline_device_gets_the_policy_when_it_returns(stack: Stack, agents: Any, tmp_path: Path) -> None:
    data = tmp_path / "agents" / "cam-away"
    first = agents(stack, "cam-away", data_dir=data)
    wait_until(lambda: stack.client.get_device("cam-away")["online"], message="online")
    first.stop()
    wait_until(lambda: not stack.client.get_device("cam-away")["online"], timeout=20, message="offline")
    stack.client.change_capture_settings({"sample_rate": 0.25, "near_band": 0.1})
    back = agents(stack, "cam-away", data_dir=data)
    wait_until(lambda: back.agent.capture.policy.sample_rate == 0.25, timeout=30, message="policy after reconnect")
    assert back.agent.capture.policy.near_band == 0.1


def test_bad_changes_are_refused_naming_the_field_and_change_nothing(stack: Stack) -> None:
    stack.client.change_capture_settings({"max_per_minute": 9})
    with pytest.raises(ApiError) as exc:
        stack.client.change_capture_settings({"max_per_minute": -1, "sample_rate": 0.5})
    assert exc.value.status_code == 422 and "max_per_minute" in exc.value.detail  # checked at the schema
    with pytest.raises(ApiError) as exc:
        stack.client.change_capture_settings({"max_per_minte": 5})
    assert exc.value.status_code == 422 and "unknown capture setting(s) max_per_minte" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        stack.client.change_capture_settings({"pre_seconds": None})  # only device-side fields may be null
    assert exc.value.status_code == 422 and "pre_seconds" in exc.value.detail
    policy = stack.client.capture_settings()["policy"]
    assert policy["max_per_minute"] == 9 and policy["sample_rate"] == 0.0


def test_policy_survives_a_controller_restart_and_reset_returns_to_the_default(stack: Stack) -> None:
    stack.client.change_capture_settings({"max_bytes_per_day": 1_000_000, "dedupe_threshold": 0.1})
    stack.stop()
    again = start_stack(stack.data_dir, stack.broker, token=stack.token)
    try:
        res = again.client.capture_settings()
        assert res["source"] == "operator" and res["updated_by"]
        assert res["policy"]["max_bytes_per_day"] == 1_000_000 and res["policy"]["dedupe_threshold"] == 0.1
        reset = again.client.reset_capture_settings()
        assert reset["source"] == "default" and reset["policy"] == CapturePolicy().model_dump(mode="json")
    finally:
        again.stop()


def test_cli_shows_sets_and_resets(stack: Stack) -> None:
    auth = ["--url", stack.url, "--token", stack.token]
    env = {"COLUMNS": "200"}
    out = CliRunner().invoke(app, ["capture", "set", "--max-per-minute", "4", "--cooldown", "3", *auth], env=env)
    assert out.exit_code == 0, out.output
    assert "max_per_minute" in out.output and "sent to 0 devices" in out.output
    out = CliRunner().invoke(app, ["capture", "set", "--unset", "cooldown_s", *auth], env=env)
    assert out.exit_code == 0 and "device's own" in out.output
    out = CliRunner().invoke(app, ["capture", "show", "--json", *auth], env=env)
    assert out.exit_code == 0 and '"max_per_minute": 4' in out.output and '"cooldown_s": null' in out.output
    out = CliRunner().invoke(app, ["capture", "set", "--unset", "pre_seconds", *auth], env=env)
    assert out.exit_code == 1 and "--unset takes one of" in out.output
    out = CliRunner().invoke(app, ["capture", "set", *auth], env=env)
    assert out.exit_code == 1 and "name at least one setting" in out.output
    out = CliRunner().invoke(app, ["capture", "reset", *auth], env=env)
    assert out.exit_code == 0 and "controller default" in out.output


def test_controller_toml_capture_section_is_the_default(tmp_path: Path) -> None:
    (tmp_path / "controller.toml").write_text("[controller]\nhttp_port = 8099\n\n[capture]\nmax_per_minute = 2\nsample_rate = 0.01\n")
    s = load_settings(tmp_path, env={})
    assert s.http_port == 8099 and s.capture.max_per_minute == 2 and s.capture.sample_rate == 0.01
    (tmp_path / "controller.toml").write_text("[capture]\nmax_per_minte = 2\n")
    with pytest.raises(ConfigError, match="\\[capture\\]: unknown key 'max_per_minte'; did you mean 'max_per_minute'"):
        load_settings(tmp_path, env={})
