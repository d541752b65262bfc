"""Operator input that is ambiguous or not a number is refused at the schema: durations without a
unit, NaN and ±inf in wire messages and API bodies (a NaN latency is counted invalid by the
bridge, never a database error). Waves are named 1-based in events, reasons, the audit log and
status alike. A broker refusal tells the device's operator which account to check."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgefleet.cloud import catalog
from edgefleet.cloud.cli import app as fleet_app
from edgefleet.cloud.cli.rollout_cmd import render_status
from edgefleet.cloud.devices import fleet, ingest
from edgefleet.cloud.rollout import DurationSyntaxError, parse_duration
from edgefleet.cloud.rollout import service as rollouts
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.edge_agent.config import MqttSection
from edgefleet.edge_agent.mqtt_session import AgentMqtt
from edgefleet.protocols import InvalidPayload, Status, Telemetry, decode, encode, telemetry_topic
from edgefleet.protocols.manifest import TestVector

from ..conftest import device_credentials, wait_until

runner = CliRunner()


@pytest.mark.parametrize("text", ["30", "1.5", " 45 "])
def test_a_duration_needs_a_unit(text: str) -> None:
    with pytest.raises(DurationSyntaxError, match=f"{text.strip()}: durations need a unit, e.g. {text.strip()}s, 5m, 2h"):
        parse_duration(text, require_unit=True)
    assert parse_duration("0", require_unit=True) == 0.0 and parse_duration("90s", require_unit=True) == 90.0
    assert parse_duration(text) == float(text)  # rollouts stored before units were required still load


def test_cli_refuses_soak_without_unit_before_calling_the_controller() -> None:
    out = runner.invoke(fleet_app, ["rollout", "start", "--model", "digits:2.0", "--soak", "30",
                                    "--url", "http://127.0.0.1:9", "--token", "x"])
    assert out.exit_code == 1 and "30: durations need a unit, e.g. 30s, 5m, 2h" in " ".join(out.output.split())
    out = runner.invoke(fleet_app, ["rollout", "start", "--model", "digits:2.0", "--device-timeout", "600",
                                    "--url", "http://127.0.0.1:9", "--token", "x"])
    assert out.exit_code == 1 and "--device-timeout 600: durations need a unit" in " ".join(out.output.split())


def test_api_refuses_soak_without_unit(stack) -> None:  # type: ignore[no-untyped-def]
    resp = stack.client.http.post("/rollouts", json={"model": "digits:2.0", "soak": "30"})
    assert resp.status_code == 422 and "durations need a unit" in resp.text
    assert stack.client.list_rollouts() == []


def _telemetry(device_id: str) -> dict:
    now = datetime.now(timezone.utc)
    return json.loads(encode(Telemetry(device_id=device_id, period_start=now, period_end=now, frames=10, fps=5.0)))


@pytest.mark.parametrize("where", ["latency", "fps", "hardware"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_floats_are_refused_by_the_schema(where: str, value: str) -> None:
    payload = _telemetry("cam-n")
    payload["latency_ms"]["p99"] = "@" if where == "latency" else 1.0
    payload["fps"] = "@" if where == "fps" else 5.0
    payload["hardware"] = {"gpu": {"temp_c": "@"}} if where == "hardware" else {}
    raw = json.dumps(payload).replace('"@"', value).encode()
    with pytest.raises(InvalidPayload, match="finite number"):
        decode(raw, Telemetry)
    with pytest.raises(ValueError, match="finite number"):
        TestVector.model_validate_json(f'{{"input": [{value}], "expected": [1.0]}}')


def test_nan_latency_is_counted_invalid_by_the_bridge_and_stores_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    device_credentials(stack, "cam-n")
    bridge = stack.controller.bridge
    payload = _telemetry("cam-n")
    payload["latency_ms"]["p99"] = float("nan")
    before = bridge.counters[("telemetry", "invalid")]
    assert bridge.handle(telemetry_topic("cam-n"), json.dumps(payload).encode()) == "invalid"
    assert bridge.counters[("telemetry", "invalid")] == before + 1
    assert stack.client.get_device("cam-n").get("telemetry") in (None, {})


def test_api_body_with_nan_is_refused_and_changes_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    before = stack.client.http.get("/settings/capture").json()
    resp = stack.client.http.patch("/settings/capture", content=b'{"sample_rate": NaN}',
                                   headers={"Content-Type": "application/json"})
    assert resp.status_code in (400, 422), resp.text
    assert stack.client.http.get("/settings/capture").json() == before


def test_an_event_and_status_name_the_same_wave(tmp_path: Path, digit_models) -> None:  # type: ignore[no-untyped-def]
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    with c.session() as s:
        for model in digit_models:
            m = model.manifest
            catalog.push_model(s, c.store, model.path.read_bytes(), name=m.name, version=m.version,
                               manifest=m.model_dump(mode="json", by_alias=True))
        fleet.enrol_device(s, "cam-1", "cpu-x86_64", {"site": "lab"})
        ingest.apply_status(s, Status(device_id="cam-1", online=True, hardware_id="cpu-x86_64"))
        rid = rollouts.start_rollout(s, rollouts.RolloutCreate(
            model="digits:2.0", slot="control", waves="100", soak="1s", gates=["failure<=0"],
            on_breach="pause", device_timeout="5s"), time.time()).id
    t0 = time.time()
    for dt in (0, 30, 120, 121):  # the device never answers: it times out and the gate of the first wave breaks
        c.reconcile_once(t0 + dt)
    with c.session() as s:
        st = rollouts.status(s, rid, t0 + 122, events=50)
    c.engine.dispose()
    gate_events = [e["message"] for e in st["events"] if e["kind"] == "gates"]
    assert gate_events and all(m.startswith("wave 1 gates breached") for m in gate_events), st["events"]
    assert "wave 0" not in " ".join(e["message"] for e in st["events"])
    assert "on wave 1" in (st["reason"] or "")
    console = Console(record=True, width=200)
    console.print(render_status(st))
    shown = console.export_text()
    assert "wave 1/1" in shown and "breach on wave 1" in shown


def test_broker_refusal_names_the_account_and_what_to_check(stack, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    device_credentials(stack, "cam-r")
    cfg = MqttSection(host=stack.broker.host, port=stack.broker.port, username="cam-r", password="wrong")
    session = AgentMqtt("cam-r", cfg, on_desired=lambda _d: None)
    caplog.set_level(logging.ERROR, logger="edgefleet.edge_agent.mqtt_session")
    session.start()
    try:
        record = wait_until(lambda: next((r for r in caplog.records if "refused the connection" in r.getMessage()), None),
                            timeout=15, message="the refusal logged")
    finally:
        session.client.disconnect()
        session.client.loop_stop()
    text = record.getMessage()
    assert "username 'cam-r', client id 'cam-r'" in text and "fleet-agent provision" in text, text
