"""The simulated fleet (``edgefleet.sim``) speaks the real protocol: a real controller (SQLite,
mosquitto, its MQTT bridge and reconciler) accepts every signed ``reported`` and ``telemetry``
of 200 simulated devices and a waved rollout to them completes; the simulator's bench-only
broker account has the rights of devices, not the controller's; the simulator imports
neither the controller nor the agent."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from bench.sim_stack import SimStack, sim_stack
from sqlmodel import select

from edgefleet.cloud.broker import MosquittoBroker
from edgefleet.cloud.tables import Device
from edgefleet.protocols import Channel, Desired, DeviceSettings, encode
from edgefleet.protocols.topics import device_topic
from edgefleet.sim import SimFleet, device_ids

from ..conftest import wait_until
from ..rollout_e2e.candidates import retag

pytestmark = [pytest.mark.mosquitto,
              pytest.mark.skipif(not MosquittoBroker.available(), reason="mosquitto is not installed")]

N = 200


@pytest.fixture
def stack(tmp_path: Path):
    with sim_stack(tmp_path, device_ids(N), telemetry_period_s=10.0, reconcile_interval_s=0.5,
                   gc_gen0_threshold=0) as s:  # a test process keeps Python's collector
        yield s


@pytest.fixture
def fleet(stack: SimStack):
    f = SimFleet(stack.broker.host, stack.broker.sim_port, device_ids(N), auth=stack.broker.sim_auth,
                 connections=4, step_s=0.02, health_s=0.2, telemetry_period_s=10.0)
    f.start()
    f.wait_ready(60)
    yield f
    f.stop()


def _connect(host: str, port: int, auth: tuple[str, str]) -> tuple[mqtt.Client, list[object]]:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    c.username_pw_set(*auth)
    result: list[object] = []
    c.on_connect = lambda _c, _u, _f, reason, _p=None: result.append(reason)
    c.connect(host, port)
    c.loop_start()
    wait_until(lambda: result, 10, message="CONNACK")
    return c, result


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_signed_reports_are_accepted_and_a_waved_rollout_completes(stack: SimStack, fleet: SimFleet,
                                                                   digit_models) -> None:
    """Slow (over 20 s): 200 devices each send about ten signed messages through one controller,
    which applies them one transaction each today; minutes when the machine is busy."""
    probe = stack.probe
    # every device announced itself (signed reported) and sent signed telemetry, none refused
    wait_until(lambda: len(probe.lags["reported"]) >= N and len(probe.lags["telemetry"]) >= N, 180,
               message="a reported and a telemetry applied per device")
    assert probe.refused == {"reported": 0, "telemetry": 0}
    with stack.controller.session() as s:
        rows = s.exec(select(Device)).all()
    assert len(rows) == N and all(d.report_seq and d.telemetry_seq for d in rows)

    m = retag(digit_models[0], "7.0")
    stack.client.push_model(m.path, name="digits", version="7.0", manifest=m.manifest.model_dump(mode="json", by_alias=True))
    digest = next(x["digest"] for x in stack.client.list_models() if x["version"] == "7.0")
    res = stack.client.start_rollout("digits:7.0", waves="1,10,50,100", soak="0s", gates=["failure<=0.02"],
                                     device_timeout="2m")
    wait_until(lambda: stack.client.rollout_status(res["id"], devices=False, events=0)["state"] == "completed", 300,
               interval=0.5, message=f"rollout completed ({fleet.on(digest)} devices on it)")
    assert fleet.healthy_on(digest) == N
    assert probe.refused == {"reported": 0, "telemetry": 0}
    # each device walked the lifecycle: five phase reports and healthy at least, plus its hello
    assert fleet.sent["reported"] >= N * 7
    with stack.controller.session() as s:
        rows = s.exec(select(Device)).all()
    assert all(d.reported and d.reported["slots"]["control"]["installed"]["digest"] == digest for d in rows)


def test_bench_account_has_device_rights_not_the_controllers(stack: SimStack, fleet: SimFleet) -> None:
    host, broker = stack.broker.host, stack.broker
    # the controller's listener does not know the bench account, and a wrong password is refused
    _c1, r1 = _connect(host, broker.port, broker.sim_auth)
    _c2, r2 = _connect(host, broker.sim_port, (broker.sim_auth[0], "wrong"))
    assert r1[0].is_failure and r2[0].is_failure  # type: ignore[attr-defined]
    for c in (_c1, _c2):
        c.loop_stop()
    # a desired hint forged through the bench account never reaches the device
    device_id = device_ids(N)[0][0]
    forger, r3 = _connect(host, broker.sim_port, broker.sim_auth)
    assert not r3[0].is_failure  # type: ignore[attr-defined]
    forged = Desired(device_id=device_id, generation=99, settings=DeviceSettings(telemetry_period_s=2.0))
    forger.publish(device_topic(device_id, Channel.DESIRED), encode(forged), qos=1).wait_for_publish(5)
    time.sleep(1.0)
    assert fleet.devices[0].desired_generation != 99 and fleet.devices[0].generation != 99
    forger.disconnect()
    forger.loop_stop()


def test_simulator_imports_neither_controller_nor_agent() -> None:
    code = ("import sys, edgefleet.sim\n"
            "print(','.join(m for m in sys.modules if m.startswith(('edgefleet.cloud', 'edgefleet.edge_agent'))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""
