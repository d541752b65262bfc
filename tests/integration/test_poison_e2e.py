"""End to end: a poisoned ``desired`` neither stops a real agent nor blocks later deployments.

Published with the controller's broker account (devices may not publish on ``desired``),
live and retained, on a real broker, to a real agent running ONNX Runtime; then a real
``fleet deploy`` still installs the model, the controller's next desired replaces the
retained poison, and an agent restarted on top of the poison ignores it.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import paho.mqtt.client as mqtt

from edgefleet.protocols import Desired, Phase, decode, desired_topic

from ..conftest import mqtt_client, push, slot_of, wait_until

POISON = b"[" * 1500 + b"]" * 1500


def _active(stack: Any, device_id: str, model: str, slot: str = "control") -> bool:
    s = slot_of(stack, device_id, slot)
    return s["installed"] == model and s["phase"] in (Phase.ACTIVE.value, Phase.HEALTHY.value)


def _as_controller(stack: Any, client_id: str) -> mqtt.Client:
    creds = getattr(stack.controller, "mqtt_credentials", lambda: (None, None))()
    return mqtt_client(stack.broker, *creds, client_id=client_id)


def _retained(stack: Any, topic: str) -> bytes | None:
    got: list[bytes] = []
    done = threading.Event()

    def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        if m.retain and m.topic == topic:  # amqtt may hand over others too
            got.append(bytes(m.payload))
            done.set()

    c = _as_controller(stack, "test-retained-reader")
    try:
        c.on_message = on_message
        c.subscribe(topic, qos=1)
        done.wait(2)
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0] if got else None


def _metric(agent: Any, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{agent.agent.metrics_server.port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the agent's metrics")


def test_agent_survives_poisoned_desired_and_a_later_deploy_installs(stack, agents, digit_models, tmp_path) -> None:
    control, candidate = digit_models
    data_dir = tmp_path / "agents" / "cam-q"
    a = agents(stack, "cam-q", data_dir=data_dir, metrics_port=0)
    wait_until(lambda: stack.client.get_device("cam-q")["online"], message="agent online")
    session = a.agent.mqtt
    poisoner = _as_controller(stack, "test-poisoner")
    try:
        poisoner.publish(desired_topic("cam-q"), POISON, qos=1).wait_for_publish(5)
        wait_until(lambda: session.invalid_desired == 1, message="live poison refused")
        poisoner.publish(desired_topic("cam-q"), POISON, qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: session.invalid_desired == 2, message="retained poison refused")
        assert session.handler_errors == 0
        wait_until(lambda: _metric(a, "edgefleet_agent_mqtt_invalid_desired_total") == 2, message="metric")

        push(stack, control)
        stack.client.deploy("digits:1.0", "control", ["cam-q"])
        wait_until(lambda: _active(stack, "cam-q", "digits:1.0"), message="deployed after the poison")
        retained = _retained(stack, desired_topic("cam-q"))  # the controller's desired replaced it
        assert retained is not None and decode(retained, Desired).device_id == "cam-q"

        # poison retained again, then the agent restarts on top of it
        poisoner.publish(desired_topic("cam-q"), POISON, qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: session.invalid_desired == 3, message="poison refused again")
        token, password = a.agent.config.agent.token, a.agent.config.mqtt.password
        a.stop()
        b = agents(stack, "cam-q", token=token, mqtt_password=password, data_dir=data_dir)
        wait_until(lambda: b.agent.mqtt.invalid_desired >= 1, message="restarted agent met the retained poison")
        assert b.agent.mqtt.handler_errors == 0
        wait_until(lambda: b.agent.pipeline.totals.get("frames", 0) > 5, message="restored model inferring")
        push(stack, candidate)
        stack.client.deploy("digits:2.0", "shadow", ["cam-q"])
        wait_until(lambda: _active(stack, "cam-q", "digits:2.0", "shadow"), timeout=60,
                   message="a deploy after the restart installs")
        assert slot_of(stack, "cam-q")["installed"] == "digits:1.0"
    finally:
        poisoner.loop_stop()
        poisoner.disconnect()
