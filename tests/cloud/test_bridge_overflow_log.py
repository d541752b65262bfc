"""A full ingest queue drops QoS 0 messages (at most once by contract), counts every drop, and
says so in one line for the whole fleet plus a summary — not one line per device."""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt

from edgefleet.cloud.bridge import MqttBridge
from edgefleet.protocols.topics import telemetry_topic


def _message(device_id: str, qos: int = 0) -> mqtt.MQTTMessage:
    m = mqtt.MQTTMessage(mid=0, topic=telemetry_topic(device_id).encode())
    m.payload, m.qos = b"{}", qos
    return m


def test_overflow_from_many_devices_is_one_line_and_every_drop_is_counted(caplog) -> None:  # type: ignore[no-untyped-def]
    bridge = MqttBridge("127.0.0.1", 1, handlers={}, queue_size=1)  # never started: the callback alone
    caplog.set_level(logging.WARNING, logger="edgefleet.cloud.bridge")
    for i in range(500):
        bridge._on_message(None, None, _message(f"cam-{i:03d}"))  # type: ignore[arg-type]
    assert bridge.counters[("telemetry", "overflow")] == 499  # the first one was queued
    lines = [r.getMessage() for r in caplog.records if "ingest queue full" in r.getMessage()]
    assert len(lines) == 1 and "cam-001" in lines[0]
    bridge.warnings.flush(bridge.warnings.clock() + 120)
    summary = [r.getMessage() for r in caplog.records if "more overflow message(s)" in r.getMessage()]
    assert len(summary) == 1 and "498 more" in summary[0]


def test_replays_from_many_devices_are_one_line_and_every_one_is_counted(caplog) -> None:  # type: ignore[no-untyped-def]
    from edgefleet.cloud.devices.report_verify import ReportRefused
    from edgefleet.protocols import Channel, Reported, encode
    from edgefleet.protocols.topics import reported_topic

    def refuse(msg: Reported) -> None:
        raise ReportRefused("replayed", f"reported seq 7 from device {msg.device_id} was accepted already; dropped")

    bridge = MqttBridge("127.0.0.1", 1, handlers={Channel.REPORTED: refuse})
    caplog.set_level(logging.WARNING, logger="edgefleet.cloud.bridge")
    for i in range(300):  # as after a reconnect: the broker redelivers what was applied but not acknowledged
        device = f"cam-{i:03d}"
        assert bridge.handle(reported_topic(device), encode(Reported(device_id=device, generation=1))) == "replayed"
    assert bridge.counters[("reported", "replayed")] == 300
    lines = [r.getMessage() for r in caplog.records if "was accepted already" in r.getMessage()]
    assert len(lines) == 1 and "cam-000" in lines[0]


def test_qos1_never_blocks_the_network_thread_under_mqtt5_and_is_never_dropped() -> None:
    # While paho's thread waits it sends no acknowledgement and no PINGREQ: the broker then drops
    # the connection. Under MQTT 5 the broker sends at most Receive Maximum unacknowledged QoS 1
    # messages, so they are queued whatever the QoS 0 backlog; QoS 0 is still bounded.
    import threading

    bridge = MqttBridge("127.0.0.1", 1, handlers={}, protocol="5", queue_size=10)
    for i in range(10):
        bridge._on_message(None, None, _message(f"cam-{i:03d}"))  # type: ignore[arg-type]
    done = threading.Event()

    def deliver() -> None:
        for i in range(64):  # a whole Receive Maximum of QoS 1 on top of a full queue
            bridge._on_message(None, None, _message(f"dev-{i:03d}", qos=1))  # type: ignore[arg-type]
        done.set()

    threading.Thread(target=deliver, daemon=True).start()
    assert done.wait(5), "paho's thread blocked on a full ingest queue"
    assert bridge._inbox.qsize() == 74 and bridge.counters[("telemetry", "overflow")] == 0
    assert bridge.health()["backlog"] == 74 and bridge.health()["backlog_qos1"] == 64  # what /health/ready shows
    bridge._on_message(None, None, _message("cam-late"))  # type: ignore[arg-type]
    assert bridge.counters[("telemetry", "overflow")] == 1  # QoS 0 beyond the bound: dropped, counted
