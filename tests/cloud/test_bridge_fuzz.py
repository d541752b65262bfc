"""Hypothesis: ``MqttBridge.handle`` never raises, whatever the topic and payload.

Runs against the real controller's handlers (SQLite, an enrolled device) so that
mutated-but-valid messages reach ingest too; afterwards a good message is still applied.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.cloud.tables import Device
from edgefleet.protocols import (
    Channel,
    Event,
    Reported,
    Status,
    Telemetry,
    device_topic,
    encode,
    status_topic,
)

from ..conftest import device_credentials

DEVICE = "cam-f"
NOW = datetime(2024, 5, 1, tzinfo=timezone.utc)
VALID = {
    Channel.STATUS: encode(Status(device_id=DEVICE, online=True)),
    Channel.REPORTED: encode(Reported(device_id=DEVICE, generation=1)),
    Channel.TELEMETRY: encode(Telemetry(device_id=DEVICE, period_start=NOW, period_end=NOW, frames=3,
                                        class_counts={"1": 3}, hardware={"cpu": {"temp_c": 40}})),
    Channel.EVENTS: encode(Event(device_id=DEVICE, event_id="e1", trigger="disagreement")),
}
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
                           max_leaves=30)
topics = st.one_of(
    st.sampled_from([device_topic(DEVICE, ch) for ch in Channel] + [device_topic("cam-other", Channel.STATUS)]),
    st.text(max_size=60),
    st.lists(st.text(max_size=10), max_size=7).map("/".join),
)


def _payload(data: st.DataObject, channel: Channel) -> bytes:
    kind = data.draw(st.sampled_from(["bytes", "nested", "fields", "mutated", "valid"]))
    base = VALID.get(channel, VALID[Channel.STATUS])
    if kind == "bytes":
        return data.draw(st.binary(max_size=1024))
    if kind == "nested":
        n = data.draw(st.integers(1, 3000))
        return b"[" * n + b"]" * n
    if kind == "fields":
        obj: dict[str, Any] = json.loads(base)
        obj[data.draw(st.sampled_from(sorted(obj)) | st.text(max_size=8))] = data.draw(json_values)
        return json.dumps(obj).encode()
    if kind == "mutated":
        raw = bytearray(base)
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
        return bytes(raw)
    return base


@pytest.fixture
def enrolled(stack: Any) -> Any:
    device_credentials(stack, DEVICE)
    return stack


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_handle_never_raises(enrolled, data: st.DataObject) -> None:
    bridge = enrolled.controller.bridge
    topic = data.draw(topics)
    channel = next((ch for ch in Channel if topic.endswith("/" + ch.value)), Channel.STATUS)
    outcome = bridge.handle(topic, _payload(data, channel))
    assert isinstance(outcome, str) and outcome
    assert bridge.handle(status_topic(DEVICE), VALID[Channel.STATUS]) == "ok"  # still applying


def test_after_the_fuzz_a_good_status_is_applied(stack) -> None:
    device_credentials(stack, DEVICE)
    bridge = stack.controller.bridge
    for n in (1, 100, 5000):
        bridge.handle(status_topic(DEVICE), b"[" * n)
    assert bridge.handle(status_topic(DEVICE), encode(Status(device_id=DEVICE, online=False))) == "ok"
    with stack.controller.session() as s:
        device = s.get(Device, DEVICE)
        assert device is not None and device.online is False
