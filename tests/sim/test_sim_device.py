"""A simulated device, as pure logic: the lifecycle it walks for a desired hint, and reports
signed like an agent's (its own key, increasing seq, contiguous telemetry periods)."""

from __future__ import annotations

import json

from edgefleet.protocols import Desired, DeviceSettings, Phase, Reported, Telemetry, decode
from edgefleet.protocols.messages import SlotTarget
from edgefleet.registry import report_sig
from edgefleet.sim import public_key
from edgefleet.sim.device import HEALTHY, STEPS, SimDevice

TARGET = SlotTarget(name="digits", version="2.0", digest="ab" * 32, size=10, path="targets/x")


def _desired(gen: int, target: SlotTarget | None = TARGET) -> Desired:
    return Desired(device_id="sim-0001", generation=gen, slots={"control": target},
                   settings=DeviceSettings(telemetry_period_s=30.0))


def _device() -> SimDevice:
    return SimDevice("sim-0001", "jetson-nano", 0, seed="test-seed", telemetry_period_s=60.0)


def test_a_new_target_walks_every_phase_to_healthy() -> None:
    d = _device()
    report, step = d.on_desired(_desired(1), now=0.0)
    assert (report, step) == (False, 0) and d.telemetry_period_s == 30.0
    phases = []
    for i in range(HEALTHY + 1):
        assert d.advance(i, d.epoch)
        phases.append(d.phase)
    assert phases == [*STEPS, Phase.HEALTHY]
    assert d.installed is not None and d.installed.digest == TARGET.digest and d.generation == 1


def test_a_repeated_hint_does_not_restart_and_an_old_step_is_ignored() -> None:
    d = _device()
    d.on_desired(_desired(1), now=0.0)
    epoch = d.epoch
    d.advance(0, epoch)
    assert d.on_desired(_desired(2), now=1.0) == (False, None)  # on its way already: carries on
    for i in range(1, HEALTHY):
        assert d.advance(i, epoch)
    assert d.phase == Phase.ACTIVE
    assert d.on_desired(_desired(2), now=1.5) == (True, None)  # a re-sent hint while active: reported
    assert d.advance(HEALTHY, epoch) and d.phase == Phase.HEALTHY  # and the health check still lands
    other = TARGET.model_copy(update={"digest": "cd" * 32})
    assert d.on_desired(_desired(3, other), now=2.0) == (False, 0)  # a new target starts over
    assert not d.advance(1, epoch)  # a step of the earlier target changes nothing
    for i in range(HEALTHY + 1):
        assert d.advance(i, d.epoch)
    assert d.lkg is not None and d.lkg.digest == TARGET.digest
    assert d.on_desired(_desired(4, other), now=3.0) == (True, None)  # installed already: just report
    assert d.phase == Phase.HEALTHY and d.generation == 4
    assert d.on_desired(_desired(5, None), now=4.0) == (True, None)  # nothing wanted: removed
    assert d.installed is None and d.phase == Phase.IDLE


def test_reports_verify_with_the_enrolled_key_and_seq_increases() -> None:
    d = _device()
    pub = public_key("sim-0001", "test-seed")
    seqs = []
    for payload in (d.sign(d.reported(), now=100.0), d.sign(d.telemetry(160.0), now=160.0)):
        obj = json.loads(payload)
        assert obj["key_id"] == report_sig.key_id(pub)
        msg: Reported | Telemetry = (decode(payload, Reported) if obj["schema"] == "fleet.reported/1"
                                     else decode(payload, Telemetry))
        assert report_sig.verify(pub, msg.signed_bytes(), msg.sig or "")
        seqs.append(obj["seq"])
    assert seqs[1] > seqs[0]
    tampered = json.loads(d.sign(d.reported(), now=200.0))
    tampered["generation"] = 99
    msg = decode(json.dumps(tampered).encode(), Reported)
    assert not report_sig.verify(pub, msg.signed_bytes(), msg.sig or "")


def test_telemetry_periods_follow_each_other() -> None:
    d = _device()
    first, second = d.telemetry(1000.0), d.telemetry(1060.0)
    assert first.period_end == second.period_start and second.period_end > second.period_start
