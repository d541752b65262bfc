"""A reload the broker lost is made up for: mosquitto clears its reload flag only after a
reload, so a SIGHUP that arrives during one is lost, and that reload may have read the new
password file with the old ACL. The controller writes the ACL first and reloads once more
after the last change of a burst (``BrokerAuthFiles.write``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cloud import broker_auth
from edgefleet.cloud.broker import MosquittoBroker
from edgefleet.cloud.broker_auth import Account, BrokerAuthFiles, hash_password
from edgefleet.protocols import telemetry_topic

from ..conftest import wait_until
from .test_broker_acl import Client

CTL = Account("ctl", hash_password("ctl-secret"), "controller")
CAM1 = Account("cam-1", hash_password("pw-1"))
CAM3 = Account("cam-3", hash_password("pw-3"))


class LossyReload:
    """The broker's reload, except that the next ``lose`` signals are lost (as mosquitto loses
    a SIGHUP that arrives while it is reloading)."""

    def __init__(self, broker: Any):
        self.broker, self.lose, self.lost, self.done = broker, 0, 0, 0

    def __call__(self) -> None:
        if self.lose:
            self.lose -= 1
            self.lost += 1
            return
        self.done += 1
        self.broker.reload()


def _new_device_after_a_lost_reload(broker: MosquittoBroker, again_s: float) -> tuple[Client, Client, LossyReload]:
    reload = LossyReload(broker)
    files = BrokerAuthFiles(broker.auth_dir, reload=reload, reload_again_s=again_s)
    files.write([CTL, CAM1])
    wait_until(lambda: reload.done >= (2 if again_s else 1), timeout=5, message="first files loaded")
    time.sleep(0.2)
    ctl = Client(broker, "ctl", "ctl-secret", "controller-r")
    assert ctl.connected.wait(5), ctl.connack
    ctl.c.subscribe("fleet/v1/devices/+/telemetry", qos=1)
    reload.lose = 1  # the enrolment's own signal is lost
    files.write([CTL, CAM1, CAM3])
    assert reload.lost == 1
    return ctl, Client(broker, "cam-3", "pw-3", "cam-3"), reload


def test_a_new_device_gets_in_although_the_broker_lost_the_enrolments_reload(mosquitto: MosquittoBroker) -> None:
    ctl, cam3, _reload = _new_device_after_a_lost_reload(mosquitto, again_s=0.3)
    if not cam3.connected.wait(3):  # refused before the trailing reload: a device's agent retries
        cam3.close()
        cam3 = Client(mosquitto, "cam-3", "pw-3", "cam-3")
        assert cam3.connected.wait(5), cam3.connack
    time.sleep(0.2)
    cam3.c.publish(telemetry_topic("cam-3"), b"hello", qos=1)
    wait_until(lambda: (telemetry_topic("cam-3"), b"hello") in ctl.received, timeout=5,
               message="the new device's telemetry delivered")
    for c in (cam3, ctl):
        c.close()


def test_without_the_second_reload_the_lost_signal_keeps_the_new_device_out(mosquitto: MosquittoBroker) -> None:
    """The failure the second reload exists for, on the real broker."""
    ctl, cam3, _reload = _new_device_after_a_lost_reload(mosquitto, again_s=0)
    time.sleep(1.0)
    assert cam3.refused()
    for c in (cam3, ctl):
        c.close()


def test_a_burst_of_changes_gets_one_trailing_reload_and_close_cancels_it(tmp_path: Path) -> None:
    calls: list[float] = []
    files = BrokerAuthFiles(tmp_path / "auth", reload=lambda: calls.append(time.monotonic()), reload_again_s=0.3)
    for i in range(5):
        files.write([CTL, Account(f"cam-{i}", hash_password("pw"))])
    assert len(calls) == 5  # each change at once
    wait_until(lambda: len(calls) == 6, timeout=3, message="the trailing reload")
    time.sleep(0.5)
    assert len(calls) == 6  # one for the burst, not one per change
    assert files.write([CTL])
    n = len(calls)
    files.close()
    time.sleep(0.6)
    assert len(calls) == n  # cancelled: the controller stopped


def test_the_acl_is_written_before_the_password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real = broker_auth.atomic_write

    def recording(path: Any, data: bytes, **kw: Any) -> None:
        order.append(Path(path).name)
        real(path, data, **kw)

    monkeypatch.setattr(broker_auth, "atomic_write", recording)
    files = BrokerAuthFiles(tmp_path / "auth", reload_again_s=0)
    files.write([CTL, CAM1])
    assert order == [broker_auth.ACL_FILE, broker_auth.PASSWD_FILE]
