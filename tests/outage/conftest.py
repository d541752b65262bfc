"""Outage drills on real components: a PostgreSQL server this test stops and starts,
mosquitto stopped and restarted on the same port (its persistence keeps sessions and
retained messages), the controller restarted on its data directory.

``pg`` yields a ``PgServer`` (initdb + pg_ctl on a free port; ``stop()``/``start()``);
``start_controller(data_dir, broker, **settings)`` is ``conftest.start_stack`` with any
controller setting overridden; ``Reporter`` publishes signed QoS 1 ``reported`` messages
as one enrolled device over its own broker connection and remembers every seq it sent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.cloud.api import create_app
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.cli.cloud_cmd import create_admin_token
from edgefleet.cloud.client import ApiClient
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.protocols import Channel, Phase, Reported, SlotReport
from edgefleet.protocols.topics import device_topic

from ..conftest import Stack, _postgres_bin
from ..signed_reports.keys import SimKey, register


class PgServer:
    """A throwaway PostgreSQL cluster that a test may stop and start again (same port, same data)."""

    def __init__(self) -> None:
        bindir = _postgres_bin()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin")
        self.bindir = bindir
        self.run_as: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="edgefleet-pg-outage-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and no 'postgres' user to run the PostgreSQL server as")
            self.root.chmod(0o777)
            for p in (self.root, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        subprocess.run([*self.run_as, str(bindir / "initdb"), "-D", str(self.data), "-U", "edgefleet", "-A", "trust",
                        "--no-sync"], check=True, capture_output=True)
        self.url = f"postgresql://edgefleet@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                       check=True, capture_output=True)

    def start(self) -> None:
        self._ctl("-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")  # open connections are terminated, as in a failover

    def destroy(self) -> None:
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def pg() -> Iterator[PgServer]:
    server = PgServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def start_controller(data_dir: Path, broker: Any, *, token: str | None = None, **overrides: Any) -> Stack:
    """``conftest.start_stack`` with controller settings overridden (database_url, timeouts …)."""
    protocol = "5" if getattr(broker, "kind", "") == "mosquitto" else "3.1.1"
    port = free_port()
    values: dict[str, Any] = dict(http_port=port, mqtt_port=broker.port, mqtt_protocol=protocol,
                                  telemetry_period_s=0.5, reconcile_interval_s=0.5, broker_auth_dir=broker.auth_dir,
                                  ingest_retry_max_s=1.0)
    values.update(overrides)
    settings = load_settings(data_dir, env={}, **values)
    controller = Controller(settings)
    if controller.broker_auth is not None:
        controller.broker_auth.set_reload(broker.reload)
    controller.migrate()
    token = token or create_admin_token(controller)
    controller.start()
    http = UvicornThread(create_app(controller), settings.http_host, port)
    http.start()
    return Stack(controller, http, ApiClient(settings.base_url, token), token, settings.base_url, broker, data_dir)


class Reporter:
    """One enrolled device publishing signed QoS 1 ``reported`` messages (generation = count)."""

    def __init__(self, stack: Stack, device_id: str):
        creds = stack.client.enrol_device(device_id, "cpu-x86_64", {"test": "outage"})
        self.device_id, self.key = device_id, SimKey(device_id)
        register(stack.controller, self.key)
        self.sent: list[int] = []
        self.acked = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(device_id, creds["mqtt_password"])
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.max_queued_messages_set(0)  # paho keeps QoS 1 messages until acknowledged
        self.client.on_publish = self._on_publish
        self.client.connect(stack.broker.host, stack.broker.port)
        self.client.loop_start()

    def _on_publish(self, *_args: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self) -> int:
        n = len(self.sent) + 1
        msg = Reported(device_id=self.device_id, generation=n, hardware_id="cpu-x86_64",
                       slots={"control": SlotReport(phase=Phase.IDLE)})
        payload = self.key.sign(msg)
        self.sent.append(self.key.seq)
        self.client.publish(device_topic(self.device_id, Channel.REPORTED), payload, qos=1)
        return n

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
