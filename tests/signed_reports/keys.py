"""Report keys for simulated devices: what the agent's ``ReportSigner`` does, without files.

``SimKey(device_id)`` is deterministic (derived from the device id and a seed), so a child
process running a simulated fleet and the parent that enrols it agree on the public keys
without talking. ``register`` binds a key in the controller's database (as enrolment with
``report_public_key`` does); ``feed_telemetry`` / ``feed_reported`` sign a message and hand
it to the controller's handler exactly as the MQTT bridge would (decoded from the bytes).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any
from weakref import WeakKeyDictionary

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from edgefleet.protocols import Reported, Telemetry, decode
from edgefleet.registry import report_sig


class SimKey:
    def __init__(self, device_id: str, seed: str = "edgefleet-tests"):
        self.device_id = device_id
        self.key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"{seed}\0{device_id}".encode()).digest())
        self.public_key = report_sig.public_b64(self.key)
        self.key_id = report_sig.key_id(self.public_key)
        self.seq = time.time_ns() // 1000  # above whatever an earlier run with this key sent
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        with self._lock:
            self.seq += 1
            return self.seq

    def sign_object(self, obj: dict[str, Any], *, seq: int | None = None) -> bytes:
        obj["seq"] = self.next_seq() if seq is None else seq
        obj["device_time"] = "2026-01-01T00:00:00Z"
        obj["key_id"] = self.key_id
        report_sig.sign_report(self.key, obj)
        return json.dumps(obj, separators=(",", ":")).encode()

    def sign(self, msg: BaseModel, *, seq: int | None = None) -> bytes:
        return self.sign_object(json.loads(msg.model_dump_json(by_alias=True)), seq=seq)


def register(controller: Any, key: SimKey) -> None:
    """Bind ``key`` to its (enrolled) device in the controller's database."""
    from edgefleet.cloud.devices import fleet, report_verify

    with controller.session() as s:
        device = fleet.get_device(s, key.device_id)
        report_verify.set_key(device, key.public_key)
        s.add(device)
        s.commit()


class SignedFeed:
    """Signs messages for devices (enrolling them and registering keys on first use) and
    applies them through the controller's handlers, as the bridge does."""

    def __init__(self, controller: Any, hardware_id: str = "cpu-x86_64"):
        self.controller, self.hardware_id = controller, hardware_id
        self.keys: dict[str, SimKey] = {}

    def key(self, device_id: str) -> SimKey:
        if device_id not in self.keys:
            from edgefleet.cloud.devices import fleet
            from edgefleet.cloud.tables import Device

            with self.controller.session() as s:
                if s.get(Device, device_id) is None:
                    fleet.enrol_device(s, device_id, self.hardware_id)
            self.keys[device_id] = SimKey(device_id)
            register(self.controller, self.keys[device_id])
        return self.keys[device_id]

    def telemetry(self, msg: Telemetry) -> None:
        self.controller._on_telemetry(decode(self.key(msg.device_id).sign(msg), Telemetry))

    def reported(self, msg: Reported) -> None:
        self.controller._on_reported(decode(self.key(msg.device_id).sign(msg), Reported))


_FEEDS: WeakKeyDictionary[Any, SignedFeed] = WeakKeyDictionary()


def feed_telemetry(controller: Any, msg: Telemetry) -> None:
    """Apply ``msg`` as a signed telemetry message from its device (one ``SignedFeed`` per controller)."""
    feed = _FEEDS.get(controller)
    if feed is None:
        feed = _FEEDS[controller] = SignedFeed(controller)
    feed.telemetry(msg)
