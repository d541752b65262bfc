"""The controller's MQTT ingest on a real broker: bad input is counted, never fatal."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from edgefleet.protocols import (
    Reported,
    Status,
    encode,
    reported_topic,
    status_topic,
    telemetry_topic,
)

from ..conftest import device_credentials, mqtt_client, wait_until


def _publisher(stack, broker, device_id: str) -> mqtt.Client:
    """An enrolled device's own broker connection (anonymous clients are refused)."""
    creds = device_credentials(stack, device_id)
    return mqtt_client(broker, creds["mqtt_username"], creds["mqtt_password"], client_id=device_id)


def _device(stack, device_id: str):
    with stack.controller.session() as s:
        from edgefleet.cloud.tables import Device

        return s.get(Device, device_id)


def test_malformed_payloads_are_counted_and_the_controller_goes_on(stack, broker) -> None:
    c = _publisher(stack, broker, "cam-1")
    counters = stack.controller.bridge.counters
    for payload in (b"not json", b"{}", b'{"schema":"fleet.reported/1"}', b"\xff" * 10):
        c.publish(reported_topic("cam-1"), payload, qos=1).wait_for_publish(5)
    c.publish(telemetry_topic("cam-1"), b"x" * (300 * 1024), qos=1).wait_for_publish(5)  # oversized
    wait_until(lambda: counters[("reported", "invalid")] >= 4 and counters[("telemetry", "invalid")] >= 1, message="invalid counted")
    # still alive: a good message afterwards is applied
    c.publish(status_topic("cam-1"), encode(Status(device_id="cam-1", online=True)), qos=1).wait_for_publish(5)
    wait_until(lambda: _device(stack, "cam-1") is not None and _device(stack, "cam-1").online, message="good message applied")
    c.loop_stop()
    c.disconnect()


def test_device_publishing_under_another_devices_topic_is_ignored(stack, broker) -> None:
    c = _publisher(stack, broker, "cam-attacker")
    forged = Reported(device_id="cam-victim", generation=99)
    c.publish(reported_topic("cam-attacker"), encode(forged), qos=1).wait_for_publish(5)
    wait_until(lambda: stack.controller.bridge.counters[("reported", "spoofed")] == 1, message="spoof counted")
    assert _device(stack, "cam-victim") is None
    assert _device(stack, "cam-attacker").reported_generation is None
    c.loop_stop()
    c.disconnect()


def test_bridge_handle_reports_outcomes_directly(stack) -> None:
    bridge = stack.controller.bridge
    assert bridge.handle("some/other/topic", b"{}") == "bad_topic"
    assert bridge.handle(status_topic("cam-2"), encode(Reported(device_id="cam-2", generation=1))) == "invalid"
    assert bridge.handle(status_topic("cam-2"), encode(Status(device_id="cam-2", online=False))) == "unknown_device"
    device_credentials(stack, "cam-2")
    assert bridge.handle(status_topic("cam-2"), encode(Status(device_id="cam-2", online=False))) == "ok"
