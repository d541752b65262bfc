"""The controller's side of the trust model: sign releases, sign per-device assignments.

``Trust`` owns the keyring (``{data_dir}/keys``), the TUF metadata (``{data_dir}/tuf``),
the image repository and the director. ``fleet keys init`` (or the first start) creates
them; afterwards they are loaded. Model bundles stay in the blob store; the image
repository signs them as ``<model>/<version>/r<counter>.tar`` targets. Every time a
device's desired state changes, the director signs exactly what that device must
install, and the settings and generation it must apply; MQTT only carries the director
version as a hint.

Release counters only go up on a device. When the controller sends a device back to an
older model (a rollback), ``target_for`` re-releases that model's bytes under a new,
higher counter, so the device accepts it without ever accepting an *older* signature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import BlobStore
from ..registry.tuf import (
    Director,
    ImageRepository,
    ImageTarget,
    KeyRing,
    LocalMetadataStore,
    RepositoryStateError,
    TufResolver,
)
from .errors import BadRequest

log = logging.getLogger(__name__)

KEYS_DIR = "keys"
TUF_DIR = "tuf"


@dataclass(frozen=True)
class Roots:
    director: bytes
    image: bytes


class Trust:
    def __init__(self, data_dir: Path, blobs: BlobStore, keyring: KeyRing, store: LocalMetadataStore):
        self.data_dir = data_dir
        self.blobs = blobs
        self.keyring = keyring
        self.store = store
        self.image = ImageRepository(store, blobs, keyring)
        self.director = Director(store, keyring, self.image)
        self._lock = threading.RLock()

    # ----- set-up -----

    @staticmethod
    def exists(data_dir: Path) -> bool:
        return (data_dir / KEYS_DIR / "keyring.json").exists()

    @classmethod
    def init(cls, data_dir: Path, blobs: BlobStore, *, root_threshold: int = 1, root_keys: int = 1) -> Trust:
        """Create keys and empty image and director repositories (``fleet keys init``)."""
        keyring = KeyRing.init(data_dir / KEYS_DIR, root_threshold=root_threshold, root_keys=root_keys)
        store = LocalMetadataStore(data_dir / TUF_DIR)
        image = ImageRepository.create(store, blobs, keyring)
        Director.create(store, keyring, image)
        log.info("trust initialised in %s (root threshold %d of %d)", data_dir, root_threshold, root_keys)
        return cls(data_dir, blobs, keyring, store)

    @classmethod
    def load(cls, data_dir: Path, blobs: BlobStore) -> Trust:
        return cls(data_dir, blobs, KeyRing.load(data_dir / KEYS_DIR), LocalMetadataStore(data_dir / TUF_DIR))

    @classmethod
    def open(cls, data_dir: Path, blobs: BlobStore) -> Trust:
        """Load the trust state, creating a 1-of-1 demo setup on first use."""
        return cls.load(data_dir, blobs) if cls.exists(data_dir) else cls.init(data_dir, blobs)

    def roots(self) -> Roots:
        return Roots(director=self.director.root_bytes(), image=self.image.root_bytes())

    def resolver(self) -> TufResolver:
        return TufResolver(self.image, self.director)

    # ----- releases -----

    def release(self, digest: str, manifest: dict) -> ImageTarget:
        """Sign a bundle as a new image target under the next global release counter."""
        manifest_digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        with self._lock:
            return self.image.release(
                digest, model=manifest["name"], version=manifest["version"],
                hardware_ids=list(manifest.get("hardware_ids") or []), manifest_digest=manifest_digest,
                provenance=manifest.get("provenance") or {},
            )

    def assign(
        self, device_id: str, hardware_id: str, slots: dict[str, str | None], *,
        generation: int | None = None, settings: dict[str, Any] | None = None,
        credentials_epoch: int | None = None,
    ) -> int:
        """Sign the device's full desired state (slots, and the desired generation, settings
        and credentials epoch in its signed binding); returns the director version (the
        MQTT hint).

        Raises:
            BadRequest: a target not built for this device's hardware, or unknown.
        """
        with self._lock:
            try:
                version = self.director.assign(
                    device_id, hardware_id, slots, generation=generation, settings=settings,
                    credentials_epoch=credentials_epoch,
                )
            except RepositoryStateError as exc:
                raise BadRequest(f"cannot assign to {device_id}: {exc}") from None
        log.info("director v%d signed for device %s (%s): %s", version, device_id, hardware_id, slots)
        return version

    def rotate(self, role: str, repo: str = "both") -> dict[str, str]:
        """Rotate ``role``'s key (root included) in the image repository and/or the director.

        Devices follow a root rotation through the chain of signed root versions.
        """
        done: dict[str, str] = {}
        with self._lock:
            if repo in ("image", "both"):
                done["image"] = self.image.rotate(role)
            if repo in ("director", "both"):
                done["director"] = self.director.rotate(role)
        log.info("rotated %s key(s): %s", role, done)
        return done

    def refresh_expiring(self) -> None:
        with self._lock:
            renewed = self.image.refresh_expiring()
            devices = self.director.refresh_expiring()
        if renewed or devices:
            log.info("re-signed expiring metadata: image %s, director devices %s", renewed, devices)
