"""The agent's MQTT message path never raises: what the broker hands it is counted, not fatal.

``AgentMqtt._on_message`` is paho's callback on its network thread; an exception escaping
it ends that thread, and with it every later deployment while telemetry still flows. These
tests drive the real session object with paho's own ``MQTTMessage`` (no broker needed for
the callback itself; tests/integration/test_poison_e2e.py runs it on a real broker).
"""

from __future__ import annotations

import json
from typing import Any

import paho.mqtt.client as mqtt
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.edge_agent.config import MqttSection
from edgefleet.edge_agent.metrics import render
from edgefleet.edge_agent.mqtt_session import AgentMqtt
from edgefleet.protocols import Desired, desired_topic, encode, status_topic

DEVICE = "cam-1"
POISON = b"[" * 1500 + b"]" * 1500
GOOD = encode(Desired(device_id=DEVICE, generation=7))


def _message(topic: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessage:
    m = mqtt.MQTTMessage(topic=topic.encode())
    m.payload = payload
    m.retain = retain
    return m


class Recorder:
    def __init__(self) -> None:
        self.got: list[Desired] = []
        self.fail_with: BaseException | None = None

    def __call__(self, desired: Desired) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.got.append(desired)


def _session() -> tuple[AgentMqtt, Recorder]:
    rec = Recorder()
    return AgentMqtt(DEVICE, MqttSection(), on_desired=rec), rec


def test_nested_json_poison_is_counted_and_a_later_desired_still_applies() -> None:
    s, rec = _session()
    s._on_message(None, None, _message(desired_topic(DEVICE), POISON))
    s._on_message(None, None, _message(desired_topic(DEVICE), POISON, retain=True))
    assert s.counters() == {"invalid_desired": 2, "handler_errors": 0}
    s._on_message(None, None, _message(desired_topic(DEVICE), GOOD))
    assert [d.generation for d in rec.got] == [7]


def test_an_exception_in_the_desired_callback_is_counted_and_the_next_one_applies() -> None:
    s, rec = _session()
    for exc in (RecursionError("deep"), MemoryError(), ValueError("bad"), KeyError("x")):
        rec.fail_with = exc
        s._on_message(None, None, _message(desired_topic(DEVICE), GOOD))
    assert s.handler_errors == 4 and s.invalid_desired == 0
    rec.fail_with = None
    s._on_message(None, None, _message(desired_topic(DEVICE), GOOD))
    assert len(rec.got) == 1


def test_desired_for_another_device_or_topic_is_not_applied() -> None:
    s, rec = _session()
    s._on_message(None, None, _message(desired_topic(DEVICE), encode(Desired(device_id="cam-2", generation=1))))
    s._on_message(None, None, _message(status_topic(DEVICE), GOOD))
    s._on_message(None, None, _message(desired_topic(DEVICE), b""))  # a cleared retained message
    assert rec.got == [] and s.invalid_desired == 1


def test_counters_appear_in_the_agent_metrics() -> None:
    s, _ = _session()
    s._on_message(None, None, _message(desired_topic(DEVICE), POISON))
    text = render(s.counters(), {}, DEVICE)
    assert f'edgefleet_agent_mqtt_invalid_desired_total{{device="{DEVICE}"}} 1' in text
    assert f'edgefleet_agent_mqtt_handler_errors_total{{device="{DEVICE}"}} 0' in text


def _mutated(data: st.DataObject) -> bytes:
    raw = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw)))
        op = data.draw(st.sampled_from(["flip", "insert", "cut", "nest"]))
        if op == "flip" and i < len(raw):
            raw[i] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "cut":
            del raw[i:]
        else:
            raw[i:i] = b"[" * data.draw(st.integers(1, 2000))
    return bytes(raw)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
                           max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_message_path_never_raises(data: st.DataObject) -> None:
    s, rec = _session()
    kind = data.draw(st.sampled_from(["bytes", "mutated", "json", "fields"]))
    if kind == "bytes":
        payload = data.draw(st.binary(max_size=2048))
    elif kind == "mutated":
        payload = _mutated(data)
    elif kind == "json":
        payload = json.dumps({**data.draw(st.dictionaries(st.text(max_size=12), json_values, max_size=8)),
                              "schema": "fleet.desired/1"}).encode()
    else:
        obj: dict[str, Any] = json.loads(GOOD)
        obj[data.draw(st.sampled_from(sorted(obj)))] = data.draw(json_values)
        payload = json.dumps(obj).encode()
    topic = data.draw(st.sampled_from([desired_topic(DEVICE), desired_topic("cam-2"), "fleet/v1/x", "#"]))
    if data.draw(st.booleans()):
        rec.fail_with = data.draw(st.sampled_from([RuntimeError("x"), RecursionError(), TypeError()]))
    s._on_message(None, None, _message(topic, payload, retain=data.draw(st.booleans())))
    assert s.invalid_desired + s.handler_errors + len(rec.got) <= 1
