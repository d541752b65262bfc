"""The TUF image repository: every released model bundle, signed, under its hash.

Layout in the metadata store (prefix ``image/``)::

    image/1.root.json, image/root.json       root (offline keys, threshold k-of-n)
    image/N.targets.json                     top-level targets: delegates to hash bins
    image/N.bins-XX.json                     succinct hash-bin delegation (TAP 15)
    image/N.snapshot.json, image/timestamp.json

Targets live in the blob store under their sha256 and are never overwritten; with
consistent snapshots a client fetches ``targets/<dir>/<sha256>.<basename>``, which
``resolve_target_path`` maps back to a blob. Top-level targets delegates every name to
one of ``2**bins_bits`` bins, so publishing a release re-signs one small bin, the
snapshot and the timestamp, whatever the size of the repository.

Flow: ``create`` once → ``add_release``/``add_target`` (staged) → ``publish`` (signs) →
``refresh_expiring`` on a timer → ``rotate`` when a key changes.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from securesystemslib.signer import Signature
from tuf.api.metadata import Delegations, Metadata, SuccinctRoles, TargetFile, Targets

from ..blobstore import BlobStore, check_digest
from ..errors import BlobNotFound, VersionConflict
from .errors import RepositoryStateError
from .keys import KeyEntry, KeyRing
from .names import check_target_name, release_target_name
from .signing import SPECIFICATION_VERSION_STR, Clock, Expiry, PendingRoot, SignedRepo, utcnow
from .store import MetadataStore

BINS_PREFIX = "bins"
COUNTER_FILE = "release-counter.json"


@dataclass(frozen=True)
class ImageTarget:
    """One signed target as the controller sees it."""

    name: str
    digest: str
    length: int
    custom: dict[str, Any]

    @property
    def release_counter(self) -> int:
        return int(self.custom.get("release_counter", 0))

    @property
    def hardware_ids(self) -> list[str]:
        return list(self.custom.get("hardware_ids", []))

    @classmethod
    def from_targetfile(cls, tf: TargetFile) -> ImageTarget:
        return cls(tf.path, tf.hashes["sha256"], tf.length, dict(tf.custom or {}))


class ImageRepository:
    """Sign and publish model bundles (thread-safe within one process: one signer leader)."""

    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        keyring: KeyRing,
        *,
        expiry: Expiry | None = None,
        clock: Clock = utcnow,
        prefix: str = "image",
    ):
        self.blobs = blobs
        self.keyring = keyring
        self.repo = SignedRepo(store, keyring, "image", prefix=prefix, expiry=expiry, clock=clock)
        self.store = store
        self._lock = threading.RLock()
        self._staged: dict[str, Targets] = {}

    # -- creation ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        store: MetadataStore,
        blobs: BlobStore,
        keyring: KeyRing,
        *,
        bins_bits: int = 8,
        expiry: Expiry | None = None,
        clock: Clock = utcnow,
        prefix: str = "image",
    ) -> ImageRepository:
        """Write root v1, targets (delegating to ``2**bins_bits`` bins), bins, snapshot, timestamp.

        Raises:
            RepositoryStateError: a repository exists already at ``prefix``.
        """
        self = cls(store, blobs, keyring, expiry=expiry, clock=clock, prefix=prefix)
        if self.repo.initialised():
            raise RepositoryStateError(f"an image repository exists already at {prefix!r}")
        root = self.repo.new_root(self.repo.root_keys_from_keyring())
        self.repo.write_root(root, keyring.signers("image", "root"))
        top = Targets(version=1, spec_version=SPECIFICATION_VERSION_STR)
        top.delegations = self._delegations(bins_bits)
        changed: dict[str, Targets] = {"targets": top}
        assert top.delegations.succinct_roles is not None
        for bin_name in top.delegations.succinct_roles.get_roles():
            changed[bin_name] = Targets(version=1, spec_version=SPECIFICATION_VERSION_STR)
        self.repo.commit(changed)
        return self

    def _delegations(self, bins_bits: int) -> Delegations:
        rk = self.keyring.role("image", "targets")
        keys = {k.keyid: k.public for k in rk.keys}
        succinct = SuccinctRoles(list(keys), rk.threshold, bins_bits, BINS_PREFIX)
        return Delegations(keys=keys, roles=None, succinct_roles=succinct)

    # -- queries ----------------------------------------------------------------------

    def root_bytes(self, version: int | None = None) -> bytes:
        """Root metadata to provision devices with (current root by default)."""
        return self.store.read(self.repo.name("root", version))

    def _succinct(self) -> SuccinctRoles:
        delegations = self.repo.targets().signed.delegations
        if delegations is None or delegations.succinct_roles is None:
            raise RepositoryStateError("top-level targets has no hash-bin delegation")
        return delegations.succinct_roles

    def bin_for(self, name: str) -> str:
        return self._succinct().get_role_for_target(name)

    def _bin(self, bin_name: str) -> Targets:
        if bin_name in self._staged:
            return self._staged[bin_name]
        return self.repo.targets(bin_name).signed

    def get_target(self, name: str) -> ImageTarget | None:
        """The published (or staged) target ``name``, or None."""
        with self._lock:
            tf = self._bin(self.bin_for(name)).targets.get(name)
            return ImageTarget.from_targetfile(tf) if tf else None

    def resolve_target_path(self, path: str) -> ImageTarget | None:
        """Map a consistent-snapshot URL path (``<dir>/<sha256>.<basename>``) to its target."""
        dirname, sep, fname = path.rpartition("/")
        digest, dot, basename = fname.partition(".")
        if not dot:
            return None
        try:
            check_digest(digest)
            name = check_target_name(f"{dirname}{sep}{basename}")
        except Exception:
            return None
        try:
            target = self.get_target(name)
        except RepositoryStateError:
            return None
        if target is None or target.digest != digest:
            return None
        return target

    # -- staging and publishing -------------------------------------------------------

    def next_release_counter(self) -> int:
        """Reserve the next global release counter (persisted before anything is signed,
        so a counter is never handed out twice, even across a crash)."""
        with self._lock:
            name = f"{self.repo.prefix}/{COUNTER_FILE}"
            try:
                current = int(json.loads(self.store.read(name))["release_counter"])
            except FileNotFoundError:
                current = 0
            self.store.write(name, json.dumps({"release_counter": current + 1}).encode())
            return current + 1

    def add_target(
        self, name: str, blob_digest: str, custom: Mapping[str, Any] | None = None
    ) -> ImageTarget:
        """Stage target ``name`` = the blob ``blob_digest`` (write-once: re-adding the same
        bytes is a no-op, other bytes under an existing name raise ``VersionConflict``)."""
        check_target_name(name)
        check_digest(blob_digest)
        if not self.blobs.exists(blob_digest):
            raise BlobNotFound(blob_digest)
        length = self.blobs.size(blob_digest)
        tf = TargetFile(length, {"sha256": blob_digest}, name, {"custom": dict(custom or {})})
        with self._lock:
            bin_name = self.bin_for(name)
            existing = self._bin(bin_name).targets.get(name)
            if existing is not None:
                if existing.hashes.get("sha256") != blob_digest or existing.custom != tf.custom:
                    raise VersionConflict(f"target {name} exists with other content")
                return ImageTarget.from_targetfile(existing)
            if bin_name not in self._staged:
                staged = copy.deepcopy(self.repo.targets(bin_name).signed)
                staged.version += 1
                self._staged[bin_name] = staged
            self._staged[bin_name].targets[name] = tf
            return ImageTarget.from_targetfile(tf)

    def add_release(
        self,
        blob_digest: str,
        *,
        model: str,
        version: str,
        hardware_ids: list[str] | None = None,
        manifest_digest: str | None = None,
        provenance: Mapping[str, Any] | None = None,
        release_counter: int | None = None,
    ) -> ImageTarget:
        """Stage a model bundle as ``<model>/<version>/r<counter>.tar`` with the custom fields
        agents check (model, version, release counter, hardware ids, manifest digest,
        provenance). The counter is the next global one unless given."""
        counter = release_counter if release_counter is not None else self.next_release_counter()
        custom = {
            "model": model,
            "version": version,
            "release_counter": counter,
            "hardware_ids": sorted(hardware_ids or []),
            "manifest_digest": manifest_digest,
            "provenance": dict(provenance or {}),
        }
        return self.add_target(release_target_name(model, version, counter), blob_digest, custom)

    def publish(self) -> int:
        """Sign every staged bin, a new top-level snapshot and timestamp. Returns the new
        snapshot version (unchanged if nothing was staged)."""
        with self._lock:
            if not self._staged:
                return self.repo.snapshot().signed.version
            staged, self._staged = self._staged, {}
            snap_version, _ = self.repo.commit(staged)
            return snap_version

    def release(self, blob_digest: str, **kwargs: Any) -> ImageTarget:
        """``add_release`` + ``publish`` in one call."""
        with self._lock:
            target = self.add_release(blob_digest, **kwargs)
            self.publish()
            return target

    # -- maintenance ------------------------------------------------------------------

    def refresh_expiring(self, now: datetime | None = None) -> list[str]:
        """Re-sign timestamp, snapshot, and online targets/bins metadata that would expire
        within their refresh window. Call it periodically while the controller runs."""
        with self._lock:
            roles = ["targets", *self._succinct().get_roles()]
            return self.repo.refresh_expiring(now, roles=roles)

    def rotate(self, role: str, old_keyid: str | None = None) -> str:
        """Rotate one key of ``role`` (root included) and re-sign what it signs, so existing
        agents follow through the root chain. Returns the new keyid."""
        with self._lock:
            if self._staged:
                raise RepositoryStateError("publish staged targets before rotating keys")
            _, new_keyid = self.repo.rotate_root_key(role, old_keyid)
            self._after_rotation(role)
            return new_keyid

    def prepare_rotation(self, role: str | None, old_keyid: str | None = None,
                         new: KeyEntry | None = None) -> PendingRoot:
        """The next root version, unsigned, for a command that signs it with offline root
        keys (``role`` ``None``: re-sign root with a new expiry only)."""
        with self._lock:
            if self._staged:
                raise RepositoryStateError("publish staged targets before rotating keys")
            return self.repo.prepare_root(role, old_keyid, new)

    def finish_rotation(self, pending: PendingRoot, signatures: dict[str, Signature]) -> None:
        """Publish a prepared root with its signatures and re-sign what the changed key signs."""
        with self._lock:
            self.repo.finish_root(pending, signatures)
            if pending.role is not None:
                self._after_rotation(pending.role)

    def _after_rotation(self, role: str) -> None:
        if role == "targets":
            top = copy.deepcopy(self.repo.targets().signed)
            bits = self._succinct().bit_length
            top.version += 1
            top.delegations = self._delegations(bits)
            changed = {"targets": top}
            snap = self.repo.snapshot().signed
            for bin_name in self._succinct().get_roles():
                b = copy.deepcopy(self.repo.targets(bin_name, snap).signed)
                b.version += 1
                changed[bin_name] = b
            self.repo.commit(changed)
        elif role in ("snapshot", "timestamp"):
            self.repo.commit({})

    def metadata(self, name: str) -> bytes:
        """Bytes of one served metadata file (``3.snapshot.json``, ``timestamp.json``...)."""
        return self.store.read(f"{self.repo.prefix}/{name}")


def load_metadata(data: bytes) -> Metadata:
    return Metadata.from_bytes(data)
