"""Report keys of simulated devices: deterministic Ed25519 keys and per-device sequence numbers.

``DeviceKey(device_id, seed)`` derives the private key from ``sha256(seed NUL device_id)``,
so the process that enrols a simulated fleet (``public_key(device_id, seed)``) and the
processes that simulate it agree on every key without talking. ``sign(msg)`` does what
the agent's report signer does: it adds ``seq`` (strictly increasing, starting above any
earlier run's), ``device_time`` (the real clock, so ingest lag can be measured from it)
and ``key_id`` to the message's JSON object, signs its canonical bytes and returns the
payload. The caller keeps seq order equal to wire order (one lock per fleet).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from ..registry import report_sig

DEFAULT_SEED = "edgefleet-sim"


def _private(device_id: str, seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"{seed}\0{device_id}".encode()).digest())


def public_key(device_id: str, seed: str = DEFAULT_SEED) -> str:
    """The report public key (base64) a simulated device signs with: enrol the device with it."""
    return report_sig.public_b64(_private(device_id, seed))


def utc_iso(t: float | None = None) -> str:
    """``t`` (epoch seconds, default now) as an ISO-8601 UTC string with ``Z``."""
    dt = datetime.now(timezone.utc) if t is None else datetime.fromtimestamp(t, timezone.utc)
    return dt.isoformat().replace("+00:00", "Z")


class DeviceKey:
    __slots__ = ("device_id", "key", "public_key", "key_id", "seq")

    def __init__(self, device_id: str, seed: str = DEFAULT_SEED):
        self.device_id = device_id
        self.key = _private(device_id, seed)
        self.public_key = report_sig.public_b64(self.key)
        self.key_id = report_sig.key_id(self.public_key)
        self.seq = time.time_ns() // 1000  # above whatever an earlier run with this key sent

    def sign_object(self, obj: dict[str, Any], *, now: float | None = None) -> bytes:
        """Stamp ``obj`` (seq, device_time, key_id), sign it, return the JSON payload."""
        self.seq += 1
        obj["seq"] = self.seq
        obj["device_time"] = utc_iso(now)
        obj["key_id"] = self.key_id
        report_sig.sign_report(self.key, obj)
        return json.dumps(obj, separators=(",", ":")).encode()

    def sign(self, msg: BaseModel, *, now: float | None = None) -> bytes:
        return self.sign_object(json.loads(msg.model_dump_json(by_alias=True, exclude_none=False)), now=now)
