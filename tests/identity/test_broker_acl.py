"""Strangers are kept out by the broker itself, on both brokers we ship (amqtt and mosquitto).

Each attack from the identity issue, on a real broker whose password file and ACL the
controller wrote from its device table: anonymous connect, wrong password, subscribe to
``#``, publish under another device's id, a last will on another device's topic, a
device taking another's client id; and the controller's own account still works.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.cloud.broker import EmbeddedBroker, MosquittoBroker
from edgefleet.cloud.broker_auth import (
    Account,
    AuthRules,
    BrokerAuthFiles,
    hash_password,
    render_acl,
    render_passwd,
)
from edgefleet.protocols import status_topic, telemetry_topic

from ..conftest import wait_until


@pytest.fixture(params=["amqtt", "mosquitto"])
def acl_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "mosquitto" and not MosquittoBroker.available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); its ACL tests need it")
    b: Any = (EmbeddedBroker(auth_dir=tmp_path / "auth") if request.param == "amqtt"
              else MosquittoBroker(data_dir=tmp_path / "mosq", auth_dir=tmp_path / "auth"))
    b.start()
    files = BrokerAuthFiles(b.auth_dir, reload=b.reload)
    files.write([Account("ctl", hash_password("ctl-secret"), "controller"),
                 Account("cam-1", hash_password("pw-1")), Account("cam-2", hash_password("pw-2"))])
    b.files = files
    yield b
    b.stop()


class Client:
    """A paho client that records its CONNACK, its SUBACKs and what it receives."""

    def __init__(self, broker: Any, username: str | None, password: str | None, client_id: str,
                 will_topic: str | None = None):
        v5 = broker.kind == "mosquitto"
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        if username:
            self.c.username_pw_set(username, password)
        if will_topic:
            self.c.will_set(will_topic, b'{"forged": true}', qos=1, retain=True)
        self.connack: Any = None
        self.granted: list[Any] = []
        self.received: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda _c, _u, _mid, codes, _p=None: self.granted.extend(codes)
        self.c.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        self.connack = reason
        if not reason.is_failure:
            self.connected.set()

    def refused(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.connack is None:
            time.sleep(0.02)
        return self.connack is not None and self.connack.is_failure

    def close(self) -> None:
        self.c.loop_stop()
        try:
            self.c.disconnect()
        except Exception:
            pass


def _connected(broker: Any, user: str, password: str, client_id: str, **kw: Any) -> Client:
    c = Client(broker, user, password, client_id, **kw)
    assert c.connected.wait(5), f"{user} could not connect: {c.connack}"
    return c


def test_anonymous_and_wrong_password_are_refused(acl_broker: Any) -> None:
    anon = Client(acl_broker, None, None, "anon")
    assert anon.refused()
    anon.close()
    wrong = Client(acl_broker, "cam-1", "not-the-password", "cam-1")
    assert wrong.refused()
    wrong.close()
    unknown = Client(acl_broker, "cam-9", "pw-1", "cam-9")
    assert unknown.refused()
    unknown.close()


def test_a_device_reads_and_writes_only_its_own_topics(acl_broker: Any) -> None:
    ctl = _connected(acl_broker, "ctl", "ctl-secret", "controller-1")
    ctl.c.subscribe("fleet/v1/devices/+/telemetry", qos=1)
    cam1 = _connected(acl_broker, "cam-1", "pw-1", "cam-1")
    cam2 = _connected(acl_broker, "cam-2", "pw-2", "cam-2")
    cam1.c.subscribe("#", qos=1)  # refused: it would read every device's traffic
    cam1.c.subscribe("fleet/v1/devices/cam-2/desired", qos=1)  # refused: another device's
    cam1.c.subscribe("fleet/v1/devices/cam-1/desired", qos=1)  # its own: granted
    wait_until(lambda: len(cam1.granted) == 3, timeout=5, message="three SUBACKs")
    codes = [int(getattr(g, "value", g)) for g in cam1.granted]
    if acl_broker.kind == "amqtt":  # mosquitto grants any filter and checks each delivery instead
        assert codes[0] >= 0x80 and codes[1] >= 0x80, codes
    assert codes[2] < 0x80, codes
    time.sleep(0.3)
    cam1.c.publish(telemetry_topic("cam-1"), b"own", qos=1)
    cam1.c.publish(telemetry_topic("cam-2"), b"forged-for-cam-2", qos=1)
    cam2.c.publish("fleet/v1/devices/cam-1/desired", b"forged-desired", qos=1)
    ctl.c.publish("fleet/v1/devices/cam-1/desired", b"real-desired", qos=1)
    ctl.c.publish("fleet/v1/devices/cam-2/desired", b"for-cam-2", qos=1)
    wait_until(lambda: ("fleet/v1/devices/cam-1/telemetry", b"own") in ctl.received, message="own telemetry delivered")
    wait_until(lambda: ("fleet/v1/devices/cam-1/desired", b"real-desired") in cam1.received, message="desired delivered")
    time.sleep(0.5)
    assert not [m for m in ctl.received if m[1] == b"forged-for-cam-2"]
    # nothing of cam-2's and no forgery (mosquitto may deliver the real one once per matching filter)
    assert set(cam1.received) == {("fleet/v1/devices/cam-1/desired", b"real-desired")}
    for c in (ctl, cam1, cam2):
        c.close()


def test_last_will_on_another_devices_topic_is_refused(acl_broker: Any) -> None:
    """amqtt publishes wills without a topic check: our auth plugin refuses such a connect;
    mosquitto checks the will against the ACL and refuses it too."""
    ctl = _connected(acl_broker, "ctl", "ctl-secret", "controller-2")
    ctl.c.subscribe("fleet/v1/devices/+/status", qos=1)
    time.sleep(0.2)
    evil = Client(acl_broker, "cam-1", "pw-1", "cam-1", will_topic=status_topic("cam-2"))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and evil.connack is None:
        time.sleep(0.02)
    if evil.connected.is_set():  # the broker let it in: then its will must never be delivered
        evil.c._sock.close() if evil.c._sock else None  # type: ignore[attr-defined]  # abnormal drop fires the will
    time.sleep(1.5)
    assert not [m for m in ctl.received if m[0] == status_topic("cam-2")]
    evil.close()
    ctl.close()


def test_revoked_account_is_refused_at_once(acl_broker: Any) -> None:
    ctl = _connected(acl_broker, "ctl", "ctl-secret", "controller-3")
    ctl.c.subscribe("fleet/v1/devices/+/telemetry", qos=1)
    cam1 = _connected(acl_broker, "cam-1", "pw-1", "cam-1")
    time.sleep(0.2)
    cam1.c.publish(telemetry_topic("cam-1"), b"before", qos=1)
    wait_until(lambda: any(m[1] == b"before" for m in ctl.received), message="delivered before revoke")
    acl_broker.files.write([Account("ctl", hash_password("ctl-secret"), "controller"), Account("cam-2", hash_password("pw-2"))])
    time.sleep(0.5)
    cam1.c.publish(telemetry_topic("cam-1"), b"after", qos=1)
    time.sleep(1.0)
    assert not any(m[1] == b"after" for m in ctl.received)
    again = Client(acl_broker, "cam-1", "pw-1", "cam-1-again")
    assert again.refused()
    for c in (again, cam1, ctl):
        c.close()


def test_rules_render_and_parse_back_the_same() -> None:
    accounts = [Account("ctl", hash_password("x"), "controller"), Account("cam-1", hash_password("y"))]
    rules = AuthRules.parse(render_passwd(accounts), render_acl(accounts))
    assert rules.authenticate("cam-1", "y") and not rules.authenticate("cam-1", "x") and not rules.authenticate(None, None)
    assert rules.may_publish("cam-1", "fleet/v1/devices/cam-1/telemetry")
    assert not rules.may_publish("cam-1", "fleet/v1/devices/cam-1/desired")
    assert not rules.may_publish("cam-1", "fleet/v1/devices/cam-2/telemetry")
    assert rules.may_subscribe("cam-1", "fleet/v1/devices/cam-1/desired")
    assert not rules.may_subscribe("cam-1", "fleet/v1/devices/+/desired")
    assert not rules.may_subscribe("cam-1", "#")
    assert rules.may_subscribe("ctl", "fleet/v1/devices/+/reported") and rules.may_publish("ctl", "fleet/v1/devices/x/desired")
    assert rules.controllers == {"ctl"}
