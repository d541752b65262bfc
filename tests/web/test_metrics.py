"""Prometheus /metrics on the controller (viewer token) and the agent's local counters."""

from __future__ import annotations

import httpx
import paho.mqtt.client as mqtt
from prometheus_client.parser import text_string_to_metric_families

from edgefleet.cloud.bridge import MqttBridge
from edgefleet.cloud.metrics import ControllerMetrics, ensure_metrics
from edgefleet.edge_agent.metrics import render, start_agent_metrics
from edgefleet.protocols import Channel, Status, encode


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(live) -> dict:  # type: ignore[no-untyped-def]
    r = httpx.get(live.url + "/metrics", headers={"Authorization": f"Bearer {live.tokens['viewer']}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def test_metrics_need_a_token(live) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(live.url + "/metrics").status_code == 401


def test_devices_online_is_read_from_the_database_at_scrape(live) -> None:  # type: ignore[no-untyped-def]
    s = scrape(live)
    assert s[("edgefleet_devices", (("state", "online"),))] == 5
    assert s[("edgefleet_devices", (("state", "offline"),))] == 1


def test_http_latency_is_labelled_by_route_template(live) -> None:  # type: ignore[no-untyped-def]
    h = {"Authorization": f"Bearer {live.tokens['viewer']}"}
    for device_id in ("cam-dock-01", "cam-gate-01", "cam-lab-01"):
        assert httpx.get(f"{live.url}/api/v1/devices/{device_id}", headers=h).status_code == 200
    s = scrape(live)
    key = ("edgefleet_http_request_duration_seconds_count",
           (("method", "GET"), ("route", "/api/v1/devices/{device_id}"), ("status", "200")))
    assert s[key] >= 3
    assert not any("cam-dock-01" in str(k) for k in s)


def test_mqtt_counters_come_from_the_bridge(live) -> None:  # type: ignore[no-untyped-def]
    bridge = MqttBridge("127.0.0.1", 1, handlers={Channel.STATUS: live.controller._on_status})
    live.controller.bridge = bridge
    try:
        good = encode(Status(device_id="cam-gate-01", online=True))
        bridge.handle("fleet/v1/devices/cam-gate-01/status", good)
        bridge.handle("fleet/v1/devices/cam-gate-02/status", good)  # claims another device's id
        bridge.handle("fleet/v1/devices/cam-gate-01/status", b"{not json")
        s = scrape(live)
    finally:
        live.controller.bridge = None
    for outcome in ("ok", "spoofed", "invalid"):
        assert s[("edgefleet_mqtt_messages_total", (("channel", "status"), ("outcome", outcome)))] == 1
    assert mqtt  # the bridge is paho's real client, not connected


def test_counters_other_modules_increment_are_exposed(live) -> None:  # type: ignore[no-untyped-def]
    m = ensure_metrics(live.controller)
    assert ensure_metrics(live.controller) is m
    m.upload_bytes.labels("clip").inc(2048)
    m.rollout_phase_transitions.labels("soaking").inc()
    m.gate_evaluations.labels("agreement", "passed").inc()
    m.set_gauge_source("edgefleet_rollouts", lambda: {("running",): 2.0}, doc="Rollouts by phase", labelnames=["phase"])
    s = scrape(live)
    assert s[("edgefleet_upload_bytes_total", (("kind", "clip"),))] == 2048
    assert s[("edgefleet_rollout_phase_transitions_total", (("phase", "soaking"),))] == 1
    assert s[("edgefleet_gate_evaluations_total", (("metric", "agreement"), ("result", "passed")))] == 1
    assert s[("edgefleet_rollouts", (("phase", "running"),))] == 2


def test_two_controllers_in_one_process_have_separate_registries() -> None:
    a, b = ControllerMetrics(), ControllerMetrics()
    a.upload_bytes.labels("clip").inc(5)
    assert b"edgefleet_upload_bytes_total{kind=\"clip\"} 5.0" in a.exposition()[0]
    assert b"kind=\"clip\"" not in b.exposition()[0]


def test_agent_exposition_is_valid_prometheus_text() -> None:
    text = render({"frames": 120, "nan_outputs": 2, "shadow_frames": 100, "disagreements": 7},
                  {"control": "healthy", "shadow": "downloading"}, device_id="cam-1")
    s = samples(text)
    assert s[("edgefleet_agent_frames_total", (("device", "cam-1"),))] == 120
    assert s[("edgefleet_agent_shadow_disagreements_total", (("device", "cam-1"),))] == 7
    assert s[("edgefleet_agent_errors_total", (("device", "cam-1"),))] == 0
    phase = "edgefleet_agent_slot_phase"
    assert s[(phase, (("device", "cam-1"), ("phase", "downloading"), ("slot", "shadow")))] == 1
    assert s[(phase, (("device", "cam-1"), ("phase", "healthy"), ("slot", "shadow")))] == 0


def test_agent_serves_live_counters_on_a_local_port() -> None:
    totals = {"frames": 1}
    server = start_agent_metrics(0, lambda: totals, lambda: {"control": "active"})
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert samples(httpx.get(url).text)[("edgefleet_agent_frames_total", ())] == 1
        totals["frames"] = 42
        assert samples(httpx.get(url).text)[("edgefleet_agent_frames_total", ())] == 42
        assert httpx.get(f"http://127.0.0.1:{server.port}/other").status_code == 404
    finally:
        server.stop()
