"""On a small real fleet (4 agents, real broker, controller, reconciler), forged telemetry never
moves a rollout gate: ``nan_outputs=500`` forged for wave-1 devices of a good rollout gated on
``nan_rate<=0`` rolls nothing back, and padding with forged healthy periods does not let the
NaN candidate past wave 1. The forgeries go straight into the controller's bridge (a real
device could not even publish them under another device's topic): unsigned, signed by a key
that is not the device's, signed by another device's real key, and validly signed by the
device's own key but replayed (old seq) or over a period already counted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cloud.broker import EmbeddedBroker, MosquittoBroker
from edgefleet.cloud.demo.train import TrainedModel
from edgefleet.cloud.tables import Device
from edgefleet.protocols import LatencyStats, ModelRef, Telemetry, telemetry_topic
from edgefleet.registry import report_sig

from ..conftest import start_stack, wait_until
from ..rollout_e2e import candidates
from ..rollout_e2e.conftest import BASE, Fleet, wait_state
from .keys import SimKey

pytestmark = pytest.mark.slow

DEVICES = [("sig-nano-0", "jetson-orin-nano"), ("sig-nano-1", "jetson-orin-nano"),
           ("sig-agx-0", "jetson-orin-agx"), ("sig-agx-1", "jetson-orin-agx")]
WAVES = "50,100"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, digit_models: tuple[TrainedModel, TrainedModel]) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("signed-fleet")
    auth = root / "broker-auth"
    broker: Any = (MosquittoBroker(data_dir=root / "mosquitto", auth_dir=auth) if MosquittoBroker.available()
                   else EmbeddedBroker(auth_dir=auth))
    broker.start()
    stack = start_stack(root / "controller", broker)
    creds = {d: stack.client.enrol_device(d, hw, {"site": "lab"}) for d, hw in DEVICES}
    f = Fleet(stack, broker, root, {d: c["token"] for d, c in creds.items()}, dict(DEVICES),
              passwords={d: c["mqtt_password"] for d, c in creds.items()})
    try:
        for d, _hw in DEVICES:
            f.start_agent(d)
        wait_until(lambda: all(d["online"] for d in f.client.list_devices()), timeout=60, message="agents online")
        f.push(candidates.retag(digit_models[0], "1.0"))
        f.reset()  # type: ignore[attr-defined]
        yield f
    finally:
        for ra in list(f.agents.values()):
            ra.stop()
        f.stack.stop()
        broker.stop()


class Forger:
    """Feeds forged telemetry for the given devices into the controller's bridge until stopped."""

    def __init__(self, fleet: Fleet, victims: list[str], ref: ModelRef, *, frames: int, nan: int):
        self.fleet, self.victims, self.ref, self.frames, self.nan = fleet, victims, ref, frames, nan
        self.outcomes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Forger:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _msg(self, device_id: str, start: datetime) -> Telemetry:
        return Telemetry(device_id=device_id, period_start=start, period_end=start + timedelta(seconds=0.5),
                         control=self.ref, frames=self.frames, nan_outputs=self.nan, fps=5.0,
                         latency_ms=LatencyStats(p50=1.0, p95=1.0, p99=1.0))

    def payloads(self, victim: str) -> list[bytes]:
        now = datetime.now(timezone.utc)
        msg = self._msg(victim, now - timedelta(seconds=0.2))
        obj = json.loads(msg.model_dump_json(by_alias=True))
        real = self.fleet.agents[victim].agent.signer  # the device's own key (no forger has it) …
        neighbour = next(d for d in self.fleet.agents if d != victim)
        impostor = SimKey(victim, seed="forger")
        impostor.key_id = real.key_id
        # … so this stands for a message it already sent: the seq the controller accepted last on
        # this channel (a replay, always refused — also inside the anti-replay window)
        with self.fleet.stack.controller.session() as s:
            row = s.get(Device, victim)
            accepted = row.telemetry_seq if row is not None and row.telemetry_seq is not None else 1
            counted_end = row.report_period_end if row is not None else None
        replayed = {**obj, "seq": accepted, "device_time": "2026-01-01T00:00:00Z", "key_id": real.key_id}
        report_sig.sign_report(real.key, replayed)
        # the period the controller counted last for this device, again: refused as an overlap
        # whether it arrives as the newest seq or late, inside the anti-replay window
        counted_end = counted_end if counted_end is not None else now - timedelta(hours=1)
        counted_end = counted_end if counted_end.tzinfo else counted_end.replace(tzinfo=timezone.utc)
        old = json.loads(self._msg(victim, counted_end - timedelta(seconds=0.5)).model_dump_json(by_alias=True))
        return [
            msg.model_dump_json(by_alias=True).encode(),  # unsigned
            impostor.sign(msg),  # a key that is not the device's
            self.fleet.agents[neighbour].agent.signer.sign(msg),  # another device's real key
            json.dumps(replayed).encode(),  # replayed / reordered
            real.sign_object(old),  # a period already counted
        ]

    def _run(self) -> None:
        bridge = self.fleet.stack.controller.bridge
        while not self._stop.wait(0.25):
            for victim in self.victims:
                for payload in self.payloads(victim):
                    outcome = bridge.handle(telemetry_topic(victim), payload)
                    self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _ref(mv: dict[str, Any]) -> ModelRef:
    return ModelRef(name=mv["name"], version=mv["version"], digest=mv["digest"])


def _wave0(fleet: Fleet, rollout_id: str) -> list[str]:
    def members() -> list[str]:
        st = fleet.client.rollout_status(rollout_id)
        return [m["device"] for m in st["members"] if m["wave"] == 0]
    return wait_until(members, timeout=30, message="wave 1 members")


def _start(fleet: Fleet, model: str, *gates: str) -> str:
    return fleet.client.start_rollout(model, slot="control", select="all", waves=WAVES, soak="3s",
                                      gates=list(gates), on_breach="rollback", device_timeout="60s")["id"]


def test_forged_nan_telemetry_does_not_roll_back_a_good_model(fleet: Fleet, digit_models) -> None:
    mv = fleet.push(candidates.retag(digit_models[0], "1.1-ok"))
    rid = _start(fleet, "digits:1.1-ok", "nan_rate<=0")
    victims = _wave0(fleet, rid)
    with Forger(fleet, victims, _ref(mv), frames=500, nan=500) as forger:
        st = wait_state(fleet, rid, "completed", "rolled_back", "rolling_back", "paused", timeout=90)
    assert st["state"] == "completed", st
    full = fleet.client.rollout_status(rid)
    assert full["breach"] is None
    assert all(m["nan_outputs"] == 0 for m in full["members"]), full["members"]
    assert set(forger.outcomes) == {"unsigned", "bad_signature", "replayed", "overlap"}, forger.outcomes
    fleet.all_on("digits:1.1-ok")
    fleet.reset()  # type: ignore[attr-defined]


def test_padding_with_forged_healthy_periods_cannot_let_the_nan_candidate_past_wave_1(
        fleet: Fleet, digit_models, tmp_path: Path) -> None:
    mv = fleet.push(candidates.nan_after_activation(digit_models[0], tmp_path, "1.1-nan"))
    rid = _start(fleet, "digits:1.1-nan", "nan_rate<=0.2")  # padding of 100,000 clean frames would pass it
    victims = _wave0(fleet, rid)
    with Forger(fleet, victims, _ref(mv), frames=100_000, nan=0) as forger:
        wait_state(fleet, rid, "rolled_back", timeout=90)
    full = fleet.client.rollout_status(rid, events=50)
    assert full["breach"] is not None and full["breach"]["wave"] == 0, full["reason"]
    assert "nan_rate" in full["breach"]["summary"]
    assert all(w["counts"].get("waiting", 0) == w["members"] for w in full["waves"][1:]), full["waves"]
    wave0 = {m["device"] for m in full["members"] if m["wave"] == 0}
    assert fleet.ever_ran(mv["digest"]) <= wave0
    assert all(m["frames"] < 10_000 for m in full["members"]), full["members"]  # no forged frame counted
    assert forger.outcomes.get("ok", 0) == 0 and sum(forger.outcomes.values()) > 0
    fleet.all_on(BASE)
