"""The device's report key: it signs every ``reported`` and ``telemetry`` before it leaves.

Files, in ``<data_dir>/identity/`` (0700): ``report-key.pem`` — the Ed25519 private key
(PKCS#8, 0600; made at provisioning or first start, never leaves the device);
``report-seq`` — the sequence-number reservation. ``seq`` is strictly increasing across
restarts: the agent reserves blocks of ``SEQ_BLOCK`` numbers and writes the block's end
atomically *before* using any number in it, so a crash at any point only skips numbers.
On a full disk the reservation is rewritten in place instead (the file keeps a fixed
width, so that needs no new block): reports keep flowing, ``E_DISK_FULL`` among them.

``sign(message)`` adds ``seq``, ``device_time`` and ``key_id`` to the message's JSON object,
signs its canonical bytes (``protocols.canonical``) and returns the payload to publish.
``register(http)`` binds the public key to the device (``PUT /api/v1/devices/self/report-key``
with the device token); ``rotate(http)`` replaces the key with one the current key signs over.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from ..atomicio import atomic_write
from ..registry import report_sig
from .disk import disk_full, is_disk_full
from .errors import AgentError

log = logging.getLogger(__name__)

IDENTITY_DIR = "identity"
KEY_FILE = "report-key.pem"
NEXT_KEY_FILE = "report-key.next.pem"  # a rotation in flight (kept until the controller took it)
SEQ_FILE = "report-seq"
SEQ_BLOCK = 256
SEQ_WIDTH = 20  # digits: the reservation file never changes size, so it can be rewritten in place
REGISTER_PATH = "/api/v1/devices/self/report-key"


class ReportKeyRefused(AgentError):
    """The controller holds another report key for this device (an admin must reset it)."""

    code = "E_REPORT_KEY"


def _load_or_create(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key at ``path``, or a new one written there (0600); a damaged file is kept aside."""
    try:
        return report_sig.load_private_pem(path.read_bytes()), False
    except FileNotFoundError:
        pass
    except report_sig.ReportKeyError as exc:
        aside = path.with_suffix(".corrupt")
        path.replace(aside)
        log.error("report key %s is damaged (%s); kept as %s, a new key is made: an admin must run "
                  "`fleet device reset-report-key` for the controller to take it", path, exc, aside)
    key = report_sig.generate()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, report_sig.private_pem(key), mode=0o600, fsync_dir=True)
    return key, True


def ensure_key(data_dir: Path) -> tuple[str, bool]:
    """Provisioning: make the report key if there is none; returns (public key base64, created)."""
    key, created = _load_or_create(Path(data_dir) / IDENTITY_DIR / KEY_FILE)
    return report_sig.public_b64(key), created


class ReportSigner:
    def __init__(self, data_dir: Path, device_id: str):
        self.device_id = device_id
        self.dir = Path(data_dir) / IDENTITY_DIR
        self.key, created = _load_or_create(self.dir / KEY_FILE)
        if created:
            log.info("device %s: new report key made in %s", device_id, self.dir / KEY_FILE)
        self.public_key = report_sig.public_b64(self.key)
        self.key_id = report_sig.key_id(self.public_key)
        self.registered = False
        self._lock = threading.Lock()
        self._next = self._reserved = self._read_seq()

    # ----- sequence numbers -----

    def _read_seq(self) -> int:
        try:
            return max(0, int((self.dir / SEQ_FILE).read_text().strip()))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError):
            # A damaged reservation cannot say how far we got: jump far ahead rather than reuse numbers.
            log.error("device %s: %s unreadable; sequence numbers continue from the clock", self.device_id, SEQ_FILE)
            return int(datetime.now(timezone.utc).timestamp() * 1000)

    def _take_seq(self) -> int:
        """The next number (caller holds ``_lock``); reserves a new block first when needed.

        Raises:
            DiskFull: the reservation can be written neither atomically nor in place.
        """
        if self._next >= self._reserved:
            self._reserve(self._next + SEQ_BLOCK)
            self._reserved = self._next + SEQ_BLOCK
        seq = self._next
        self._next += 1
        return seq

    def _reserve(self, end: int) -> None:
        data = f"{end:0{SEQ_WIDTH}d}\n".encode()
        path = self.dir / SEQ_FILE
        try:
            atomic_write(path, data, mode=0o600)
            return
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            first = exc
        try:  # the disk is full: overwrite the existing file's bytes (no new block needed)
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            raise disk_full("report-seq", self.dir, len(data), first) from first
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        except OSError as exc:
            raise disk_full("report-seq", self.dir, len(data), exc) from exc
        finally:
            os.close(fd)
        log.warning("device %s: disk full; report sequence reservation rewritten in place", self.device_id)

    def next_seq(self) -> int:
        with self._lock:
            return self._take_seq()

    # ----- signing -----

    def sign_object(self, obj: dict[str, Any]) -> bytes:
        """Sign a report's JSON object (seq, device_time, key_id set here); returns the payload."""
        with self._lock:  # one key and its id, even while a rotation swaps them
            obj["seq"] = self._take_seq()
            key, obj["key_id"] = self.key, self.key_id
        obj["device_time"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        report_sig.sign_report(key, obj)
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    def sign(self, message: BaseModel) -> bytes:
        """The signed payload of ``message`` (a ``Reported`` or ``Telemetry``)."""
        return self.sign_object(json.loads(message.model_dump_json(by_alias=True)))

    # ----- registration with the controller -----

    def _put(self, http: httpx.Client, public_key: str, rotation_signature: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"public_key": public_key}
        if rotation_signature:
            body["rotation_signature"] = rotation_signature
        return http.put(REGISTER_PATH, json=body)

    def register(self, http: httpx.Client) -> bool:
        """Bind the public key to this device; True once the controller holds it.

        False on a transport error or a 5xx (try again later).

        Raises:
            ReportKeyRefused: the controller holds another key (409) and no rotation of ours explains it.
        """
        try:
            resp = self._put(http, self.public_key)
            if resp.status_code == 409 and (self.dir / NEXT_KEY_FILE).exists():
                # a rotation whose reply was lost: the controller may hold the next key already
                nxt = report_sig.load_private_pem((self.dir / NEXT_KEY_FILE).read_bytes())
                if self._put(http, report_sig.public_b64(nxt)).status_code == 200:
                    self._promote(nxt)
                    resp = httpx.Response(200)
        except (httpx.HTTPError, OSError, RuntimeError, report_sig.ReportKeyError) as exc:  # RuntimeError: client closed
            log.warning("device %s: report key not registered yet (%s); retrying", self.device_id, exc)
            return False
        if resp.status_code == 200:
            if not self.registered:
                log.info("device %s: report key %s registered with the controller", self.device_id, self.key_id)
            self.registered = True
            return True
        if resp.status_code in (403, 409):
            raise ReportKeyRefused(f"the controller refused report key {self.key_id}: {_detail(resp)}")
        log.warning("device %s: report key registration answered %d (%s); retrying", self.device_id,
                    resp.status_code, _detail(resp))
        return False

    def rotate(self, http: httpx.Client) -> str:
        """Replace the report key with a new one, signed over by the current key; returns the new key id.

        Raises:
            ReportKeyRefused: the controller refused the rotation (the current key stays).
            AgentError: the controller could not be reached (the current key stays).
        """
        nxt_path = self.dir / NEXT_KEY_FILE
        nxt, _ = _load_or_create(nxt_path)
        new_public = report_sig.public_b64(nxt)
        signature = report_sig.sign_rotation(self.key, self.device_id, new_public)
        try:
            resp = self._put(http, new_public, signature)
        except httpx.HTTPError as exc:
            raise AgentError(f"report key rotation: controller unreachable: {exc}") from None
        if resp.status_code != 200:
            raise ReportKeyRefused(f"report key rotation refused ({resp.status_code}): {_detail(resp)}")
        self._promote(nxt)
        return self.key_id

    def _promote(self, key: Ed25519PrivateKey) -> None:
        with self._lock:
            os.replace(self.dir / NEXT_KEY_FILE, self.dir / KEY_FILE)
            self.key = key
            self.public_key = report_sig.public_b64(key)
            self.key_id = report_sig.key_id(self.public_key)
        log.info("device %s: report key rotated to %s", self.device_id, self.key_id)


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))[:300]
    except ValueError:
        return resp.text[:300]
