"""Ed25519 report keys: sign a device report on the edge, verify it in the controller.

Both sides import this module, so it needs ``cryptography`` only (no boto3, no MLflow). The
controller's ``verify`` checks with libsodium (PyNaCl, in the ``cloud`` extra) where it is
installed: 0.55–0.6× OpenSSL's time for one check on this machine, and stricter, since it also
refuses small-order public keys and non-canonical encodings, which OpenSSL's check lets by.
Where PyNaCl is missing (a device) it checks with ``cryptography``; a signature made by a real
key gets the same verdict from both (tested).
A public key travels as the standard base64 of its 32 raw bytes; its ``key_id`` is the
first 16 hex digits of their sha256. A signature is the standard base64 of the 64-byte
Ed25519 signature over ``protocols.canonical.canonical_bytes`` of the report.

Flow: the agent calls ``sign_report(key, obj)`` on the JSON object it is about to publish;
the controller calls ``verify(public_key, msg.signed_bytes(), msg.sig)``, or ``verify_many``
for a batch: the Ed25519 check releases the GIL, so a batch's checks run on up to
``VERIFY_THREADS`` cores at once (2 threads on this 2-core machine: 63 µs a check in wall time
instead of 126 µs) while the rest of ingest stays on one thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..protocols.canonical import SIG_FIELD, canonical_bytes, rotation_statement
from .errors import RegistryError

try:  # the controller's faster, stricter check (the ``cloud`` extra); a device may lack it
    from nacl import bindings as _sodium
    from nacl.exceptions import CryptoError as _SodiumError
except ImportError:  # pragma: no cover - PyNaCl is in the cloud and dev extras
    _sodium = None  # type: ignore[assignment]


class ReportKeyError(RegistryError):
    """Key material that cannot be used (not Ed25519, not base64, damaged PEM)."""


PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
#: threads ``verify_many`` spreads a batch over (1: in the caller's thread); the environment's
#: ``EDGEFLEET_VERIFY_THREADS`` overrides the default of one per CPU, at most 4
MAX_VERIFY_THREADS = 64


def verify_threads(value: str | None, cpus: int | None) -> int:
    """The thread count from ``EDGEFLEET_VERIFY_THREADS`` (``value``), else one per CPU, at most 4."""
    if not value:
        return max(1, min(4, cpus or 1))
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_VERIFY_THREADS:
        raise ReportKeyError(f"EDGEFLEET_VERIFY_THREADS must be a whole number from 1 to {MAX_VERIFY_THREADS}, "
                             f"not {value[:40]!r}")
    return n


VERIFY_THREADS = verify_threads(os.environ.get("EDGEFLEET_VERIFY_THREADS"), os.cpu_count())
PARALLEL_FROM = 16  # fewer checks than this: in the caller's thread (a thread hand-off costs more)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM of a private key (kept on the device only, mode 0600)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_private_pem(data: bytes) -> Ed25519PrivateKey:
    """Raises ``ReportKeyError`` unless ``data`` is an unencrypted Ed25519 PKCS#8 PEM."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ReportKeyError(f"not a readable private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReportKeyError(f"report keys are Ed25519, not {type(key).__name__}")
    return key


def public_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def parse_public_key(text: str | bytes) -> str:
    """A public key given as base64 of the raw 32 bytes or as a PEM block, in base64 form.

    Raises:
        ReportKeyError: neither form, or not an Ed25519 key.
    """
    data = text.encode() if isinstance(text, str) else text
    data = data.strip()
    if data.startswith(b"-----BEGIN"):
        try:
            pub = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ReportKeyError(f"not a readable public key: {exc}") from None
        if not isinstance(pub, Ed25519PublicKey):
            raise ReportKeyError(f"report keys are Ed25519, not {type(pub).__name__}")
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ReportKeyError("a report public key is base64 of 32 bytes or a PEM block") from None
        if len(raw) != PUBLIC_KEY_BYTES:
            raise ReportKeyError(f"an Ed25519 public key has {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
    if _sodium is not None and not _sodium.crypto_core_ed25519_is_valid_point(raw):
        # a small-order point (or one outside the prime-order group): no real key is one, and
        # OpenSSL's check would accept one "signature" for every message under it
        raise ReportKeyError("not a usable Ed25519 public key (a small-order point); "
                             "generate the key with an Ed25519 implementation")
    return base64.b64encode(raw).decode()


def key_id(public_key: str) -> str:
    """Short, stable name of a public key (base64 form): 16 hex digits of sha256 of the raw bytes."""
    return hashlib.sha256(base64.b64decode(public_key)).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode()


@lru_cache(maxsize=65536)
def _public(public_key: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))


@lru_cache(maxsize=65536)
def _raw_public(public_key: str) -> bytes:
    raw = base64.b64decode(public_key)  # as ``_public`` reads it
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
    return raw


def verify(public_key: str, data: bytes, signature: str) -> bool:
    """True when ``signature`` (base64) is ``public_key``'s signature over ``data``; never raises.
    libsodium where it is installed (``verify_openssl`` otherwise)."""
    if _sodium is None:
        return verify_openssl(public_key, data, signature)
    try:
        raw_sig = base64.b64decode(signature, validate=True)
        if len(raw_sig) != SIGNATURE_BYTES:
            return False
        _sodium.crypto_sign_open(raw_sig + data, _raw_public(public_key))
    except (_SodiumError, binascii.Error, ValueError, TypeError):
        return False
    return True


def verify_openssl(public_key: str, data: bytes, signature: str) -> bool:
    """``verify`` by ``cryptography`` (OpenSSL): where PyNaCl is missing."""
    try:
        raw_sig = base64.b64decode(signature, validate=True)
        _public(public_key).verify(raw_sig, data)
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True


def _verify_all(items: Sequence[tuple[str, bytes, str]]) -> list[bool]:
    return [verify(*item) for item in items]


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=VERIFY_THREADS, thread_name_prefix="report-verify")
        return _pool


def verify_many(items: Sequence[tuple[str, bytes, str]]) -> list[bool]:
    """``verify(public_key, data, signature)`` of each item, in order; never raises.
    A large batch is split over ``VERIFY_THREADS`` threads (the checks themselves run
    without the GIL)."""
    threads = VERIFY_THREADS
    if threads <= 1 or len(items) < PARALLEL_FROM:
        return _verify_all(items)
    size = -(-len(items) // threads)
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    out: list[bool] = []
    for part in _executor().map(_verify_all, chunks):
        out += part
    return out


def sign_report(key: Ed25519PrivateKey, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with ``sig`` set over its canonical bytes (``obj`` must already hold seq, key_id…)."""
    obj[SIG_FIELD] = sign(key, canonical_bytes(obj))
    return obj


def sign_rotation(current: Ed25519PrivateKey, device_id: str, new_public_key: str) -> str:
    """The current key's signature handing the device's reports over to ``new_public_key``."""
    return sign(current, rotation_statement(device_id, new_public_key))


def verify_rotation(current_public_key: str, device_id: str, new_public_key: str, signature: str) -> bool:
    return verify(current_public_key, rotation_statement(device_id, new_public_key), signature)
