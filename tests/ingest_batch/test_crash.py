"""SIGKILL a real controller process in the middle of a batch: no reported state is lost.

The controller (``fleet cloud serve``, its own process) speaks MQTT 5 to mosquitto with a
persistent session and acknowledges a batch only after it commits. The test holds SQLite's
write lock from outside while devices publish, so the controller takes the messages, stages
its batch and waits inside the transaction for the lock: then it is killed (SIGKILL, no
clean-up). Nothing of that batch was committed or acknowledged, so the broker delivers it
again to the restarted controller (same replica: the session resumes), and every device's
last reported generation and phase arrive, each transition in the history exactly once.

Slow (marked): two controller process starts (migrations, keys, uvicorn, MQTT connect) take
most of its 30-70 s; it needs mosquitto (MQTT 5 persistent sessions) and skips without it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session, create_engine, select

from edgefleet.cloud.broker import free_port
from edgefleet.cloud.devices import fleet
from edgefleet.cloud.devices.history import DeviceHistory
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.tables import Device
from edgefleet.protocols import Channel, Phase, Reported, SlotReport
from edgefleet.protocols.topics import device_topic

from ..conftest import wait_until
from ..signed_reports.keys import SimKey, register

pytestmark = pytest.mark.slow

DEVICES = 8
PHASES = (Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING, Phase.PREPARING, Phase.ACTIVE, Phase.HEALTHY)


class Device_:
    """One enrolled device on its own MQTT 5 connection, publishing signed QoS 1 reports."""

    def __init__(self, device_id: str, password: str, port: int):
        self.device_id, self.key = device_id, SimKey(device_id)
        self.acked = threading.Semaphore(0)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(device_id, password)
        self.client.on_publish = lambda *_a: self.acked.release()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def report(self, generation: int) -> None:
        msg = Reported(device_id=self.device_id, generation=generation, hardware_id="cpu-x86_64",
                       slots={"control": SlotReport(phase=PHASES[generation - 1])})
        self.client.publish(device_topic(self.device_id, Channel.REPORTED), self.key.sign(msg), qos=1)
        assert self.acked.acquire(timeout=10), "the broker did not take the report"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    fleet_bin = Path(sys.executable).with_name("fleet")
    proc = subprocess.Popen([str(fleet_bin), "cloud", "serve", "--data-dir", str(data_dir), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"), env={**os.environ, "COLUMNS": "200"})

    def connected() -> bool:
        assert proc.poll() is None, f"controller exited: {log.read_text()[-2000:]}"
        try:
            body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        return bool(body.get("mqtt_connected"))

    wait_until(connected, timeout=60, message="controller process serving and connected")
    return proc


def _state(db: Path) -> dict[str, tuple[int | None, str | None]]:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with Session(engine) as s:
            return {d.id: (d.reported_generation, ((d.reported or {}).get("slots", {}).get("control") or {}).get("phase"))
                    for d in s.exec(select(Device)).all()}
    finally:
        engine.dispose()


def test_a_controller_killed_mid_batch_loses_no_reported_state(tmp_path: Path, mosquitto: Any) -> None:
    data_dir, port = tmp_path / "controller", free_port()
    data_dir.mkdir(mode=0o700)
    (data_dir / "controller.toml").write_text(
        "[controller]\n"
        f"mqtt_port = {mosquitto.port}\nmqtt_protocol = \"5\"\nreplica_id = \"crash\"\n"
        f"broker_auth_dir = \"{mosquitto.auth_dir}\"\n"
        f"broker_reload_command = \"kill -HUP {mosquitto._proc.pid}\"\n"
        "reconcile_interval_s = 0.5\ningest_batch_max = 256\ningest_batch_wait_s = 0.05\n")
    setup = Controller(load_settings(data_dir, env={}))
    setup.migrate()
    passwords = {}
    with setup.session() as s:
        for i in range(DEVICES):
            creds = fleet.enrol(s, f"cam-crash-{i}", "cpu-x86_64")
            passwords[creds.device_id] = creds.mqtt_password
    for device_id in passwords:
        register(setup, SimKey(device_id))
    setup.sync_broker_auth()
    mosquitto.reload()
    setup.engine.dispose()

    log = tmp_path / "controller.log"
    proc = _serve(data_dir, port, log)
    devices = [Device_(d, p, mosquitto.port) for d, p in passwords.items()]
    db = data_dir / "controller.db"
    try:
        for gen in (1, 2, 3):  # applied and acknowledged before the crash
            for d in devices:
                d.report(gen)
        wait_until(lambda: set(_state(db).values()) == {(3, "verifying")}, timeout=30, message="first reports applied")

        lock = sqlite3.connect(db, timeout=30)
        lock.execute("BEGIN IMMEDIATE")  # the controller's next batch waits inside its transaction
        for gen in (4, 5, 6):
            for d in devices:
                d.report(gen)
        time.sleep(2.0)  # taken off the wire, staged, waiting for the lock
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        lock.rollback()
        lock.close()
        assert set(_state(db).values()) == {(3, "verifying")}  # nothing of the killed batch committed

        proc = _serve(data_dir, port, log)  # same replica id: the broker resumes its session
        assert "session resumed" in log.read_text()
        wait_until(lambda: set(_state(db).values()) == {(6, "healthy")}, timeout=60,
                   message="every device's last report applied after the restart")
        engine = create_engine(f"sqlite:///{db}")
        with Session(engine) as s:
            rows = s.exec(select(DeviceHistory).where(DeviceHistory.kind == "phase")).all()
        engine.dispose()
        per_device = {d: sorted(r.data["to"] for r in rows if r.device_id == d) for d in passwords}
        assert all(v == sorted(p.value for p in PHASES) for v in per_device.values()), per_device
    finally:
        for d in devices:
            d.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
