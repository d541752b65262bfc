"""3,000 bad messages from one device write a bounded number of log lines: the first of
each (device, outcome), then one summary per interval with the count — and every one is
still counted and acknowledged (the topic is never blocked)."""

from __future__ import annotations

import logging
import time

from edgefleet.protocols import Channel, Status, encode
from edgefleet.protocols.topics import device_topic

from ..conftest import device_credentials, mqtt_client, wait_until
from .conftest import start_controller


def test_three_thousand_bad_messages_log_a_bounded_summary(tmp_path, mosquitto, caplog) -> None:  # type: ignore[no-untyped-def]
    stack = start_controller(tmp_path / "controller", mosquitto)
    creds = device_credentials(stack, "cam-noisy")
    c = mqtt_client(mosquitto, "cam-noisy", creds["mqtt_password"], client_id="cam-noisy")
    bridge = stack.controller.bridge
    try:
        caplog.set_level(logging.WARNING, logger="edgefleet.cloud.bridge")
        topic = device_topic("cam-noisy", Channel.STATUS)
        spoofed = encode(Status(device_id="cam-other", online=True))
        for i in range(3000):
            c.publish(topic, b"{not json" if i % 2 else spoofed, qos=1)
        wait_until(lambda: bridge.counters[("status", "invalid")] + bridge.counters[("status", "spoofed")] == 3000,
                   timeout=30, message="all 3,000 counted")
        lines = [r for r in caplog.records if r.name == "edgefleet.cloud.bridge"]
        assert 2 <= len(lines) <= 6, [r.getMessage() for r in lines]  # one per outcome (+ a summary at most)
        caplog.clear()
        assert bridge.warnings.flush(time.monotonic() + 3600) == 2  # the interval passed: one line per outcome
        text = " ".join(r.getMessage() for r in caplog.records)
        assert "1499 more invalid" in text and "1499 more spoofed" in text, text
        # the topic is not blocked: a good message after the flood is applied
        c.publish(topic, encode(Status(device_id="cam-noisy", online=True)), qos=1)
        wait_until(lambda: stack.client.get_device("cam-noisy")["online"], message="good message applied")
    finally:
        c.loop_stop()
        c.disconnect()
        stack.stop()
