"""The controller counts only reports the device signed: forged, re-signed, unsigned, replayed,
reordered and overlapping ones are refused before anything is stored (real controller, real
database, the bridge's own ``handle``), and each refusal is counted under its outcome.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httpx
from sqlmodel import select

from edgefleet.cloud.devices.telemetry_store import TelemetryPeriod
from edgefleet.cloud.tables import Device
from edgefleet.protocols import (
    LatencyStats,
    ModelRef,
    Phase,
    Reported,
    SlotReport,
    Telemetry,
    reported_topic,
    telemetry_topic,
)

from ..conftest import device_credentials
from .keys import SimKey, register

REF = ModelRef(name="m", version="1", digest="a" * 64)


def _telemetry(device_id: str, start: datetime, *, seconds: float = 10.0, nan: int = 0, frames: int = 100) -> Telemetry:
    return Telemetry(device_id=device_id, period_start=start, period_end=start + timedelta(seconds=seconds),
                     control=REF, frames=frames, nan_outputs=nan, latency_ms=LatencyStats(p99=2.0))


def _enrolled(stack, device_id: str) -> SimKey:
    device_credentials(stack, device_id)
    key = SimKey(device_id)
    register(stack.controller, key)
    return key


def _periods(stack, device_id: str) -> list[TelemetryPeriod]:
    with stack.controller.session() as s:
        return list(s.exec(select(TelemetryPeriod).where(TelemetryPeriod.device_id == device_id)).all())


def _device(stack, device_id: str) -> Device:
    with stack.controller.session() as s:
        device = s.get(Device, device_id)
        assert device is not None
        return device


def test_signed_telemetry_is_counted_and_every_forgery_is_refused(stack) -> None:
    bridge = stack.controller.bridge
    key = _enrolled(stack, "cam-1")
    other = _enrolled(stack, "cam-2")
    topic = telemetry_topic("cam-1")
    t0 = datetime.now(timezone.utc) - timedelta(minutes=5)

    good = key.sign(_telemetry("cam-1", t0))
    assert bridge.handle(topic, good) == "ok"
    assert [p.frames for p in _periods(stack, "cam-1")] == [100]

    later = t0 + timedelta(seconds=20)
    poisoned = _telemetry("cam-1", later, nan=500)
    impostor = SimKey("cam-1", seed="someone else")  # a key nobody registered
    impostor.key_id = key.key_id  # ... claiming the device's key id
    cases = {
        "unsigned": poisoned.model_dump_json(by_alias=True).encode(),
        "bad_signature": impostor.sign(poisoned),
    }
    resigned = json.loads(other.sign(poisoned))  # signed by another enrolled device's own key
    cases["bad_signature (another device's key)"] = json.dumps(resigned).encode()
    tampered = json.loads(key.sign(_telemetry("cam-1", later)))
    tampered["nan_outputs"] = 500  # altered after signing
    cases["bad_signature (altered)"] = json.dumps(tampered).encode()
    cases["replayed"] = good
    cases["replayed (older than the window)"] = key.sign(poisoned, seq=key.seq - 100)
    # in the window (a message sent earlier, applied late) but its period lies after the newest counted one
    cases["overlap (late, after the newest)"] = key.sign(poisoned, seq=key.seq - 5)
    cases["overlap"] = key.sign(_telemetry("cam-1", t0 + timedelta(seconds=5), nan=500))
    cases["overlap (future)"] = key.sign(_telemetry("cam-1", datetime.now(timezone.utc) + timedelta(days=365), nan=500))
    for expected, payload in cases.items():
        assert bridge.handle(topic, payload) == expected.split(" ")[0], expected

    # nothing of it was stored: one period, no NaN; the device's view is the good period
    assert [(p.frames, p.nan_outputs) for p in _periods(stack, "cam-1")] == [(100, 0)]
    assert _device(stack, "cam-1").telemetry["nan_outputs"] == 0
    c = bridge.counters
    assert (c[("telemetry", "unsigned")], c[("telemetry", "bad_signature")], c[("telemetry", "replayed")],
            c[("telemetry", "overlap")]) == (1, 3, 2, 3)
    # and the device's next honest period still counts
    assert bridge.handle(topic, key.sign(_telemetry("cam-1", later))) == "ok"
    assert len(_periods(stack, "cam-1")) == 2
    metrics = httpx.get(f"{stack.url}/metrics", headers={"Authorization": f"Bearer {stack.token}"}).text
    assert 'edgefleet_mqtt_messages_total{channel="telemetry",outcome="bad_signature"} 3.0' in metrics


def test_a_device_without_a_registered_key_is_refused_as_unknown_key(stack) -> None:
    device_credentials(stack, "cam-new")
    msg = SimKey("cam-new").sign(_telemetry("cam-new", datetime.now(timezone.utc) - timedelta(minutes=1)))
    assert stack.controller.bridge.handle(telemetry_topic("cam-new"), msg) == "unknown_key"
    assert _periods(stack, "cam-new") == []


def _reported(device_id: str, phase: Phase, generation: int = 1) -> Reported:
    return Reported(device_id=device_id, generation=generation, hardware_id="cpu-x86_64",
                    slots={"control": SlotReport(installed=REF, phase=phase)})


def test_replayed_or_reordered_reported_never_changes_the_device(stack) -> None:
    """A late report (in the window) is counted once, but the newest seq's state stands."""
    bridge = stack.controller.bridge
    key = _enrolled(stack, "cam-r")
    topic = reported_topic("cam-r")
    older = key.sign(_reported("cam-r", Phase.DOWNLOADING))
    newer = key.sign(_reported("cam-r", Phase.HEALTHY, generation=2))
    assert bridge.handle(topic, newer) == "ok"
    assert bridge.handle(topic, older) == "ok"  # sent first, arrived late: counted (history), state kept
    assert bridge.handle(topic, older) == "replayed"
    assert bridge.handle(topic, newer) == "replayed"
    forged = SimKey("cam-r", seed="forger").sign(_reported("cam-r", Phase.FAILED, generation=9))
    assert bridge.handle(topic, forged) == "bad_signature"
    unsigned = _reported("cam-r", Phase.FAILED, generation=9).model_dump_json(by_alias=True).encode()
    assert bridge.handle(topic, unsigned) == "unsigned"
    device = _device(stack, "cam-r")
    assert device.reported_generation == 2 and device.reported["slots"]["control"]["phase"] == "healthy"


def test_fields_the_controller_does_not_know_stay_covered_by_the_signature(stack) -> None:
    """A newer agent may send optional fields this controller ignores: the signature is over
    what was received, so it still verifies, and altering such a field still breaks it."""
    key = _enrolled(stack, "cam-x")
    obj = json.loads(_telemetry("cam-x", datetime.now(timezone.utc) - timedelta(minutes=1)).model_dump_json(by_alias=True))
    obj["future_field"] = {"a": 1}
    signed = json.loads(key.sign_object(obj))
    assert stack.controller.bridge.handle(telemetry_topic("cam-x"), json.dumps(signed).encode()) == "ok"
    signed["future_field"] = {"a": 2}
    signed["seq"] += 1
    assert stack.controller.bridge.handle(telemetry_topic("cam-x"), json.dumps(signed).encode()) == "bad_signature"
