"""Settings and generation travel inside the director's signed metadata: a forged MQTT
``desired`` (published with the controller's own broker account, the strongest position
an attacker on the broker can have) changes nothing on a real agent and is reported as
``E_HINT_UNCONFIRMED`` with its reason; a real ``fleet capture set`` still reaches it, and
a shorter signed telemetry period takes effect at once."""

from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_app
from edgefleet.protocols import CapturePolicy, Desired, DeviceSettings, desired_topic, encode

from ..conftest import mqtt_client, wait_until
from .conftest import republish, set_controller


def _device(stack, device_id: str) -> dict:  # type: ignore[no-untyped-def]
    return stack.client.get_device(device_id)


def _blocked(stack, device_id: str) -> dict | None:  # type: ignore[no-untyped-def]
    return _device(stack, device_id).get("update_blocked")


def _in_step(stack, agent) -> bool:  # type: ignore[no-untyped-def]
    d = _device(stack, agent.device_id)
    return d["reported_generation"] == d["desired_generation"] and d["reported_director_version"] == d["director_version"] > 0


def _forge(stack, desired: Desired) -> None:  # type: ignore[no-untyped-def]
    username, password = stack.controller.mqtt_credentials()
    c = mqtt_client(stack.broker, username, password, client_id="forger")
    try:
        c.publish(desired_topic(desired.device_id), encode(desired), qos=1, retain=True).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()


def test_forged_desired_changes_nothing_and_is_reported_unconfirmed(stack, agents) -> None:  # type: ignore[no-untyped-def]
    ra = agents(stack, "cam-forge", fps=10.0)
    agent = ra.agent
    republish(stack, ra.device_id)  # the director signs its state (as any deploy would)
    wait_until(lambda: _in_step(stack, ra), message="agent in step with its signed state")
    real = _device(stack, ra.device_id)
    signed_settings = agent.state.settings.model_copy(deep=True)
    assert signed_settings.telemetry_period_s == 0.5 and signed_settings.capture.sample_rate == 0.0
    generation, director = real["desired_generation"], real["director_version"]
    evil = DeviceSettings(telemetry_period_s=3600, capture=CapturePolicy(sample_rate=1.0, max_per_minute=10_000))

    cases = [  # (forged hint, words the reported reason must contain)
        (Desired(device_id=ra.device_id, generation=generation + 5, director_version=director, settings=evil,
                 credentials_epoch=99), ["generation"]),
        (Desired(device_id=ra.device_id, generation=generation, director_version=director, settings=evil),
         ["capture.sample_rate", "telemetry_period_s"]),
        (Desired(device_id=ra.device_id, generation=generation + 1, director_version=director + 3, settings=evil),
         ["director version"]),
    ]
    def new_block(before: dict | None) -> dict | None:
        b = _blocked(stack, ra.device_id)
        return b if b and b["code"] == "E_HINT_UNCONFIRMED" and b != before else None

    for forged, words in cases:
        before = _blocked(stack, ra.device_id)
        _forge(stack, forged)
        blocked = wait_until(lambda before=before: new_block(before), message="E_HINT_UNCONFIRMED reported")
        assert all(w in blocked["reason"] for w in words), blocked["reason"]
        # nothing applied: settings, generation, capture policy, no rotation, state on disk
        assert agent.state.settings == signed_settings
        assert agent.capture.policy.sample_rate == 0.0
        assert agent.state.generation == generation
        assert agent._rotation_wanted is None
        saved = json.loads((agent.data_dir / "state.json").read_text())
        assert saved["generation"] == generation and saved["settings"]["telemetry_period_s"] == 0.5
        assert saved["settings"]["capture"]["sample_rate"] == 0.0
        d = _device(stack, ra.device_id)
        assert d["reported_generation"] == generation and not d["stale"]
    # telemetry keeps its signed period (a forged 3600 s would have silenced it)
    seen = _device(stack, ra.device_id)["telemetry"]["period_end"]
    wait_until(lambda: _device(stack, ra.device_id)["telemetry"]["period_end"] != seen, timeout=5,
               message="telemetry still flowing")

    # a real change by the operator's CLI still reaches the agent (signed), and clears the block
    result = CliRunner().invoke(fleet_app, ["capture", "set", "--sample-rate", "0.25", "--url", stack.url,
                                            "--token", stack.token])
    assert result.exit_code == 0, result.output
    wait_until(lambda: agent.state.settings.capture.sample_rate == 0.25, message="signed capture policy applied")
    wait_until(lambda: agent.capture.policy.sample_rate == 0.25, message="capture uses it")
    wait_until(lambda: _blocked(stack, ra.device_id) is None and _in_step(stack, ra), message="block cleared, in step")
    assert agent.state.settings.telemetry_period_s == 0.5


def test_a_shorter_signed_telemetry_period_takes_effect_at_once(stack, agents) -> None:  # type: ignore[no-untyped-def]
    slow = 30.0
    set_controller(stack, telemetry_period_s=slow)
    ra = agents(stack, "cam-period", fps=10.0)
    republish(stack, ra.device_id)
    wait_until(lambda: ra.agent.state.settings.telemetry_period_s == slow, message="slow period signed and applied")

    periods: list[str] = []

    def telemetry_seen() -> int:
        t = _device(stack, ra.device_id)["telemetry"]
        if t and t["period_end"] not in periods:
            periods.append(t["period_end"])
        return len(periods)

    fast = 0.5
    set_controller(stack, telemetry_period_s=fast)
    republish(stack, ra.device_id)
    wait_until(lambda: ra.agent.state.settings.telemetry_period_s == fast, message="fast period applied")
    applied = time.monotonic()
    # under the old period the next telemetry would be up to 30 s away; three arrive well before
    wait_until(lambda: telemetry_seen() >= 3, timeout=10, interval=0.05, message="three telemetry periods")
    assert time.monotonic() - applied < slow / 2
